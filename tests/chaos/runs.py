"""Whole runs of a job as the CronJob runs them: a subprocess against SeaweedFS.

The buckets, the runs and their summaries, shared by the chaos tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import boto3

from tests.harness import assert_no_traceback
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, WeedMini, job_environment

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "docker"))
import sample_data  # noqa: E402

DAY = date(2026, 11, 28)
KILLS = int(os.environ.get("CHAOS_KILLS", "1"))
SEED = int(os.environ.get("CHAOS_SEED", "20261202"))
INPUTS = tuple(sample_data.objects(DAY))


@dataclass
class Run:
    """One finished run: its exit code, every JSON line it printed, its time."""

    code: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [x for x in self.lines if x.get("event") == "summary"]

    @property
    def summary(self) -> dict[str, Any]:
        return (self.summaries or [{}])[-1]

    @property
    def outcome(self) -> tuple[int, str | None]:
        return self.code, self.summary.get("outcome")


def finished(proc: subprocess.Popen[bytes], started: float, timeout: float = 120) -> Run:
    out, _ = proc.communicate(timeout=timeout)
    text = out.decode(errors="replace")
    assert_no_traceback(proc.returncode, text, proc.args)
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return Run(proc.returncode, lines, time.monotonic() - started)


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

    def start(self, job: str, **env: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "ochinai", job, "--date", DAY.isoformat()]
        return subprocess.Popen(
            cmd, env={**self.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def run(self, job: str, **env: str) -> Run:
        """Run ``job`` to its end."""
        return finished(self.start(job, **env), time.monotonic())


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


def new_bucket(weed: WeedMini, name: str, *, inputs: bool = True, **settings: str) -> Bucket:
    """The bucket ``name`` holding the sample inputs (or nothing) and nothing else.

    The same name for the clean run and the one compared with it: the outputs name
    their input's URL (the workbook's note, the manifest's origins).
    """
    client = s3_client(weed.endpoint)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=name)
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    if inputs:
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
        # Most writes go in parts, so that a killed run can leave an upload open.
        OCHINAI_MULTIPART_THRESHOLD="4KiB",
        **settings,
    )
    return Bucket(name, client, env)
