"""The backup job: CSV and SQLite to Parquet generations, verify, restore, retention, shards.

Runs the job in this process as its CronJob would (Runner, S3 lock), its store in moto,
and once against a real S3 server (SeaweedFS) for the conditional writes.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ochinai.jobs.backup import JOB
from ochinai.jobs.backup.job import safe, shard_of
from ochinai.jobs.backup.settings import BackupSettings, RestoreSettings, VerifySettings
from ochinai.runtime import logs
from ochinai.runtime.declare import load
from ochinai.runtime.run import Runner
from ochinai.runtime.settings import RuntimeSettings

BUCKET = "ops"
DAY = date(2026, 12, 1)

SALES = (
    "伝票番号,日付,店舗コード,商品コード,商品名,数量,金額,備考\n"
    '000123,2026-11-30,S001,4901234567890,"りんご ""ふじ""",3,1980,\n'
    '000124,2026-11-30,S002,0012,みかん,1,1e5,""\n'
    '000125,2026-11-30,S001,0450,"改行\nあり",  7,1.50,返品\n'
)


class Backup:
    """Runs backup actions in this process; keeps the log lines."""

    def __init__(self, client: Any, tmp: Path, bucket: str = BUCKET) -> None:
        self.client, self.tmp, self.bucket = client, tmp, bucket
        self.buf = io.StringIO()
        logs.configure(fmt="json", stream=self.buf)
        self.runs = 0
        self.clock: Callable[[], datetime] | None = None  # the runs' clock; default 21:00

    def run(self, action: str = "run", day: date = DAY, **env: str) -> int:
        self.runs += 1
        full = {
            "OCHINAI_STORE": f"s3://{self.bucket}",
            "OCHINAI_LOCK": "s3",
            "OCHINAI_RUN_ID": f"b-{self.runs}",
            "OCHINAI_DATE": day.isoformat(),
            **env,
        }
        settings_class = {"verify": VerifySettings, "restore": RestoreSettings}.get(
            action, BackupSettings
        )
        runner = Runner(
            JOB,
            load(RuntimeSettings, full),
            load(settings_class, full),
            action=action,
            utcnow=self.clock or (lambda: datetime(day.year, day.month, day.day, 21, tzinfo=UTC)),
        )
        return runner.run()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buf.getvalue().splitlines()]

    @property
    def summary(self) -> dict[str, Any]:
        return [line for line in self.lines() if line.get("event") == "summary"][-1]

    @property
    def error(self) -> str:
        """The last run's error, as its log says it."""
        failed = [x["message"] for x in self.lines() if " failed: " in x["message"]]
        return failed[-1]

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def listed(self, prefix: str = "backup/") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            o["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]

    def etags(self, prefix: str = "backup/") -> dict[str, str]:
        return {
            k: self.client.head_object(Bucket=self.bucket, Key=k)["ETag"]
            for k in self.listed(prefix)
        }

    def manifest(self, day: date = DAY) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.get(f"backup/{day:%Y%m%d}/manifest.json"))
        return result

    def restore(self, day: date = DAY, **env: str) -> Path:
        target = self.tmp / f"restored-{self.runs}"
        code = self.run("restore", day, OCHINAI_BACKUP_RESTORE_TO=str(target), **env)
        assert code == 0, self.buf.getvalue()[-3000:]
        return target


@pytest.fixture
def backup(moto_ops: Any, tmp_path: Path) -> Backup:
    return Backup(moto_ops, tmp_path)


def make_shop(path: Path) -> None:
    """An application database: mixed storage classes, edge values, a full schema."""
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            """
            PRAGMA user_version = 42;
            PRAGMA application_id = 1234;
            CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL,
                                age INTEGER, note);
            CREATE TABLE "order items" (sku TEXT, qty INTEGER, price REAL,
                                        PRIMARY KEY (sku, qty)) WITHOUT ROWID;
            CREATE TABLE "../x" (a);
            CREATE TABLE "a/b" (b BLOB);
            CREATE TABLE audit (what TEXT);
            CREATE INDEX users_email ON users(email);
            CREATE VIEW adults AS SELECT * FROM users WHERE age >= 18;
            CREATE TRIGGER users_audit AFTER INSERT ON users
                BEGIN INSERT INTO audit VALUES ('insert ' || new.email); END;
            """
        )
        rows = [
            ("a@example.jp", 30, None),
            ("b@example.jp", "thirty", 1.5),  # TEXT in an INTEGER column
            ("c@example.jp", 2**63 - 1, b"\x00\xffblob"),
            ("d@example.jp", -(2**63), ""),
            ("e@example.jp", None, -0.0),
            ("f@example.jp", 7, 1e308),
            ("g@example.jp", 8, 5e-324),
        ]
        db.executemany("INSERT INTO users (email, age, note) VALUES (?, ?, ?)", rows)
        db.execute("DELETE FROM users WHERE email = 'g@example.jp'")  # sqlite_sequence: 7
        db.executemany(
            'INSERT INTO "order items" VALUES (?, ?, ?)',
            [("000123", 1, 19.99), ("000123", 2, 0.1), ("x", 3, None)],
        )
        db.execute('INSERT INTO "../x" VALUES (?)', ("escape",))
        db.execute('INSERT INTO "a/b" VALUES (?)', (bytes(range(256)),))
        db.commit()


def dump(path: Path) -> dict[str, Any]:
    """Everything a restore must give back: schema, header numbers, every cell and class."""
    with closing(sqlite3.connect(path)) as db:
        schema = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name"
        ).fetchall()
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        cells = {}
        for table in tables:
            q = '"' + table.replace('"', '""') + '"'
            columns = [r[1] for r in db.execute(f"PRAGMA table_info({q})")]
            select = ", ".join(f'typeof("{c}"), "{c}"' for c in columns)
            rowid = "" if table == "order items" else "rowid, "
            order = "ORDER BY 1" if rowid else ""
            cells[table] = db.execute(f"SELECT {rowid}{select} FROM {q} {order}").fetchall()
        return {
            "schema": schema,
            "user_version": db.execute("PRAGMA user_version").fetchone(),
            "application_id": db.execute("PRAGMA application_id").fetchone(),
            "integrity": db.execute("PRAGMA integrity_check").fetchall(),
            "cells": cells,
        }


