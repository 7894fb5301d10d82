"""Every setting once: its name, environment variable, type, default and help."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ochinai.runtime.errors import ConfigError
from ochinai.runtime.retry import to_seconds

EVERY_JOB = "jobs"  # in a setting's scope: every job reads it
STATUS = "status"


@dataclass(frozen=True)
class StoreLocation:
    """Where a deployment keeps everything: one bucket and an optional key prefix."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


# Bucket names per the S3 naming rules (3-63 chars, lowercase, digits, dots, hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_store(value: str) -> StoreLocation:
    """s3://BUCKET[/PREFIX]"""
    if not value.startswith("s3://"):
        raise ValueError("must start with s3://")
    bucket, _, prefix = value[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
    if "//" in prefix:
        raise ValueError("the prefix has an empty path segment")
    return StoreLocation(bucket, prefix.strip("/"))


def parse_bool(value: str) -> bool:
    """true or false (also 1/0, yes/no, on/off)"""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("is not a boolean")


def parse_size(value: str) -> int:
    """a number of bytes, or a size such as 64MiB or 10MB"""
    match = _SIZE.match(value)
    if not match:
        raise ValueError("is not a size")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


def parse_positive_int(value: str) -> int:
    """a whole number, 1 or more"""
    number = int(value.strip())
    if number < 1:
        raise ValueError("must be 1 or more")
    return number


def parse_timezone(value: str) -> ZoneInfo:
    """an IANA time zone such as Asia/Tokyo"""
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("is not a known IANA time zone") from exc


def parse_count(value: str) -> int:
    """a whole number, 0 or more"""
    number = int(value.strip())
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def parse_key(value: str) -> str:
    """an object key relative to OCHINAI_STORE, such as in/sales.csv"""
    key = value.strip()
    if not key or key.startswith("/") or key.endswith("/") or "//" in key:
        raise ValueError("is not an object key")
    return key


def parse_key_prefix(value: str) -> str:
    """a key prefix relative to OCHINAI_STORE, such as out/ (empty for the top)"""
    prefix = value.strip().strip("/")
    if "//" in prefix:
        raise ValueError("has an empty path segment")
    return f"{prefix}/" if prefix else ""


REPORT_COLUMNS = ("date", "store", "sku", "sales", "qty")


def parse_column_map(value: str) -> dict[str, str]:
    """COLUMN=HEADER pairs, comma-separated, COLUMN one of date, store, sku, sales, qty"""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, header = item.partition("=")
        if not sep or name.strip() not in REPORT_COLUMNS or not header.strip():
            raise ValueError(f"{item!r} is not COLUMN=HEADER")
        mapping[name.strip()] = header.strip()
    return mapping


def parse_run_id(value: str) -> str:
    """up to 64 letters, digits, '.', '_' or '-' (it is part of object keys)"""
    if not _RUN_ID.match(value):
        raise ValueError("has characters other than letters, digits, '.', '_', '-'")
    return value


def parse_date(value: str) -> date:
    """a date as YYYY-MM-DD"""
    return date.fromisoformat(value.strip())


def parse_list(value: str) -> list[str]:
    """comma-separated values"""
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_text(value: str) -> str:
    """text"""
    return value


def choice(*options: str) -> Callable[[str], str]:
    """A parser that accepts only ``options``."""

    def parse(value: str) -> str:
        if value.strip().lower() not in options:
            raise ValueError("is not one of the choices")
        return value.strip().lower()

    parse.__doc__ = "one of " + " | ".join(options)
    return parse


def parse_duration(value: str) -> float:
    """seconds, or a duration such as 90s, 15m, 26h, 1d"""
    return to_seconds(value)


@dataclass(frozen=True)
class Setting:
    """One setting: ``--flag`` overrides ``env``, which overrides ``default``."""

    name: str
    env: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    scope: tuple[str, ...] = (EVERY_JOB,)
    secret: bool = False
    required: bool = False
    flag_name: str | None = None  # when the flag is not --<name>

    @property
    def flag(self) -> str | None:
        """Secrets are read from the environment only: argv is visible in ps and in pod specs."""
        if self.secret:
            return None
        return "--" + (self.flag_name or self.name.replace("_", "-"))

    @property
    def form(self) -> str:
        """The accepted form, for error messages and --help."""
        return (self.parse.__doc__ or "").strip().splitlines()[0].rstrip(".")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "store",
        "OCHINAI_STORE",
        parse_store,
        None,
        "bucket and key prefix for every object the jobs read and write",
        scope=(EVERY_JOB, STATUS),
        required=True,
    ),
    Setting(
        "date", "OCHINAI_DATE", parse_date, None, "business date (default: today in --timezone)"
    ),
    Setting(
        "timezone", "OCHINAI_TIMEZONE", parse_timezone, "Asia/Tokyo", "the schedule's time zone"
    ),
    Setting(
        "dry_run",
        "OCHINAI_DRY_RUN",
        parse_bool,
        "false",
        "read and compute, but write, delete and send nothing",
    ),
    Setting(
        "run_id",
        "OCHINAI_RUN_ID",
        parse_run_id,
        None,
        "id of this run in logs and records (default: a new sortable id)",
    ),
    Setting("pod_name", "OCHINAI_POD_NAME", parse_text, None, "pod name (default: $HOSTNAME)"),
    Setting("job_name", "OCHINAI_JOB_NAME", parse_text, None, "Kubernetes Job name, for the logs"),
    Setting(
        "log_level",
        "OCHINAI_LOG_LEVEL",
        choice("debug", "info", "warning", "error"),
        "info",
        "lowest severity logged by ochinai itself (libraries log WARNING and up)",
        scope=(EVERY_JOB, STATUS),
    ),
    Setting(
        "log_format",
        "OCHINAI_LOG_FORMAT",
        choice("auto", "json", "text"),
        "auto",
        "json lines, or text for people; auto picks text on a terminal",
        scope=(EVERY_JOB, STATUS),
    ),
    Setting(
        "s3_timeout",
        "OCHINAI_S3_TIMEOUT",
        parse_duration,
        "60s",
        "read timeout of one S3 request",
        scope=(EVERY_JOB, STATUS),
    ),
    Setting(
        "multipart_threshold",
        "OCHINAI_MULTIPART_THRESHOLD",
        parse_size,
        "64MiB",
        "bodies larger than this are uploaded in parts",
    ),
    Setting(
        "lock",
        "OCHINAI_LOCK",
        choice("auto", "lease", "s3", "none"),
        "auto",
        "lock against a second run: a Kubernetes Lease, an S3 object, or none; "
        "auto is lease in a cluster, s3 elsewhere",
    ),
    Setting(
        "lock_wait",
        "OCHINAI_LOCK_WAIT",
        parse_duration,
        "0",
        "how long to wait for a live holder to finish before ending skipped_locked",
    ),
    Setting("lock_duration", "OCHINAI_LOCK_DURATION", parse_duration, "60s", "lease duration"),
    Setting(
        "lock_renew_period",
        "OCHINAI_LOCK_RENEW_PERIOD",
        parse_duration,
        "20s",
        "how often the holder renews",
    ),
    Setting(
        "lock_renew_deadline",
        "OCHINAI_LOCK_RENEW_DEADLINE",
        parse_duration,
        "45s",
        "after this long without a renewal the run stops writing",
    ),
    Setting(
        "namespace",
        "OCHINAI_NAMESPACE",
        parse_text,
        None,
        "namespace of the Lease (default: the pod's, else the kubeconfig's)",
    ),
    Setting(
        "webhook_url",
        "OCHINAI_WEBHOOK_URL",
        parse_text,
        None,
        "Slack-compatible webhook",
        secret=True,
    ),
    Setting("smtp_host", "OCHINAI_SMTP_HOST", parse_text, None, "SMTP server; unset means no mail"),
    Setting(
        "smtp_port",
        "OCHINAI_SMTP_PORT",
        parse_positive_int,
        None,
        "SMTP port (default: 587 for starttls, 465 for ssl, 25 for none)",
    ),
    Setting(
        "smtp_tls",
        "OCHINAI_SMTP_TLS",
        choice("starttls", "ssl", "none"),
        "starttls",
        "SMTP transport security",
    ),
    Setting("smtp_user", "OCHINAI_SMTP_USER", parse_text, None, "SMTP login; unset means no AUTH"),
    Setting(
        "smtp_password", "OCHINAI_SMTP_PASSWORD", parse_text, None, "SMTP password", secret=True
    ),
    Setting("mail_from", "OCHINAI_MAIL_FROM", parse_text, None, "sender address"),
    Setting("mail_to", "OCHINAI_MAIL_TO", parse_list, None, "recipients, comma-separated"),
    Setting(
        "notify_timeout",
        "OCHINAI_NOTIFY_TIMEOUT",
        parse_duration,
        "30s",
        "timeout of one webhook call or SMTP session",
    ),
    Setting(
        "report_input",
        "OCHINAI_REPORT_INPUT",
        parse_key,
        "in/sales.csv",
        "key of the sales CSV",
        scope=("report",),
        flag_name="input",
    ),
    Setting(
        "report_output_prefix",
        "OCHINAI_REPORT_OUTPUT_PREFIX",
        parse_key_prefix,
        "out/",
        "where report_YYYYMMDD.xlsx goes",
        scope=("report",),
        flag_name="output-prefix",
    ),
    Setting(
        "report_encoding",
        "OCHINAI_REPORT_ENCODING",
        choice("auto", "utf-8", "utf-8-sig", "cp932"),
        "auto",
        "encoding of the CSV; auto tells UTF-8 (with or without BOM) from CP932",
        scope=("report",),
        flag_name="encoding",
    ),
    Setting(
        "report_columns",
        "OCHINAI_REPORT_COLUMNS",
        parse_column_map,
        "",
        "header names when they are not date, store, sku, sales, qty",
        scope=("report",),
        flag_name="columns",
    ),
    Setting(
        "report_max_bad_rows",
        "OCHINAI_REPORT_MAX_BAD_ROWS",
        parse_count,
        "0",
        "bad rows to skip (each logged with its line) before the run fails",
        scope=("report",),
        flag_name="max-bad-rows",
    ),
    Setting(
        "report_require_date",
        "OCHINAI_REPORT_REQUIRE_DATE",
        parse_bool,
        "false",
        "fail (exit 66) when the CSV has no row for the business date",
        scope=("report",),
        flag_name="require-date",
    ),
    Setting(
        "report_detail_max_rows",
        "OCHINAI_REPORT_DETAIL_MAX_ROWS",
        parse_count,
        "1000000",
        "detail rows put in the workbook; all rows go to .detail.csv.gz beyond it; 0: no detail",
        scope=("report",),
        flag_name="detail-max-rows",
    ),
    Setting(
        "mail_max_bytes",
        "OCHINAI_MAIL_MAX_BYTES",
        parse_size,
        "10MB",
        "larger reports are mailed as a link instead of an attachment",
        scope=("report",),
    ),
    Setting(
        "report_link_expiry",
        "OCHINAI_REPORT_LINK_EXPIRY",
        parse_duration,
        "7d",
        "how long the presigned link to the report works (at most 7d)",
        scope=("report",),
        flag_name="link-expiry",
    ),
    Setting(
        "max_age",
        "OCHINAI_STATUS_MAX_AGE",
        parse_duration,
        "26h",
        "a job whose last success is older than this is stale",
        scope=(STATUS,),
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


class Settings:
    """Parsed values by attribute (``settings.store``); ``masked()`` is safe to log."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def secrets(self) -> list[str]:
        """The values of the secret settings, for the log redactor."""
        return [
            str(self._values[s.name]) for s in SETTINGS if s.secret and self._values.get(s.name)
        ]

    def masked(self) -> dict[str, Any]:
        """Every value as it would be logged: secrets shown as *** when set."""
        shown: dict[str, Any] = {}
        for name, value in self._values.items():
            setting = _BY_NAME.get(name)
            if setting and setting.secret:
                shown[name] = "***" if value else None
            elif isinstance(value, StoreLocation | ZoneInfo | date):
                shown[name] = str(value)
            else:
                shown[name] = value
        return shown


def settings_for(command: str) -> list[Setting]:
    """The settings a command reads: ``status``, or a job's own and every job's."""
    scopes = {command} if command == STATUS else {command, EVERY_JOB}
    return [s for s in SETTINGS if scopes & set(s.scope)]


def load(
    scope: str,
    env: Mapping[str, str],
    flags: Mapping[str, str | None] | None = None,
    *,
    require: Iterable[str] = (),
) -> Settings:
    """Parse the settings of ``scope`` from flags, then ``env``, then defaults.

    A bad value is a ConfigError naming the variable (or flag), the value and the
    accepted form, so the operator can fix it without reading code.
    """
    flags = flags or {}
    values: dict[str, Any] = {}
    must = set(require)
    for setting in settings_for(scope):
        raw = flags.get(setting.name)
        source = setting.flag or setting.env
        if raw is None:
            raw = env.get(setting.env)
            source = setting.env
        if raw is None or (raw == "" and setting.default is not None):
            raw, source = setting.default, "default"
        if raw is None:
            if setting.required or setting.name in must:
                raise ConfigError(f"{setting.env} is not set; expected {setting.form}")
            values[setting.name] = None
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except (ValueError, TypeError) as exc:
            shown = "***" if setting.secret else repr(raw)
            raise ConfigError(
                f"{source}={shown} is invalid: {exc}; expected {setting.form}"
            ) from None
    return Settings(values)
