"""SIGTERM at each phase of a real run: `ochinai report` as a process, S3 behind a fault proxy.

The proxy holds one request of the phase under test until the test has sent SIGTERM,
so the signal arrives exactly there. Whatever the phase, the run ends with one summary
line and a documented exit code (75 while the work was under way, 0 after it), and it
leaves the lock released so the next run starts at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Faulty
from tests.harness import assert_no_traceback
from tests.servers import s3 as s3servers

DATA = Path(__file__).parent / "data"
WORKBOOK = "out/report_20261128.xlsx"
LOCK = "_locks/ochinai-report.json"


@dataclass
class Ended:
    """How a run ended: its exit code and its JSON lines."""

    code: int
    lines: list[dict[str, Any]]

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == "summary"]


def start(faulty: Faulty, tmp_path: Path, **settings: str) -> subprocess.Popen[str]:
    """`ochinai report` for 2026-11-28 through the proxy, with an S3 lock."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "AWS_ENDPOINT_URL": faulty.proxy.endpoint,
        "AWS_ACCESS_KEY_ID": s3servers.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": s3servers.SECRET_KEY,
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "OCHINAI_STORE": f"s3://{faulty.bucket}",
        "OCHINAI_LOCK": "s3",
        "OCHINAI_DATE": "2026-11-28",
        "OCHINAI_LOG_FORMAT": "json",
        **settings,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ochinai", "report"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> Ended:
    out, _ = proc.communicate(timeout=60)
    assert_no_traceback(proc.returncode, out, proc.args)
    lines = [json.loads(line) for line in out.splitlines()]  # each stdout line is JSON
    return Ended(proc.returncode, lines)


def lock_holder(faulty: Faulty) -> str:
    """Who the S3 lock names; "" once released, or when it was never taken."""
    if LOCK not in faulty.keys("_locks/"):
        return ""
    body = faulty.direct.get_object(Bucket=faulty.bucket, Key=LOCK)["Body"].read()
    holder: str = json.loads(body)["holder"]
    return holder


def sigterm_when_held(faulty: Faulty, proc: subprocess.Popen[str]) -> None:
    """Wait until the proxy holds the phase's request, then SIGTERM the run and let it go."""
    assert faulty.proxy.held.wait(30), "the run never reached the held request"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # the handler has run: only the release of the request is left
    faulty.proxy.release()


@pytest.fixture
def sales(faulty: Faulty) -> Faulty:
    """The bucket with a sales CSV in it."""
    body = (DATA / "sales_utf8.csv").read_bytes()
    faulty.direct.put_object(Bucket=faulty.bucket, Key="in/sales.csv", Body=body)
    return faulty


@pytest.mark.parametrize(
    ("phase", "op", "key", "skip"),
    [
        ("while the lock request is held", "GetObject", LOCK, 0),
        ("during the job (reading the input)", "GetObject", "in/sales.csv", 0),
        ("while the workbook upload is held", "PutObject", WORKBOOK, 0),
    ],
)
def test_sigterm_during_the_work_ends_75_with_the_lock_released(
    sales: Faulty, tmp_path: Path, phase: str, op: str, key: str, skip: int
) -> None:
    """Stopped during the work: exit 75, one summary naming the signal, the lock freed."""
    sales.proxy.add("gate", op, key=f"^{key}$", skip=skip)
    proc = start(sales, tmp_path)
    sigterm_when_held(sales, proc)
    ended = finish(proc)
    assert ended.code == 75, phase
    [summary] = ended.summaries
    assert ended.lines[-1] is summary
    assert (summary["outcome"], summary["signal"]) == ("terminated", "SIGTERM")
    assert lock_holder(sales) == "", "the lock is released for the next run"
    again = finish(start(sales, tmp_path))  # at once: no lease to wait out
    assert again.code == 0
    # The held upload itself completed (a request in flight is not cut): then unchanged.
    assert again.summaries[0]["report"] == ("unchanged" if key == WORKBOOK else "created")


@pytest.mark.parametrize(
    ("phase", "op", "key", "skip"),
    [
        ("during the lock's release", "PutObject", LOCK, 1),
        ("while the run record is written", "PutObject", "_runs/report/2026-11-28/", 0),
    ],
)
def test_sigterm_after_the_work_ends_0_and_says_so(
    sales: Faulty, tmp_path: Path, phase: str, op: str, key: str, skip: int
) -> None:
    """Stopped once the report is stored: exit 0, terminated_after_work, all written."""
    sales.proxy.add("gate", op, key=f"^{key}", skip=skip)
    proc = start(sales, tmp_path)
    sigterm_when_held(sales, proc)
    ended = finish(proc)
    assert ended.code == 0, phase
    [summary] = ended.summaries
    assert (summary["outcome"], summary["job_outcome"]) == ("terminated_after_work", "ok")
    assert summary["signal"] == "SIGTERM" and summary["report"] == "created"
    assert lock_holder(sales) == ""
    latest = sales.direct.get_object(Bucket=sales.bucket, Key="_runs/report/latest.json")
    # The run counts as a success for `ochinai status`, whichever moment the signal came.
    assert json.loads(latest["Body"].read())["last_success"]["run_id"] == summary["run_id"]


