"""Tests of running a job: exit codes, summary line, run records, failure notices."""

from __future__ import annotations

import io
import json
import os
import signal
from datetime import UTC, datetime
from typing import Any

import pytest
from moto import mock_aws

from ochinai.runtime import logs
from ochinai.runtime.declare import load
from ochinai.runtime.errors import (
    ConfigError,
    DataError,
    LockLost,
    PermanentError,
    RuleError,
    TransientError,
    UsageError,
)
from ochinai.runtime.fence import Fence
from ochinai.runtime.job import Action, Context, Job, Summary
from ochinai.runtime.notify import Notice, Notifier
from ochinai.runtime.run import Runner, make_store
from ochinai.runtime.settings import RuntimeSettings
from tests.harness import DemoSettings

BUCKET = "ops"
NOW = datetime(2026, 11, 27, 21, 10, tzinfo=UTC)  # 06:10 on 2026-11-28 in Tokyo


@pytest.fixture
def out() -> io.StringIO:
    """JSON logs captured in a buffer."""
    buf = io.StringIO()
    logs.configure(fmt="json", stream=buf)
    return buf


class Recorder:
    """A notification channel that keeps what it was given."""

    name = "recorder"

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def send(self, notice: Notice) -> None:
        self.notices.append(notice)


class BusyLock:
    """A lock someone else holds."""

    def acquire(self, wait: float) -> None:
        return None

    def describe_holder(self) -> str:
        return "pod-a/run-1 since 2026-11-28T06:10:00Z"


class LostLock:
    """A lock that is lost as soon as the job tries to write."""

    fence = Fence("scope-of-the-test", 7)
    term = 7
    lost = True
    released = False

    def acquire(self, wait: float) -> LostLock:
        return self

    def held(self) -> bool:
        return False

    def describe_holder(self) -> str:
        return "me"

    def check_writable(self) -> None:
        raise LockLost("lease ochinai-demo was not renewed within the renew deadline")

    def release(self, within_s: float | None = None) -> bool:
        self.released = True
        return False


def settings(**env: str) -> RuntimeSettings:
    return load(RuntimeSettings, {"OCHINAI_STORE": f"s3://{BUCKET}/prod", **env})


def runner(fn: Any, recorder: Recorder | None = None, **kw: Any) -> Runner:
    """A Runner of a job named demo whose run action is ``fn``."""
    notifier = Notifier([recorder] if recorder else [])
    job = Job("demo", "a test job", DemoSettings, {"run": Action(fn, "the test's function")})
    return Runner(
        job,
        kw.pop("settings", None) or settings(OCHINAI_RUN_ID="run-1"),
        load(DemoSettings, {}),
        notifier_factory=lambda s, http: notifier,
        utcnow=lambda: NOW,
        **kw,
    )


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def summaries(buf: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in lines(buf) if line.get("event") == "summary"]


def read_json(client: Any, key: str) -> Any:
    return json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def ok_job(ctx: Context) -> Summary:
    ctx.store.put("out/hello.txt", b"hello", if_none_match=True)
    return Summary("ok", {"rows": 3})


def test_ok_run_exits_0_with_summary_and_records(moto_ops: Any, out: io.StringIO) -> None:
    """A good run exits 0, logs one summary line and writes its run record and latest.json."""
    assert runner(ok_job).run() == 0
    [summary] = summaries(out)
    assert summary["outcome"] == "ok" and summary["exit_code"] == 0 and summary["rows"] == 3
    assert summary["job"] == "demo" and summary["run_id"] == "run-1"
    assert "duration_s" in summary
    record = read_json(moto_ops, "prod/_runs/demo/2026-11-28/run-1.json")
    assert record["outcome"] == "ok" and record["counts"] == {"rows": 3}
    latest = read_json(moto_ops, "prod/_runs/demo/latest.json")
    assert latest["last_success"]["run_id"] == "run-1"
    head = moto_ops.head_object(Bucket=BUCKET, Key="prod/out/hello.txt")
    assert head["Metadata"]["run-id"] == "run-1" and head["Metadata"]["fence"] == "0"


