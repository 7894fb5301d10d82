"""Tests of the command line and of `ochinai status`, the dead-man's switch."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ochinai import cli
from ochinai.runtime.declare import load
from ochinai.runtime.job import Job
from ochinai.runtime.records import RunRecord, update_latest
from ochinai.runtime.run import make_store
from ochinai.runtime.settings import StatusSettings

BUCKET = "ops"
ENV = {"OCHINAI_STORE": f"s3://{BUCKET}", "OCHINAI_LOG_FORMAT": "json"}


@pytest.fixture
def ops(moto_ops: Any, demo_job: Job) -> Any:
    """moto with the bucket, and the demo job registered."""
    return moto_ops


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def installed(client: Any, ago: timedelta) -> None:
    """Status first saw this store ``ago``."""
    when = (datetime.now(UTC) - ago).isoformat()
    body = json.dumps({"first_seen": when}).encode()
    client.put_object(Bucket=BUCKET, Key="_runs/status-first-seen.json", Body=body)


def record_success(job: str, finished: datetime, outcome: str = "ok") -> None:
    store = make_store(load(StatusSettings, ENV), "test")
    stamp = finished.isoformat().replace("+00:00", "Z")
    record = RunRecord(
        job=job,
        action="run",
        run_id=f"{job}-{stamp}",
        pod=None,
        k8s_job=None,
        started=stamp,
        date=finished.date().isoformat(),
        outcome=outcome,
        exit_code=0 if outcome == "ok" else 65,
        finished=stamp,
        duration_s=1.0,
        counts={},
    )
    update_latest(store, job, record)


def test_job_runs_from_the_command_line(ops: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`ochinai demo --date D` runs the job with that business date and exits 0."""
    code = cli.main(["demo", "--date", "2026-11-28", "--run-id", "cli-1"], env=ENV)
    assert code == 0
    [summary] = [x for x in json_lines(capsys.readouterr().out) if x.get("event") == "summary"]
    assert summary["date"] == "2026-11-28" and summary["run_id"] == "cli-1"


