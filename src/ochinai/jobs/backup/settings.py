"""The backup job's settings: the sources, where generations go, which are kept."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ochinai.runtime.declare import (
    StoreLocation,
    choice,
    parse_bool,
    parse_count,
    parse_key_prefix,
    parse_list,
    parse_positive_int,
    parse_store,
    parse_text,
    setting,
)
from ochinai.runtime.encoding import encoding_setting
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.mask import mask_key_setting


def parse_mask_columns(value: str) -> dict[str, frozenset[str]]:
    """SOURCE:COLUMN pairs, comma-separated, such as customers.csv:phone,shop.sqlite:users.email"""
    columns: dict[str, set[str]] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        source, sep, column = item.rpartition(":")
        if not sep or not source.strip() or not column.strip():
            raise ValueError(f"{item!r} is not SOURCE:COLUMN")
        columns.setdefault(source.strip(), set()).add(column.strip())
    return {source: frozenset(names) for source, names in columns.items()}


MAX_LOCK_DAYS = 3660  # ten years and leap days
KEY_MIN_LENGTH = 32  # characters; ``ochinai backup keygen`` prints 44 (32 bytes in base64)


def parse_backup_key(value: str) -> str:
    """32 characters or more (`ochinai backup keygen` prints 32 random bytes in base64)"""
    key = value.strip()  # a Secret made with `echo` ends with a line break
    if len(key) < KEY_MIN_LENGTH:  # the message never shows the value: it is a secret
        raise ValueError(f"is shorter than {KEY_MIN_LENGTH} characters")
    if "," in key:
        raise ValueError("has a comma (OCHINAI_BACKUP_OLD_KEYS could not list it)")
    return key


def parse_backup_keys(value: str) -> str:
    """keys of 32 characters or more, comma-separated"""
    keys = [part.strip() for part in value.split(",") if part.strip()]
    for n, key in enumerate(keys, 1):
        if len(key) < KEY_MIN_LENGTH:
            raise ValueError(f"key {n} is shorter than {KEY_MIN_LENGTH} characters")
    return ",".join(keys)  # text, not a list: the log redactor masks the value as a whole


@dataclass(frozen=True)
class Policy:
    """Which complete generations retention keeps: the union of its rules.

    ``last``: the newest N. ``daily``, ``weekly`` (ISO weeks), ``monthly``, ``yearly``:
    as restic's ``forget --keep-daily`` and the rest, the newest generation of each of
    the last N calendar units that have one (0: the rule is off); see
    ``generations.keep_reasons``.
    """

    last: int = 30
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0


@dataclass(frozen=True)
class BackupSettings:
    """``ochinai backup``'s own settings."""

    source_prefix: str = setting(
        "OCHINAI_BACKUP_SOURCE_PREFIX",
        parse_key_prefix,
        "data/source/",
        "where the CSV and SQLite objects to back up are",
    )
    sources: list[str] = setting(
        "OCHINAI_BACKUP_SOURCES",
        parse_list,
        "",
        "local files or directories to back up too (a mounted volume), comma-separated",
    )
    prefix: str = setting(
        "OCHINAI_BACKUP_PREFIX", parse_key_prefix, "backup/", "where the generations go"
    )
    target: StoreLocation | None = setting(
        "OCHINAI_BACKUP_TARGET",
        parse_store,
        None,
        "a bucket of the backups' own: the generations (under OCHINAI_BACKUP_PREFIX), their "
        "manifests and read markers go there, the sources are read from OCHINAI_STORE; "
        "unset: OCHINAI_STORE holds both",
    )
    target_endpoint_url: str | None = setting(
        "OCHINAI_BACKUP_TARGET_ENDPOINT_URL",
        parse_text,
        None,
        "S3 endpoint of OCHINAI_BACKUP_TARGET (default: the store's, AWS_ENDPOINT_URL)",
    )
    target_access_key_id: str | None = setting(
        "OCHINAI_BACKUP_TARGET_ACCESS_KEY_ID",
        parse_text,
        None,
        "access key of OCHINAI_BACKUP_TARGET, with OCHINAI_BACKUP_TARGET_SECRET_ACCESS_KEY "
        "(default: the store's credentials)",
        secret=True,
    )
    target_secret_access_key: str | None = setting(
        "OCHINAI_BACKUP_TARGET_SECRET_ACCESS_KEY",
        parse_text,
        None,
        "secret key of OCHINAI_BACKUP_TARGET, with OCHINAI_BACKUP_TARGET_ACCESS_KEY_ID",
        secret=True,
    )
    keep: int = setting(
        "OCHINAI_BACKUP_KEEP", parse_positive_int, "30", "the newest complete generations kept"
    )
    keep_daily: int = setting(
        "OCHINAI_BACKUP_KEEP_DAILY",
        parse_count,
        "0",
        "also the newest complete generation of each of the last N days that have one, "
        "as restic's --keep-daily (0: off)",
    )
    keep_weekly: int = setting(
        "OCHINAI_BACKUP_KEEP_WEEKLY",
        parse_count,
        "0",
        "also the newest complete generation of each of the last N ISO weeks that have one, "
        "as restic's --keep-weekly (0: off)",
    )
    keep_monthly: int = setting(
        "OCHINAI_BACKUP_KEEP_MONTHLY",
        parse_count,
        "0",
        "also the newest complete generation of each of the last N months that have one, "
        "as restic's --keep-monthly (0: off)",
    )
    keep_yearly: int = setting(
        "OCHINAI_BACKUP_KEEP_YEARLY",
        parse_count,
        "0",
        "also the newest complete generation of each of the last N years that have one, "
        "as restic's --keep-yearly (0: off)",
    )
    encoding: str = encoding_setting("OCHINAI_BACKUP_ENCODING", "the CSV sources")
    mask_columns: dict[str, frozenset[str]] = setting(
        "OCHINAI_BACKUP_MASK_COLUMNS",
        parse_mask_columns,
        "",
        "columns replaced by HMAC tokens in the Parquet (SOURCE:COLUMN, TABLE.COLUMN for SQLite)",
    )
    mask_key: str | None = mask_key_setting()
    key: str | None = setting(
        "OCHINAI_BACKUP_KEY",
        parse_backup_key,
        None,
        "encrypt new generations under this key (Parquet Modular Encryption, AES-GCM) and read "
        "them back with it; unset: written unencrypted (a secret: without it no encrypted "
        "generation can be read, so keep a copy apart from the backups)",
        secret=True,
    )
    old_keys: str | None = setting(
        "OCHINAI_BACKUP_OLD_KEYS",
        parse_backup_keys,
        None,
        "earlier OCHINAI_BACKUP_KEYs, after a rotation: verify and restore read the generations "
        "written with them; new ones use OCHINAI_BACKUP_KEY (a secret)",
        secret=True,
    )
    lock_days: int = setting(
        "OCHINAI_BACKUP_LOCK_DAYS",
        parse_count,
        "0",
        "put every object of a new generation, its manifest included, under S3 Object Lock "
        "retention until the generation's date plus this many days (the target bucket must "
        "have Object Lock; 0: off)",
    )
    lock_mode: str = setting(
        "OCHINAI_BACKUP_LOCK_MODE",
        choice("governance", "compliance"),
        "governance",
        "Object Lock mode of OCHINAI_BACKUP_LOCK_DAYS: governance (an identity with "
        "s3:BypassGovernanceRetention can still delete) or compliance (nobody can, the root "
        "account included, until the date)",
    )
    shards: int = setting(
        "OCHINAI_BACKUP_SHARDS",
        parse_positive_int,
        "1",
        "pods of an Indexed Job that share the sources (each its JOB_COMPLETION_INDEX)",
    )
    verify_after: bool = setting(
        "OCHINAI_BACKUP_VERIFY",
        parse_bool,
        "true",
        "read the generation back and check it after each backup",
    )

    def __post_init__(self) -> None:
        if (self.target_access_key_id is None) != (self.target_secret_access_key is None):
            raise ConfigError(
                "OCHINAI_BACKUP_TARGET_ACCESS_KEY_ID and OCHINAI_BACKUP_TARGET_SECRET_ACCESS_KEY "
                "go together: set both or neither"
            )
        if self.lock_days > MAX_LOCK_DAYS:
            raise ConfigError(
                f"OCHINAI_BACKUP_LOCK_DAYS={self.lock_days}: at most {MAX_LOCK_DAYS} days "
                "(a compliance lock cannot be shortened, not even by the bucket's owner)"
            )

    @property
    def policy(self) -> Policy:
        """The retention rules these settings ask for."""
        return Policy(
            last=self.keep,
            daily=self.keep_daily,
            weekly=self.keep_weekly,
            monthly=self.keep_monthly,
            yearly=self.keep_yearly,
        )


