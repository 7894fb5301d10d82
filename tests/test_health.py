"""Incidents: one notice when a job starts failing, a reminder at most daily, one recovery;
status's stale incidents; check-ins of every run to a Healthchecks-style server."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ochinai.runtime import health as health_module
from ochinai.runtime import logs
from ochinai.runtime.declare import load
from ochinai.runtime.errors import DataError, PermanentError, TransientError
from ochinai.runtime.health import FAILING, OK, Health, Policy, RunFacts, after_run, after_status
from ochinai.runtime.job import Context, Summary
from ochinai.runtime.notify import Notice, Notifier, SendOnce
from ochinai.runtime.run import make_store
from ochinai.runtime.settings import StatusSettings
from ochinai.runtime.status import announce, check
from ochinai.runtime.storage import Store
from tests.servers.http import serving
from tests.test_run import BUCKET, NOW, BusyLock, Recorder, ok_job, read_json, runner, settings

T0 = datetime(2026, 11, 28, 6, 10, tzinfo=UTC)


@pytest.fixture
def out() -> io.StringIO:
    """JSON logs captured in a buffer."""
    buf = io.StringIO()
    logs.configure(fmt="json", stream=buf)
    return buf


def facts(n: int, *, ok: bool = False, at: datetime | None = None) -> RunFacts:
    when = at or T0 + timedelta(minutes=15 * n)
    return RunFacts(
        f"run-{n}",
        when,
        when + timedelta(seconds=5),
        "ok" if ok else "data_error",
        0 if ok else 65,
        ok,
        None if ok else f"run-{n} failed: bad row",
    )


def ids(health: Health) -> list[str]:
    return [n["id"] for n in health.outbox]


# --- the transitions, without a store ---------------------------------------------------


def test_ten_failures_open_one_incident_and_a_success_closes_it_once() -> None:
    health, policy = Health("monitor"), Policy()
    for n in range(1, 11):
        health = after_run(health, facts(n), policy)
    assert ids(health) == ["monitor/incident/run-1/opened"]
    assert (health.state, health.failed_runs) == (FAILING, 10)
    assert health.failing_since == facts(1).started.isoformat()
    opened = health.outbox[0]
    assert "2026-11-28 15:25 から失敗しています" in opened["subject"]  # 06:25 UTC in Tokyo
    assert "run-1 failed: bad row" in opened["text"]
    health = after_run(health, facts(11, ok=True), policy)
    assert ids(health)[1:] == ["monitor/incident/run-1/recovered"]
    recovered = health.outbox[1]["text"]
    assert "失敗した実行: 10 回" in recovered and "2 時間 30 分" in recovered
    assert (health.state, health.failed_runs, health.incident) == (OK, 0, None)
    again = after_run(health, facts(12, ok=True), policy)
    assert ids(again) == ids(health), "a second success announces nothing"


def test_a_reminder_once_the_last_notice_is_older_than_remind_after() -> None:
    policy = Policy(remind_after=24 * 3600)
    health = after_run(Health("report"), facts(1), policy)
    health = after_run(health, facts(2, at=T0 + timedelta(hours=23)), policy)
    assert len(health.outbox) == 1
    health = after_run(health, facts(3, at=T0 + timedelta(hours=25)), policy)
    assert ids(health)[-1] == "report/incident/run-1/reminder-1"
    assert "3 回" in health.outbox[-1]["text"]
    health = after_run(health, facts(4, at=T0 + timedelta(hours=26)), policy)
    assert len(health.outbox) == 2, "the next reminder waits another day"
    never = after_run(
        after_run(Health("report"), facts(1), Policy(remind_after=0)),
        facts(2, at=T0 + timedelta(days=9)),
        Policy(remind_after=0),
    )
    assert len(never.outbox) == 1


def test_alert_after_holds_back_a_failure_the_retry_fixes() -> None:
    policy = Policy(alert_after=2)
    health = after_run(Health("report"), facts(1), policy)
    assert health.outbox == [] and health.state == OK and health.failed_runs == 1
    fixed = after_run(health, facts(2, ok=True), policy)
    assert fixed.outbox == [] and fixed.failed_runs == 0
    health = after_run(health, facts(2), policy)
    assert ids(health) == ["report/incident/run-2/opened"]
    assert health.failing_since == facts(1).started.isoformat()


def test_status_opens_a_stale_incident_once_and_closes_it_when_fresh() -> None:
    policy, health = Policy(remind_after=24 * 3600), Health("backup")
    health = after_status(health, "missing", T0, "記録された実行がありません。", policy)
    health = after_status(health, "stale", T0 + timedelta(hours=1), "…", policy)
    assert [i.split("/")[-1] for i in ids(health)] == ["opened"]
    assert "記録された実行がありません" in health.outbox[0]["text"]
    health = after_status(health, "stale", T0 + timedelta(hours=25), "…", policy)
    assert ids(health)[-1].endswith("/reminder-1")
    health = after_status(health, "fresh", T0 + timedelta(hours=26), "", policy)
    assert ids(health)[-1].endswith("/recovered") and health.stale is None
    assert after_status(health, "pending", T0, "", policy).outbox == health.outbox


# --- through the runner, in a bucket ------------------------------------------------------


def failing(ctx: Context) -> Summary:
    raise DataError("in/sales.csv line 7: bad row")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def run(fn: Any, recorder: Recorder, n: int, clock: Clock, **env: str) -> int:
    r = runner(fn, recorder, settings=settings(OCHINAI_RUN_ID=f"run-{n}", **env), lock=None)
    r.utcnow = clock
    return r.run()


def test_ten_failed_runs_then_a_day_then_a_success_send_three_notices(
    moto_ops: Any, out: io.StringIO
) -> None:
    """Each failed run used to send its own notice (96 a day for the monitor)."""
    recorder, clock = Recorder(), Clock()
    for n in range(1, 11):
        assert run(failing, recorder, n, clock, OCHINAI_LOCK="none") == 65
        clock.now += timedelta(minutes=15)
    assert [x.key for x in recorder.notices] == ["demo/incident/run-1/opened"]
    clock.now += timedelta(hours=25)
    assert run(failing, recorder, 11, clock, OCHINAI_LOCK="none") == 65
    assert recorder.notices[-1].key == "demo/incident/run-1/reminder-1"
    assert run(ok_job, recorder, 12, clock, OCHINAI_LOCK="none") == 0
    assert [x.key.rsplit("/", 1)[1] for x in recorder.notices] == [
        "opened",
        "reminder-1",
        "recovered",
    ]
    record = read_json(moto_ops, "prod/_runs/demo/latest.json")["last_run"]
    assert record["run_id"] == "run-12" and record["health"]["health"] == "ok"
    summary = [json.loads(x) for x in out.getvalue().splitlines() if '"summary"' in x][-1]
    assert (summary["health"], summary["failed_runs"]) == ("ok", 0)


def test_skipped_and_dry_runs_change_no_health(moto_ops: Any, out: io.StringIO) -> None:
    recorder, clock = Recorder(), Clock()
    assert run(failing, recorder, 1, clock, OCHINAI_LOCK="none") == 65
    before = read_json(moto_ops, "prod/_runs/demo/health.json")
    busy = runner(ok_job, recorder, settings=settings(OCHINAI_RUN_ID="run-2"), lock=BusyLock())
    assert busy.run() == 0
    assert run(ok_job, recorder, 3, clock, OCHINAI_DRY_RUN="true") == 0
    assert read_json(moto_ops, "prod/_runs/demo/health.json") == before
    assert len(recorder.notices) == 1


def test_a_run_that_dies_between_the_send_and_the_record_never_doubles_a_notice(
    moto_ops: Any, out: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notice went out; taking it out of the outbox failed (the run was killed there):
    the next run finds it in the outbox, and SendOnce finds it sent."""
    recorder, clock = Recorder(), Clock()
    update = health_module.update_health
    calls = {"n": 0}

    def dies_on_the_take_out(store: Store, job: str, change: Any) -> Health:
        calls["n"] += 1  # the runner's own update is not this module's name: send_outbox's is
        if calls["n"] == 1:
            raise TransientError("killed here")
        return update(store, job, change)

    monkeypatch.setattr(health_module, "update_health", dies_on_the_take_out)
    assert run(failing, recorder, 1, clock, OCHINAI_LOCK="none") == 65
    assert len(read_json(moto_ops, "prod/_runs/demo/health.json")["outbox"]) == 1
    monkeypatch.setattr(health_module, "update_health", update)
    assert run(failing, recorder, 2, clock, OCHINAI_LOCK="none") == 65
    assert [x.key for x in recorder.notices] == ["demo/incident/run-1/opened"]
    assert read_json(moto_ops, "prod/_runs/demo/health.json")["outbox"] == []


