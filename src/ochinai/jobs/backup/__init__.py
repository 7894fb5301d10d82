"""The backup job: CSV and SQLite sources -> Parquet generations, verified, restorable.

The spec imports only the settings; pyarrow and sqlite3 load when an action runs.
"""

from ochinai.jobs.backup.settings import (
    BackupSettings,
    DrillSettings,
    RestoreSettings,
    VerifySettings,
)
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


def restore_drill(ctx: Context[DrillSettings]) -> Summary:
    """A generation restored into the run's directory and checked (``drill.drill``; not
    named ``drill``: importing the module ``drill`` sets that name on this package)."""
    from ochinai.jobs.backup import drill, parquet

    with parquet.lean_memory():
        return drill.drill(ctx)


def listing(ctx: Context[BackupSettings]) -> Summary:
    """The generations (``job.listing``)."""
    from ochinai.jobs.backup import job

    return job.listing(ctx)


def forget(ctx: Context[BackupSettings]) -> Summary:
    """Apply retention now (``generations.forget``); ``--dry-run`` deletes nothing."""
    from ochinai.jobs.backup import generations

    return generations.forget(ctx)


def keygen(ctx: Context[BackupSettings]) -> Summary:
    """A new OCHINAI_BACKUP_KEY on stdout (``crypto.keygen``); reads and writes no backup."""
    from ochinai.jobs.backup import crypto

    return crypto.keygen(ctx)


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
        "drill": Action(
            restore_drill,
            "restore drill: a generation (newest, --date or --random) restored into scratch, "
            "each database and CSV opened and checked against the manifest",
            DrillSettings,
            lock=False,
            notices="drill",
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
        "keygen": Action(
            keygen,
            "print a new OCHINAI_BACKUP_KEY (32 random bytes, base64) and its id; reads no "
            "backup (OCHINAI_STORE must still be set, as for every action: with --dry-run "
            "nothing is read or written there)",
            lock=False,
        ),
    },
    notices=("drill",),
)