# --- round trips ------------------------------------------------------------------------


def test_csv_round_trip_keeps_every_value_as_written(backup: Backup) -> None:
    """Leading zeros, 1e5, 1.50, '  7', Japanese text, empty vs missing: all come back."""
    backup.put("data/source/sales.csv", SALES.encode())
    backup.put("data/source/sjis.csv", SALES.encode("cp932"))
    backup.put("data/source/bom.csv", b"\xef\xbb\xbf" + SALES.encode())
    assert backup.run() == 0, backup.buf.getvalue()[-3000:]
    assert backup.summary["sources"] == 3 and backup.summary["files_written"] == 3
    manifest = backup.manifest()
    by_name = {e["name"]: e for e in manifest["sources"]}
    assert [by_name[n]["encoding"] for n in ("bom.csv", "sales.csv", "sjis.csv")] == [
        "utf-8-sig",
        "utf-8",
        "cp932",
    ]
    [file] = by_name["sales.csv"]["files"]
    types = {c["name"]: c["type"] for c in file["columns"]}
    assert types["伝票番号"] == "string" and types["商品コード"] == "string"
    assert types["数量"] == "string"  # "  7" is not 7
    assert types["金額"] == "string"  # 1e5 and 1.50 are not their numbers' text
    table = pq.read_table(io.BytesIO(backup.get(file["key"])))
    assert table.column("伝票番号").to_pylist() == ["000123", "000124", "000125"]
    assert table.column("備考").to_pylist() == [None, "", "返品"]  # missing, empty, text
    restored = backup.restore()
    # The file that was backed up: its encoding, its BOM, its line ends (CP932 and a BOM
    # used to come back as UTF-8, which Japanese Excel opens as mojibake).
    sources = {
        "sales.csv": SALES.encode(),
        "sjis.csv": SALES.encode("cp932"),
        "bom.csv": b"\xef\xbb\xbf" + SALES.encode(),
    }
    for name, body in sources.items():
        assert (restored / name).read_bytes() == body, name
    assert backup.summary["csv_identical"] == 3
    again = (restored / "sales.csv").read_text(encoding="utf-8")
    assert '""' in again.splitlines()[2]  # the empty string stays an empty string


def test_a_csv_source_is_converted_while_it_downloads(
    backup: Backup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversion reads the CSV through its download, not after it: the same file,
    the same sha256 in the manifest."""
    from ochinai.jobs.backup import csvfile
    from ochinai.runtime.following import FollowedDownload

    openers: list[Any] = []
    real = csvfile.to_parquet

    def spy(*args: Any, **kwargs: Any) -> Any:
        openers.append(kwargs.get("opener"))
        return real(*args, **kwargs)

    monkeypatch.setattr(csvfile, "to_parquet", spy)
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run() == 0, backup.buf.getvalue()[-3000:]
    [opener] = openers
    assert isinstance(getattr(opener, "__self__", None), FollowedDownload)
    [entry] = backup.manifest()["sources"]
    assert entry["source_sha256"] == hashlib.sha256(SALES.encode()).hexdigest()
    assert entry["source_bytes"] == len(SALES.encode())


def test_a_crlf_csv_comes_back_crlf_and_utf8_when_asked(backup: Backup) -> None:
    """Excel's CSV ends lines with CRLF; a line break inside a quoted value stays LF."""
    body = '店舗,メモ\r\n001,"一行目\n二行目"\r\n002,普通\r\n'.encode("cp932")
    backup.put("data/source/excel.csv", body)
    assert backup.run() == 0, backup.buf.getvalue()[-3000:]
    assert (backup.restore() / "excel.csv").read_bytes() == body
    utf8 = backup.restore(OCHINAI_BACKUP_ENCODING="utf-8")
    assert (utf8 / "excel.csv").read_bytes() == body.decode("cp932").encode("utf-8")


def test_a_numeric_column_is_typed_only_when_its_text_survives(backup: Backup) -> None:
    """qty 1,2,3 becomes int64; 0.5 and 2.25 float64; the text comes back the same."""
    backup.put("data/source/n.csv", b"id,qty,rate,code\n1,1,0.5,01\n2,22,2.25,2\n3,-3,0.125,3\n")
    assert backup.run() == 0
    [file] = backup.manifest()["sources"][0]["files"]
    assert {c["name"]: c["type"] for c in file["columns"]} == {
        "id": "int64",
        "qty": "int64",
        "rate": "float64",
        "code": "string",
    }
    restored = backup.restore()
    source = b"id,qty,rate,code\n1,1,0.5,01\n2,22,2.25,2\n3,-3,0.125,3\n"
    assert (restored / "n.csv").read_bytes() == source


def test_sqlite_round_trip_gives_back_every_cell_and_the_schema(
    backup: Backup, tmp_path: Path
) -> None:
    """Storage classes, huge integers, -0.0, 1e308, subnormals, BLOBs, NULL vs ''."""
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    backup.put("data/source/shop.sqlite", shop.read_bytes())
    assert backup.run() == 0, backup.buf.getvalue()[-3000:]
    [entry] = backup.manifest()["sources"]
    assert entry["database"]["user_version"] == 42
    keys = [f["key"] for f in entry["files"]]
    assert all(k.startswith("backup/20261201/shop.sqlite/") for k in keys)
    assert not any(".." in k.split("/")[2:] for k in keys)  # "../x" stays inside
    restored = backup.restore()
    assert dump(restored / "shop.sqlite") == dump(shop)
    assert dump(shop)["integrity"] == [("ok",)]


def test_a_live_wal_database_is_copied_consistently(backup: Backup, tmp_path: Path) -> None:
    """A writer adds rows in transactions of ten while the backup runs: never a torn copy."""
    live = tmp_path / "app" / "live.db"
    live.parent.mkdir()
    with closing(sqlite3.connect(live)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (n INTEGER, batch INTEGER)")
        db.executemany("INSERT INTO t VALUES (?, 0)", [(i,) for i in range(10)])
        db.commit()
    stop, writing = threading.Event(), threading.Event()

    def write() -> None:
        with closing(sqlite3.connect(live, timeout=30)) as db:
            batch = 1
            while not stop.is_set():
                with db:
                    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, batch) for i in range(10)])
                batch += 1
                writing.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert writing.wait(10) and (live.parent / "live.db-wal").exists()
        code = backup.run(OCHINAI_BACKUP_SOURCES=str(live.parent))
    finally:
        stop.set()
        writer.join()
    assert code == 0, backup.buf.getvalue()[-3000:]
    [entry] = backup.manifest()["sources"]
    assert entry["name"] == "app/live.db"
    table = pq.read_table(io.BytesIO(backup.get(entry["files"][0]["key"])))
    batches = table.column("batch").to_pylist()
    assert len(batches) % 10 == 0 and all(batches.count(b) == 10 for b in set(batches))