def test_every_stdout_line_is_json_with_job_and_run_id(
    moto_ops: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing but JSON objects reach stdout, each bound to the job and run id."""
    logs.configure(fmt="json")
    runner(ok_job).run()
    printed = capsys.readouterr().out.splitlines()
    assert printed
    for line in printed:
        parsed = json.loads(line)
        assert parsed["job"] == "demo" and parsed["run_id"] == "run-1"
    assert json.loads(printed[0])["settings"]["store"] == "s3://ops/prod"


@pytest.mark.parametrize(
    ("error", "code", "outcome"),
    [
        (UsageError("bad flag"), 64, "usage_error"),
        (DataError("in/sales.csv line 7 column qty: 'x' is not a number"), 65, "data_error"),
        (RuleError("no rows for 2026-11-28"), 66, "rule_error"),
        (RuntimeError("a bug"), 70, "unexpected_error"),
        (TransientError("GET https://api.example: HTTP 503"), 75, "transient_error"),
        (PermanentError("s3://ops: AccessDenied"), 77, "permanent_error"),
        (ConfigError("OCHINAI_X is not set"), 78, "config_error"),
    ],
)
def test_each_error_class_gives_its_exit_code_and_one_summary(
    moto_ops: Any, out: io.StringIO, error: Exception, code: int, outcome: str
) -> None:
    """An error raised by the job ends the run with its class's code and exactly one summary."""

    def failing(ctx: Context) -> Summary:
        raise error

    recorder = Recorder()
    assert runner(failing, recorder).run() == code
    [summary] = summaries(out)
    assert summary["outcome"] == outcome and summary["exit_code"] == code
    assert summary["severity"] == "ERROR"
    [failure] = [line for line in lines(out) if " failed: " in line["message"]]
    assert str(error) in failure["message"]
    assert ("exc" in failure) == (code == 70), "a traceback for a bug only"
    record = read_json(moto_ops, "prod/_runs/demo/2026-11-28/run-1.json")
    assert record["exit_code"] == code and record["error"]["message"] == str(error)
    [notice] = recorder.notices
    assert notice.severity == "error" and str(error) in notice.text
    assert notice.key == "demo/incident/run-1/opened"  # the incident it opens (health.py)


def test_failure_keeps_the_last_success_in_latest(moto_ops: Any, out: io.StringIO) -> None:
    """A failed run after a good one updates last_run by CAS but keeps last_success."""
    assert runner(ok_job).run() == 0

    def failing(ctx: Context) -> Summary:
        raise DataError("broken input")

    failed = runner(failing, settings=settings(OCHINAI_RUN_ID="run-2"))
    assert failed.run() == 65
    latest = read_json(moto_ops, "prod/_runs/demo/latest.json")
    assert latest["last_run"]["run_id"] == "run-2" and latest["last_run"]["outcome"] == "data_error"
    assert latest["last_success"]["run_id"] == "run-1"


def test_busy_lock_is_skipped_locked_exit_0(moto_ops: Any, out: io.StringIO) -> None:
    """When another run holds the lock the job is not called and the run exits 0."""
    called = []
    code = runner(lambda ctx: called.append(1) or Summary(), lock=BusyLock()).run()
    assert code == 0 and called == []
    [warning] = [line for line in lines(out) if line["severity"] == "WARNING"]
    assert "pod-a/run-1" in warning["message"]
    [summary] = summaries(out)
    assert summary["outcome"] == "skipped_locked"
    latest = read_json(moto_ops, "prod/_runs/demo/latest.json")
    assert latest["last_success"] is None


def test_lost_lock_refuses_the_write_and_exits_75(moto_ops: Any, out: io.StringIO) -> None:
    """A store write after the lock was lost is refused; the run is transient and releases."""
    lock = LostLock()
    assert runner(ok_job, lock=lock).run() == 75
    assert "Contents" not in moto_ops.list_objects_v2(Bucket=BUCKET, Prefix="prod/out/")
    assert lock.released
    [summary] = summaries(out)
    assert summary["outcome"] == "transient_error"
    assert any("renew deadline" in line["message"] for line in lines(out))


def test_sigterm_during_the_job_stops_it_at_the_next_store_request(
    moto_ops: Any, out: io.StringIO
) -> None:
    """SIGTERM is recorded, not raised: the job's next store call ends the run with 75."""
    written: list[str] = []

    def killed(ctx: Context[Any]) -> Summary:
        os.kill(os.getpid(), signal.SIGTERM)
        written.append("after the signal, before the next check")
        ctx.store.put("out/never.txt", b"x", if_none_match=True)
        raise AssertionError("the store should have stopped the run")

    assert runner(killed).run() == 75
    [summary] = summaries(out)
    assert (summary["outcome"], summary["signal"]) == ("terminated", "SIGTERM")
    assert written and "Contents" not in moto_ops.list_objects_v2(Bucket=BUCKET, Prefix="prod/out/")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    lock = read_json(moto_ops, "prod/_locks/ochinai-demo.json")
    assert lock["holder"] == ""  # released on the way out
    record = read_json(moto_ops, "prod/_runs/demo/2026-11-28/run-1.json")
    assert record["outcome"] == "terminated" and record["exit_code"] == 75
    assert not [x for x in lines(out) if x["severity"] == "ERROR" and x.get("event") != "summary"]


def test_sigterm_after_the_work_exits_0_and_says_so(moto_ops: Any, out: io.StringIO) -> None:
    """A signal that comes once the job's work is done keeps the success: exit 0."""

    def done_then_killed(ctx: Context[Any]) -> Summary:
        ctx.store.put("out/done.txt", b"x", if_none_match=True)
        os.kill(os.getpid(), signal.SIGTERM)
        return Summary("ok", {"rows": 1})

    assert runner(done_then_killed).run() == 0
    [summary] = summaries(out)
    assert summary["outcome"] == "terminated_after_work" and summary["job_outcome"] == "ok"
    assert summary["signal"] == "SIGTERM" and summary["rows"] == 1
    latest = read_json(moto_ops, "prod/_runs/demo/latest.json")
    assert latest["last_success"]["run_id"] == "run-1"


def test_sigterm_cuts_a_sleep_short(moto_ops: Any, out: io.StringIO) -> None:
    """A job waiting (ctx.sleep, a backoff) is not held for the wait: it ends at once, 75."""
    import threading
    import time

    def waiting(ctx: Context[Any]) -> Summary:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        ctx.sleep(60)
        raise AssertionError("the sleep should have ended the run")

    started = time.monotonic()
    from ochinai.runtime.cancel import cancellation

    assert runner(waiting, sleep=cancellation.sleep).run() == 75
    assert time.monotonic() - started < 10
    assert summaries(out)[0]["outcome"] == "terminated"


def test_a_job_stuck_where_nothing_checks_is_interrupted_after_the_grace(
    moto_ops: Any, out: io.StringIO
) -> None:
    """A blocking call that never reaches a check is cut after OCHINAI_STOP_GRACE: 75."""
    import threading
    import time

    def stuck(ctx: Context[Any]) -> Summary:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        time.sleep(30)  # a library call that knows nothing of our checks
        raise AssertionError("the watchdog should have interrupted the job")

    started = time.monotonic()
    env = {"OCHINAI_RUN_ID": "run-1", "OCHINAI_STOP_GRACE": "0.5"}
    assert runner(stuck, settings=settings(**env)).run() == 75
    assert time.monotonic() - started < 10
    [summary] = summaries(out)
    assert (summary["outcome"], summary["signal"]) == ("terminated", "SIGTERM")
    assert read_json(moto_ops, "prod/_locks/ochinai-demo.json")["holder"] == ""
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_the_build_directory_is_the_runs_own_and_goes_with_it(
    moto_ops: Any, out: io.StringIO, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ctx.workdir is fresh, under TMPDIR, removed after the run; a dead run's is swept."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    dead = tmp_path / "ochinai-demo-old-run-x"
    dead.mkdir()
    (dead / ".owner").touch()  # nobody holds its lock: its run is gone
    (dead / "big.bin").write_bytes(b"x" * 1000)
    other = tmp_path / "ochinai-report-old-run-y"  # another job's: not ours to judge
    other.mkdir()
    seen: list[Any] = []

    def job(ctx: Context[Any]) -> Summary:
        seen.append(ctx.workdir)
        (ctx.workdir / "part.bin").write_bytes(b"y")
        return Summary()

    assert runner(job).run() == 0
    assert seen[0].parent == tmp_path and seen[0].name.startswith("ochinai-demo-run-1-")
    assert not seen[0].exists() and not dead.exists() and other.exists()
    assert any(line.get("removed_dirs") == 1 for line in lines(out))


def test_unknown_outcome_is_unexpected(moto_ops: Any, out: io.StringIO) -> None:
    """A job that returns an outcome other than ok/unchanged is a bug (70)."""
    assert runner(lambda ctx: Summary("done")).run() == 70


def test_dry_run_writes_nothing(moto_ops: Any, out: io.StringIO) -> None:
    """With --dry-run neither the job's output nor the run record is written."""
    dry = runner(ok_job, settings=settings(OCHINAI_RUN_ID="run-1", OCHINAI_DRY_RUN="true"))
    assert dry.run() == 0
    assert "Contents" not in moto_ops.list_objects_v2(Bucket=BUCKET)


def test_run_record_failure_is_logged_and_code_kept(
    monkeypatch: pytest.MonkeyPatch, out: io.StringIO
) -> None:
    """With the bucket gone the job's error decides the code; the record failure is logged."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with mock_aws():
        assert runner(ok_job).run() == 77  # NoSuchBucket
    messages = [line["message"] for line in lines(out)]
    assert any("could not write the run record" in m for m in messages)


def test_run_id_is_generated_sortable_when_not_set(moto_ops: Any, out: io.StringIO) -> None:
    """Without OCHINAI_RUN_ID a new id starting with the UTC start time is used."""
    assert runner(ok_job, settings=settings()).run() == 0
    [summary] = summaries(out)
    assert summary["run_id"].startswith("20261127T211000000Z-")


def test_make_store_uses_the_prefix(moto_ops: Any) -> None:
    """The store from settings writes under the bucket and prefix of OCHINAI_STORE."""
    store = make_store(settings(), "r-1")
    store.put("x.txt", b"x", if_none_match=True)
    assert moto_ops.get_object(Bucket=BUCKET, Key="prod/x.txt")["Body"].read() == b"x"


def test_the_context_carries_the_runs_clock_and_http_client(
    moto_ops: Any, out: io.StringIO
) -> None:
    """A job reads time and sleeps through the context, so a test's fakes reach it."""
    slept: list[float] = []
    seen: dict[str, Any] = {}

    def job(ctx: Context[Any]) -> Summary:
        seen.update(now=ctx.now(), http=ctx.http, action=ctx.action, dry=ctx.dry_run)
        ctx.sleep(2.5)
        return Summary()

    assert runner(job, sleep=slept.append).run() == 0
    assert seen["now"] == NOW and slept == [2.5]
    assert seen["http"].sleep == slept.append and seen["http"].now() == NOW
    assert (seen["action"], seen["dry"]) == ("run", False)


def test_a_run_that_lost_its_lock_ends_75_though_it_found_nothing_to_write(
    moto_ops: Any, out: io.StringIO
) -> None:
    """Paused past its lease, the run wakes up to find the work done by the next holder
    ("unchanged"): it must still end 75, not report that work as its own success."""

    def finds_it_done(ctx: Context) -> Summary:
        return Summary("unchanged")

    assert runner(finds_it_done, lock=LostLock()).run() == 75
    [summary] = summaries(out)
    assert summary["outcome"] == "transient_error"


def test_a_thread_still_waiting_at_the_end_does_not_keep_or_kill_the_process(
    tmp_path: Any,
) -> None:
    """A call given up in time waits on in its daemon thread (a renewal's socket); the
    process ends with its code at once instead of dying of SIGABRT in Python's shutdown."""
    script = tmp_path / "stuck.py"
    script.write_text(
        "import socket, threading, time\n"
        "import ochinai.cli, ochinai.entry\n"
        "def stuck():\n"
        "    a, b = socket.socketpair()\n"
        "    a.recv(1)\n"
        "def main():\n"
        "    threading.Thread(target=stuck, daemon=True).start()\n"
        "    time.sleep(0.1)\n"
        "    print('summary', flush=False)\n"
        "    return 75\n"
        "ochinai.cli.main = main\n"
        "raise SystemExit(ochinai.entry.main())\n"
    )
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 75 and done.stdout == "summary\n", done.stderr
