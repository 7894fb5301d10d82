"""JSON lines on stdout with the run's context on every line, and secrets masked."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TextIO
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

from ochinai.runtime.errors import EX_SOFTWARE, OchinaiError

MASK = "***"

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_RECORD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_CORE_FIELDS = ("time", "severity", "message", "job", "run_id", "logger")
# Loggers of libraries that only reach the output at WARNING and above.
LIBRARY_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3", "kubernetes", "requests")

# Query parameters whose value is a credential, by their name compared without case, "-"
# or "_" (api_key, API-Key, X-Api-Key, access-token). A presigned URL is a credential
# until it expires, hence the X-Amz- ones.
SECRET_PARAMS = frozenset(
    (
        "accesstoken",
        "authtoken",
        "token",
        "apikey",
        "xapikey",
        "key",
        "password",
        "passwd",
        "pwd",
        "secret",
        "clientsecret",
        "sig",
        "signature",
        "xamzsignature",
        "xamzcredential",
        "xamzsecuritytoken",
    )
)


def is_secret_param(name: str) -> bool:
    """Whether a query parameter of this name carries a credential (``SECRET_PARAMS``)."""
    return name.lower().replace("-", "").replace("_", "") in SECRET_PARAMS


def _spelled(name: str) -> str:
    """A regex of ``name`` with a "-" or "_" allowed between any two of its letters."""
    return "[-_]?".join(re.escape(c) for c in name)


_SECRET_PARAM = re.compile(
    r"(?i)([?&](?:"
    + "|".join(sorted(map(_spelled, SECRET_PARAMS), key=len, reverse=True))
    + r")=)[^&\s#\"'<>]+"
)
_URL_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # https://user:password@host, https://:password@host, https://TOKEN@host -> https://***@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#]+@"), rf"\g<1>{MASK}@"),
    # ?token=..., &X-Api-Key=..., &X-Amz-Signature=...
    (_SECRET_PARAM, rf"\g<1>{MASK}"),
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    *_URL_PATTERNS,
    # Authorization: Bearer ..., 'Authorization': 'AWS4-HMAC-SHA256 Credential=...'
    (re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)[^\"'\n]+"), rf"\g<1>{MASK}"),
    # password=..., "aws_secret_access_key": "..."
    (
        re.compile(
            r"(?i)(\b(?:password|passwd|aws_secret_access_key|secret_access_key|secret_key"
            r"|session_token|api_key|access_token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+"
        ),
        rf"\g<1>{MASK}",
    ),
)


def without_credentials(url: str) -> str:
    """``url`` as a log or a message may show it: no userinfo, credential-named query values
    masked.

    The userinfo (``user:password@``, ``:password@``, ``TOKEN@``) is taken out, not
    masked, so the URL still opens; a value such as ``?api_key=`` or ``&X-Amz-Signature=``
    becomes ***.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL urlsplit takes (a bad [IPv6] host): mask what looks like one
        parts = None
    if parts is not None and "@" in parts.netloc:
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    for pattern, repl in _URL_PATTERNS:
        url = pattern.sub(repl, url)
    return url


def forms(value: str) -> set[str]:
    """``value`` in each form a message may show it in.

    As is; without the white space around it (a Kubernetes Secret made with ``echo``
    ends with a line break); inside a repr or a JSON string (an exception's repr of a
    bad header shows ``'key\\n'``); URL-quoted.
    """
    shown = {value, value.strip(), repr(value)[1:-1]}
    shown |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    shown |= {quote(value, safe=""), quote(value), quote_plus(value)}
    return shown


class Redactor:
    """Masks known secret values and secret-shaped substrings (URL passwords, tokens)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, *values: str | None) -> None:
        """Remember secret values, each in the forms it takes in text (``forms``).

        Anything shorter than 4 characters would mask noise.
        """
        with self._lock:
            known = set(self._values)
            known.update(f for v in values if v for f in forms(v) if len(f) >= 4)
            # Longest first, so a secret containing another is masked whole.
            self._values = tuple(sorted(known, key=len, reverse=True))

    def clear(self) -> None:
        """Forget the remembered values (tests)."""
        with self._lock:
            self._values = ()

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret masked."""
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def redact_value(self, value: Any) -> Any:
        """Redact strings inside JSON-like values; other values pass unchanged."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(v) for v in value]
        return value


redactor = Redactor()

_context_lock = threading.Lock()
_context: dict[str, Any] = {}


def bind(**fields: Any) -> None:
    """Add fields to every later line of this process (all threads: a run is a process)."""
    with _context_lock:
        _context.update({k: v for k, v in fields.items() if v is not None})


def unbind(*names: str) -> None:
    """Remove bound fields."""
    with _context_lock:
        for name in names:
            _context.pop(name, None)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Bind fields for the duration of a block."""
    bind(**fields)
    try:
        yield
    finally:
        unbind(*fields)