def test_after_sigterm_a_hanging_s3_cannot_keep_the_summary_past_the_pods_grace(
    sales: Faulty, tmp_path: Path
) -> None:
    """Stopped while S3 stops answering: the lock's release and the run record are given
    up so that the summary line comes before terminationGracePeriodSeconds, and says what
    was not done; the lock then expires by its lease. Before, the release and the record
    waited out the S3 client's timeouts (60 s x 4), past the kubelet's SIGKILL."""
    sales.proxy.add("gate", "GetObject", key="^in/sales.csv$")
    proc = start(
        sales,
        tmp_path,
        OCHINAI_STOP_GRACE="1s",
        OCHINAI_TERMINATION_GRACE="5s",
        OCHINAI_LOCK_DURATION="30s",
        OCHINAI_LOCK_RENEW_PERIOD="10s",
        OCHINAI_LOCK_RENEW_DEADLINE="20s",
    )
    assert sales.proxy.held.wait(30), "the run never read its input"
    # From now on every answer comes a minute late: S3 hangs.
    sales.proxy.add("hold", None, seconds=60, times=10**6)
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    time.sleep(0.2)
    sales.proxy.release()
    ended = finish(proc)
    took = time.monotonic() - stopped
    assert ended.code == 75
    [summary] = ended.summaries
    assert summary["outcome"] == "terminated"
    assert summary["lock_released"] is False and summary["record_written"] is False
    assert took < 5, f"the summary came {took:.1f} s after SIGTERM, past the 5 s grace"


def test_sigterm_before_the_lock(sales: Faulty, tmp_path: Path) -> None:
    """Stopped as soon as it starts: 75, nothing written but the lock it freed (if any)."""
    proc = start(sales, tmp_path)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "starting report": settings parsed, nothing done yet
    assert json.loads(first)["message"] == "starting report"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    ended = Ended(proc.returncode, [json.loads(line) for line in [first, *out.splitlines()]])
    assert ended.code == 75
    assert ended.summaries[0]["outcome"] == "terminated"
    assert WORKBOOK not in sales.keys("out/")


def catches_sigterm(proc: subprocess.Popen[str], timeout: float = 20) -> None:
    """Wait until the process has a handler for SIGTERM (Linux: SigCgt in its status), so
    that a signal sent then tests ochinai, not how fast the interpreter starts."""
    deadline = time.monotonic() + timeout
    status = Path(f"/proc/{proc.pid}/status")
    while time.monotonic() < deadline:
        lines = status.read_text().splitlines()
        caught = next((line.split()[1] for line in lines if line.startswith("SigCgt")), "0")
        if int(caught, 16) & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.001)
    raise AssertionError(f"no SIGTERM handler after {timeout} s")


def test_sigterm_during_the_imports_is_not_lost(sales: Faulty, tmp_path: Path) -> None:
    """Stopped before Python has even loaded the job: recorded, then 75 with a summary.

    The default action would end the process at once (exit -15), with no summary line.
    """
    proc = start(sales, tmp_path)
    catches_sigterm(proc)  # its first handler is in; the job's modules are far from loaded
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    ended = Ended(proc.returncode, [json.loads(line) for line in out.splitlines()])
    assert ended.code == 75
    assert [s["outcome"] for s in ended.summaries] == ["terminated"]
    assert WORKBOOK not in sales.keys("out/")


def test_sigterm_after_the_summary_leaves_the_exit_code_as_it_said(
    sales: Faulty, tmp_path: Path
) -> None:
    """Python's shutdown puts default signal actions back; an ochinai process must not die
    of a SIGTERM then (-15, a failed pod) after its summary said 0."""
    codes = []
    for delay in (0.0, 0.02, 0.04, 0.06, 0.08, 0.1):  # somewhere in its shutdown
        proc = start(sales, tmp_path)
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(json.loads(line))
            if lines[-1].get("event") == "summary":
                time.sleep(delay)
                proc.send_signal(signal.SIGTERM)
                break
        proc.communicate(timeout=60)
        codes.append((delay, proc.returncode, lines[-1]["exit_code"]))
    assert [(d, c) for d, c, said in codes if c != said] == []
