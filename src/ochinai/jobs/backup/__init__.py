"""The backup job: CSV and SQLite sources -> Parquet generations, verified, restorable.
Its spec imports only the settings; pyarrow and sqlite3 load when an action runs."""

from ochinai.jobs.backup.settings import (
    BackupSettings,
    DrillSettings,
    RestoreSettings,
    VerifySettings,
)
from ochinai.runtime.job import Action, Job, deferred
from ochinai.runtime.memory import lean_memory

JOB = Job(
    name="backup",
    help="CSV and SQLite sources -> Parquet (zstd) generations backup/YYYYMMDD/, verified",
    settings=BackupSettings,
    actions={
        "run": Action(
            deferred("ochinai.jobs.backup.job:run", lean_memory),
            "back up the business date's generation, verify it, apply retention",
        ),
        "verify": Action(
            deferred("ochinai.jobs.backup.job:verify", lean_memory),
            "read a generation back and check every file",
            VerifySettings,
            lock=False,
        ),
        "restore": Action(
            deferred("ochinai.jobs.backup.job:restore", lean_memory),
            "write a generation back as CSV files and SQLite databases",
            RestoreSettings,
            lock=False,
        ),
        "drill": Action(
            deferred("ochinai.jobs.backup.drill:drill", lean_memory),
            "restore drill: a generation (newest, --date or --random) restored into scratch, "
            "each database and CSV opened and checked against the manifest",
            DrillSettings,
            lock=False,
            notices="drill",
        ),
        "list": Action(
            deferred("ochinai.jobs.backup.job:listing"),
            "the generations, complete or not, why each is kept or that the next run removes it",
            lock=False,
        ),
        "forget": Action(
            deferred("ochinai.jobs.backup.generations:forget"),
            "apply retention now: delete what it lets go (--dry-run: say what, delete nothing)",
        ),
        "keygen": Action(
            deferred("ochinai.jobs.backup.crypto:keygen"),
            "print a new OCHINAI_BACKUP_KEY (32 random bytes, base64) and its id; reads no "
            "backup (OCHINAI_STORE must still be set, as for every action: with --dry-run "
            "nothing is read or written there)",
            lock=False,
        ),
    },
    notices=("drill",),
)