def context() -> dict[str, Any]:
    """A copy of the bound fields."""
    with _context_lock:
        return dict(_context)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}


def _utc_time(record: logging.LogRecord) -> str:
    when = datetime.fromtimestamp(record.created, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


# Container runtimes split a log line at 16 KiB, and the pieces are no JSON for the log
# stack; so no line is longer. Long values are cut with … and their length is kept.
MAX_LINE_BYTES = 16 * 1024
_MAX_VALUE_CHARS = 2048
_MAX_TRACE_LINE = 500
_SUMMARY_FIELDS = ("event", "outcome", "exit_code", "duration_s", "signal")
ELLIPSIS = "…"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with … and its length, when it is longer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}{ELLIPSIS} ({len(text):,} characters)"


def _fit(fields: dict[str, Any]) -> str:
    """The JSON line of ``fields`` within MAX_LINE_BYTES, cutting long values."""
    for key, value in list(fields.items()):
        if key == "exc" and isinstance(value, str):
            # A traceback keeps its frames; the values in them are cut.
            lines = value.splitlines()
            fields[key] = "\n".join(shorten(line, _MAX_TRACE_LINE) for line in lines)
            continue
        text = value if isinstance(value, str) else None
        if isinstance(value, dict | list) and len(str(value)) > _MAX_VALUE_CHARS:
            text = json.dumps(value, ensure_ascii=False, default=str)
        if text is not None and len(text) > _MAX_VALUE_CHARS:
            fields[key] = shorten(text, _MAX_VALUE_CHARS)
            fields[f"{key}_chars"] = len(text)
    line = json.dumps(fields, ensure_ascii=False, default=str)
    if len(line.encode()) > MAX_LINE_BYTES and isinstance(fields.get("exc"), str):
        exc = fields["exc"]  # very many frames: the last ones say most
        fields["exc"] = ELLIPSIS + exc[-(MAX_LINE_BYTES // 4) :]
        line = json.dumps(fields, ensure_ascii=False, default=str)
    if len(line.encode()) > MAX_LINE_BYTES:  # many long fields: keep those that matter most
        keep = (*_CORE_FIELDS, *_SUMMARY_FIELDS, "exc")
        core = {k: fields[k] for k in keep if k in fields}
        core["truncated_fields"] = sorted(set(fields) - set(core))
        line = json.dumps(core, ensure_ascii=False, default=str)
    return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: the core fields, flat extras, ``exc`` with the traceback
    of a bug (exit 70; of any error with ``debug``, --log-level debug).

    An expected error (our classes but 70: a setting, an input, a server) is its message,
    which names the setting, file, line, key or URL; its traceback would only hide it.
    No line is longer than MAX_LINE_BYTES: long values are cut (``shorten``).
    """

    def __init__(self, debug: bool = False) -> None:
        super().__init__()
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": _utc_time(record),
            "severity": record.levelname,
            "message": redactor.redact(record.getMessage()),
            "job": None,
            "run_id": None,
            "logger": record.name,
        }
        for key, value in {**context(), **_extras(record)}.items():
            if key in ("time", "severity", "message", "logger"):
                key = f"field_{key}"
            fields[key] = redactor.redact_value(value)
        if record.exc_info and (self.debug or _is_bug(record.exc_info[1])):
            fields["exc"] = redactor.redact(self.formatException(record.exc_info))
        elif record.stack_info:
            fields["exc"] = redactor.redact(self.formatStack(record.stack_info))
        line = json.dumps(fields, ensure_ascii=False, default=str)
        if len(line) * 4 > MAX_LINE_BYTES and len(line.encode()) > MAX_LINE_BYTES:
            return _fit(fields)
        return line


class TextFormatter(logging.Formatter):
    """The same events for a person at a terminal: one short line each.

    Time, severity, message, then key=value. A value that is a mapping or a list (the
    settings of the run) or longer than TEXT_VALUE characters is folded, and a traceback
    is shown only for a bug (exit 70); ``debug`` (--log-level debug) shows them whole.
    The JSON form always carries everything.
    """

    def __init__(self, debug: bool = False) -> None:
        super().__init__()
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        skip = {"job", "run_id", "event"}
        extras = " ".join(
            f"{k}={self._value(v)}"
            for k, v in _extras(record).items()
            if k not in skip and v is not None
        )
        line = f"{when} {record.levelname:<7} {redactor.redact(record.getMessage())}"
        if extras:
            line += f"  [{extras}]"
        if record.exc_info and (self.debug or _is_bug(record.exc_info[1])):
            line += "\n" + redactor.redact(self.formatException(record.exc_info))
        return line

    def _value(self, value: object) -> str:
        if not self.debug and isinstance(value, dict | list | tuple):
            return f"({len(value)} values: --log-level debug shows them)"
        text = str(redactor.redact_value(value))
        if not self.debug and len(text) > TEXT_VALUE:
            return text[: TEXT_VALUE - 1] + "…"
        return text


TEXT_VALUE = 120  # characters of one value in a text line


def _is_bug(error: BaseException | None) -> bool:
    """Not one of our error classes, or our class for a bug: its traceback is news."""
    return not isinstance(error, OchinaiError) or error.exit_code == EX_SOFTWARE


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time of the record, flushing every line.

    A WARNING or worse that says word for word what the line before it said (message,
    logger and fields: a loop trying a server again) is counted, not written again; the
    next other line is preceded by one that says how many came (``repeated``).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._fixed = stream
        self._last: tuple[object, ...] | None = None  # what the line written last said
        self._shown: logging.LogRecord | None = None  # and that line
        self._repeat: logging.LogRecord | None = None  # the latest line that repeated it
        self._count = 0

    def emit(self, record: logging.LogRecord) -> None:
        key = _repeat_key(record)
        if key is not None and key == self._last:
            self._repeat, self._count = record, self._count + 1
            return
        self._write_repeats()
        self._last, self._shown = key, record
        super().emit(record)

    def _write_repeats(self) -> None:
        last, first, count = self._repeat, self._shown, self._count
        self._repeat, self._count = None, 0
        if last is None or first is None:
            return
        super().emit(
            logging.makeLogRecord(
                {
                    "name": last.name,
                    "levelno": last.levelno,
                    "levelname": last.levelname,
                    "msg": "last message repeated %d more times over %.0f s",
                    "args": (count, last.created - first.created),
                    "created": last.created,
                    "msecs": last.msecs,
                    "repeated": count,
                }
            )
        )

    def close(self) -> None:
        """Say the repeats not said yet, then close."""
        with self.lock or contextlib.nullcontext():
            self._write_repeats()
        super().close()

    @property
    def stream(self) -> TextIO:
        return self._fixed or sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        self._fixed = value


def _repeat_key(record: logging.LogRecord) -> tuple[object, ...] | None:
    """What a WARNING or worse says, to tell a repeat of it; None below WARNING."""
    if record.levelno < logging.WARNING:
        return None
    return (record.name, record.levelno, record.getMessage(), repr(_extras(record)))


def configure(
    *,
    level: str = "INFO",
    fmt: Literal["auto", "json", "text"] = "auto",
    stream: TextIO | None = None,
    secrets: Iterable[str | None] = (),
) -> None:
    """Install the one handler on the root logger; only entry points call this."""
    target = stream or sys.stdout
    if fmt == "auto":
        fmt = "text" if target.isatty() else "json"
    handler = StdoutHandler(stream)
    debug = level.upper() == "DEBUG"
    handler.setFormatter(JsonFormatter(debug) if fmt == "json" else TextFormatter(debug))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, StdoutHandler):
            old.close()  # the repeats it counted
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("ochinai").setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    redactor.add(
        *secrets,
        os.environ.get("AWS_SECRET_ACCESS_KEY"),
        os.environ.get("AWS_SESSION_TOKEN"),
    )
