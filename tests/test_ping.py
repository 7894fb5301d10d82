"""Check-ins (runtime/ping.py) against a local server that records the Healthchecks protocol."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ochinai.runtime.cancel import cancellation
from ochinai.runtime.http import HttpClient
from ochinai.runtime.ping import BODY_LIMIT, CUT_MARK, Pinger, cut_body, run_uuid

# The check's credential, as in https://hc-ping.com/<uuid> or .../<ping-key>/<slug>.
TOKEN = "5a1e3c0d-7b2f-4e0a-9c8d-SeCrEtToKeN"
PATH = f"/ping/{TOKEN}"
RUN_ID = "report-20261128T061000Z-ab12cd"


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b"OK"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line


@dataclass(frozen=True)
class Seen:
    """One request as the server got it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str]


@dataclass
class Check:
    """A Healthchecks-like ping endpoint: the answers it gives, the requests it got."""

    port: int
    script: list[Reply] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = PATH) -> str:
        """The URL of ``path`` on this server (by default the check's ping URL)."""
        return f"http://127.0.0.1:{self.port}{path}"

    def then(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order; then 200 "OK"."""
        with self._lock:
            self.script.extend(replies)

    def next_reply(self) -> Reply:
        with self._lock:
            return self.script.pop(0) if self.script else Reply()


class CheckHandler(BaseHTTPRequestHandler):
    """Record every request first, then answer as the script says."""

    server: CheckServer
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        check = self.server.check
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        parts = urlsplit(self.path)
        seen = Seen(self.command, parts.path, parse_qs(parts.query), body, dict(self.headers))
        with check._lock:
            check.seen.append(seen)
        reply = check.next_reply()
        try:
            if reply.delay:
                time.sleep(reply.delay)  # the slow server is the point
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting: that is the test

    do_GET = do_POST = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet: ``Check.seen`` is the record."""


class CheckServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that carries its Check."""

    daemon_threads = True
    block_on_close = False
    check: Check


@contextlib.contextmanager
def check_on() -> Iterator[Check]:
    """Serve a Check on a free loopback port until the block ends."""
    server = CheckServer(("127.0.0.1", 0), CheckHandler)
    server.check = Check(port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.check
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def check() -> Iterator[Check]:
    """A recording ping endpoint for one test."""
    with check_on() as served:
        yield served


@pytest.fixture
def sleeps() -> list[float]:
    """The backoff waits the client was asked for (none is slept for real)."""
    return []


@pytest.fixture
def http(sleeps: list[float]) -> Iterator[HttpClient]:
    """A client that never sleeps for real."""
    client = HttpClient(sleep=sleeps.append)
    yield client
    client.close()


def pinger(url: str | None, http: HttpClient, **kwargs: Any) -> Pinger:
    return Pinger(url, RUN_ID, http, **kwargs)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ochinai.ping" and r.levelno == logging.WARNING]


def shown(record: logging.LogRecord) -> str:
    """Everything a log line could show: the message and every field of the record."""
    return f"{record.getMessage()} {record.__dict__!r}"


# --- 1. start, then success ------------------------------------------------------------


def test_start_then_success_pair_up_by_rid(check: Check, http: HttpClient) -> None:
    ping = pinger(check.url(), http)
    summary = '{"outcome": "ok", "rows": 120, "job": "report"}'

    assert ping.configured
    assert ping.start() is True
    assert ping.success(summary) is True

    start, end = check.seen
    assert (start.method, start.path, start.body) == ("POST", f"{PATH}/start", b"")
    assert (end.method, end.path, end.body) == ("POST", PATH, summary.encode())
    assert start.query == end.query == {"rid": [ping.rid]}
    assert uuid.UUID(ping.rid).version == 5
    assert str(uuid.UUID(ping.rid)) == ping.rid
    assert ping.failed == 0
    # Stable for the run id, whichever process derives it; another run, another rid.
    assert Pinger(check.url(), RUN_ID, http).rid == ping.rid == run_uuid(RUN_ID)
    assert Pinger(check.url(), RUN_ID + "-2", http).rid != ping.rid
    assert end.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_an_existing_query_is_kept_and_rid_set_once(check: Check, http: HttpClient) -> None:
    ping = pinger(check.url(f"{PATH}/?create=1&rid=stale"), http)

    assert ping.start() and ping.success("ok")

    assert [s.path for s in check.seen] == [f"{PATH}/start", PATH]
    assert all(s.query == {"create": ["1"], "rid": [ping.rid]} for s in check.seen)


# --- 2. start, then fail ---------------------------------------------------------------


def test_start_then_fail_sends_the_errors(check: Check, http: HttpClient) -> None:
    ping = pinger(check.url(), http)
    errors = "data_error: 売上.csv 行 12: 金額が数値ではありません\nexit 65"

    assert ping.start() and ping.fail(errors)

    assert [s.path for s in check.seen] == [f"{PATH}/start", f"{PATH}/fail"]
    assert check.seen[1].body.decode("utf-8") == errors
    assert check.seen[0].query == check.seen[1].query == {"rid": [ping.rid]}


def test_a_body_of_300_kb_is_cut_to_100_kb_of_valid_utf8(check: Check, http: HttpClient) -> None:
    errors = "エラー" * 34_000  # 9 bytes each: 306,000 bytes; the cut falls inside a character
    assert len(errors.encode()) > 300_000

    assert pinger(check.url(), http).fail(errors) is True

    body = check.seen[0].body
    assert len(body) <= BODY_LIMIT
    assert len(body) > BODY_LIMIT - 20
    text = body.decode("utf-8")  # strict: no character was split
    assert text.endswith(CUT_MARK)
    assert errors.startswith(text.removesuffix(CUT_MARK))


def test_cut_body_keeps_short_bodies_and_never_splits_a_character() -> None:
    assert cut_body("ok") == b"ok"
    exact = "a" * BODY_LIMIT
    assert cut_body(exact) == exact.encode()
    for pad in range(4):  # every offset of a 3-byte character against the limit
        body = cut_body("a" * pad + "日本語" * 40_000)
        assert len(body) <= BODY_LIMIT
        assert body.decode("utf-8").endswith(CUT_MARK)


# --- 3. log --------------------------------------------------------------------------


def test_log_for_a_skipped_run(check: Check, http: HttpClient) -> None:
    ping = pinger(check.url(), http)

    assert ping.log("skipped_locked: another run holds the lock (report-20261128T060000Z)")

    (seen,) = check.seen
    assert (seen.method, seen.path, seen.query) == ("POST", f"{PATH}/log", {"rid": [ping.rid]})
    assert seen.body.startswith(b"skipped_locked: ")


# --- 4. retries, refusals, timeouts ------------------------------------------------


def test_a_500_twice_then_200_is_retried(
    check: Check, http: HttpClient, sleeps: list[float]
) -> None:
    check.then(Reply(500, b"oops"), Reply(503, b"busy"))
    ping = pinger(check.url(), http)

    assert ping.success("ok") is True

    assert [s.path for s in check.seen] == [PATH] * 3
    assert [s.body for s in check.seen] == [b"ok"] * 3
    assert ping.failed == 0
    assert len(sleeps) == 2
    assert all(0 <= s <= 2.0 for s in sleeps)


def test_a_429_is_retried_after_its_retry_after(
    check: Check, http: HttpClient, sleeps: list[float]
) -> None:
    check.then(Reply(429, b"rate limited", {"Retry-After": "1"}))

    assert pinger(check.url(), http).start() is True

    assert len(check.seen) == 2
    assert sleeps == [1.0]


def test_500_every_time_gives_up_after_tries(
    check: Check, http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    check.then(*[Reply(500)] * 5)
    ping = pinger(check.url(), http, tries=3)

    assert ping.success("ok") is False

    assert len(check.seen) == 3
    assert ping.failed == 1
    assert "gave up after 3 tries" in warnings_of(caplog)[-1].error  # type: ignore[attr-defined]


def test_a_404_is_not_retried_and_named_by_host_only(
    check: Check, http: HttpClient, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    # The check was deleted; the error page echoes the path, token and all.
    check.then(Reply(404, f"not found: {PATH}/fail?rid=x".encode()))
    ping = pinger(check.url(), http)

    with caplog.at_level(logging.INFO, logger="ochinai"):
        assert ping.fail("boom") is False

    assert len(check.seen) == 1
    assert sleeps == []
    assert ping.failed == 1
    (record,) = warnings_of(caplog)
    assert record.getMessage() == "check-in not delivered"
    assert record.target == "check-in http://127.0.0.1"  # type: ignore[attr-defined]
    error = record.error  # type: ignore[attr-defined]
    assert error.startswith("check-in http://127.0.0.1: HTTP 404")
    assert "no such check" in error and "OCHINAI_PING_URL" in error
    assert "not found: ***" in error
    assert TOKEN not in shown(record)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("status", [400, 401, 409])
def test_other_4xx_are_not_retried(check: Check, http: HttpClient, status: int) -> None:
    check.then(Reply(status))
    ping = pinger(check.url(), http)

    assert ping.start() is False
    assert len(check.seen) == 1
    assert ping.failed == 1


def test_a_server_that_holds_its_answer_is_a_bounded_failure(
    check: Check, http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    check.then(*[Reply(delay=1.5)] * 3)
    ping = pinger(check.url(), http, timeout=0.3, tries=3)

    began = time.monotonic()
    assert ping.success("ok") is False
    took = time.monotonic() - began

    assert took < 8.0  # 3 tries of 0.3 s (+ connect): generous on a loaded machine
    assert len(check.seen) == 3
    assert ping.failed == 1
    (record,) = warnings_of(caplog)
    assert "timed out" in record.error  # type: ignore[attr-defined]
    assert TOKEN not in shown(record)


def test_nobody_listening_is_a_failure_not_an_exception(
    http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    with check_on() as gone:
        url = gone.url()
    ping = pinger(url, http, tries=2)

    assert ping.start() is False
    assert ping.success("ok") is False
    assert ping.failed == 2
    assert all(TOKEN not in shown(r) for r in warnings_of(caplog))


# --- 5. redirects ---------------------------------------------------------------------


def test_a_302_is_not_followed(
    check: Check, http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    with check_on() as elsewhere:
        check.then(Reply(302, b"", {"Location": elsewhere.url(f"/moved{PATH}")}))
        ping = pinger(check.url(), http)

        assert ping.success("ok") is False

        assert elsewhere.seen == []
    assert len(check.seen) == 1
    assert ping.failed == 1
    (record,) = warnings_of(caplog)
    assert "HTTP 302" in record.error  # type: ignore[attr-defined]
    assert "not followed" in record.error  # type: ignore[attr-defined]
    assert TOKEN not in shown(record)


# --- 6. not configured ----------------------------------------------------------------


class NoSession:
    """A session that must never be used."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a request was sent")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("url", [None, ""])
