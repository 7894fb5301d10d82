"""OCHINAI_BACKUP_LOCK_DAYS: every object of a generation under S3 Object Lock.

On moto and on a real SeaweedFS (both keep Object Lock retention and refuse to delete
a locked version): the objects carry the retention, the server refuses their
deletion, retention keeps a locked generation and says until when, a generation whose
lock is over goes with all its versions, and a bucket without Object Lock gives 78.
The servers' own clocks are real, so the test dates lie ahead of today's (LOCK_DAYS
reaches past it) wherever a lock must hold.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from botocore.exceptions import ClientError

from tests.conftest import S3Backend
from tests.test_backup import SALES
from tests.test_backup_target import TargetBackup

TOKYO = ZoneInfo("Asia/Tokyo")
DAY = date(2026, 12, 1)  # the first generation; the lock of LOCK_DAYS=400 ends 2028-01-05


@pytest.fixture
def locked(s3: S3Backend, monkeypatch: pytest.MonkeyPatch) -> str:
    """A bucket with Object Lock beside the backend's plain one; its name."""
    if s3.endpoint_url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    name = f"vault-{uuid.uuid4().hex[:12]}"
    s3.client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def _job(s3: S3Backend, tmp_path: Path) -> TargetBackup:
    job = TargetBackup(s3.client, tmp_path, bucket=s3.bucket)
    job.put("data/source/sales.csv", SALES.encode("cp932"))
    return job


def _sales(n: int) -> bytes:
    return (SALES + f"{n:06d},2026-12-01,S001,0450,なし,1,100,\n").encode("cp932")


def _target(bucket: str, **settings: str) -> dict[str, str]:
    return {"OCHINAI_BACKUP_TARGET": f"s3://{bucket}/backups", **settings}


def _heads(client: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.head_object(Bucket=bucket, Key=o["Key"]) for o in listed}


def _versions(client: Any, bucket: str, prefix: str) -> list[tuple[str, str]]:
    found = client.list_object_versions(Bucket=bucket, Prefix=prefix)
    every = found.get("Versions", []) + found.get("DeleteMarkers", [])
    return [(v["Key"], v["VersionId"]) for v in every]


def test_a_bucket_without_object_lock_gives_78_and_writes_nothing(
    s3: S3Backend, locked: str, tmp_path: Path
) -> None:
    job = _job(s3, tmp_path)
    plain = f"plain-{uuid.uuid4().hex[:12]}"
    s3.client.create_bucket(Bucket=plain)
    assert job.run(**_target(plain, OCHINAI_BACKUP_LOCK_DAYS="30")) == 78
    assert f"s3://{plain}" in job.error and "OCHINAI_BACKUP_LOCK_DAYS" in job.error
    assert "Object Lock" in job.error
    assert job.keys(plain, "backups/backup/") == []


@pytest.mark.parametrize("mode", ["governance", "compliance"])
def test_every_object_of_a_generation_is_locked_and_its_deletion_refused(
    s3: S3Backend, locked: str, tmp_path: Path, mode: str
) -> None:
    job = _job(s3, tmp_path)
    env = _target(locked, OCHINAI_BACKUP_LOCK_DAYS="400", OCHINAI_BACKUP_LOCK_MODE=mode)
    assert job.run(**env) == 0, job.buf.getvalue()[-3000:]
    heads = _heads(s3.client, locked, "backups/backup/20261201/")
    assert "backups/backup/20261201/manifest.json" in heads and len(heads) >= 2
    until = datetime(2028, 1, 5, tzinfo=TOKYO)  # 2026-12-01 + 400 days, 00:00 in Tokyo
    for key, head in heads.items():
        assert head["ObjectLockMode"] == mode.upper(), key
        assert head["ObjectLockRetainUntilDate"] == until, key
    manifest = job.client.get_object(Bucket=locked, Key="backups/backup/20261201/manifest.json")
    recorded = json.loads(manifest["Body"].read())["lock"]
    assert recorded == {"mode": mode, "until": "2028-01-05T00:00:00+09:00"}

    # The server refuses to delete a locked version, with these very keys.
    for key, head in heads.items():
        with pytest.raises(ClientError) as refused:
            s3.client.delete_object(Bucket=locked, Key=key, VersionId=head["VersionId"])
        assert refused.value.response["Error"]["Code"] == "AccessDenied", key
    assert job.run("verify", **env) == 0, job.buf.getvalue()[-3000:]


