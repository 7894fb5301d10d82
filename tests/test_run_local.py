"""`make run-local` end to end: every job twice against SeaweedFS, then verify, restore, status.

And the Docker Compose path as far as it can go without an engine: a stand-in `docker` on
PATH that answers `docker info` and records the commands it is given.
"""

from __future__ import annotations

import csv
import email
import email.policy
import importlib.util
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from ochinai.cli import registry

ROOT = Path(__file__).resolve().parent.parent
JOBS = list(registry())
SCRIPT = ROOT / "docker" / "run_local.py"
DAY = date(2026, 11, 28)


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docker" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sample_data = _module("sample_data")


def test_run_local_runs_every_registered_job() -> None:
    """Every registered job, in the registry's order, expected ok then unchanged but where
    run_local.ROUNDS says otherwise (the monitor), and only registered jobs there."""
    run_local = _module("run_local")
    assert tuple(JOBS) == run_local.JOBS
    assert set(run_local.FIRST_ROUND) == set(run_local.SECOND_ROUND) == set(JOBS)
    assert set(run_local.ROUNDS) <= set(JOBS)
    for job in JOBS:
        rounds = run_local.FIRST_ROUND[job], run_local.SECOND_ROUND[job]
        assert rounds == run_local.ROUNDS.get(job, ("ok", "unchanged")), job


def test_the_sample_inputs_are_the_same_bytes_for_the_same_date() -> None:
    assert sample_data.objects(DAY) == sample_data.objects(DAY)
    assert sample_data.sample_sales(DAY) != sample_data.sample_sales(date(2026, 11, 29))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("run-local") / "out"
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--date", DAY.isoformat()]
    done = subprocess.run([*cmd, "--s3", "seaweedfs"], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out, done.stdout


def summaries(out: Path, name: str) -> dict[str, Any]:
    lines = (out / "logs" / f"{name}.log").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return next(e for e in reversed(events) if e.get("event") == "summary")


def test_every_job_runs_and_the_second_round_changes_only_what_changed(
    run: tuple[Path, str],
) -> None:
    out, stdout = run
    assert stdout.rstrip().endswith("OK")
    assert "using SeaweedFS on this machine" in stdout
    first = {job: summaries(out, f"1-{job}") for job in JOBS}
    second = {job: summaries(out, f"2-{job}") for job in JOBS}
    assert {j: s["exit_code"] for j, s in first.items()} == dict.fromkeys(JOBS, 0)
    # Every job unchanged the second time, but the monitor, which sees the shop's changes.
    assert {j: s["outcome"] for j, s in second.items()} == {
        **dict.fromkeys(JOBS, "unchanged"),
        "monitor": "ok",
    }
    # The monitor: a baseline first, then the shop's three changes, after one 429.
    assert first["monitor"]["items"] == 6 and not first["monitor"].get("price_changed")
    kinds = ("price_changed", "sold_out", "restocked")
    assert {k: second["monitor"].get(k) for k in kinds} == dict.fromkeys(kinds, 1)
    assert second["monitor"]["retries"] == 1 and second["monitor"]["waited_s"] >= 1
    # The backup: three sources, every file the first time, none the second.
    assert first["backup"]["sources"] == 3 and first["backup"]["files_written"] == 6
    assert second["backup"]["files_written"] == 0 and second["backup"]["files_unchanged"] == 6
    assert summaries(out, "verify")["verified"] == 6
    assert "backup generation: s3://ochinai-local/backup/20261128/ (7 objects)" in stdout
    assert "monitor history: s3://ochinai-local/monitor/history/ (1 file)" in stdout
    # A copy of every input and the log of every command, named in the summary.
    inputs = sample_data.objects(DAY)
    assert {k: (out / "inputs" / k).read_bytes() for k in inputs} == inputs
    assert f"inputs (copies of what was uploaded): {out / 'inputs'}" in stdout
    for name in ("1-report", "2-backup", "verify", "restore", "status", "s3-server"):
        assert f"log: {out / 'logs' / name}.log" in stdout


def test_the_workbook_has_the_sample_sales_and_is_mailed_once(run: tuple[Path, str]) -> None:
    out, _ = run
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for row in csv.DictReader(io.StringIO(sample_data.sample_sales(DAY).decode())):
        expected[(row["date"], row["store"])] += int(row["sales"])
    book = openpyxl.load_workbook(out / "report_20261128.xlsx", read_only=True)
    rows = list(book["日次売上"].iter_rows(max_col=3, values_only=True))
    table = rows[next(i for i, row in enumerate(rows) if row[0] == "日付") + 1 :]
    got = {(day.date().isoformat(), store): sales for day, store, sales in table if store}
    assert got == dict(expected)

    # Four mails: to sales the report's with the workbook and the monitor's changes, to
    # ops the alert on purpose and its recovery (OCHINAI_ROUTES).
    mails = sorted((out / "mail").glob("*.eml"))
    messages = [
        email.message_from_bytes(m.read_bytes(), policy=email.policy.default) for m in mails
    ]
    attached = [
        [part.get_filename() for part in m.iter_attachments()]  # type: ignore[attr-defined]
        for m in messages
    ]
    assert attached[0] == ["report_20261128.xlsx"] and len(messages) == 4
    to = [str(m["To"]) for m in messages]
    assert to == ["uriage@localhost"] * 2 + ["ops@localhost"] * 2
    assert [str(m["Subject"])[:4] for m in messages[2:]] == ["【障害】", "【復旧】"]
    body = messages[1].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "有機コーヒー豆 1kg: 価格 ¥3,980 → ¥3,480" in body and "在庫切れ" in body


def test_the_restored_backup_is_the_sample_inputs(run: tuple[Path, str]) -> None:
    out, _ = run
    objects = sample_data.objects(DAY)
    for name, encoding in (("customers.csv", "cp932"), ("orders.csv", "utf-8-sig")):
        source = objects[f"data/source/{name}"]
        restored = (out / "restored" / name).read_bytes()
        # In the source's encoding (CP932, UTF-8 with its BOM), with the same rows; the
        # orders quote values that need no quotes, so only the customers are the same bytes.
        assert restored.startswith(b"\xef\xbb\xbf") == source.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(restored.decode(encoding))))
        assert rows == list(csv.reader(io.StringIO(source.decode(encoding))))
    customers = "data/source/customers.csv"
    assert (out / "restored" / "customers.csv").read_bytes() == objects[customers]
    assert '""' in (out / "restored" / "customers.csv").read_text(encoding="cp932")

    original = out / "original.sqlite"
    original.write_bytes(objects["data/source/shop.sqlite"])
    assert dump(out / "restored" / "shop.sqlite") == dump(original)