def test_not_configured_sends_nothing(url: str | None, caplog: pytest.LogCaptureFixture) -> None:
    ping = Pinger(url, RUN_ID, HttpClient(session=NoSession()))  # type: ignore[arg-type]

    assert ping.configured is False
    assert ping.start() and ping.success("ok") and ping.fail("x") and ping.log("y")
    assert ping.failed == 0
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("url", [f"ftp://hc.example{PATH}", f"http://[hc.example{PATH}", PATH])
def test_a_url_that_is_not_http_is_a_failure_that_does_not_echo_it(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ping = Pinger(url, RUN_ID, HttpClient(session=NoSession()))  # type: ignore[arg-type]

    assert ping.configured is True
    assert ping.start() is False
    assert ping.failed == 1
    (record,) = warnings_of(caplog)
    assert "not an http(s) URL" in record.error  # type: ignore[attr-defined]
    assert TOKEN not in shown(record)


def test_a_dry_run_client_refuses_the_post(check: Check) -> None:
    # The caller does not ping in a dry run; if it did, nothing would be sent.
    ping = pinger(check.url(), HttpClient(dry_run=True))

    assert ping.start() is False
    assert check.seen == []
    assert ping.failed == 1


# --- 7. after a stop ------------------------------------------------------------------


@pytest.mark.parametrize("left", [0.5, 0.0])
def test_stopped_with_under_a_second_left_skips_with_a_warning(
    check: Check,
    http: HttpClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    left: float,
) -> None:
    monkeypatch.setattr(cancellation, "time_left", lambda reserve=1.0: left)
    ping = pinger(check.url(), http)

    assert ping.fail("stopped by SIGTERM") is False

    assert check.seen == []
    assert ping.failed == 1
    (record,) = warnings_of(caplog)
    assert record.getMessage() == "check-in not delivered"
    assert "skipped: the run was stopped" in record.error  # type: ignore[attr-defined]


def test_stopped_the_check_in_fits_in_the_time_left(
    check: Check, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cancellation, "time_left", lambda reserve=1.0: 1.2)
    check.then(*[Reply(delay=2.0)] * 3)
    ping = pinger(check.url(), http, timeout=5.0, tries=3)

    began = time.monotonic()
    assert ping.fail("stopped by SIGTERM") is False
    took = time.monotonic() - began

    assert len(check.seen) == 1  # one try of 0.6 s, not three of 5 s
    assert took < 5.0
    assert ping.failed == 1


def test_stopped_with_time_left_still_delivers(
    check: Check, http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cancellation, "time_left", lambda reserve=1.0: 25.0)
    check.then(Reply(500))
    ping = pinger(check.url(), http)

    assert ping.fail("stopped by SIGTERM") is True
    assert len(check.seen) == 2
    assert ping.failed == 0
