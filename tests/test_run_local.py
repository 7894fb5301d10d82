"""`make run-local` end to end: a local S3 server, two report runs, the second unchanged."""

from __future__ import annotations

import csv
import email
import email.policy
import importlib.util
import io
import subprocess
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docker" / "run_local.py"


def _script_module() -> Any:
    spec = importlib.util.spec_from_file_location("run_local", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sample_sales = _script_module().sample_sales


def test_sample_sales_are_the_same_bytes_for_the_same_date() -> None:
    assert sample_sales(date(2026, 11, 28)) == sample_sales(date(2026, 11, 28))
    assert sample_sales(date(2026, 11, 28)) != sample_sales(date(2026, 11, 29))


def test_run_local_builds_mails_and_reruns_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--date", "2026-11-28"],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "- second run: exit 0, unchanged" in done.stdout
    assert done.stdout.rstrip().endswith("- OK")

    # The workbook's daily sums are those of the generated CSV.
    sample = sample_sales(date(2026, 11, 28))
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for row in csv.DictReader(io.StringIO(sample.decode())):
        expected[(row["date"], row["store"])] += int(row["sales"])
    book = openpyxl.load_workbook(out / "report_20261128.xlsx", read_only=True)
    rows = list(book["日次売上"].iter_rows(min_row=2, max_col=3, values_only=True))
    got = {(day.date().isoformat(), store): sales for day, store, sales in rows if store}
    assert got == dict(expected)

    # One mail, from the first run only, with the workbook attached.
    mails = sorted((out / "mail").glob("*.eml"))
    assert len(mails) == 1
    message = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
    names = [part.get_filename() for part in message.iter_attachments()]  # type: ignore[attr-defined]
    assert names == ["report_20261128.xlsx"]