# --- reruns, changes, determinism -------------------------------------------------------


def test_same_input_same_bytes_and_a_rerun_writes_nothing(backup: Backup, tmp_path: Path) -> None:
    """Two days of the same sources give the same Parquet bytes; the same day again: nothing."""
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    backup.put("data/source/shop.sqlite", shop.read_bytes())
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run() == 0
    first = backup.etags()
    assert backup.run() == 0
    assert backup.summary["outcome"] == "unchanged" and backup.summary["files_written"] == 0
    assert backup.etags() == first
    assert backup.run(day=DAY + timedelta(days=1)) == 0
    one = {
        f["key"].split("/", 2)[2]: f["sha256"]
        for e in backup.manifest()["sources"]
        for f in e["files"]
    }
    two = backup.manifest(DAY + timedelta(days=1))
    assert {
        f["key"].split("/", 2)[2]: f["sha256"] for e in two["sources"] for f in e["files"]
    } == one


def test_a_source_changed_during_the_day_gets_a_new_file_and_manifest(backup: Backup) -> None:
    """The earlier file stays; the manifest is replaced by CAS and points to the new one."""
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run() == 0
    [old] = backup.manifest()["sources"][0]["files"]
    backup.put("data/source/sales.csv", (SALES + "000126,2026-11-30,S003,1,x,1,1,\n").encode())
    assert backup.run() == 0
    [new] = backup.manifest()["sources"][0]["files"]
    assert new["key"] != old["key"] and new["rows"] == old["rows"] + 1
    assert old["key"] in backup.listed() and backup.summary["files_written"] == 1


# --- retention ----------------------------------------------------------------------------


def test_retention_keeps_thirty_complete_generations(backup: Backup) -> None:
    """35 days: the 30 newest complete remain; an old incomplete one is cleared too."""
    backup.put("data/source/sales.csv", SALES.encode())
    start = DAY - timedelta(days=34)
    backup.put(f"backup/{start - timedelta(days=3):%Y%m%d}/half.parquet", b"left by a crash")
    for n in range(35):
        assert backup.run(day=start + timedelta(days=n)) == 0
    days = sorted({k.split("/")[1] for k in backup.listed()})
    assert len(days) == 30 and days[0] == f"{start + timedelta(days=5):%Y%m%d}"
    assert backup.summary["deleted_generations"] == 1


def test_failed_runs_never_erase_the_last_good_backup(backup: Backup) -> None:
    """Only complete generations count, and the newest without failures is always kept."""
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run(day=DAY - timedelta(days=10), OCHINAI_BACKUP_KEEP="2") == 0
    good = f"{DAY - timedelta(days=10):%Y%m%d}"
    backup.put("data/source/broken.sqlite", b"SQLite format 3\x00" + b"\x00" * 200)
    backup.put("data/source/sales.csv", b"a,b\n1,2,3\n")  # a row with three fields
    for n in range(9, 0, -1):
        assert backup.run(day=DAY - timedelta(days=n), OCHINAI_BACKUP_KEEP="2") == 65
    days = sorted({k.split("/")[1] for k in backup.listed()})
    assert good in days and len(days) == 3


# --- verify ---------------------------------------------------------------------------------


