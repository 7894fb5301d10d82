"""How a setting is declared (``setting()``, a typed dataclass field), parsed and loaded
(``load()``: flags, then the environment, then defaults); ``settings.py`` files declare."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, TypeVar, overload
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ochinai.runtime.calendar import RelativeDay, relative_day
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.retry import to_seconds

T = TypeVar("T")
_METADATA_KEY = "ochinai.setting"


@dataclass(frozen=True)
class StoreLocation:
    """Where a deployment keeps everything: one bucket and an optional key prefix."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


# --- parsers: each one's docstring is the accepted form, shown in errors and --help ---

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


# scheme://anything-up-to-the-@ (a password may hold a /): masked where a value is quoted.
_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^@\s]*@")


def parse_store(value: str) -> StoreLocation:
    """s3://BUCKET[/PREFIX]"""
    if not value.startswith("s3://"):
        raise ValueError("must start with s3://")
    bucket, _, prefix = value[len("s3://") :].partition("/")
    # KEY:SECRET@bucket, the secret perhaps holding a /: never echoed.
    if "@" in bucket or ":" in value[len("s3://") :].rpartition("@")[0]:
        raise ValueError(
            "holds credentials (KEY:SECRET@); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY instead"
        )
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
    raise ValueError("neither true nor false")


def parse_size(value: str) -> int:
    """a size such as 64MiB, 10MB or 500KB (a number alone is bytes)"""
    match = _SIZE.match(value)
    if not match:
        raise ValueError("not a size")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


def _whole_number(value: str, least: int) -> int:
    """``value`` as an int of at least ``least``; ValueError in words, not int()'s."""
    text = value.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError("not a whole number")
    number = int(text)
    if number < least:
        raise ValueError(f"{number} is less than {least}")
    return number


def parse_positive_int(value: str) -> int:
    """a whole number such as 3 (1 or more)"""
    return _whole_number(value, 1)


def parse_count(value: str) -> int:
    """a whole number such as 3 (0 or more)"""
    return _whole_number(value, 0)


def parse_timezone(value: str) -> ZoneInfo:
    """an IANA time zone such as Asia/Tokyo"""
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # "Asia" is a directory
        raise ValueError("not a known IANA time zone") from exc


def parse_key(value: str) -> str:
    """an object key relative to OCHINAI_STORE, such as in/sales.csv"""
    key = value.strip()
    if not key or key.startswith("/") or key.endswith("/") or "//" in key:
        raise ValueError("not an object key")
    return key


def parse_key_prefix(value: str) -> str:
    """a key prefix relative to OCHINAI_STORE, such as out/ (empty for the top)"""
    prefix = value.strip().strip("/")
    if "//" in prefix:
        raise ValueError("has an empty path segment")
    return f"{prefix}/" if prefix else ""


def parse_run_id(value: str) -> str:
    """up to 64 letters, digits, '.', '_' or '-' (it is part of object keys)"""
    if not _RUN_ID.match(value):
        raise ValueError("has characters other than letters, digits, '.', '_', '-'")
    return value


def parse_date(value: str) -> date | RelativeDay:
    """a date as YYYY-MM-DD, or today, yesterday, -Nd or previous-business-day

    ``-Nd`` is N days before today. The relative forms are resolved in the schedule's
    time zone when the run starts (``run.business_date``).
    """
    found = relative_day(value)
    if found is not None:
        return found
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("not a date") from None


def parse_http_url(value: str) -> str:
    """an http(s)://host[:port] address"""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s):// address with a host")
    if parts.username or parts.password:
        raise ValueError("holds credentials; the keys come from AWS_* variables")
    return value.strip().rstrip("/")


def parse_list(value: str) -> list[str]:
    """comma-separated values"""
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_text(value: str) -> str:
    """text"""
    return value


def parse_duration(value: str) -> float:
    """a duration such as 30s, 5m, 2h or 1d (a number alone is seconds)"""
    try:
        return to_seconds(value)
    except ValueError:
        raise ValueError(f"{value.strip()!r} is not a duration") from None


def choice(*options: str) -> Callable[[str], str]:
    """A parser that accepts only ``options``."""

    def parse(value: str) -> str:
        if value.strip().lower() not in options:
            raise ValueError("not one of the choices")
        return value.strip().lower()

    parse.__doc__ = "one of " + " | ".join(options)
    return parse


# --- the declaration -------------------------------------------------------------


FAMILY = "<NAME>"  # the end of the env name of a family of settings


@dataclass(frozen=True)
class Setting:
    """One setting: ``--flag`` overrides ``env``, which overrides ``default``."""

    name: str
    env: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    secret: bool = False
    required: bool = False
    flag_name: str | None = None  # when the flag is not --<name with dashes>

    @property
    def family(self) -> str | None:
        """The prefix of a family of variables (``OCHINAI_RECEIVER_<NAME>``: every variable
        that begins with ``OCHINAI_RECEIVER_``, by name); its parser takes them all as a
        dict of NAME to value and raises ConfigError naming the variable itself."""
        return self.env.removesuffix(FAMILY) if self.env.endswith(FAMILY) else None

    @property
    def flag(self) -> str | None:
        """Secrets are read from the environment only: argv is visible in ps and in pod specs."""
        if self.secret or self.family is not None:
            return None
        return "--" + (self.flag_name or self.name.replace("_", "-"))

    @property
    def form(self) -> str:
        """The accepted form, for error messages and --help."""
        return (self.parse.__doc__ or "").strip().splitlines()[0].rstrip(".")

    @property
    def is_switch(self) -> bool:
        """A boolean flag takes no value: ``--dry-run``."""
        return self.parse is parse_bool


