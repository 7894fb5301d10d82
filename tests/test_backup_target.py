"""OCHINAI_BACKUP_TARGET: the generations in a bucket (and under keys) of their own.

On moto: every backup action reads and writes the generations in the target, the
sources and the run's records stay in the store. On a real SeaweedFS with two
identities: the sources' keys cannot delete or overwrite anything in the target.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ochinai.jobs.backup import JOB
from ochinai.jobs.backup.settings import (
    BackupSettings,
    DrillSettings,
    RestoreSettings,
    VerifySettings,
)
from ochinai.jobs.backup.target import SHARED
from ochinai.runtime.declare import load
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.run import Runner
from ochinai.runtime.settings import RuntimeSettings
from ochinai.runtime.storage import make_s3_client
from tests.servers import s3 as s3servers
from tests.test_backup import DAY, SALES, Backup, dump, make_shop

TARGET = {"OCHINAI_BACKUP_TARGET": "s3://vault/backups"}


class TargetBackup(Backup):
    """Backup, every action with its own settings class (drill too)."""

    def run(self, action: str = "run", day: date = DAY, **env: str) -> int:
        self.runs += 1
        full = {
            "OCHINAI_STORE": f"s3://{self.bucket}",
            "OCHINAI_LOCK": "s3",
            "OCHINAI_RUN_ID": f"t-{self.runs}",
            "OCHINAI_DATE": day.isoformat(),
            **env,
        }
        settings_class = {
            "verify": VerifySettings,
            "restore": RestoreSettings,
            "drill": DrillSettings,
        }.get(action, BackupSettings)
        runner = Runner(
            JOB,
            load(RuntimeSettings, full),
            load(settings_class, full),
            action=action,
            utcnow=lambda: datetime(day.year, day.month, day.day, 21, tzinfo=UTC),
        )
        return runner.run()

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            o["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]

    def warnings(self) -> list[str]:
        return [x["message"] for x in self.lines() if x["message"] == SHARED]


@pytest.fixture
def job(moto_ops: Any, tmp_path: Path) -> TargetBackup:
    moto_ops.create_bucket(Bucket="vault")
    return TargetBackup(moto_ops, tmp_path)


def test_the_generations_land_in_the_target_and_every_action_reads_them(
    job: TargetBackup, tmp_path: Path
) -> None:
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    job.put("data/source/shop.sqlite", shop.read_bytes())
    job.put("data/source/sales.csv", SALES.encode())
    assert job.run(**TARGET) == 0, job.buf.getvalue()[-3000:]
    vault = job.keys("vault")
    assert "backups/backup/20261201/manifest.json" in vault
    assert any(k.endswith(".parquet") for k in vault)
    assert all(k.startswith("backups/backup/") for k in vault)
    assert job.keys("ops", "backup/") == []
    assert any(k.startswith("_runs/") for k in job.keys("ops"))  # the run's records stay
    assert job.warnings() == []

    assert job.run("verify", **TARGET) == 0 and job.summary["outcome"] == "ok"
    restored = job.restore(**TARGET)
    assert dump(restored / "shop.sqlite") == dump(shop)
    assert (restored / "sales.csv").read_bytes() == SALES.encode()
    assert job.run("list", **TARGET) == 0 and job.summary["complete"] == 1
    assert job.run("drill", **TARGET) == 0, job.buf.getvalue()[-3000:]
    assert job.run("forget", **TARGET) == 0
    assert job.keys("ops", "backup/") == []
    assert job.warnings() == []
    # Without the target the store has no generation: the target is where they are.
    assert job.run("verify") != 0


def test_without_a_target_run_and_list_warn_once_each(job: TargetBackup) -> None:
    job.put("data/source/sales.csv", SALES.encode())
    assert job.run() == 0
    assert job.warnings() == [SHARED]
    assert job.run("list") == 0 and job.summary["complete"] == 1
    assert job.warnings() == [SHARED, SHARED]
    assert any(k.startswith("backup/20261201/") for k in job.keys("ops"))
    assert job.keys("vault") == []


def test_the_target_keys_go_together() -> None:
    env = {"OCHINAI_BACKUP_TARGET_ACCESS_KEY_ID": "a", **TARGET}
    with pytest.raises(ConfigError) as caught:
        load(BackupSettings, env)
    assert caught.value.exit_code == 78
    assert "OCHINAI_BACKUP_TARGET_SECRET_ACCESS_KEY" in str(caught.value)
    both = load(BackupSettings, {**env, "OCHINAI_BACKUP_TARGET_SECRET_ACCESS_KEY": "b" * 40})
    assert both.target is not None and (both.target.bucket, both.target.prefix) == (
        "vault",
        "backups",
    )


# --- SeaweedFS with two identities ----------------------------------------------------------

SOURCE = ("ochinai-source", "ochinai-source-secret-0123456789")
BACKUP = ("ochinai-backup", "ochinai-backup-secret-0123456789")


def _identity(name: str, keys: tuple[str, str], actions: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "credentials": [{"accessKey": keys[0], "secretKey": keys[1]}],
        "actions": actions,
    }


IDENTITIES = {
    "identities": [
        _identity(
            "admin",
            (s3servers.ACCESS_KEY, s3servers.SECRET_KEY),
            ["Admin", "Read", "Write", "List", "Tagging"],
        ),
        # The run's store: the sources, the lock and the run's records; nothing in vault.
        _identity("source", SOURCE, ["Read:ops", "List:ops", "Write:ops"]),
        # The backups: vault only.
        _identity("backup", BACKUP, ["Read:vault", "List:vault", "Write:vault"]),
    ]
}


@pytest.fixture(scope="module")
def two_identities(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3servers.WeedMini]:
    server = s3servers.WeedMini(tmp_path_factory.mktemp("weed-identities"), IDENTITIES)
    try:
        server.start()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        admin = make_s3_client(
            endpoint_url=server.endpoint,
            access_key=s3servers.ACCESS_KEY,
            secret_key=s3servers.SECRET_KEY,
            max_attempts=1,
        )
        admin.create_bucket(Bucket="ops")
        admin.create_bucket(Bucket="vault")
        yield server
    finally:
        server.stop()


def test_on_seaweedfs_the_sources_keys_cannot_touch_the_target(
    two_identities: s3servers.WeedMini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = two_identities.endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SOURCE[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SOURCE[1])
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    source = make_s3_client(endpoint_url=endpoint, max_attempts=1)
    vault = make_s3_client(
        endpoint_url=endpoint, access_key=BACKUP[0], secret_key=BACKUP[1], max_attempts=1
    )
    env = {
        **TARGET,
        "OCHINAI_BACKUP_TARGET_ACCESS_KEY_ID": BACKUP[0],
        "OCHINAI_BACKUP_TARGET_SECRET_ACCESS_KEY": BACKUP[1],
    }
    job = TargetBackup(source, tmp_path)
    job.put("data/source/sales.csv", SALES.encode("cp932"))

    # (1) the job works: sources with the source's keys, generations with the backup's.
    assert job.run(**env) == 0, job.buf.getvalue()[-3000:]
    assert job.run("verify", **env) == 0, job.buf.getvalue()[-3000:]
    assert job.run("drill", **env) == 0, job.buf.getvalue()[-3000:]
    listed = vault.list_objects_v2(Bucket="vault", Prefix="backups/backup/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert "backups/backup/20261201/manifest.json" in keys
    assert job.keys("ops", "backup/") == []

    # (2) the sources' keys can neither delete nor overwrite anything in the target.
    manifest = "backups/backup/20261201/manifest.json"
    before = vault.get_object(Bucket="vault", Key=manifest)["Body"].read()
    for attempt in (
        lambda: source.delete_object(Bucket="vault", Key=manifest),
        lambda: source.put_object(Bucket="vault", Key=manifest, Body=b"{}"),
    ):
        with pytest.raises(ClientError) as denied:
            attempt()
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
    bulk = _delete_objects(source, keys)  # DeleteObjects: 200, or one error for each key
    assert bulk.get("Deleted", []) == [], bulk
    assert sorted(_list(vault)) == sorted(keys)
    after = vault.get_object(Bucket="vault", Key=manifest)["Body"].read()
    assert after == before
    # ... nor, the other way round, can the backup's keys touch the sources.
    with pytest.raises(ClientError) as denied:
        vault.delete_object(Bucket="ops", Key="data/source/sales.csv")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def _delete_objects(client: Any, keys: list[str]) -> dict[str, Any]:
    try:
        result: dict[str, Any] = client.delete_objects(
            Bucket="vault", Delete={"Objects": [{"Key": k} for k in keys]}
        )
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied"
        return {}
    return result


def _list(client: Any) -> list[str]:
    listed = client.list_objects_v2(Bucket="vault", Prefix="backups/backup/")
    return [o["Key"] for o in listed.get("Contents", [])]