def test_status_tells_someone_about_a_job_that_never_ran(moto_ops: Any) -> None:
    """No ochinai code runs when the image is wrong: status opens a stale incident, once,
    and closes it when the job has succeeded."""
    recorder = Recorder()
    store = make_store(load(StatusSettings, {"OCHINAI_STORE": f"s3://{BUCKET}/prod"}), "status")
    notices = SendOnce(store, Notifier([recorder]), run_id="status-1", dry_run=False)
    since = NOW - timedelta(hours=30)
    for hours in (0, 1):
        now = NOW + timedelta(hours=hours)
        statuses = announce(
            store, check(store, ["demo"], now, 26 * 3600, None, since), now, notices, Policy()
        )
        assert statuses[0].state == "missing" and statuses[0].health is not None
    [opened] = recorder.notices
    assert opened.key.startswith("demo/stale/") and opened.key.endswith("/opened")
    assert "記録された実行がありません" in opened.text
    assert runner(ok_job, settings=settings(OCHINAI_RUN_ID="run-9")).run() == 0
    now = NOW + timedelta(hours=2)
    statuses = announce(
        store, check(store, ["demo"], now, 26 * 3600, None, since), now, notices, Policy()
    )
    assert statuses[0].state == "fresh"
    assert recorder.notices[-1].key.endswith("/recovered") and len(recorder.notices) == 2


