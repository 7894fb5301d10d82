"""What a run says when it cannot go on: one line that names the setting, file, line, key
or URL and what to do next; a traceback only for a bug; help that reads in order."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore import exceptions as bx
from botocore.httpsession import URLLib3Session

from ochinai import cli
from ochinai.jobs.report import job as report
from ochinai.jobs.report.settings import ReportSettings
from ochinai.runtime import logs, storage
from ochinai.runtime.declare import load
from ochinai.runtime.errors import ConfigError, TransientError
from ochinai.runtime.settings import RuntimeSettings, StatusSettings
from ochinai.runtime.storage import Store, make_s3_client, unreachable
from tests.harness import Result, run_command, run_job
from tests.servers import free_ports

DATA = Path(__file__).parent / "data"
STORE = {"OCHINAI_STORE": "s3://ops"}


@pytest.fixture
def nowhere(aws_test_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """AWS_ENDPOINT_URL at a loopback port nobody listens on."""
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return endpoint


def errors_of(result: Result) -> list[str]:
    """The ERROR lines but the summary (on stdout; status logs on stderr)."""
    printed = [json.loads(line) for line in (result.out + result.err).splitlines()]
    return [
        line["message"]
        for line in printed
        if line["severity"] == "ERROR" and line.get("event") != "summary"
    ]


# --- an S3 endpoint nobody answers at -------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["report"], ["report", "--dry-run"], ["backup"], ["status", "report"]],
    ids=["report with the S3 lock", "report --dry-run", "backup", "status"],
)
def test_an_unreachable_endpoint_fails_in_seconds_with_one_line(
    nowhere: str, argv: list[str]
) -> None:
    """75 within seconds, one ERROR line naming the endpoint used and AWS_ENDPOINT_URL, no
    retry lines and no traceback."""
    started = time.monotonic()
    result = run_command(argv, {**STORE, "OCHINAI_LOCK": "s3"})
    assert time.monotonic() - started < 15
    assert result.code == 75
    [error] = errors_of(result)
    assert f"cannot reach the S3 endpoint {nowhere} (AWS_ENDPOINT_URL)" in error
    assert "check AWS_ENDPOINT_URL" in error
    everything = result.out + result.err
    assert "trying again" not in everything and '"exc"' not in everything


@pytest.fixture
def silent(aws_test_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS_ENDPOINT_URL at a loopback port that drops every new connection, as a firewall
    does: its one-connection queue is full and never accepted, so a connect times out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = [socket.socket() for _ in range(3)]
    for client in queued:
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            client.connect(("127.0.0.1", port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(storage, "CONNECT_TIMEOUT", 0.5)
    yield f"http://127.0.0.1:{port}"
    for sock in [*queued, server]:
        sock.close()


def test_an_endpoint_that_drops_packets_is_tried_twice_in_all(
    silent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No connection in time: two tries of the first request, one line, and the records
    the failed run writes at its end are given up at once, not tried on the same address."""
    sent: list[str] = []
    real_send = URLLib3Session.send

    def counted(self: URLLib3Session, request: Any) -> Any:
        sent.append(request.url)
        return real_send(self, request)

    monkeypatch.setattr(URLLib3Session, "send", counted)
    result = run_command(["report"], {**STORE, "OCHINAI_LOCK": "s3"})
    assert result.code == 75
    [error] = errors_of(result)
    assert f"cannot reach the S3 endpoint {silent} (AWS_ENDPOINT_URL) after 2 tries" in error
    assert "no connection within 0.5s" in error
    assert len(sent) == 2, sent
    warnings = [line["message"] for line in result.lines if line["severity"] == "WARNING"]
    assert f"the run record is not written: {silent} cannot be reached" in warnings