@dataclass(frozen=True)
class VerifySettings(BackupSettings):
    """``ochinai backup verify``: the business date's generation, or every one."""

    all: bool = setting("OCHINAI_BACKUP_VERIFY_ALL", parse_bool, "false", "verify every generation")


def parse_dir(value: str) -> Path:
    """a local directory"""
    if not value.strip():
        raise ValueError("is empty")
    return Path(value.strip())


@dataclass(frozen=True)
class RestoreSettings(BackupSettings):
    """``ochinai backup restore``: one generation back into CSV files and SQLite databases."""

    to: Path = setting(
        "OCHINAI_BACKUP_RESTORE_TO",
        parse_dir,
        None,
        "directory to restore into",
        required=True,  # 78 when the settings load: before the lock, before any S3 request
    )
    source: str | None = setting(
        "OCHINAI_BACKUP_RESTORE_SOURCE", parse_text, None, "restore only this source"
    )


@dataclass(frozen=True)
class DrillSettings(BackupSettings):
    """``ochinai backup drill``: which generation the restore drill takes."""

    random: bool = setting(
        "OCHINAI_BACKUP_DRILL_RANDOM",
        parse_bool,
        "false",
        "drill a random complete generation, not the newest (seeded: a rerun picks the same; "
        "--date then only sets the seed's day)",
    )
    seed: int | None = setting(
        "OCHINAI_BACKUP_DRILL_SEED",
        parse_count,
        None,
        "the seed of --random (default: the business date)",
    )