# --- check-ins -----------------------------------------------------------------------------


@dataclass
class Pings:
    port: int
    got: list[tuple[str, str, str]] = field(default_factory=list)  # (path, rid, body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping/0f3c-token-abc"


@pytest.fixture
def pings() -> Iterator[Pings]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            path, _, query = self.path.partition("?")
            state.got.append((path, query.removeprefix("rid="), body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Pings(server.server_address[1])
    with serving(server):
        yield state


def test_check_ins_start_then_success_or_fail_with_one_rid(
    moto_ops: Any, out: io.StringIO, pings: Pings
) -> None:
    recorder, clock = Recorder(), Clock()
    env = {"OCHINAI_PING_URL": pings.url, "OCHINAI_LOCK": "none"}
    assert run(ok_job, recorder, 1, clock, **env) == 0
    assert run(failing, recorder, 2, clock, **env) == 65
    assert run(ok_job, recorder, 3, clock, **env, OCHINAI_DRY_RUN="true") == 0
    base = "/ping/0f3c-token-abc"
    assert [p for p, _, _ in pings.got] == [f"{base}/start", base, f"{base}/start", f"{base}/fail"]
    (_, rid1, _), (_, rid1b, summary), (_, rid2, _), (_, rid2b, errors) = pings.got
    assert rid1 == rid1b != rid2 == rid2b and uuid.UUID(rid1).version == 5
    assert json.loads(summary)["outcome"] == "ok"
    assert "in/sales.csv line 7: bad row" in errors
    busy = runner(
        ok_job, recorder, settings=settings(OCHINAI_RUN_ID="run-4", **env), lock=BusyLock()
    )
    assert busy.run() == 0
    assert pings.got[-1][0] == f"{base}/log"
    assert "0f3c-token-abc" not in out.getvalue()


def test_a_check_in_that_fails_is_counted_never_fatal(moto_ops: Any, out: io.StringIO) -> None:
    recorder, clock = Recorder(), Clock()
    dead = "http://127.0.0.1:9/ping/secret-token"
    assert run(ok_job, recorder, 1, clock, OCHINAI_PING_URL=dead, OCHINAI_LOCK="none") == 0
    summary = [json.loads(x) for x in out.getvalue().splitlines() if '"summary"' in x][-1]
    assert summary["outcome"] == "ok" and summary["pings_failed"] == 2
    assert "secret-token" not in out.getvalue()


def test_each_run_pushes_its_metrics_and_a_failure_keeps_the_last_success(
    moto_ops: Any, out: io.StringIO, tmp_path: Path
) -> None:
    """Through the runner, to a real Pushgateway: a success, then a failure."""
    from tests.servers.prom import Pushgateway

    recorder, clock = Recorder(), Clock()
    with Pushgateway(tmp_path / "pushgateway") as gateway:
        env = {"OCHINAI_PUSHGATEWAY_URL": gateway.url, "OCHINAI_LOCK": "none"}
        assert run(ok_job, recorder, 1, clock, **env) == 0
        group = (("instance", ""), ("job", "ochinai-demo"), ("shard", "all"))
        success = gateway.samples("ochinai_last_success_timestamp_seconds")[group]
        assert gateway.samples("ochinai_last_run_rows")[group] == 3
        clock.now += timedelta(minutes=5)
        assert run(failing, recorder, 2, clock, **env) == 65
        assert gateway.samples("ochinai_last_success_timestamp_seconds")[group] == success
        assert gateway.samples("ochinai_last_run_exit_code")[group] == 65
        outcomes = gateway.samples("ochinai_last_run_outcome")
        assert [dict(k)["outcome"] for k in outcomes] == ["data_error"]
        busy = runner(ok_job, recorder, settings=settings(OCHINAI_RUN_ID="run-3", **env))
        busy.lock = BusyLock()
        assert busy.run() == 0
        assert gateway.samples("ochinai_last_run_exit_code")[group] == 65, "skipped: no push"


def test_an_unreachable_bucket_still_checks_in_its_failure(
    pings: Pings, out: io.StringIO, aws_test_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing can be recorded in a bucket nobody answers for: the check-in to the outside
    says the run failed, with the error."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    recorder, clock = Recorder(), Clock()
    env = {"OCHINAI_PING_URL": pings.url, "OCHINAI_S3_TIMEOUT": "1s", "OCHINAI_LOCK": "none"}
    assert run(ok_job, recorder, 1, clock, **env) == 75
    paths = [p.rsplit("/", 1)[-1] for p, _, _ in pings.got]
    assert paths == ["start", "fail"] and "127.0.0.1:9" in pings.got[-1][2]


def test_a_broken_channel_still_checks_in_its_failure(
    moto_ops: Any, out: io.StringIO, pings: Pings
) -> None:
    """The webhook was revoked (77): the notices wait in the outbox; the check-in says so."""

    class Revoked:
        name = "webhook"

        def send(self, notice: Any) -> None:
            raise PermanentError("webhook https://hooks.example: HTTP 404; the hook was revoked")

    def announcing(ctx: Context) -> Summary:
        ctx.notices.send(Notice("demo/2026-11-28/ready", "ready", "the report is ready"))
        return Summary("ok")

    clock = Clock()
    r = runner(announcing, settings=settings(OCHINAI_RUN_ID="run-1", OCHINAI_PING_URL=pings.url))
    r.notifier_factory = lambda s, http: Notifier([Revoked()])
    r.utcnow = clock
    assert r.run() == 77
    assert [p.rsplit("/", 1)[-1] for p, _, _ in pings.got] == ["start", "fail"]
    assert "the hook was revoked" in pings.got[-1][2]
    assert len(read_json(moto_ops, "prod/_runs/demo/health.json")["outbox"]) == 1