@dataclass(frozen=True)
class _Spec:
    env: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    secret: bool
    required: bool
    flag: str | None


@overload
def setting(
    env: str,
    parse: Callable[[str], T],
    default: str,
    help: str,
    *,
    secret: bool = ...,
    flag: str | None = ...,
) -> T: ...


@overload
def setting(
    env: str,
    parse: Callable[[str], T],
    default: None,
    help: str,
    *,
    secret: bool = ...,
    required: Literal[True],
    flag: str | None = ...,
) -> T: ...


@overload
def setting(
    env: str,
    parse: Callable[[str], T],
    default: None,
    help: str,
    *,
    secret: bool = ...,
    required: Literal[False] = ...,
    flag: str | None = ...,
) -> T | None: ...


def setting(
    env: str,
    parse: Callable[[str], Any],
    default: str | None,
    help: str,
    *,
    secret: bool = False,
    required: bool = False,
    flag: str | None = None,
) -> Any:
    """A dataclass field that is a setting; without a default and not required it may be None.

    ``flag`` names the flag when it is not ``--<field name with dashes>``. A secret is
    left out of the settings' repr, so that a settings object printed shows none.
    """
    spec = _Spec(env, parse, default, help, secret, required, flag)
    return dataclasses.field(repr=not secret, metadata={_METADATA_KEY: spec})


_DECLARED: dict[type, tuple[Setting, ...]] = {}


def settings_of(cls: type) -> tuple[Setting, ...]:
    """The settings a settings class declares (its bases' first), in declaration order."""
    if cls in _DECLARED:
        return _DECLARED[cls]
    found: list[Setting] = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_METADATA_KEY)
        if not isinstance(spec, _Spec):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        found.append(
            Setting(
                f.name,
                spec.env,
                spec.parse,
                spec.default,
                spec.help,
                secret=spec.secret,
                required=spec.required,
                flag_name=spec.flag,
            )
        )
    _DECLARED[cls] = tuple(found)
    return _DECLARED[cls]


SettingsT = TypeVar("SettingsT")


def load(
    cls: type[SettingsT], env: Mapping[str, str], flags: Mapping[str, str | None] | None = None
) -> SettingsT:
    """Parse the settings of ``cls`` from flags, then ``env``, then defaults.

    A bad value is a ConfigError naming the variable (or flag), the value and the
    accepted form, so the operator can fix it without reading code.
    """
    flags = flags or {}
    values: dict[str, Any] = {}
    for s in settings_of(cls):
        if s.family is not None:  # OCHINAI_RECEIVER_<NAME>: every variable so named
            found = {k.removeprefix(s.family): v for k, v in env.items() if k.startswith(s.family)}
            family: Any = {k: v for k, v in found.items() if k and v.strip()}
            try:
                values[s.name] = s.parse(family)
            except ConfigError:
                raise
            except Exception as exc:  # 78 naming the family, never the values (secrets)
                raise ConfigError(f"{s.env}: invalid: {exc}") from None
            continue
        raw = flags.get(s.name)
        source = s.flag or s.env
        if raw is None:
            raw = env.get(s.env)
            source = s.env
        if raw is None or (raw == "" and s.default is not None):
            raw, source = s.default, "default"
        if raw is None:
            if s.required:
                given = f" and no {s.flag} was given" if s.flag else ""
                raise ConfigError(f"{s.env} is not set{given}; expected {s.form}")
            values[s.name] = None
            continue
        try:
            values[s.name] = s.parse(raw)
        except Exception as exc:  # any parser failure is the value's fault: 78, never 70
            shown = "***" if s.secret else repr(_USERINFO.sub(r"\1***@", raw))
            raise ConfigError(f"{source}={shown} is invalid: {exc}; expected {s.form}") from None
    return cls(**values)


def masked(settings: object) -> dict[str, Any]:
    """Every value as it would be logged: secrets shown as *** when set."""
    shown: dict[str, Any] = {}
    for s in settings_of(type(settings)):
        value = getattr(settings, s.name)
        if s.secret and isinstance(value, Mapping):
            shown[s.name] = {name: "***" for name in value}
        elif s.secret:
            shown[s.name] = "***" if value else None
        elif isinstance(value, StoreLocation | ZoneInfo | date):
            shown[s.name] = str(value)
        else:
            shown[s.name] = value
    return shown


def secrets(settings: object) -> list[str]:
    """The values of the secret settings that are set, for the log redactor."""
    found: list[str] = []
    for s in settings_of(type(settings)):
        value = getattr(settings, s.name)
        if s.secret and isinstance(value, Mapping):  # a family: each variable's value
            found += [str(v) for v in value.values() if v]
        elif s.secret and value:
            found.append(str(value))
    return found
