"""``ochinai backup drill``: a generation restored into scratch and checked as its users would.

Runs the backup and the drill in this process as their CronJobs would (Runner), the
store in moto, as tests/test_backup.py does.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ochinai.jobs.backup import JOB, sqlite
from ochinai.jobs.backup.drill import pick
from ochinai.jobs.backup.manifest import SqliteEntry
from ochinai.runtime.declare import load
from ochinai.runtime.notify import Notifier
from ochinai.runtime.run import Runner
from ochinai.runtime.settings import RuntimeSettings
from tests.harness import run_command
from tests.test_backup import (
    BUCKET,
    DAY,
    SALES,
    Backup,
    delete_generation,
    make_shop,
    on_download,
)
from tests.test_run import Recorder

OLD, MID = DAY - timedelta(days=2), DAY - timedelta(days=1)


class Drill(Backup):
    """Backup's runner with each action's own settings class and a recording notifier;
    ``day=None`` runs without OCHINAI_DATE (the business date is then the clock's)."""

    def __init__(self, client: Any, tmp: Path) -> None:
        super().__init__(client, tmp)
        self.recorder = Recorder()

    def run(self, action: str = "run", day: date | None = DAY, **env: str) -> int:
        self.runs += 1
        full = {
            "OCHINAI_STORE": f"s3://{self.bucket}",
            "OCHINAI_LOCK": "s3",
            "OCHINAI_RUN_ID": f"b-{self.runs}",
            **({"OCHINAI_DATE": day.isoformat()} if day else {}),
            **env,
        }
        clock = day or DAY
        runner = Runner(
            JOB,
            load(RuntimeSettings, full),
            load(JOB.settings_for(action), full),
            action=action,
            notifier_factory=lambda s, http: Notifier([self.recorder]),
            utcnow=lambda: datetime(clock.year, clock.month, clock.day, 1, tzinfo=UTC),
        )
        return runner.run()

    def drill(self, day: date | None = None, **env: str) -> int:
        return self.run("drill", day, **env)

    def json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def put_manifest(self, manifest: dict[str, Any], day: date = DAY) -> None:
        """The manifest rewritten as it is (valid JSON, the same version)."""
        self.put(f"backup/{day:%Y%m%d}/manifest.json", json.dumps(manifest).encode())


@pytest.fixture
def backup(moto_ops: Any, tmp_path: Path) -> Drill:
    return Drill(moto_ops, tmp_path)


def sources(backup: Drill, tmp_path: Path) -> None:
    """Three CSV files (UTF-8, CP932, one with CRLF and int64 and float64 columns) and
    two databases: the shop (mixed classes, a
    WITHOUT ROWID table, a view, a trigger), and one in UTF-16 holding TEXT whose bytes
    do not decode (read as bytes by the backup, and so by the drill)."""
    backup.put("data/source/sales.csv", SALES.encode())
    backup.put("data/source/sjis.csv", SALES.encode("cp932"))
    backup.put("data/source/typed.csv", b'id,price,note\r\n1,1.5,a\r\n-2,2.25,\r\n30,1e+20,""\r\n')
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    backup.put("data/source/shop.sqlite", shop.read_bytes())
    odd = tmp_path / "odd.db"
    with closing(sqlite3.connect(odd)) as db:
        db.executescript(
            """
            PRAGMA encoding = 'UTF-16le';
            CREATE TABLE notes (body TEXT, n);
            INSERT INTO notes VALUES ('日本語', 1), (NULL, 2.5), ('', x'00ff');
            INSERT INTO notes VALUES (CAST(x'00d8' AS TEXT), 'lone surrogate');
            """
        )
        db.commit()
    backup.put("data/source/odd.db", odd.read_bytes())


def shop_table_file(backup: Drill, table: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest, and the file entry of the shop's ``table`` in it."""
    manifest = backup.manifest()
    [entry] = [e for e in manifest["sources"] if e["name"] == "shop.sqlite"]
    [file] = [f for f in entry["files"] if f["table"] == table]
    return manifest, file


# --- a good generation ------------------------------------------------------------------


def test_the_drill_restores_a_good_generation_and_checks_every_source(
    backup: Drill, tmp_path: Path
) -> None:
    """CSV and SQLite sources restored, opened and checked: 0 with the counts; the read
    marker is gone, no lock was taken, the record is backup.drill's."""
    sources(backup, tmp_path)
    assert backup.run() == 0, backup.buf.getvalue()[-3000:]
    manifest = backup.manifest()
    lock = backup.client.head_object(Bucket=BUCKET, Key="_locks/ochinai-backup.json")["ETag"]
    assert backup.drill() == 0, backup.buf.getvalue()[-3000:]
    summary = backup.summary
    assert summary["outcome"] == "ok" and summary["action"] == "drill"
    assert summary["generation"] == "20261201"
    assert (summary["sources"], summary["csv_checked"], summary["databases_checked"]) == (5, 3, 2)
    typed = next(e for e in manifest["sources"] if e["name"] == "typed.csv")
    assert [c["type"] for c in typed["files"][0]["columns"]] == ["int64", "float64", "string"]
    assert summary["files"] == manifest["totals"]["files"]
    assert summary["rows"] == manifest["totals"]["rows"]
    assert summary["skipped_failed"] == 0
    assert backup.listed("backup/_reading/") == []
    assert (
        backup.client.head_object(Bucket=BUCKET, Key="_locks/ochinai-backup.json")["ETag"] == lock
    ), "the drill takes no lock"
    record = backup.json(f"_runs/backup.drill/{DAY.isoformat()}/b-2.json")
    assert record["outcome"] == "ok" and record["counts"]["generation"] == "20261201"
    assert backup.json("_runs/backup.drill/health.json")["state"] == "ok"
    assert backup.recorder.notices == []


def test_masked_columns_restore_as_their_tokens_and_pass(backup: Drill, tmp_path: Path) -> None:
    """The fingerprint the backup took of the masked values is the restored tokens'."""
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    backup.put("data/source/shop.sqlite", shop.read_bytes())
    backup.put(
        "data/source/customers.csv", '名前,電話\n山田,03-1234-5678\n佐藤,\n鈴木,""\n'.encode()
    )
    env = {
        "OCHINAI_BACKUP_MASK_COLUMNS": "customers.csv:電話,shop.sqlite:users.email",
        "OCHINAI_MASK_KEY": "a secret of sixteen bytes or more",
    }
    assert backup.run(**env) == 0, backup.buf.getvalue()[-3000:]
    assert backup.drill() == 0, backup.buf.getvalue()[-3000:]
    assert (backup.summary["csv_checked"], backup.summary["databases_checked"]) == (1, 1)


def test_a_generation_is_the_newest_the_dates_or_a_seeded_random_one(backup: Drill) -> None:
    """Default: the newest complete; --date: that date's; --random: the same one for the
    same seed (or business date), others for other seeds, never an incomplete one."""
    backup.put("data/source/sales.csv", SALES.encode())
    for day in (OLD, MID, DAY):
        assert backup.run(day=day) == 0, backup.buf.getvalue()[-3000:]
    backup.put(f"backup/{DAY + timedelta(days=1):%Y%m%d}/half.parquet", b"left by a crash")
    complete = {f"{d:%Y%m%d}" for d in (OLD, MID, DAY)}

    assert backup.drill() == 0 and backup.summary["generation"] == f"{DAY:%Y%m%d}"
    assert backup.drill(MID) == 0 and backup.summary["generation"] == f"{MID:%Y%m%d}"

    def drilled(**env: str) -> str:
        assert backup.drill(**env) == 0, backup.buf.getvalue()[-3000:]
        generation: str = backup.summary["generation"]
        return generation

    first = drilled(OCHINAI_BACKUP_DRILL_RANDOM="true", OCHINAI_BACKUP_DRILL_SEED="7")
    assert drilled(OCHINAI_BACKUP_DRILL_RANDOM="true", OCHINAI_BACKUP_DRILL_SEED="7") == first
    picked = {
        drilled(OCHINAI_BACKUP_DRILL_RANDOM="true", OCHINAI_BACKUP_DRILL_SEED=str(seed))
        for seed in range(8)
    }
    assert len(picked) > 1 and picked <= complete
    # No seed: the business date's; --date with --random seeds the pick (a rerun of that day's).
    by_day = drilled(OCHINAI_BACKUP_DRILL_RANDOM="true")
    assert drilled(OCHINAI_BACKUP_DRILL_RANDOM="true") == by_day
    assert drilled(OCHINAI_BACKUP_DRILL_RANDOM="true", OCHINAI_DATE=DAY.isoformat()) == pick(
        sorted(complete), DAY.isoformat()
    )
    assert backup.listed("backup/_reading/") == []


def test_pick_is_stable_and_independent_of_the_order_listed() -> None:
    names = [f"202612{d:02d}" for d in range(1, 29)]
    assert pick(names, "1") == pick(list(reversed(names)), "1")
    assert len({pick(names, str(seed)) for seed in range(50)}) > 10


def test_no_generation_to_drill_is_65(backup: Drill) -> None:
    assert backup.drill() == 65
    assert "no complete generation to drill" in backup.error
    assert backup.drill(DAY) == 65


def test_the_command_line_takes_random_and_seed(backup: Drill) -> None:
    """``ochinai backup drill --random --seed N``: the flags reach the drill."""
    backup.put("data/source/sales.csv", SALES.encode())
    for day in (OLD, MID, DAY):
        assert backup.run(day=day) == 0
    complete = [f"{d:%Y%m%d}" for d in (OLD, MID, DAY)]
    env = {"OCHINAI_STORE": f"s3://{BUCKET}", "OCHINAI_RUN_ID": "cli-1"}
    done = run_command(["backup", "drill", "--random", "--seed", "5"], env)
    assert done.code == 0, done.out[-3000:]
    summary = [json.loads(x) for x in done.out.splitlines() if '"summary"' in x][-1]
    assert summary["generation"] == pick(complete, "5") and summary["job"] == "backup"
    assert summary["action"] == "drill" and summary["sources"] == 1
    assert run_command(["backup", "drill", "--seed", "-1"], env).code == 78


def test_a_generation_deleted_while_it_is_drilled_is_75(
    backup: Drill, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention got there first: not a failed drill (66) but a retry (75), saying so."""
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run() == 0
    on_download(monkeypatch, delete_generation(backup, DAY, "deleted"))
    assert backup.drill() == 75
    assert "the generation was deleted by retention while it was read" in backup.error
    assert backup.summary["outcome"] == "transient_error"


# --- what a drill catches ------------------------------------------------------------------


def test_a_flipped_byte_in_a_parquet_file_fails_66_naming_it(backup: Drill, tmp_path: Path) -> None:
    sources(backup, tmp_path)
    assert backup.run() == 0
    _, file = shop_table_file(backup, "users")
    flipped = bytearray(backup.get(file["key"]))
    flipped[len(flipped) // 2] ^= 0x01
    backup.put(file["key"], bytes(flipped))
    assert backup.drill() == 66
    error = backup.error
    assert backup.summary["outcome"] == "verify_failed"
    assert "the restore drill of generation 20261201" in error
    assert f"source 'shop.sqlite': s3://ops/{file['key']}: sha256 differs" in error
    assert "1 problem:" in error  # the other sources passed
    assert backup.listed("backup/_reading/") == []


def test_a_missing_file_fails_66_naming_it(backup: Drill, tmp_path: Path) -> None:
    sources(backup, tmp_path)
    assert backup.run() == 0
    [file] = next(e for e in backup.manifest()["sources"] if e["name"] == "sales.csv")["files"]
    backup.client.delete_object(Bucket=BUCKET, Key=file["key"])
    assert backup.drill() == 66
    error = backup.error
    assert f"source 'sales.csv': s3://ops/{file['key']}: no such object" in error
    assert "a file the manifest lists is missing" in error
    assert "deleted by retention" not in error


def test_a_manifest_whose_rows_or_fingerprint_lie_fails_66_naming_each(
    backup: Drill, tmp_path: Path
) -> None:
    """The Parquet files are intact (their sha256 is the manifest's); what they restore to
    is not what the manifest says: every source and table named, each difference said."""
    sources(backup, tmp_path)
    assert backup.run() == 0
    manifest, users = shop_table_file(backup, "users")
    users["rows"] += 1
    by_name = {e["name"]: e for e in manifest["sources"]}
    by_name["sales.csv"]["files"][0]["rows"] += 1
    by_name["sjis.csv"]["files"][0]["fingerprint"] = "0" * 64
    [notes] = by_name["odd.db"]["files"]
    notes["fingerprint"] = "0" * 64
    backup.put_manifest(manifest)
    assert backup.drill() == 66
    error = backup.error
    assert "4 problems" in error
    assert (
        "source 'shop.sqlite': table 'users': 6 rows in the restored database; "
        "the manifest says 7" in error
    )
    assert "source 'sales.csv': 3 rows in the restored CSV; the manifest says 4" in error
    assert "source 'sjis.csv': the restored CSV's rows differ from the source's" in error
    assert "source 'odd.db': table 'notes': the restored rows differ from the source's" in error


def shop_changed_after_restore(
    backup: Drill, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *statements: str
) -> None:
    """The shop database backed up; then each database the drill restores, changed by
    ``statements`` before it is checked."""
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    backup.put("data/source/shop.sqlite", shop.read_bytes())
    assert backup.run() == 0
    original = sqlite.restore

    def restore_then_change(
        entry: SqliteEntry, paths: dict[str, Path], out: Path, ring: Any = None
    ) -> Any:
        rows = original(entry, paths, out, ring)
        with closing(sqlite3.connect(out)) as db:
            for statement in statements:
                db.execute(statement)
            db.commit()
        return rows

    monkeypatch.setattr(sqlite, "restore", restore_then_change)


def test_a_database_that_fails_integrity_check_fails_66(
    backup: Drill, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Corrupted between its restore and the drill's check: an index that no longer
    matches its table (its statement rewritten under writable_schema)."""
    shop_changed_after_restore(
        backup,
        tmp_path,
        monkeypatch,
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_master SET sql = 'CREATE INDEX users_email ON users(age)' "
        "WHERE name = 'users_email'",
    )
    assert backup.drill() == 66
    assert "source 'shop.sqlite': the restored database fails integrity_check:" in backup.error
    assert "users_email" in backup.error


def test_a_table_whose_values_changed_fails_66(
    backup: Drill, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restored value of another storage class than the manifest lists (named, not 70),
    and one changed within its class (the fingerprint)."""
    shop_changed_after_restore(
        backup,
        tmp_path,
        monkeypatch,
        "UPDATE \"order items\" SET price = 'free' WHERE sku = 'x'",
        "UPDATE users SET email = 'z@example.jp' WHERE id = 1",
    )
    assert backup.drill() == 66
    error = backup.error
    assert "2 problems" in error
    assert "table 'order items': its rows do not read as the manifest's column types" in error
    assert "table 'users': the restored rows differ from the source's (fingerprint)" in error


# --- a drill that stops passing -------------------------------------------------------------


def test_a_failing_drill_opens_one_incident_of_its_own(backup: Drill) -> None:
    """backup.drill's health says failing and one notice goes out; a second failure sends
    none; the backup's own health is untouched; a passing drill closes it."""
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run() == 0
    intact = backup.manifest()
    lying = json.loads(json.dumps(intact))
    lying["sources"][0]["files"][0]["rows"] += 1
    backup.put_manifest(lying)
    assert backup.drill() == 66
    health = backup.json("_runs/backup.drill/health.json")
    assert (health["state"], health["failed_runs"]) == ("failing", 1)
    assert "the manifest says 4" in health["last_error"]
    [opened] = backup.recorder.notices
    assert opened.severity == "error" and "backup.drill" in opened.subject
    assert opened.key.startswith("backup.drill/incident/")
    assert backup.drill() == 66
    health = backup.json("_runs/backup.drill/health.json")
    assert (health["state"], health["failed_runs"]) == ("failing", 2)
    assert len(backup.recorder.notices) == 1, "one notice an incident"
    assert backup.json("_runs/backup/health.json")["state"] == "ok"
    backup.put_manifest(intact)
    assert backup.drill() == 0
    assert backup.json("_runs/backup.drill/health.json")["state"] == "ok"
    assert [n.key.rsplit("/", 1)[1] for n in backup.recorder.notices] == ["opened", "recovered"]


def test_an_encrypted_generation_is_drilled_with_its_key_and_78_without(
    backup: Drill, tmp_path: Path
) -> None:
    from tests.test_backup_crypto import KEY

    sources(backup, tmp_path)
    assert backup.run(OCHINAI_BACKUP_KEY=KEY) == 0, backup.buf.getvalue()[-3000:]
    assert backup.drill(OCHINAI_BACKUP_KEY=KEY) == 0, backup.buf.getvalue()[-3000:]
    assert backup.summary["sources"] == 5
    assert backup.drill() == 78
