"""Kill a run anywhere, start eight at once: nothing half-written, the outputs a clean run's.

Each job runs as a subprocess against SeaweedFS, as the CronJob runs it. For the report
and the backup (CSV and SQLite sources, docker/sample_data.py's inputs):

- **SIGKILL anywhere**: the job is killed at ``CHAOS_KILLS`` random moments (seeded by
  ``CHAOS_SEED``), then run to completion. After every kill and after the last run: no
  object a completed run would not write, every object that is there has a completed
  run's bytes, every manifest parses and every file it lists is there with its sha256,
  no multipart upload is left open; and at the end the outputs are byte for byte those
  of a run never killed.
- **Eight at once**: exactly one run does the work, the others end ``skipped_locked``
  or ``unchanged`` (exit 0), and the outputs are a single run's.

``make test`` runs 2 kills and 2 stops a job; ``make chaos`` 30 (``CHAOS_KILLS``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.chaos.conftest import Tally
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, WeedMini, job_environment

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "docker"))
import sample_data  # noqa: E402

pytestmark = pytest.mark.chaos

DAY = date(2026, 11, 28)
KILLS = int(os.environ.get("CHAOS_KILLS", "2"))
SEED = int(os.environ.get("CHAOS_SEED", "20261202"))
# What a completed run writes, by job; what else may be there (records, the lock).
OUTPUTS = {"report": ("out/",), "backup": ("backup/",)}
BOOKKEEPING = ("_runs/", "_locks/", "_sent/", "_probe")
INPUTS = tuple(sample_data.objects(DAY))


@dataclass
class Bucket:
    """One bucket of the session's SeaweedFS, reached as the jobs reach it."""

    name: str
    client: Any
    env: dict[str, str]

    def objects(self) -> dict[str, bytes]:
        found = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                found[key] = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return found

    def uploads(self) -> list[Any]:
        return list(self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", []))

    def start(self, job: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "ochinai", job, "--date", DAY.isoformat()]
        return subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedMini]:
    server = WeedMini(tmp_path_factory.mktemp("chaos-weed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def new_bucket(weed: WeedMini, name: str) -> Bucket:
    """The bucket ``name`` holding the sample inputs and nothing else.

    The same name for the clean run and the one compared with it: the outputs name
    their input's URL (the workbook's note, the manifest's origins).
    """
    client = boto3.client(
        "s3",
        endpoint_url=weed.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=name)
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    for key, body in sample_data.objects(DAY).items():
        client.put_object(Bucket=name, Key=key, Body=body)
    env = job_environment(
        weed.endpoint,
        f"s3://{name}",
        # A killed run's lock expires soon, and the next run waits for it.
        OCHINAI_LOCK_DURATION="3s",
        OCHINAI_LOCK_RENEW_PERIOD="1s",
        OCHINAI_LOCK_RENEW_DEADLINE="2s",
        OCHINAI_LOCK_WAIT="10s",
    )
    return Bucket(name, client, env)


def outputs(job: str, objects: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in objects.items() if k.startswith(OUTPUTS[job])}


def run_to_end(bucket: Bucket, job: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    proc = bucket.start(job)
    out, _ = proc.communicate(timeout=120)
    summary = next(
        (
            json.loads(line)
            for line in reversed(out.decode().splitlines())
            if line.startswith("{") and '"summary"' in line
        ),
        {},
    )
    return proc.returncode, summary, time.monotonic() - started


def violations(job: str, objects: dict[str, bytes], reference: dict[str, bytes]) -> list[str]:
    """What a killed or finished run must never leave (empty: none)."""
    found = []
    for key, body in objects.items():
        if key in INPUTS or key.startswith(BOOKKEEPING):
            if key.endswith(".json"):
                try:
                    json.loads(body)
                except ValueError:
                    found.append(f"{key}: not JSON")
            continue
        if key not in reference:
            found.append(f"{key}: not an object a completed run writes")
        elif body != reference[key]:
            found.append(f"{key}: other bytes than a completed run's")
    for key, body in objects.items():
        if key.endswith("manifest.json") and key.startswith("backup/"):
            manifest = json.loads(body)
            for entry in manifest["sources"]:
                for file in entry.get("files", []):
                    there = objects.get(file["key"])
                    if there is None:
                        found.append(f"{key} lists {file['key']}, which is not there")
                    elif hashlib.sha256(there).hexdigest() != file["sha256"]:
                        found.append(f"{file['key']}: not the sha256 {key} says")
    return found


@pytest.mark.parametrize("job", ["report", "backup"])
def test_a_run_killed_anywhere_leaves_nothing_half_written(
    weed: WeedMini, job: str, tally: Tally
) -> None:
    clean = new_bucket(weed, f"chaos-{job}")
    code, summary, seconds = run_to_end(clean, job)
    assert (code, summary.get("outcome")) == (0, "ok"), summary
    reference = outputs(job, clean.objects())
    assert reference, "the clean run wrote nothing"

    killed = new_bucket(weed, f"chaos-{job}")
    rng = random.Random(f"{SEED}-{job}")
    problems: list[str] = []
    for n in range(KILLS):
        proc = killed.start(job)
        time.sleep(rng.uniform(0.05, seconds * 1.2))  # anywhere: start-up, work, the end
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        tally.add(job, kills=1, killed_running=int(running))
        problems += [
            f"after kill {n + 1}: {p}" for p in violations(job, killed.objects(), reference)
        ]
    code, summary, _ = run_to_end(killed, job)
    assert code == 0, summary
    final = killed.objects()
    problems += [f"after the last run: {p}" for p in violations(job, final, reference)]
    if outputs(job, final) != reference:
        problems.append("the outputs after the kills differ from a clean run's")
    if killed.uploads():
        problems.append(f"multipart uploads left open: {killed.uploads()}")
    tally.add(job, violations=len(problems))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("job", ["report", "backup"])
def test_eight_runs_at_once_do_the_work_once(weed: WeedMini, job: str, tally: Tally) -> None:
    clean = new_bucket(weed, f"chaos-{job}")
    assert run_to_end(clean, job)[0] == 0
    reference = outputs(job, clean.objects())

    crowd = new_bucket(weed, f"chaos-{job}")
    crowd.env["OCHINAI_LOCK_WAIT"] = "0s"  # who does not get the lock stops at once
    procs = [crowd.start(job) for _ in range(8)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        summary = next((x for x in reversed(lines) if x.get("event") == "summary"), {})
        results.append((proc.returncode, summary.get("outcome")))
    tally.add(job, concurrent=8)
    worked = [r for r in results if r == (0, "ok")]
    others = [r for r in results if r != (0, "ok")]
    problems = []
    if len(worked) != 1:
        problems.append(f"{len(worked)} runs did the work: {results}")
    if any(r not in ((0, "skipped_locked"), (0, "unchanged")) for r in others):
        problems.append(f"a run that did not work did not say so: {results}")
    if outputs(job, crowd.objects()) != reference:
        problems.append("the outputs differ from a single run's")
    tally.add(job, violations=len(problems))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("job", ["report", "backup"])
def test_a_run_stopped_anywhere_says_so_once_and_lets_the_next_one_in(
    weed: WeedMini, job: str, tally: Tally
) -> None:
    """SIGTERM, as Kubernetes stops a pod: one summary, 75 (or 0 if done), the lock freed."""
    clean = new_bucket(weed, f"chaos-{job}")
    seconds = run_to_end(clean, job)[2]
    reference = outputs(job, clean.objects())

    stopped = new_bucket(weed, f"chaos-{job}")
    rng = random.Random(f"{SEED}-{job}-term")
    problems: list[str] = []
    for n in range(KILLS):
        proc = stopped.start(job)
        time.sleep(rng.uniform(0.3, seconds * 1.2))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        summaries = [x for x in lines if x.get("event") == "summary"]
        tally.add(job, sigterms=1)
        if proc.returncode not in (0, 75):
            problems.append(f"stop {n + 1}: exit {proc.returncode}")
        elif len(summaries) != 1:
            problems.append(f"stop {n + 1}: {len(summaries)} summary lines")
        elif summaries[0]["exit_code"] != proc.returncode:
            problems.append(f"stop {n + 1}: the summary says {summaries[0]['exit_code']}")
        problems += [
            f"after stop {n + 1}: {p}" for p in violations(job, stopped.objects(), reference)
        ]
    # The lock was released: a run that does not wait for it gets it at once.
    stopped.env["OCHINAI_LOCK_WAIT"] = "0s"
    code, summary, _ = run_to_end(stopped, job)
    if (code, summary.get("outcome")) not in ((0, "ok"), (0, "unchanged")):
        problems.append(f"the next run: exit {code}, {summary.get('outcome')}")
    if outputs(job, stopped.objects()) != reference:
        problems.append("the outputs after the stops differ from a clean run's")
    tally.add(job, violations=len(problems))
    assert not problems, "\n".join(problems)
