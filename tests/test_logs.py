"""Tests of the JSON log lines: fields, context, library records and secret masking."""

from __future__ import annotations

import io
import json
import logging
import warnings
from typing import Any

import pytest

from ochinai.runtime import logs
from ochinai.runtime.errors import DataError

CORE = ("time", "severity", "message", "job", "run_id", "logger")


@pytest.fixture
def out() -> io.StringIO:
    """JSON logs configured into a buffer."""
    buf = io.StringIO()
    logs.configure(fmt="json", level="debug", stream=buf, secrets=["s3cr3t-value"])
    return buf


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    text = buf.getvalue()
    return [json.loads(line) for line in text.splitlines()]


def test_every_line_is_json_with_the_core_fields(out: io.StringIO) -> None:
    """Each record is one JSON object with time, severity, message, job, run_id and logger."""
    logs.bind(job="report", run_id="r-1")
    logging.getLogger("ochinai.test").info("hello %s", "world", extra={"rows": 3})
    [line] = lines(out)
    assert tuple(line)[:6] == CORE
    assert line["message"] == "hello world"
    assert line["job"] == "report" and line["run_id"] == "r-1"
    assert line["logger"] == "ochinai.test" and line["severity"] == "INFO"
    assert line["rows"] == 3
    assert line["time"].endswith("Z") and len(line["time"]) == len("2026-11-28T06:10:00.000Z")


def test_exception_is_one_line_with_traceback_in_exc(out: io.StringIO) -> None:
    """An exception is logged as a single line whose exc holds the traceback."""
    try:
        raise ValueError("bad row")
    except ValueError:
        logging.getLogger("ochinai.test").exception("failed")
    assert len(out.getvalue().splitlines()) == 1
    [line] = lines(out)
    assert "Traceback" in line["exc"] and "ValueError: bad row" in line["exc"]


def test_library_records_pass_at_warning_and_above_only(out: io.StringIO) -> None:
    """botocore and urllib3 debug/info are dropped; their warnings come through as JSON."""
    logging.getLogger("botocore.credentials").info("found credentials")
    logging.getLogger("urllib3.connectionpool").debug("connection")
    logging.getLogger("botocore.hooks").warning("deprecated thing")
    [line] = lines(out)
    assert line["logger"] == "botocore.hooks" and line["severity"] == "WARNING"


def test_python_warnings_are_logged_not_printed() -> None:
    """warnings.warn becomes a JSON line instead of free text."""
    buf = io.StringIO()
    with warnings.catch_warnings():
        logging.captureWarnings(False)  # pytest swapped showwarning for this test: take it back
        logs.configure(fmt="json", stream=buf)
        warnings.simplefilter("always")
        warnings.warn("old api", DeprecationWarning, stacklevel=1)
        logging.captureWarnings(False)
    [line] = lines(buf)
    assert "old api" in line["message"] and line["logger"] == "py.warnings"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("password is s3cr3t-value", "s3cr3t-value"),
        ("GET https://user:pa55word@api.example/items", "pa55word"),
        ("GET https://api.example/items?token=tok-123&page=2", "tok-123"),
        (
            "presigned https://b.s3/k?X-Amz-Signature=abcdef0123&X-Amz-Credential=AKIA/x",
            "abcdef0123",
        ),
        ("headers {'Authorization': 'Bearer eyJhbGciOi.zzz'}", "eyJhbGciOi"),
        ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI"),
        ("smtp login password: hunter2hunter2", "hunter2hunter2"),
    ],
)
def test_secrets_never_appear_in_messages(out: io.StringIO, text: str, secret: str) -> None:
    """Known secret values and secret-shaped substrings are replaced by ***."""
    logging.getLogger("ochinai.test").warning(text)
    raw = out.getvalue()
    assert secret not in raw
    assert "***" in raw


def test_secrets_never_appear_in_extras_or_tracebacks(out: io.StringIO) -> None:
    """Extras (nested too) and exception text are masked like messages."""
    try:
        raise RuntimeError("connect https://u:s3cr3t-value@host failed")
    except RuntimeError:
        logging.getLogger("ochinai.test").exception(
            "oops", extra={"url": "https://h/?token=abc123", "cfg": {"pw": "s3cr3t-value"}}
        )
    raw = out.getvalue()
    assert "s3cr3t-value" not in raw and "abc123" not in raw
    [line] = lines(out)
    assert line["cfg"] == {"pw": "***"}


def test_aws_secret_from_environment_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AWS secret key in the environment is masked wherever it shows up."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKSECRETfromENV")
    buf = io.StringIO()
    logs.configure(fmt="json", stream=buf)
    logging.getLogger("ochinai.x").error("signing with AKSECRETfromENV")
    assert "AKSECRETfromENV" not in buf.getvalue()