def dump(path: Path) -> dict[str, Any]:
    """Schema and every cell with its storage class."""
    with sqlite3.connect(path) as db:
        schema = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        tables = [
            name for kind, name, _ in schema if kind == "table" and not name.startswith("sqlite_")
        ]
        cells = {}
        for table in tables:
            columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]
            picked = ", ".join(f'typeof("{c}"), "{c}"' for c in columns)
            cells[table] = db.execute(
                f'SELECT {picked} FROM "{table}" ORDER BY 1, 2, 3, 4'
            ).fetchall()
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    return {"schema": schema, "cells": cells, "integrity": ok}


def test_with_a_docker_engine_it_runs_compose_and_says_so(tmp_path: Path) -> None:
    """A stand-in docker: `info` answers; every other command is recorded and succeeds."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 0\n')
    docker.chmod(0o755)
    env_file = tmp_path / "compose.env"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--out",
            str(tmp_path / "out"),
            "--date",
            DAY.isoformat(),
            "--env-file",
            str(env_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "a Docker engine answers: using Docker Compose with MinIO" in done.stdout
    assert env_file.read_text() == (ROOT / "docker" / ".env.example").read_text()
    recorded = calls.read_text().splitlines()
    base = f"compose -f {ROOT / 'docker' / 'compose.yaml'} --env-file {env_file}"
    assert recorded[0] == "info"
    assert recorded[1] == f"{base} down --volumes"  # round 1 starts from an empty bucket
    assert recorded[2] == f"{base} up --build --wait minio demo-api"
    assert recorded[3] == f"{base} run --rm -T create-bucket"
    assert recorded[4] == f"{base} run --rm -T sample-data --bucket ochinai-local --date 2026-11-28"
    runs = " run --rm -T --no-deps -e OCHINAI_LOG_FORMAT=json "
    jobs = [line.split(runs)[1] for line in recorded if runs in line]
    rounds = [f"{job} {job} --date 2026-11-28" for job in JOBS] * 2
    assert jobs[: len(rounds)] == rounds
    assert jobs[-1] == "status status"  # no job named: every registered job
    assert recorded[-1] == f"{base} down"
    # The stand-in's jobs print no summary: run-local must not call that a success.
    assert done.returncode == 1 and "FAILED: report run 1" in done.stdout