def test_unknown_flag_is_a_usage_error(ops: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong flag exits 64 and says so on stderr, leaving stdout empty."""
    assert cli.main(["demo", "--no-such-flag"], env=ENV) == 64
    captured = capsys.readouterr()
    assert captured.out == "" and "--no-such-flag" in captured.err


def test_bad_setting_is_exit_78_with_one_json_error(
    ops: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed variable stops the run with 78 and JSON lines naming it."""
    assert cli.main(["demo"], env={**ENV, "OCHINAI_STORE": "bucket-without-scheme"}) == 78
    out = json_lines(capsys.readouterr().out)
    assert any("OCHINAI_STORE='bucket-without-scheme'" in x["message"] for x in out)
    assert out[-1]["outcome"] == "config_error" and out[-1]["exit_code"] == 78


def test_help_shows_variables_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """--help lists each flag with its environment variable and default."""
    assert cli.main(["status", "--help"], env={}) == 0
    text = capsys.readouterr().out
    assert "OCHINAI_STATUS_MAX_AGE" in text and "default 26h" in text


def test_status_fresh_stale_and_missing(ops: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """status exits 0 only when every named job succeeded within --max-age."""
    now = datetime.now(UTC)
    record_success("report", now - timedelta(hours=2))
    record_success("backup", now - timedelta(hours=30))
    assert cli.main(["status", "report"], env=ENV) == 0
    assert "fresh" in capsys.readouterr().out
    assert cli.main(["status", "report", "backup"], env=ENV) == 1
    assert "stale" in capsys.readouterr().out
    assert cli.main(["status", "--max-age", "31h", "report", "backup"], env=ENV) == 0
    capsys.readouterr()
    installed(ops, timedelta(days=2))
    assert cli.main(["status", "monitor"], env=ENV) == 1
    assert "missing" in capsys.readouterr().out


def test_status_judges_the_other_jobs_when_one_record_does_not_parse(
    ops: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A latest.json that does not parse (edited by hand, or left by a newer version): that
    job is "unreadable", a failure said in an ERROR; the other jobs are still judged."""
    now = datetime.now(UTC)
    record_success("report", now - timedelta(hours=2))
    record_success("backup", now - timedelta(hours=2))
    store = make_store(load(StatusSettings, ENV), "test")
    etag = store.head("_runs/backup/latest.json").etag  # type: ignore[union-attr]
    store.put("_runs/backup/latest.json", b'{"version": 99}', if_match=etag)
    assert cli.main(["status", "report", "backup", "--json"], env=ENV) == 1
    captured = capsys.readouterr()
    states = {job["job"]: job["state"] for job in json.loads(captured.out)["jobs"]}
    assert states == {"report": "fresh", "backup": "unreadable"}
    assert "backup: cannot judge its last success" in captured.err


def test_status_says_pending_for_a_new_install_then_missing(
    ops: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """No record yet: pending (exit 0) while the install is younger than the job's max age."""
    assert cli.main(["status", "report", "--json"], env=ENV) == 0
    [job] = json.loads(capsys.readouterr().out)["jobs"]
    assert (job["job"], job["state"]) == ("report", "pending")
    installed(ops, timedelta(hours=27))
    assert cli.main(["status", "report"], env=ENV) == 1
    assert "missing" in capsys.readouterr().out


def test_status_judges_each_job_by_its_own_max_age(
    ops: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """monitor=1h: a monitor success of 2 hours ago is stale; a report one is still fresh."""
    now = datetime.now(UTC)
    record_success("report", now - timedelta(hours=2))
    record_success("monitor", now - timedelta(hours=2))
    env = {**ENV, "OCHINAI_STATUS_MAX_AGES": "monitor=1h"}
    assert cli.main(["status", "report", "monitor", "--json"], env=env) == 1
    states = {
        j["job"]: (j["state"], j["max_age_s"]) for j in json.loads(capsys.readouterr().out)["jobs"]
    }
    assert states == {"report": ("fresh", 93600.0), "monitor": ("stale", 3600.0)}


def test_status_json_and_every_registered_job(ops: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one document; without names every registered job is checked (the
    demo job too, registered by the fixture), records or not."""
    now = datetime.now(UTC)
    record_success("report", now - timedelta(minutes=5))
    record_success("monitor", now - timedelta(minutes=5))
    assert cli.main(["status", "--json"], env=ENV) == 0  # the others: pending, a new install
    doc = json.loads(capsys.readouterr().out)
    states = {j["job"]: j["state"] for j in doc["jobs"]}
    assert doc["ok"] is True and list(states) == list(cli.registry()) and "demo" in states
    assert states["report"] == states["monitor"] == "fresh"
    assert {states[name] for name in cli.registry() if name not in ("report", "monitor")} == {
        "pending"
    }


def test_status_without_names_checks_what_the_status_cronjob_relies_on(
    ops: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registered jobs, then each sub-action with a max age of its own
    (backup.drill=8d); a sub-action run by hand (backup.verify) only when named, and a
    name that is no job's action (backup.nope, report.run) never."""
    now = datetime.now(UTC)
    record_success("backup.verify", now - timedelta(days=30))
    ages = "monitor=1h,backup.drill=8d,backup.nope=1h,report.run=1h,nope.drill=1h"
    env = {**ENV, "OCHINAI_STATUS_MAX_AGES": ages}
    assert cli.main(["status", "--json"], env=env) == 0
    checked = [j["job"] for j in json.loads(capsys.readouterr().out)["jobs"]]
    assert checked == [*cli.registry(), "backup.drill"]
    assert cli.main(["status", "backup.verify"], env=env) == 1
    assert "stale" in capsys.readouterr().out


def test_status_of_a_job_that_only_failed_is_missing(
    ops: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job whose every run failed has no success: status says missing and exits 1."""
    record_success("report", datetime.now(UTC), outcome="data_error")
    assert cli.main(["status", "report"], env=ENV) == 1
    assert "missing" in capsys.readouterr().out


def test_status_with_no_records_is_not_ok(ops: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty store is not healthy once the max age has passed since status first ran:
    nothing has succeeded, every registered job is missing."""
    installed(ops, timedelta(days=2))
    assert cli.main(["status", "--json"], env=ENV) == 1
    doc = json.loads(capsys.readouterr().out)
    assert {j["job"]: j["state"] for j in doc["jobs"]} == dict.fromkeys(cli.registry(), "missing")


def test_status_store_error_uses_the_error_code(
    ops: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing bucket is a permanent error (77), logged to stderr, not a stale status."""
    assert cli.main(["status"], env={**ENV, "OCHINAI_STORE": "s3://no-such-bucket"}) == 77
    captured = capsys.readouterr()
    assert captured.out == "" and "no-such-bucket" in captured.err


def test_module_entry_point_exits_with_the_code() -> None:
    """`python -m ochinai` ends with main()'s code, so a failed run never exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "ochinai", "no-such-job"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 64 and result.stdout == ""


def test_status_with_read_only_credentials_still_checks(
    ops: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the first-seen record cannot be written (403), jobs are judged, none pending."""
    from ochinai.runtime import status
    from ochinai.runtime.errors import PermanentError

    def refused(store: Any, now: datetime) -> datetime:
        raise PermanentError("s3://ops/_runs/status-first-seen.json: access denied")

    monkeypatch.setattr(status, "first_seen", refused)
    record_success("report", datetime.now(UTC) - timedelta(hours=1))
    assert cli.main(["status", "report", "monitor"], env=ENV) == 1
    out = capsys.readouterr()
    assert "missing" in out.out and "fresh" in out.out and "access denied" in out.err