def test_verify_catches_a_flipped_byte_and_a_manifest_that_lies(backup: Backup) -> None:
    """Both end 66 with the file named; an intact generation verifies."""
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run() == 0 and backup.summary["verified"] == 1
    assert backup.run("verify") == 0
    manifest = backup.manifest()
    key = manifest["sources"][0]["files"][0]["key"]
    intact = backup.get(key)
    flipped = bytearray(intact)
    flipped[len(flipped) // 2] ^= 0x01
    backup.put(key, bytes(flipped))
    assert backup.run("verify") == 66
    assert f"s3://ops/{key}: sha256" in backup.error
    backup.put(key, intact)
    manifest["sources"][0]["files"][0]["rows"] += 1
    backup.put("backup/20261201/manifest.json", json.dumps(manifest).encode())
    assert backup.run("verify") == 66
    assert "rows read back; the manifest says 4" in backup.error


# --- verify and restore beside retention ------------------------------------------------

OLD, MID = DAY - timedelta(days=2), DAY - timedelta(days=1)


def three_generations(backup: Backup) -> None:
    """backup/ OLD, MID and DAY, all complete and kept (the default keeps 30)."""
    backup.put("data/source/sales.csv", SALES.encode())
    for day in (OLD, MID, DAY):
        assert backup.run(day=day) == 0, backup.buf.getvalue()[-3000:]


def days(backup: Backup) -> list[str]:
    """The generations there, oldest first."""
    return sorted({k.split("/")[1] for k in backup.listed()} - {"_reading"})


def on_download(monkeypatch: pytest.MonkeyPatch, hook: Callable[[str], None]) -> list[str]:
    """Call ``hook(key)`` before every ``Store.download``; the keys downloaded."""
    from ochinai.runtime.storage import Store

    original = Store.download
    keys: list[str] = []

    def download(self: Store, key: str, path: Path, *more: Any) -> tuple[str, int]:
        keys.append(key)
        hook(key)
        return original(self, key, path, *more)

    monkeypatch.setattr(Store, "download", download)
    return keys


def test_retention_leaves_a_generation_with_a_young_read_marker(backup: Backup) -> None:
    """A marker younger than an hour keeps its generation; an older one does not, and
    is deleted itself. ``_reading/`` is never taken for a generation."""
    three_generations(backup)
    marker = f"backup/_reading/{OLD:%Y%m%d}/v-1.json"
    backup.put(marker, b'{"run_id": "v-1", "action": "verify"}')
    written = backup.client.head_object(Bucket=BUCKET, Key=marker)["LastModified"]
    assert backup.run("list") == 0
    assert (backup.summary["complete"], backup.summary["incomplete"]) == (3, 0)
    # KEEP=1: OLD, MID and DAY are due; OLD is being read (59 minutes), the others go.
    backup.clock = lambda: written + timedelta(minutes=59)
    assert backup.run(day=DAY + timedelta(days=1), OCHINAI_BACKUP_KEEP="1") == 0
    assert days(backup) == [f"{OLD:%Y%m%d}", f"{DAY + timedelta(days=1):%Y%m%d}"]
    assert backup.summary["deleted_generations"] == 2  # MID and DAY
    assert marker in backup.listed()
    assert any("being read (v-1)" in line["message"] for line in backup.lines())
    # 61 minutes: the marker is stale (its reader died); the generation goes, and it.
    backup.clock = lambda: written + timedelta(minutes=61)
    assert backup.run(day=DAY + timedelta(days=2), OCHINAI_BACKUP_KEEP="1") == 0
    assert days(backup) == [f"{DAY + timedelta(days=2):%Y%m%d}"]
    assert backup.listed("backup/_reading/") == []


def test_retention_never_deletes_what_a_later_holder_of_the_lock_wrote(backup: Backup) -> None:
    """Deletes are conditional and fenced: a generation whose manifest a later term of the
    lock wrote (this run was paused past its lease meanwhile) is not deleted; the run
    ends 75 (LockLost). Before, retention deleted unconditionally."""
    three_generations(backup)
    key = f"backup/{OLD:%Y%m%d}/manifest.json"
    meta = backup.client.head_object(Bucket=BUCKET, Key=key)["Metadata"]
    backup.client.copy_object(
        Bucket=BUCKET,
        Key=key,
        CopySource={"Bucket": BUCKET, "Key": key},
        Metadata={**meta, "fence": "99"},
        MetadataDirective="REPLACE",
    )
    assert backup.run(day=DAY + timedelta(days=1), OCHINAI_BACKUP_KEEP="1") == 75
    assert key in backup.listed()
    assert any("fence 99 >" in line["message"] for line in backup.lines())


def test_retention_during_a_verify_leaves_the_generation_being_read(
    backup: Backup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention runs while verify downloads OLD's file: OLD stays (its marker), MID goes;
    the verify ends 0 and removes its marker."""
    from ochinai.jobs.backup.generations import apply_retention
    from ochinai.runtime.storage import Store

    three_generations(backup)
    seen: list[dict[str, Any]] = []
    counts: list[dict[str, int]] = []

    def retention(key: str) -> None:
        [marker] = backup.listed(f"backup/_reading/{OLD:%Y%m%d}/")
        seen.append(json.loads(backup.get(marker)))
        written = backup.client.head_object(Bucket=BUCKET, Key=marker)["LastModified"]
        counts.append(
            apply_retention(
                Store(backup.client, BUCKET), "backup/", 1, DAY, written + timedelta(minutes=1)
            ).counts
        )

    on_download(monkeypatch, retention)
    assert backup.run("verify", day=OLD) == 0, backup.buf.getvalue()[-3000:]
    assert seen == [
        {
            "run_id": "b-4",
            "action": "verify",
            "generation": f"{OLD:%Y%m%d}",
            "time": seen[0]["time"],
        }
    ]
    assert counts[0]["deleted_generations"] == 1
    assert days(backup) == [f"{OLD:%Y%m%d}", f"{DAY:%Y%m%d}"]
    assert backup.summary["verified"] == 1 and backup.summary["deleted_while_read"] == 0
    assert backup.listed("backup/_reading/") == []


def test_a_long_read_renews_its_marker_and_a_dry_run_writes_none(
    backup: Backup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clock 20 minutes on at every look: the marker is written again between files."""
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    backup.put("data/source/shop.sqlite", shop.read_bytes())
    assert backup.run() == 0
    markers: list[list[str]] = []
    times: list[str] = []

    def look(key: str) -> None:
        found = backup.listed("backup/_reading/")
        markers.append(found)
        times.extend(json.loads(backup.get(k))["time"] for k in found)

    on_download(monkeypatch, look)
    ticks = iter(range(1000))
    start = datetime(2026, 12, 2, 3, tzinfo=UTC)
    backup.clock = lambda: start + timedelta(minutes=20 * next(ticks))
    assert backup.run("verify") == 0, backup.buf.getvalue()[-3000:]
    files = len(backup.manifest()["sources"][0]["files"])
    assert files > 2 and markers == [["backup/_reading/20261201/b-2.json"]] * files
    assert len(set(times)) == files  # renewed before each file
    assert backup.listed("backup/_reading/") == []
    markers.clear()
    assert backup.run("verify", OCHINAI_DRY_RUN="true") == 0
    assert markers == [[]] * files


def delete_generation(backup: Backup, day: date, how: str) -> Callable[[str], None]:
    """A download hook: at the first file of ``day``'s generation, retention deletes it
    (``deleted``) or it is deleted and written again (``replaced``: another manifest)."""
    base = f"backup/{day:%Y%m%d}/"
    done: list[str] = []

    def hook(key: str) -> None:
        if done or not key.startswith(base):
            return
        done.append(key)
        manifest = backup.get(base + "manifest.json")
        for name in [base + "manifest.json", *backup.listed(base)]:
            backup.client.delete_object(Bucket=BUCKET, Key=name)
        if how == "replaced":
            backup.put(base + "manifest.json", manifest.replace(b'"version"', b' "version"'))

    return hook


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_generation_deleted_while_it_is_read_is_75_or_skipped(
    backup: Backup, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Not a false 65: one date and restore end 75 saying so; --all skips it (0)."""
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run(day=MID) == 0
    said = "the generation was deleted by retention while it was read"
    hook: list[Callable[[str], None]] = []
    on_download(monkeypatch, lambda key: hook[-1](key) if hook else None)
    # verify one date
    assert backup.run() == 0
    hook.append(delete_generation(backup, DAY, how))
    assert backup.run("verify") == 75
    assert said in backup.error and "run again, or pick another date" in backup.error
    assert f"s3://ops/backup/{DAY:%Y%m%d}/" in backup.error
    assert backup.summary["outcome"] == "transient_error"
    for key in backup.listed(f"backup/{DAY:%Y%m%d}/"):  # a replaced manifest, no files
        backup.client.delete_object(Bucket=BUCKET, Key=key)
    # verify --all: that one skipped, MID verified
    later = DAY + timedelta(days=1)
    assert backup.run(day=later) == 0
    hook.append(delete_generation(backup, later, how))
    assert backup.run("verify", OCHINAI_BACKUP_VERIFY_ALL="true") == 0
    summary = backup.summary
    assert (summary["generations"], summary["deleted_while_read"], summary["verified"]) == (1, 1, 1)
    assert any(said in x["message"] and x["severity"] == "WARNING" for x in backup.lines())
    # restore
    last = DAY + timedelta(days=2)
    assert backup.run(day=last) == 0
    hook.append(delete_generation(backup, last, how))
    target = backup.tmp / "restored"
    assert backup.run("restore", last, OCHINAI_BACKUP_RESTORE_TO=str(target)) == 75
    assert said in backup.error and "run again into an empty directory" in backup.error
    assert backup.listed("backup/_reading/") == []


def test_a_file_missing_under_an_unchanged_manifest_still_fails(
    backup: Backup, tmp_path: Path
) -> None:
    """The manifest as read: the file is really missing, 65 naming it, as before."""
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run() == 0
    [file] = backup.manifest()["sources"][0]["files"]
    backup.client.delete_object(Bucket=BUCKET, Key=file["key"])
    assert backup.run("verify") == 65
    assert f"s3://ops/{file['key']}: no such object" in backup.error
    assert "deleted by retention" not in backup.error
    assert backup.run("verify", OCHINAI_BACKUP_VERIFY_ALL="true") == 65
    assert f"s3://ops/{file['key']}: no such object" in backup.error
    assert backup.run("restore", OCHINAI_BACKUP_RESTORE_TO=str(tmp_path / "to")) == 65
    assert f"s3://ops/{file['key']}: no such object" in backup.error
    assert backup.listed("backup/_reading/") == []


# --- bad input ------------------------------------------------------------------------------


def test_bad_sources_end_65_and_the_rest_is_backed_up(backup: Backup, tmp_path: Path) -> None:
    """A corrupt SQLite file and an undecodable CSV fail alone, named in the manifest."""
    backup.put("data/source/good.csv", SALES.encode())
    backup.put("data/source/broken.sqlite", b"SQLite format 3\x00" + b"\x00" * 200)
    backup.put("data/source/bad.csv", "名前,値\nりんご,1\n".encode("cp932") + b"\x82\xff,2\n")
    assert backup.run() == 65
    error = backup.error
    assert "2 of 3 sources failed" in error and "s3://ops/data/source/broken.sqlite" in error
    assert "s3://ops/data/source/bad.csv line 3 (byte" in error
    manifest = backup.manifest()
    assert [e["status"] for e in manifest["sources"]] == ["failed", "failed", "ok"]
    assert manifest["totals"]["failed"] == 2


def test_an_empty_database_file_is_a_failed_source_not_an_empty_backup(backup: Backup) -> None:
    """A 0-byte .sqlite opens as a database without tables: 65 naming it, nothing backed up."""
    backup.put("data/source/app.sqlite", b"")
    assert backup.run() == 65
    assert "s3://ops/data/source/app.sqlite is empty (0 bytes)" in backup.error
    [entry] = backup.manifest()["sources"]
    assert (entry["status"], entry.get("files")) == ("failed", None)


# --- shards and masking ---------------------------------------------------------------------


def test_two_shards_make_one_complete_generation(backup: Backup) -> None:
    """Each pod backs up its share; the last one to finish writes the manifest."""
    names = [f"s{n}.csv" for n in range(6)]
    for name in names:
        backup.put(f"data/source/{name}", SALES.encode())
    assert {shard_of(n, 2) for n in names} == {0, 1}
    assert backup.run(OCHINAI_BACKUP_SHARDS="2", JOB_COMPLETION_INDEX="0") == 0
    assert "backup/20261201/manifest.json" not in backup.listed()
    assert backup.run(OCHINAI_BACKUP_SHARDS="2", JOB_COMPLETION_INDEX="1") == 0
    manifest = backup.manifest()
    assert sorted(e["name"] for e in manifest["sources"]) == names
    assert backup.summary["verified"] == 6
    assert backup.run(OCHINAI_BACKUP_SHARDS="2") == 78  # no index: a config error


def test_masked_columns_hold_tokens_and_restore_says_so(backup: Backup, tmp_path: Path) -> None:
    """The same value the same token; the manifest and the restore name the columns."""
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    backup.put("data/source/shop.sqlite", shop.read_bytes())
    backup.put(
        "data/source/customers.csv", "名前,電話\n山田,03-1234-5678\n佐藤,03-1234-5678\n".encode()
    )
    env = {
        "OCHINAI_BACKUP_MASK_COLUMNS": "customers.csv:電話,shop.sqlite:users.email",
        "OCHINAI_MASK_KEY": "a secret of sixteen bytes or more",
    }
    assert backup.run(**env) == 0, backup.buf.getvalue()[-3000:]
    by_name = {e["name"]: e for e in backup.manifest()["sources"]}
    [csv_file] = by_name["customers.csv"]["files"]
    assert csv_file["masked"] == ["電話"]
    phones = pq.read_table(io.BytesIO(backup.get(csv_file["key"]))).column("電話").to_pylist()
    assert phones[0] == phones[1] and phones[0].startswith("m_") and "1234" not in phones[0]
    restored = backup.restore()
    assert "03-1234" not in (restored / "customers.csv").read_text()
    warned = [line["message"] for line in backup.lines() if line["severity"] == "WARNING"]
    assert any("users.email" in m for m in warned) and any("電話" in m for m in warned)
    assert backup.run(OCHINAI_BACKUP_MASK_COLUMNS="customers.csv:電話") == 78  # no key


def test_list_shows_complete_and_incomplete_generations(backup: Backup) -> None:
    backup.put("data/source/sales.csv", SALES.encode())
    assert backup.run() == 0
    backup.put("backup/20261202/half.parquet", b"x")
    assert backup.run("list") == 0
    assert (backup.summary["complete"], backup.summary["incomplete"]) == (1, 1)


def test_safe_names_cannot_escape_or_collide() -> None:
    assert safe("sales.csv") == "sales.csv"
    assert "/" not in safe("../x") and not safe("../x").startswith(".")
    assert safe("a/b") != safe("a_b") and safe("order items") != safe("order_items")


# --- a real S3 server -------------------------------------------------------------------------


@pytest.mark.parametrize("s3", ["seaweedfs"], indirect=True)
def test_on_a_real_s3_server(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create-only files, the manifest by CAS, verify and restore against SeaweedFS."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    job = Backup(s3.client, tmp_path, s3.bucket)
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    job.put("data/source/shop.sqlite", shop.read_bytes())
    job.put("data/source/sales.csv", SALES.encode("cp932"))
    assert job.run() == 0, job.buf.getvalue()[-3000:]
    assert job.run() == 0 and job.summary["outcome"] == "unchanged"
    job.put("data/source/sales.csv", (SALES + "9,2026-11-30,S9,9,x,9,9,\n").encode())
    assert job.run() == 0 and job.summary["files_written"] == 1
    assert job.run("verify") == 0
    restored = job.restore()
    assert dump(restored / "shop.sqlite") == dump(shop)


def test_a_column_typed_by_its_first_batches_is_text_when_a_later_one_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small blocks: integers for many batches, then one that is not: the column stays text."""
    from ochinai.jobs.backup import csvfile

    monkeypatch.setattr(csvfile, "BLOCK_SIZE", 64)
    rows = [f"{n},{n}" for n in range(200)] + ["200,12345678901234567890", "201,0.5"]
    source = tmp_path / "late.csv"
    source.write_text("id,big\n" + "\n".join(rows) + "\n")
    out = tmp_path / "late.parquet"
    result = csvfile.to_parquet(source, "late.csv", out, tmp_path / "spill.arrow")
    assert [c["type"] for c in result.columns] == ["int64", "string"]
    assert pq.read_table(out).column("big").to_pylist()[-2:] == ["12345678901234567890", "0.5"]
    assert csvfile.fingerprint_of(out, ["id", "big"]) == (result.rows, result.fingerprint)


def test_one_pass_and_two_passes_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-pass writer (types from the first batch) and the fallback agree to the byte."""
    from ochinai.jobs.backup import csvfile

    monkeypatch.setattr(csvfile, "BLOCK_SIZE", 256)
    rows = [f"2026-09-01,S{n % 7:03d},{n:06d},{n * 37},{n % 5},{n}.25" for n in range(3000)]
    source = tmp_path / "sales.csv"
    source.write_text("date,store,sku,sales,qty,ratio\n" + "\n".join(rows) + "\n")
    one = csvfile.to_parquet(source, "sales.csv", tmp_path / "one.parquet", tmp_path / "s1")
    monkeypatch.setattr(csvfile, "_one_pass", lambda read, out: None)
    two = csvfile.to_parquet(source, "sales.csv", tmp_path / "two.parquet", tmp_path / "s2")
    assert [c["type"] for c in one.columns] == [
        "string",
        "string",
        "string",
        "int64",
        "int64",
        "float64",
    ]
    assert one == two
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
    assert not (tmp_path / "s2").exists()  # the fallback's spill is removed


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text("0123456789-+ .１e", max_size=20)), max_size=6))
def test_integer_text_is_told_as_the_regex_tells_it(values: list[str | None]) -> None:
    """The check without the regex (digits, length, no leading zero) agrees with it."""
    import re

    import pyarrow as pa

    from ochinai.jobs.backup.csvfile import _INTEGER_TEXT, _is_integer_text

    whole = re.compile(_INTEGER_TEXT)
    expected = all(whole.fullmatch(v) for v in values if v is not None)
    assert _is_integer_text(pa.array(values, pa.string())) == expected


@pytest.mark.parametrize("fallback", [False, True])
def test_a_csv_that_fails_half_way_leaves_no_parquet_and_no_spill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fallback: bool
) -> None:
    """An undecodable byte far into the file: DataError, and nothing that looks written."""
    from ochinai.jobs.backup import csvfile

    monkeypatch.setattr(csvfile, "BLOCK_SIZE", 256)
    if fallback:
        monkeypatch.setattr(csvfile, "_one_pass", lambda read, out: None)
    source = tmp_path / "bad.csv"
    good = "".join(f"{n},{n * 3}\n" for n in range(20_000)).encode()  # past the 64 KiB head
    source.write_bytes(b"id,value\n" + good + b"20000,\xff\xfe\n")
    out, spill = tmp_path / "out.parquet", tmp_path / "spill.arrow"
    from ochinai.runtime.errors import DataError

    with pytest.raises(DataError, match="line 20002"):
        csvfile.to_parquet(source, "bad.csv", out, spill)
    assert not out.exists() and not spill.exists()


def test_a_bad_byte_in_the_first_block_past_the_head_is_located(tmp_path: Path) -> None:
    """Past the 64 KiB the encoding is told from, within the first block: line and byte."""
    from ochinai.jobs.backup import csvfile
    from ochinai.runtime.errors import DataError

    good = "".join(f"{n},{n * 3}\n" for n in range(10_000)).encode()  # about 100 KB
    source = tmp_path / "bad.csv"
    source.write_bytes(b"id,value\n" + good + b"10000,\xff\n")
    with pytest.raises(DataError, match=r"bad.csv line 10002 \(byte \d+\): not valid utf-8"):
        csvfile.to_parquet(source, "bad.csv", tmp_path / "out.parquet", tmp_path / "spill")


def test_a_row_with_the_wrong_field_count_is_named_by_its_line(tmp_path: Path) -> None:
    """pyarrow, reading in threads, cannot number it: the line is found after the fact."""
    from ochinai.jobs.backup import csvfile
    from ochinai.runtime.errors import DataError

    source = tmp_path / "bad.csv"
    big = b"x" * 300_000  # past the csv module's field size limit, and a parser block
    source.write_bytes(b'id,note\n1,"two\nlines"\n\n2,' + big + b"\n3,x,extra\n4,x\n")
    with pytest.raises(DataError, match=r"^bad.csv line 6: has 3 fields where the header has 2$"):
        csvfile.to_parquet(source, "bad.csv", tmp_path / "out.parquet", tmp_path / "spill")


def test_a_utf16_source_fails_saying_so(backup: Backup) -> None:
    """UTF-16 without a BOM read as CP932 looked like text with NULs; it is refused by name."""
    backup.put("data/source/sales.csv", SALES.encode("utf-16-le"))
    assert backup.run() == 65
    assert "s3://ops/data/source/sales.csv is UTF-16" in backup.error
    assert backup.manifest()["sources"][0]["status"] == "failed"


def test_a_value_larger_than_a_block_is_backed_up_whole(tmp_path: Path) -> None:
    """A 1 MB value (four times the parser's block) is read with larger blocks, not refused."""
    from ochinai.jobs.backup import csvfile

    document = '"' + "line\n" * 200_000 + '"'
    body = f"id,doc\n1,{document}\n2,short\n".encode()
    source, out = tmp_path / "docs.csv", tmp_path / "out.parquet"
    source.write_bytes(body)
    result = csvfile.to_parquet(source, "docs.csv", out, tmp_path / "spill")
    assert result.rows == 2
    names = [c["name"] for c in result.columns]
    assert csvfile.fingerprint_of(out, names) == (2, result.fingerprint)
    csvfile.restore(out, result.header, tmp_path / "back.csv")
    back = (tmp_path / "back.csv").read_text()
    assert back.startswith('id,doc\n1,"line\n') and back.count("line\n") == 200_000


def many_rows(quote_at: int) -> bytes:
    """A CSV of 400,001 rows (about 6.6 MB, 25 parser blocks), a quote opened on one line."""
    lines = [b"id,name,value\n"] + [b"%d,n,v%d\n" % (n, n) for n in range(400_001)]
    lines[quote_at - 1] = b'%d,n,"v\n' % (quote_at - 2)
    return b"".join(lines)


@pytest.mark.parametrize("line", [11, 399_999])
def test_a_quote_that_never_closes_ends_65_naming_its_line(backup: Backup, line: int) -> None:
    """Not the rest of the file read as one value: 65 naming the line, none of it written."""
    backup.put("data/source/sales.csv", many_rows(line))
    backup.put("data/source/good.csv", SALES.encode())
    assert backup.run() == 65
    error = backup.error
    assert f"s3://ops/data/source/sales.csv line {line}: a quoted value opens here" in error
    assert "never closes" in error and '("")' in error
    manifest = backup.manifest()
    entries = {e["name"]: e for e in manifest["sources"]}
    assert entries["sales.csv"]["status"] == "failed" and not entries["sales.csv"].get("files")
    assert entries["good.csv"]["status"] == "ok"
    assert not [k for k in backup.listed() if "sales.csv" in k]


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (b'"id,name\n1,a\n2,b\n', 1),  # the header swallows the file
        (b'\xef\xbb\xbf"id,name\n1,a\n', 1),  # after a BOM
        (b'id,name\n1,a\n2,"b\n', 3),  # the last value runs to the end
        (b'id,name\r\n1,a\r\n2,"b""\r\n3,c\r\n', 3),  # "" is a quote: still open
        ('名前,値\nりんご,"1\nみかん,2\n'.encode("cp932"), 2),
        (b'id,name\r\n1,a\r2,b\n3,"c\r\n4,d\n', 4),  # LF, CRLF and CR are each a line
    ],
)
def test_a_quote_left_open_in_a_small_file_is_named(tmp_path: Path, body: bytes, line: int) -> None:
    """Small files too: the header, the last line, a doubled quote, CP932."""
    from ochinai.jobs.backup import csvfile
    from ochinai.runtime.errors import DataError

    source = tmp_path / "open.csv"
    source.write_bytes(body)
    with pytest.raises(DataError, match=rf"^open.csv line {line}: a quoted value opens here"):
        csvfile.to_parquet(source, "open.csv", tmp_path / "out.parquet", tmp_path / "spill")
    assert not (tmp_path / "out.parquet").exists()


def test_a_record_larger_than_the_largest_block_is_named_with_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the largest block a record may have: its line and size, not a block count."""
    from ochinai.jobs.backup import csvfile
    from ochinai.runtime.errors import DataError

    monkeypatch.setattr(csvfile, "_MAX_BLOCK", 1 << 20)
    source = tmp_path / "docs.csv"
    source.write_bytes(b'id,doc\n1,short\n2,"' + b"x\n" * 600_000 + b'"\n3,short\n')
    with pytest.raises(
        DataError, match=r"^docs.csv line 3: the record that starts here has 1,200,005 bytes"
    ):
        csvfile.to_parquet(source, "docs.csv", tmp_path / "out.parquet", tmp_path / "spill")


def test_the_record_scan_sees_a_quote_left_open_where_pyarrow_does() -> None:
    """Random quotes, commas and line breaks, read in chunks of 1 to 7 bytes and whole."""
    import random

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from ochinai.runtime import csvrecords as records

    pieces = [b'"', b'""', b",", b"\n", b"\r\n", b"\r", b"a", b"bc"]
    rng = random.Random(20261202)
    for _ in range(1000):
        body = b"h\n" + b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        ended = body + (b"" if body.endswith((b"\n", b"\r")) else b"\n") + b'\x01"\x02\n'
        table = pacsv.read_csv(
            io.BytesIO(ended),
            read_options=pacsv.ReadOptions(column_names=["c"], skip_rows_after_names=1),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=lambda row: "skip"
            ),
            convert_options=pacsv.ConvertOptions(column_types={"c": pa.string()}),
        )
        values = table.column("c").to_pylist()
        left_open = values[-1:] != ['\x01"\x02']
        for chunk in (rng.randint(1, 7), records.CHUNK):
            found = records.scan(Chunked(body, chunk))
            assert (found.open_quote is not None) == left_open, (body, chunk)


class Chunked(io.BytesIO):
    """Bytes read back ``chunk`` at a time at most."""

    def __init__(self, body: bytes, chunk: int) -> None:
        super().__init__(body)
        self.chunk = chunk

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self.chunk if size is None or size < 0 else min(size, self.chunk))


@pytest.mark.parametrize(
    ("body", "encoding", "rows"),
    [
        (b'"first\nname",age\nA,1\n', "auto", [["A", "1"]]),  # a line break in the header
        (b"a\n1\n\n3\n", "auto", [["1"], [], ["3"]]),  # one column: an empty line is a row
        (b"ab\n1\n2\n", "utf-8-sig", [["1"], ["2"]]),  # no BOM to skip
        (b"a,b", "auto", []),  # the header alone, no line end
    ],
)
def test_csv_shapes_that_must_come_back_whole(
    tmp_path: Path, body: bytes, encoding: str, rows: list[list[str]]
) -> None:
    """Each restores to the same records, and its fingerprint reads back the same."""
    import csv

    from ochinai.jobs.backup import csvfile

    source, out = tmp_path / "in.csv", tmp_path / "out.parquet"
    source.write_bytes(body)
    result = csvfile.to_parquet(source, "in.csv", out, tmp_path / "spill", encoding)
    names = [c["name"] for c in result.columns]
    assert csvfile.fingerprint_of(out, names) == (len(rows), result.fingerprint)
    csvfile.restore(out, result.header, tmp_path / "back.csv")
    back = list(csv.reader(io.StringIO((tmp_path / "back.csv").read_text(), newline="")))
    original = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert back[0] == original[0] and back[1:] == rows


def test_an_analyzed_database_restores_and_a_new_mask_writes_again(
    backup: Backup, tmp_path: Path
) -> None:
    """sqlite_stat1 comes with SQLite; changing the masked columns is not 'unchanged'."""
    shop = tmp_path / "shop.sqlite"
    make_shop(shop)
    with closing(sqlite3.connect(shop)) as db:
        db.execute("ANALYZE")
        db.commit()
    backup.put("data/source/shop.sqlite", shop.read_bytes())
    assert backup.run() == 0
    restored = backup.restore()
    assert dump(restored / "shop.sqlite")["cells"]["users"] == dump(shop)["cells"]["users"]
    env = {
        "OCHINAI_BACKUP_MASK_COLUMNS": "shop.sqlite:users.email",
        "OCHINAI_MASK_KEY": "a secret of sixteen bytes or more",
    }
    assert backup.run(**env) == 0 and backup.summary["outcome"] == "ok"
    files = backup.manifest()["sources"][0]["files"]
    assert [f["masked"] for f in files if f["table"] == "users"] == [["email"]]


def test_a_generation_written_before_line_ends_and_database_headers_were_kept_restores(
    backup: Backup, tmp_path: Path
) -> None:
    """Manifests from before this version have no ``newline`` for a CSV and no page size,
    encoding or auto_vacuum for a database: they restore as they did (LF, SQLite's
    defaults)."""
    backup.put("data/source/sales.csv", SALES.encode())
    make_shop(tmp_path / "shop.sqlite")
    backup.put("data/source/shop.sqlite", (tmp_path / "shop.sqlite").read_bytes())
    assert backup.run() == 0, backup.buf.getvalue()[-3000:]
    old = backup.manifest()
    for entry in old["sources"]:
        entry.pop("newline", None)
        for name in ("page_size", "encoding", "auto_vacuum"):
            entry.get("database", {}).pop(name, None)
    backup.put(f"backup/{DAY:%Y%m%d}/manifest.json", json.dumps(old).encode())
    restored = backup.restore()
    assert (restored / "sales.csv").read_bytes() == SALES.encode()
    with closing(sqlite3.connect(restored / "shop.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