def test_the_default_aws_endpoint_is_named_as_such(
    aws_test_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without AWS_ENDPOINT_URL boto3 goes to AWS itself: the error says so, and what to set."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    client = make_s3_client()
    failed = bx.EndpointConnectionError(endpoint_url="https://ops.s3.amazonaws.com/in/sales.csv")
    said = str(unreachable(failed, "s3://ops/in/sales.csv", client))
    assert f"the S3 endpoint {client.meta.endpoint_url} (the default AWS endpoint" in said
    assert "AWS_ENDPOINT_URL is not set" in said and "set AWS_ENDPOINT_URL to" in said


@pytest.fixture
def answering() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server that answers 404 to everything, until shut down."""

    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.server_close()


def test_an_endpoint_that_answered_before_is_a_blip_retried(
    aws_test_env: None, answering: ThreadingHTTPServer
) -> None:
    """Refused after it answered once in this process: a TransientError, which the run's
    loops retry, not EndpointUnreachable."""
    endpoint = f"http://127.0.0.1:{answering.server_address[1]}"
    client = make_s3_client(endpoint_url=endpoint, connect_timeout=1, max_attempts=1)
    store = Store(client, "ops")
    assert store.head("a.txt") is None  # it answered
    answering.shutdown()
    answering.server_close()
    with pytest.raises(TransientError):
        store.get("a.txt")


def test_any_answer_marks_the_endpoint_reached_however_it_is_spelled(
    aws_test_env: None, answering: ThreadingHTTPServer
) -> None:
    """An answer to a raw client's request (no Store around it) marks the endpoint reached,
    and the same endpoint spelled with a slash or in capitals is the same one."""
    port = answering.server_address[1]
    client = make_s3_client(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    with pytest.raises(bx.ClientError):
        client.head_object(Bucket="ops", Key="a.txt")  # 404: an answer
    assert storage._host(f"HTTP://127.0.0.1:{port}/") in storage._reached


def test_repeated_warnings_are_said_once_with_a_count() -> None:
    """21 identical warnings (a loop trying again) are one line and a count."""
    out = io.StringIO()
    logs.configure(fmt="json", stream=out)
    log = logging.getLogger("ochinai.test")
    for _ in range(21):
        log.warning("lock s3://ops/_locks/x.json: SlowDown (503); trying again")
    log.info("acquired lock")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["message"].endswith("trying again")
    assert lines[1]["repeated"] == 20 and "repeated 20 more times" in lines[1]["message"]
    assert lines[2]["message"] == "acquired lock" and len(lines) == 3


# --- tracebacks only for bugs ------------------------------------------------------------


@pytest.fixture
def sales(moto_ops: Any) -> Any:
    """moto with the bucket ops; ``sales(name)`` uploads tests/data/NAME as the input."""

    def upload(name: str) -> None:
        body = (DATA / name).read_bytes()
        moto_ops.put_object(Bucket="ops", Key="in/sales.csv", Body=body)

    return upload


def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to look for


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize(
    ("scenario", "code", "named"),
    [
        ("missing S3 keys", 78, "AWS_ACCESS_KEY_ID"),
        ("an unreachable endpoint", 75, "AWS_ENDPOINT_URL"),
        ("a bad setting value", 78, "OCHINAI_REPORT_MAX_BAD_ROWS='lots'"),
        ("a missing bucket", 77, "NoSuchBucket"),
        ("a bad CSV row", 65, "line 2, column qty"),
        ("a missing --to", 78, "--to"),
    ],
)
def test_an_expected_error_is_one_line_without_a_traceback(
    aws_test_env: None,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    scenario: str,
    code: int,
    named: str,
    fmt: str,
) -> None:
    env = {**STORE, "OCHINAI_LOG_FORMAT": fmt, "OCHINAI_LOCK": "s3"}
    argv = ["report"]
    if scenario == "missing S3 keys":
        request.getfixturevalue("nowhere")
        _no_keys(monkeypatch)
    elif scenario == "an unreachable endpoint":
        request.getfixturevalue("nowhere")
    elif scenario == "a bad setting value":
        env["OCHINAI_REPORT_MAX_BAD_ROWS"] = "lots"
    elif scenario == "a missing bucket":
        request.getfixturevalue("moto_ops")
        env["OCHINAI_STORE"] = "s3://no-such-bucket"
    elif scenario == "a bad CSV row":
        request.getfixturevalue("sales")("bad_qty_not_number.csv")
        env["OCHINAI_DATE"] = "2026-11-28"
    else:
        request.getfixturevalue("nowhere")
        argv = ["backup", "restore"]
    result = run_command(argv, env)
    assert result.code == code, result.out
    assert named in result.out
    assert "Traceback" not in result.out + result.err
    if fmt == "json":
        assert not [line for line in result.lines if "exc" in line]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_bug_still_has_its_traceback(
    sales: Any, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """An exception of no class of ours is a bug (70): its traceback is logged, in both forms."""
    sales("sales_utf8.csv")

    def broken(*args: Any) -> str:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(report, "fingerprint", broken)
    result = run_job("report", "--date", "2026-11-28", env={**STORE, "OCHINAI_LOG_FORMAT": fmt})
    assert result.code == 70
    assert "Traceback (most recent call last)" in result.out and "ZeroDivisionError" in result.out
    if fmt == "json":
        [failed] = [line for line in result.lines if "exc" in line]
        assert "a bug" in failed["message"]


# --- settings in the reader's words -------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "variable", "value", "said"),
    [
        (ReportSettings, "OCHINAI_REPORT_MAX_BAD_ROWS", "lots", "not a whole number"),
        (ReportSettings, "OCHINAI_REPORT_MAX_BAD_ROWS", "-1", "-1 is less than 0"),
        (ReportSettings, "OCHINAI_REPORT_MAX_BAD_ROWS", "2.5", "not a whole number"),
        (RuntimeSettings, "OCHINAI_ALERT_AFTER", "0", "0 is less than 1"),
        (RuntimeSettings, "OCHINAI_S3_TIMEOUT", "a minute", "'a minute' is not a duration"),
        (RuntimeSettings, "OCHINAI_MULTIPART_THRESHOLD", "big", "not a size"),
        (RuntimeSettings, "OCHINAI_DATE", "tomorrow", "not a date"),
        (RuntimeSettings, "OCHINAI_DRY_RUN", "maybe", "neither true nor false"),
        (RuntimeSettings, "OCHINAI_LOCK", "redis", "not one of the choices"),
        (StatusSettings, "OCHINAI_STATUS_MAX_AGES", "monitor=1hour", "'1hour' is not a duration"),
    ],
)
def test_a_bad_value_is_said_in_the_readers_words(
    cls: type, variable: str, value: str, said: str
) -> None:
    """Each kind of parser names the variable, the value, what is wrong and an example."""
    with pytest.raises(ConfigError) as caught:
        load(cls, {**STORE, variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}={value!r} is invalid: {said}; expected ")
    assert "invalid literal" not in message and "isoformat" not in message


@pytest.mark.parametrize(
    ("variable", "form"),
    [
        ("OCHINAI_REPORT_MAX_BAD_ROWS", "a whole number such as 3 (0 or more)"),
        ("OCHINAI_ALERT_AFTER", "a whole number such as 3 (1 or more)"),
        ("OCHINAI_S3_TIMEOUT", "a duration such as 30s, 5m, 2h or 1d"),
        ("OCHINAI_MAIL_MAX_BYTES", "a size such as 64MiB"),
        ("OCHINAI_DATE", "a date as YYYY-MM-DD"),
    ],
)
def test_each_kind_says_its_form_with_an_example(variable: str, form: str) -> None:
    classes = (RuntimeSettings, ReportSettings)
    [setting] = [s for cls in classes for s in cli.settings_of(cls) if s.env == variable]
    assert setting.form.startswith(form)


# --- what an action needs is checked before it starts -------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["backup", "restore"], {}, ("--to", "OCHINAI_BACKUP_RESTORE_TO")),
        (["monitor"], {}, ("--url", "OCHINAI_MONITOR_URL")),
        (["monitor", "--mode", "html"], {}, ("--pages", "OCHINAI_MONITOR_PAGES")),
    ],
)
def test_a_needed_setting_is_78_before_any_lock_or_s3_request(
    nowhere: str, argv: list[str], env: dict[str, str], named: tuple[str, ...]
) -> None:
    """An endpoint nobody answers at would make any S3 request 75: 78 says none was sent."""
    result = run_command(argv, {**STORE, "OCHINAI_LOCK": "s3", **env})
    assert result.code == 78
    [error] = errors_of(result)
    assert all(name in error for name in named)


# --- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "help_command"),
    [
        (["report", "--bogus"], "ochinai report --help"),
        (["backup", "restore", "--bogus"], "ochinai backup restore --help"),
        (["status", "--bogus"], "ochinai status --help"),
        (["--bogus"], "ochinai --help"),
    ],
)
def test_a_usage_error_names_the_commands_own_help(argv: list[str], help_command: str) -> None:
    result = run_command(argv, STORE)
    assert result.code == 64 and result.out == ""
    assert f"run '{help_command}'" in result.err


@pytest.mark.parametrize(
    ("env_format", "flag_format"), [("json", "text"), ("text", "json")], ids=["text", "json"]
)
def test_the_log_format_flag_holds_when_another_setting_is_wrong(
    env_format: str, flag_format: str
) -> None:
    env = {**STORE, "OCHINAI_LOG_FORMAT": env_format, "OCHINAI_REPORT_MAX_BAD_ROWS": "lots"}
    result = run_command(["report", "--log-format", flag_format], env)
    assert result.code == 78 and "OCHINAI_REPORT_MAX_BAD_ROWS" in result.out
    as_json = all(line.startswith("{") for line in result.out.splitlines())
    assert as_json == (flag_format == "json")


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main([*argv, "--help"], env={}) == 0
    return capsys.readouterr().out


def test_a_jobs_help_shows_its_own_settings_first_then_the_shared_in_groups(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(["report"], capsys)
    headings = [line for line in text.splitlines() if line.endswith(":") and line[:1] != " "]
    assert headings == [
        "options:",
        "report settings:",
        "storage (every job):",
        "the lock (every job):",
        "logs (every job):",
        "notices and monitoring (every job):",
        "the run (every job):",
    ]
    flags = ["--input", "--max-bad-rows", "--store", "--lock-wait", "--log-format", "--smtp-host"]
    places = [text.index(f"\n  {flag} ") for flag in [*flags, "--date"]]
    assert places == sorted(places)


def test_a_jobs_help_ends_with_the_aws_variables_and_the_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(["report"], capsys)
    epilog = text[text.index("The S3 endpoint and keys") :]
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        assert name in epilog
    secrets = " ".join(epilog[epilog.index("From the environment only") :].split())
    for name in ("OCHINAI_MASK_KEY", "OCHINAI_SMTP_PASSWORD", "OCHINAI_WEBHOOK_URL"):
        assert name in secrets


def test_an_actions_help_shows_its_own_settings_then_its_jobs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(["backup", "restore"], capsys)
    assert text.startswith("usage: ochinai backup restore [flags]")
    own, job = text.index("backup restore settings:"), text.index("backup settings:")
    assert own < text.index("--to TO") < job < text.index("--keep KEEP") < text.index("--store")
    assert "[OCHINAI_BACKUP_RESTORE_TO; required;" in " ".join(text.split())
    assert "OCHINAI_BACKUP_KEY" in text[text.index("From the environment only") :]
