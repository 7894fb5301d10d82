"""The progress reporter: a log line at most every interval, a bar only on a terminal."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ochinai.runtime.progress import CountingReader, Progress

START = datetime(2026, 12, 2, 6, 10, tzinfo=UTC)


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.at = START

    def __call__(self) -> datetime:
        return self.at

    def tick(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def records(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r for r in caplog.records if getattr(r, "event", None) == "progress"]


def test_a_line_at_most_every_ten_seconds_with_counts_total_rate_and_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    progress = Progress(
        "reading s3://b/in/sales.csv", logging.getLogger("t"), clock, total_bytes=100_000_000
    )
    for second in range(1, 36):  # an update a second for 35 s
        clock.tick(1)
        progress.update(rows=second * 1000, bytes=second * 2_000_000)
    lines = records(caplog)
    assert [r.elapsed_s for r in lines] == [10.0, 20.0, 30.0]
    first = lines[0]
    assert (first.rows, first.bytes, first.total_bytes) == (10_000, 20_000_000, 100_000_000)
    assert (first.rows_per_s, first.bytes_per_s) == (1000, 2_000_000)
    assert first.getMessage() == (
        "reading s3://b/in/sales.csv: 10,000 rows, 20.0 MB of 100.0 MB (20%), 2.0 MB/s, 10 s"
    )
    clock.tick(0.5)
    progress.done()  # a last line, since there were some
    assert [r.elapsed_s for r in records(caplog)][-1] == 35.5


def test_short_work_logs_nothing_and_a_bar_only_when_given_a_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock, bar = Clock(), io.StringIO()
    progress = Progress("x", logging.getLogger("t"), clock, total_bytes=1000, bar=bar)
    for n in range(1, 11):
        clock.tick(0.1)
        progress.update(bytes=n * 100)
    progress.done()
    assert records(caplog) == []
    drawn = bar.getvalue()
    assert 5 <= drawn.count("\r") <= 6  # at most five redraws a second, and the last one
    assert drawn.endswith(
        "[########################] 0.0 MB of 0.0 MB (100%), 0.0 MB/s, 1 s\x1b[K\n"
    )


def test_counting_reader_counts_what_passes() -> None:
    counted = CountingReader(io.BytesIO(b"x" * 5000))
    assert len(io.BufferedReader(counted, 1024).read()) == 5000
    assert counted.count == 5000


def test_the_report_says_how_far_it_is_while_it_reads(tmp_path: Any) -> None:
    """A report whose clock moves 3 s a look logs progress lines with rows and bytes."""
    from moto import mock_aws

    from ochinai.jobs.report import JOB
    from ochinai.jobs.report.settings import ReportSettings
    from ochinai.runtime import logs
    from ochinai.runtime.declare import load
    from ochinai.runtime.run import Runner
    from ochinai.runtime.settings import RuntimeSettings
    from ochinai.runtime.storage import make_s3_client

    rows = "".join(f"2026-11-28,{n % 7:03d},{n:06d},100,1\n" for n in range(30_000))
    with mock_aws():
        client = make_s3_client(max_attempts=1)
        client.create_bucket(Bucket="ops")
        client.put_object(
            Bucket="ops", Key="in/sales.csv", Body=b"date,store,sku,sales,qty\n" + rows.encode()
        )
        env = {
            "OCHINAI_STORE": "s3://ops",
            "OCHINAI_LOCK": "none",
            "OCHINAI_DATE": "2026-11-28",
            "OCHINAI_LOG_FORMAT": "json",
        }
        clock = Clock()

        def now() -> datetime:
            clock.tick(3)
            return clock()

        out = io.StringIO()
        logs.configure(level="INFO", fmt="json", stream=out)
        import ochinai.jobs.report.sales as sales

        block = sales.BLOCK_SIZE
        sales.BLOCK_SIZE = 64 * 1024  # several batches
        try:
            code = Runner(
                JOB, load(RuntimeSettings, env), load(ReportSettings, env), utcnow=now
            ).run()
        finally:
            sales.BLOCK_SIZE = block
    assert code == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    progress = [e for e in events if e.get("event") == "progress"]
    assert progress, "no progress line"
    assert progress[-1]["rows"] == 30_000 and progress[-1]["total_bytes"] > 0
    assert all(e["message"].startswith("reading s3://ops/in/sales.csv: ") for e in progress)