def test_retention_keeps_a_locked_generation_and_says_until_when(
    s3: S3Backend, locked: str, tmp_path: Path
) -> None:
    job = _job(s3, tmp_path)
    env = _target(locked, OCHINAI_BACKUP_LOCK_DAYS="400", OCHINAI_BACKUP_KEEP="1")
    for n in range(3):
        job.put("data/source/sales.csv", _sales(n))
        assert job.run(day=DAY + timedelta(days=n), **env) == 0, job.buf.getvalue()[-3000:]
    counts = job.summary
    assert counts["kept_locked"] == 2 and counts["deleted_generations"] == 0
    kept = [x for x in job.lines() if "is under Object Lock" in x["message"]]
    assert {x["generation"] for x in kept} >= {"20261201", "20261202"}
    assert "locked until 2028-01-05" in kept[0]["message"]
    assert len(job.keys(locked, "backups/backup/20261201/")) >= 2

    # list says why each is kept; forget --dry-run would delete nothing; and without
    # the setting the server's lock still keeps them (HEAD, not the settings, decides).
    assert job.run("list", **env) == 0 and job.summary["next_run_removes"] == 0
    reasons = {x["generation"]: x["kept_because"] for x in job.lines() if "kept_because" in x}
    assert reasons["20261201"] == ["locked until 2028-01-05"]
    assert "locked until 2028-01-06" in reasons["20261202"]
    plain = _target(locked, OCHINAI_BACKUP_KEEP="1")
    assert job.run("forget", day=DAY + timedelta(days=2), **plain) == 0
    assert job.summary["deleted"] == [] and set(job.summary["locked"]) == {"20261201", "20261202"}
    assert len(job.keys(locked, "backups/backup/20261201/")) >= 2


def test_a_generation_whose_lock_is_over_goes_with_all_its_versions(
    s3: S3Backend, locked: str, tmp_path: Path
) -> None:
    job = _job(s3, tmp_path)
    # The first generation without a lock (as if its lock had ended), the next with one.
    assert job.run(**_target(locked)) == 0
    first = "backups/backup/20261201/"
    assert _versions(s3.client, locked, first)
    env = _target(locked, OCHINAI_BACKUP_LOCK_DAYS="400", OCHINAI_BACKUP_KEEP="1")
    job.put("data/source/sales.csv", _sales(9))
    assert job.run(day=DAY + timedelta(days=1), **env) == 0, job.buf.getvalue()[-3000:]
    assert job.summary["deleted_generations"] == 1 and job.summary["kept_locked"] == 0
    # No delete marker and no noncurrent version is left: the bytes are gone.
    assert _versions(s3.client, locked, first) == []
    assert job.keys(locked, "backups/backup/20261202/")


def test_nothing_bypasses_governance_mode() -> None:
    # boto3's parameter (a keyword or a key) and the header it becomes
    bypass = re.compile(r"BypassGovernanceRetention[\"']?\s*[=:]|bypass-governance", re.I)
    source = Path(__file__).parents[1] / "src"
    assert bypass.search("client.delete_object(BypassGovernanceRetention=True)")
    for path in source.rglob("*.py"):
        assert not bypass.search(path.read_text()), path


def test_without_the_setting_a_versioned_bucket_still_loses_the_deleted_bytes(
    s3: S3Backend, locked: str, tmp_path: Path
) -> None:
    """OCHINAI_BACKUP_LOCK_DAYS back to 0 on a bucket that keeps versions: retention asks
    the bucket, and removes a deleted generation's versions all the same."""
    job = _job(s3, tmp_path)
    env = _target(locked, OCHINAI_BACKUP_KEEP="1")
    assert job.run(**env) == 0
    job.put("data/source/sales.csv", _sales(9))
    assert job.run(day=DAY + timedelta(days=1), **env) == 0, job.buf.getvalue()[-3000:]
    assert job.summary["deleted_generations"] == 1
    assert _versions(s3.client, locked, "backups/backup/20261201/") == []