def test_text_format_for_people(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text form: one short line an event, severity, message and short extras."""
    buf = io.StringIO()
    logs.configure(fmt="text", stream=buf)
    logs.bind(job="report", run_id="r-9")
    log = logging.getLogger("ochinai.x")
    log.warning("slow %s", "server", extra={"wait_s": 2})
    log.info("report created", extra={"key": "out/r.xlsx"})
    log.info("starting report", extra={"settings": {f"s{n}": "x" * 50 for n in range(39)}})
    log.info("long", extra={"url": "https://example.com/" + "a" * 300})
    try:
        raise DataError("s3://b/in/sales.csv line 7, column qty: '-3' is negative")
    except DataError:
        log.exception("report failed")
    lines = buf.getvalue().splitlines()
    assert lines[0].endswith("WARNING slow server  [wait_s=2]")
    assert lines[1].endswith("INFO    report created  [key=out/r.xlsx]")  # not "report report"
    assert lines[2].endswith("[settings=(39 values: --log-level debug shows them)]")
    assert len(lines[3]) < 160 and lines[3].endswith("…]")
    assert lines[4].endswith("ERROR   report failed") and len(lines) == 5  # no traceback
    with pytest.raises(json.JSONDecodeError):
        json.loads(buf.getvalue())


def test_text_format_shows_everything_at_debug_and_the_traceback_of_a_bug() -> None:
    buf = io.StringIO()
    logs.configure(fmt="text", stream=buf)
    log = logging.getLogger("ochinai.x")
    try:
        raise KeyError("oops")
    except KeyError:
        log.exception("report failed")
    assert "Traceback" in buf.getvalue() and "KeyError" in buf.getvalue()
    buf = io.StringIO()
    logs.configure(fmt="text", level="DEBUG", stream=buf)
    log.info("starting report", extra={"settings": {"store": "s3://b"}})
    assert "settings={'store': 's3://b'}" in buf.getvalue()


def test_auto_format_is_json_when_not_a_terminal() -> None:
    """auto picks JSON for a pipe or a file."""
    buf = io.StringIO()
    logs.configure(fmt="auto", stream=buf)
    logging.getLogger("ochinai.x").info("hi")
    assert json.loads(buf.getvalue())["message"] == "hi"


def test_level_filters_ochinai_records(out: io.StringIO) -> None:
    """OCHINAI_LOG_LEVEL=warning drops ochinai's info lines."""
    buf = io.StringIO()
    logs.configure(fmt="json", level="warning", stream=buf)
    logging.getLogger("ochinai.x").info("chatter")
    logging.getLogger("ochinai.x").warning("news")
    assert [line["message"] for line in lines(buf)] == ["news"]


def test_no_line_is_longer_than_16_kib_and_long_values_say_their_length() -> None:
    """A 1 MB message, extra field and exception value: each line parses and fits 16 KiB."""
    buf = io.StringIO()
    logs.configure(fmt="json", stream=buf)
    log = logging.getLogger("ochinai.test")
    huge = "値" * 1_048_576
    try:
        raise ValueError(f"bad value {huge!r}")
    except ValueError:
        log.exception("failed on %s", huge, extra={"value": huge})
    log.info("short", extra={"value": "x"})
    first, second = buf.getvalue().splitlines()
    assert len(first.encode()) <= logs.MAX_LINE_BYTES
    line = json.loads(first)
    assert line["message"].endswith("(1,048,586 characters)") and line["message_chars"] == 1_048_586
    assert line["value_chars"] == 1_048_576 and "…" in line["value"]
    assert "Traceback (most recent call last)" in line["exc"] and "ValueError" in line["exc"]
    assert json.loads(second)["value"] == "x"  # short lines are untouched


@pytest.mark.parametrize(
    "shown",
    [
        "InvalidHeader(\"... in header value: 'k3y-Value-0123\\\\n'\")",  # repr of "k3y...\n"
        "the server said: k3y-Value-0123",  # what a library stripped before use
        '{"error": "bad key k3y-Value-0123\\n"}',  # an answer's JSON echoing it
        "GET https://api.example/items?k=k3y-Value-0123%0A",  # URL-quoted
    ],
)
def test_a_secret_is_masked_in_the_forms_messages_show_it_in(shown: str) -> None:
    """A secret with a line break at its end (echo into a Secret) is masked repr'd,
    stripped, JSON-escaped and URL-quoted too, not only as it is."""
    buf = io.StringIO()
    logs.configure(fmt="json", stream=buf, secrets=["k3y-Value-0123\n"])
    logging.getLogger("ochinai.test").error(shown)
    assert "k3y-Value" not in buf.getvalue()
    assert "***" in lines(buf)[0]["message"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pa55@api.example/items", "https://api.example/items"),
        ("https://T0KEN@api.example/items", "https://api.example/items"),
        ("https://:pa55@api.example:8443/items", "https://api.example:8443/items"),
        (
            "https://api.example/i?X-Api-Key=k3y&page=2",
            "https://api.example/i?X-Api-Key=***&page=2",
        ),
        (
            "https://api.example/i?page=2&access-token=t0k",
            "https://api.example/i?page=2&access-token=***",
        ),
        ("https://api.example/i?API_KEY=k3y#top", "https://api.example/i?API_KEY=***#top"),
        ("https://api.example/i?monkey=1&keys=2", "https://api.example/i?monkey=1&keys=2"),
    ],
)
def test_without_credentials_takes_out_the_userinfo_and_masks_credential_parameters(
    url: str, shown: str
) -> None:
    """Userinfo of any shape goes; a credential-named parameter, in any spelling, is ***."""
    assert logs.without_credentials(url) == shown


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET https://T0KEN-only@api.example/items", "T0KEN-only"),
        ("GET https://:pa55-only@api.example/items", "pa55-only"),
        ("GET https://api.example/items?X-Api-Key=k3y-header-like", "k3y-header-like"),
        ("GET https://api.example/items?a=1&access-token=t0k-dashed", "t0k-dashed"),
    ],
)
def test_userinfo_without_a_user_and_dashed_parameters_are_masked_in_logs(
    out: io.StringIO, text: str, secret: str
) -> None:
    """The log redactor masks a token as the userinfo, :password@, X-Api-Key and access-token."""
    logging.getLogger("ochinai.test").warning(text)
    assert secret not in out.getvalue() and "***" in lines(out)[0]["message"]
