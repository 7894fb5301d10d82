"""The backup job: CSV and SQLite sources -> Parquet generations, verified, restorable.

The spec imports only the settings; pyarrow and sqlite3 load when an action runs.
"""

from ochinai.jobs.backup.settings import BackupSettings, RestoreSettings, VerifySettings
from ochinai.runtime.job import Action, Context, Job, Summary


def run(ctx: Context[BackupSettings]) -> Summary:
    """Back up, verify and apply retention (``job.run``)."""
    from ochinai.jobs.backup import job, parquet

    with parquet.lean_memory():
        return job.run(ctx)


def verify(ctx: Context[VerifySettings]) -> Summary:
    """Read generations back and check them (``job.verify``)."""
    from ochinai.jobs.backup import job, parquet

    with parquet.lean_memory():
        return job.verify(ctx)


def restore(ctx: Context[RestoreSettings]) -> Summary:
    """A generation back into CSV files and SQLite databases (``job.restore``)."""
    from ochinai.jobs.backup import job, parquet

    with parquet.lean_memory():
        return job.restore(ctx)


def listing(ctx: Context[BackupSettings]) -> Summary:
    """The generations (``job.listing``)."""
    from ochinai.jobs.backup import job

    return job.listing(ctx)


def forget(ctx: Context[BackupSettings]) -> Summary:
    """Apply retention now (``generations.forget``); ``--dry-run`` deletes nothing."""
    from ochinai.jobs.backup import generations

    return generations.forget(ctx)


JOB = Job(
    name="backup",
    help="CSV and SQLite sources -> Parquet (zstd) generations backup/YYYYMMDD/, verified",
    settings=BackupSettings,
    actions={
        "run": Action(run, "back up the business date's generation, verify it, apply retention"),
        "verify": Action(
            verify, "read a generation back and check every file", VerifySettings, lock=False
        ),
        "restore": Action(
            restore,
            "write a generation back as CSV files and SQLite databases",
            RestoreSettings,
            lock=False,
        ),
        "list": Action(
            listing,
            "the generations, complete or not, why each is kept or that the next run removes it",
            lock=False,
        ),
        "forget": Action(
            forget,
            "apply retention now: delete what it lets go (--dry-run: say what, delete nothing)",
        ),
    },
)
