"""SQLite databases as applications really write them, backed up and restored exactly.

Virtual tables (FTS3/4/5, R*Tree, a module this SQLite lacks), TEXT that is not valid
UTF-8, generated columns, STRICT and WITHOUT ROWID tables, page sizes, UTF-16: each
database is backed up by the job (its store in moto), verified, restored, and compared
cell by cell (storage class and bytes), schema, header and integrity.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ochinai.jobs.backup import sqlite as backup_sqlite
from ochinai.runtime.errors import DataError
from tests.test_backup import Backup


@pytest.fixture
def backup(moto_ops: Any, tmp_path: Path) -> Backup:
    return Backup(moto_ops, tmp_path)


def modules() -> set[str]:
    """The virtual table modules built into this Python's SQLite."""
    with closing(sqlite3.connect(":memory:")) as db:
        return {r[0] for r in db.execute("SELECT name FROM pragma_module_list")}


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cell(kind: str, value: Any) -> tuple[str, Any]:
    return (kind, value.hex() if isinstance(value, float) else value)  # -0.0 is not 0.0


def snapshot(path: Path) -> dict[str, Any]:
    """Everything a restore must give back, every cell as (typeof, its bytes or value)."""
    with closing(sqlite3.connect(path)) as db:
        schema = db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        real = [
            name
            for name, sql in db.execute("SELECT name, sql FROM sqlite_master WHERE type='table'")
            if not backup_sqlite.is_virtual(sql)
            and (not name.startswith("sqlite_") or name == "sqlite_sequence")
        ]
        cells: dict[str, list[Any]] = {}
        for table in real:
            columns = [r[1] for r in db.execute(f"PRAGMA table_xinfo({q(table)})")]
            wr = db.execute("SELECT wr FROM pragma_table_list WHERE name = ?", (table,)).fetchone()
            select = ["_rowid_"] if not wr[0] and "_rowid_" not in columns else []
            for c in columns:  # TEXT as its bytes in the database's encoding
                select += [
                    f"typeof({q(c)})",
                    f"CASE WHEN typeof({q(c)}) = 'text' THEN CAST({q(c)} AS BLOB) ELSE {q(c)} END",
                ]
            rows = db.execute(f"SELECT {', '.join(select)} FROM {q(table)}").fetchall()
            start = 1 if select[0] == "_rowid_" else 0
            cells[table] = sorted(
                (row[:start] + tuple(_cell(*row[i : i + 2]) for i in range(start, len(row), 2)))
                for row in rows
            )
        header = {
            p: db.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_size", "encoding", "auto_vacuum", "user_version", "application_id")
        }
        return {
            "schema": schema,
            "header": header,
            "integrity": db.execute("PRAGMA integrity_check").fetchall(),
            "cells": cells,
        }


def round_trip(
    backup: Backup, tmp_path: Path, build: Callable[[sqlite3.Connection], None], name: str = "app"
) -> tuple[Path, Path]:
    """``build`` a database, back it up (verified), restore it; both compared whole."""
    source = tmp_path / f"{name}.sqlite"
    with closing(sqlite3.connect(source, isolation_level=None)) as db:
        build(db)
    backup.put(f"data/source/{name}.sqlite", source.read_bytes())
    assert backup.run() == 0, backup.buf.getvalue()[-3000:]
    files = backup.manifest()["sources"][0]["files"]
    assert backup.summary["verified"] == len(files)  # the fingerprints read back
    restored = backup.restore() / f"{name}.sqlite"
    before, after = snapshot(source), snapshot(restored)
    assert before["integrity"] == after["integrity"] == [("ok",)]
    assert after == before
    assert {f["table"]: f["rows"] for f in files} == {
        t: len(rows) for t, rows in before["cells"].items()
    }
    return source, restored


def query(path: Path, sql: str, *args: Any) -> list[Any]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql, args).fetchall()


def warnings(backup: Backup) -> list[str]:
    """The WARNING lines but the one every run without OCHINAI_BACKUP_TARGET logs."""
    from ochinai.jobs.backup.target import SHARED

    return [
        line["message"]
        for line in backup.lines()
        if line.get("severity") == "WARNING" and line["message"] != SHARED
    ]


# --- virtual tables ---------------------------------------------------------------------

WORDS = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "honeydew", "kiwi"]
WORDS += ["lemon", "mango"]


def documents(n: int) -> list[tuple[int, str, str]]:
    """Texts of a few words each, in Japanese too, so each word is in many documents."""
    return [
        (
            i,
            f"{WORDS[i % 11]} {WORDS[i * 7 % 11]} 第{i}号",
            " ".join(WORDS[(i * k) % 11] for k in range(1, 2 + i % 5)) + f" 在庫{i % 13}",
        )
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize("module", ["fts3", "fts4", "fts5"])
def test_a_full_text_table_restores_and_matches_the_same_rows(
    backup: Backup, tmp_path: Path, module: str
) -> None:
    """Shadow tables as ordinary tables, the statement as .dump writes it: MATCH, ranking
    and the module's own integrity check give what they gave on the source."""
    if module not in modules():
        pytest.skip(f"this Python's SQLite has no {module}")

    def build(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, title TEXT, body TEXT)")
        db.execute(f"CREATE VIRTUAL TABLE notes_fts USING {module}(title, body)")
        db.execute(  # an application's trigger and view over the full-text table
            "CREATE TRIGGER notes_ai AFTER INSERT ON notes BEGIN "
            "INSERT INTO notes_fts (rowid, title, body) VALUES (new.id, new.title, new.body); "
            "END"
        )
        db.execute("CREATE VIEW found AS SELECT rowid, title FROM notes_fts")
        db.execute("BEGIN")
        db.executemany("INSERT INTO notes VALUES (?, ?, ?)", documents(1500))
        db.execute("COMMIT")
        for start in range(1501, 1800, 50):  # many segments, then some deleted and changed
            db.executemany("INSERT INTO notes VALUES (?, ?, ?)", documents(start + 49)[start - 1 :])
        db.execute("DELETE FROM notes_fts WHERE rowid % 17 = 0")
        db.execute("UPDATE notes_fts SET body = 'grape grape 更新' WHERE rowid % 23 = 0")

    source, restored = round_trip(backup, tmp_path, build)
    [entry] = backup.manifest()["sources"]
    tables = {f["table"] for f in entry["files"]}
    assert "notes_fts" not in tables and "notes_fts_content" in tables
    virtual = [e for e in entry["database"]["schema"] if e["name"] == "notes_fts"]
    assert virtual[0]["sql"] == f"CREATE VIRTUAL TABLE notes_fts USING {module}(title, body)"
    rank = "bm25(notes_fts)" if module == "fts5" else "length(offsets(notes_fts))"
    for sql in (
        "SELECT rowid, title, body FROM notes_fts WHERE notes_fts MATCH 'grape' ORDER BY rowid",
        "SELECT rowid FROM notes_fts WHERE notes_fts MATCH 'hon*' ORDER BY rowid",
        "SELECT rowid FROM notes_fts WHERE notes_fts MATCH 'banana honeydew' ORDER BY rowid",
        f"SELECT rowid, {rank} FROM notes_fts WHERE notes_fts MATCH 'lemon' ORDER BY rowid",
        "SELECT count(*) FROM found",
    ):
        expected = query(source, sql)
        assert expected and query(restored, sql) == expected, sql
    with closing(sqlite3.connect(restored)) as db:  # a working index, not only a readable one
        db.execute("INSERT INTO notes_fts (notes_fts) VALUES ('integrity-check')")
        db.execute("INSERT INTO notes VALUES (5000, 'quince', 'quince only')")
        found = db.execute("SELECT rowid FROM notes_fts WHERE notes_fts MATCH 'quince'")
        assert found.fetchall() == [(5000,)]
    assert not warnings(backup)


def test_an_rtree_restores_and_answers_range_queries_the_same(
    backup: Backup, tmp_path: Path
) -> None:
    if "rtree" not in modules():
        pytest.skip("this Python's SQLite has no rtree")

    def build(db: sqlite3.Connection) -> None:
        db.execute("CREATE VIRTUAL TABLE places USING rtree(id, minx, maxx, miny, maxy, +name)")
        db.execute("CREATE VIRTUAL TABLE cells USING rtree_i32(id, x0, x1)")
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO places VALUES (?, ?, ?, ?, ?, ?)",
            [(i, i % 97, i % 97 + 1.5, i % 89, i % 89 + 0.25, f"場所{i}") for i in range(1, 3000)],
        )
        db.executemany("INSERT INTO cells VALUES (?, ?, ?)", [(i, i, i + 9) for i in range(500)])
        db.execute("DELETE FROM places WHERE id % 11 = 0")
        db.execute("COMMIT")

    source, restored = round_trip(backup, tmp_path, build)
    for sql in (
        "SELECT id, minx, maxx, name FROM places WHERE minx >= 10 AND maxx <= 20.5 "
        "AND miny >= 5 AND maxy <= 40 ORDER BY id",
        "SELECT count(*) FROM places WHERE maxx > 50",
        "SELECT id FROM cells WHERE x0 <= 100 AND x1 >= 95 ORDER BY id",
    ):
        expected = query(source, sql)
        assert expected and query(restored, sql) == expected, sql
    assert query(restored, "SELECT rtreecheck('places'), rtreecheck('cells')") == [("ok", "ok")]


def test_a_virtual_table_of_a_module_we_lack_keeps_its_statement_and_is_named(
    backup: Backup, tmp_path: Path
) -> None:
    """Written by an application with its own module: statement and shadow table kept,
    a WARNING naming it at backup and at restore, counted in the restore's summary."""
    statement = "CREATE VIRTUAL TABLE geo USING some_module_we_lack(lat, lon, tokenize=x)"

    def build(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE geo_data (k INTEGER PRIMARY KEY, v BLOB)")
        db.executemany("INSERT INTO geo_data VALUES (?, ?)", [(1, b"\x00\x01"), (2, b"\xff")])
        db.execute("CREATE TABLE plain (a TEXT)")
        db.execute("INSERT INTO plain VALUES ('kept')")
        db.execute("PRAGMA writable_schema = ON")
        db.execute(
            "INSERT INTO sqlite_schema (type, name, tbl_name, rootpage, sql) "
            "VALUES ('table', 'geo', 'geo', 0, ?)",
            (statement,),
        )
        db.execute("PRAGMA writable_schema = OFF")

    _, restored = round_trip(backup, tmp_path, build)
    assert backup.summary["virtual_without_module"] == 1
    said = [m for m in warnings(backup) if "'geo'" in m and "some_module_we_lack" in m]
    assert len(said) == 2, warnings(backup)  # at backup, at restore
    assert "restored without its module" in said[1]
    assert query(restored, "SELECT sql FROM sqlite_master WHERE name = 'geo'") == [(statement,)]
    with pytest.raises(sqlite3.OperationalError, match="no such module: some_module_we_lack"):
        query(restored, "SELECT * FROM geo")


# --- cells ------------------------------------------------------------------------------

BAD = ("ff00fe", "c3", "eda080", "f4908080", "c0af", "80", "61ff62")  # none is UTF-8


def test_text_that_is_not_utf8_comes_back_byte_for_byte_as_text(
    backup: Backup, tmp_path: Path
) -> None:
    """A browser's TEXT of raw bytes: typeof 'text' and the same bytes after restore."""

    def build(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE urls (id INTEGER PRIMARY KEY, url TEXT, title, raw TEXT)")
        db.execute("CREATE TABLE keys (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID")
        db.execute("CREATE TABLE typed (t TEXT, n INTEGER) STRICT")
        db.execute("CREATE INDEX urls_url ON urls(url)")
        for i, bad in enumerate(BAD):
            db.execute(
                "INSERT INTO urls (url, title, raw) VALUES (?, CAST(? AS TEXT), CAST(? AS TEXT))",
                (f"https://例え.jp/{i}", bytes.fromhex(bad), bytes.fromhex(bad)),
            )
            db.execute("INSERT INTO keys VALUES (CAST(? AS TEXT), ?)", (bytes.fromhex(bad), i))
            db.execute("INSERT INTO typed VALUES (CAST(? AS TEXT), ?)", (bytes.fromhex(bad), i))
        db.executemany(
            "INSERT INTO urls (url, title, raw) VALUES (?, ?, NULL)",
            [
                ("a", 1),
                ("b", 2.5),
                ("c", b"\xff"),
                ("d", "ok"),
                ("e", ""),
                ("f", None),
                ("g", "a\x00b"),
            ],
        )
        db.execute("INSERT INTO keys VALUES ('valid', 99)")
        db.execute("INSERT INTO typed VALUES ('valid', 99)")

    _, restored = round_trip(backup, tmp_path, build)
    files = {f["table"]: f for f in backup.manifest()["sources"][0]["files"]}
    classes = {c["name"]: c["classes"] for c in files["urls"]["columns"]}
    assert classes == {
        "id": ["integer"],
        "url": ["text"],
        "title": ["integer", "real", "text", "blob", "text_bytes"],
        "raw": ["text_bytes"],
    }
    parquet = pq.read_table(io.BytesIO(backup.get(files["urls"]["key"])))
    assert parquet.schema.field("raw").type == pa.struct([("text_bytes", pa.large_binary())])
    back = query(restored, "SELECT typeof(raw), CAST(raw AS BLOB) FROM urls WHERE raw NOT NULL")
    assert back == [("text", bytes.fromhex(bad)) for bad in BAD]
    back = query(restored, "SELECT typeof(k), CAST(k AS BLOB) FROM keys WHERE v < 99 ORDER BY v")
    assert back == [("text", bytes.fromhex(bad)) for bad in BAD]


def test_generated_columns_come_back_computed_the_same(backup: Backup, tmp_path: Path) -> None:
    def build(db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, price REAL, qty INTEGER, name TEXT, "
            "total REAL GENERATED ALWAYS AS (price * qty) STORED, "
            "label TEXT GENERATED ALWAYS AS (upper(name) || '-' || qty) VIRTUAL, "
            "kind ANY AS (CASE WHEN qty > 2 THEN qty ELSE name END))"
        )
        db.execute("CREATE INDEX items_label ON items(label)")
        db.executemany(
            "INSERT INTO items (price, qty, name) VALUES (?, ?, ?)",
            [(1.5, 3, "りんご"), (-0.0, 1, "b"), (None, None, None), (1e308, 2, "")],
        )

    source, restored = round_trip(backup, tmp_path, build)
    [file] = backup.manifest()["sources"][0]["files"]
    assert [c["name"] for c in file["columns"]] == ["id", "price", "qty", "name"]
    sql = "SELECT label, typeof(kind), kind FROM items INDEXED BY items_label ORDER BY label"
    assert query(restored, sql) == query(source, sql)


def test_strict_tables_come_back_exactly(backup: Backup, tmp_path: Path) -> None:
    def build(db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE s (id INTEGER PRIMARY KEY, i INTEGER NOT NULL, r REAL, t TEXT, "
            "b BLOB, a ANY) STRICT"
        )
        db.execute("CREATE TABLE sw (k TEXT PRIMARY KEY, v ANY) STRICT, WITHOUT ROWID")
        db.executemany(
            "INSERT INTO s (i, r, t, b, a) VALUES (?, ?, ?, ?, ?)",
            [
                (2**63 - 1, 1.0, "一", b"\x00", 1),
                (-(2**63), 5e-324, "", b"", 1.5),
                (0, -0.0, None, None, "text"),
                (7, 3, "7", b"\xff" * 5000, b"blob"),  # 3 into REAL is 3.0
                (8, None, "x", None, None),
            ],
        )
        db.executemany("INSERT INTO sw VALUES (?, ?)", [("a", 1), ("b", "1"), ("c", b"1")])

    round_trip(backup, tmp_path, build)


def test_without_rowid_tables_come_back_in_their_keys(backup: Backup, tmp_path: Path) -> None:
    def build(db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE stock (shop TEXT, sku TEXT COLLATE NOCASE, day INTEGER, qty, "
            "PRIMARY KEY (shop, sku DESC, day)) WITHOUT ROWID"
        )
        db.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v) WITHOUT ROWID")
        db.executemany(
            "INSERT INTO stock VALUES (?, ?, ?, ?)",
            [(f"S{i % 7}", f"sku{i:05}", i % 31, i if i % 3 else f"{i}個") for i in range(4000)],
        )
        db.executemany("INSERT INTO kv VALUES (?, ?)", [(bytes([i]), i * 0.5) for i in range(256)])

    source, restored = round_trip(backup, tmp_path, build)
    sql = "SELECT shop, sku, day FROM stock WHERE shop = 'S3' AND sku > 'SKU01000' LIMIT 5"
    assert query(restored, sql) == query(source, sql)


@pytest.mark.parametrize(("page_size", "auto_vacuum"), [(1024, 0), (65536, 2)])
def test_page_size_and_auto_vacuum_come_back(
    backup: Backup, tmp_path: Path, page_size: int, auto_vacuum: int
) -> None:
    """Small and large pages, overflow chains, auto_vacuum: the same header restored."""

    def build(db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA page_size = {page_size}")
        db.execute(f"PRAGMA auto_vacuum = {auto_vacuum}")
        db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, body BLOB, note TEXT)")
        db.executemany(
            "INSERT INTO docs (body, note) VALUES (?, ?)",
            [(bytes([i % 256]) * (i * 97), "文" * i) for i in range(300)],
        )

    _, restored = round_trip(backup, tmp_path, build)
    assert query(restored, "PRAGMA page_size") == [(page_size,)]
    assert query(restored, "PRAGMA auto_vacuum") == [(auto_vacuum,)]


@pytest.mark.parametrize("encoding", ["UTF-16le", "UTF-16be"])
def test_a_utf16_database_comes_back_in_its_encoding(
    backup: Backup, tmp_path: Path, encoding: str
) -> None:
    """The text's bytes as stored, in UTF-16, with full-text search in it; a lone
    surrogate too, which SQLite would read out as another character (U+10041 for
    D800 0041) and which comes back as it was."""
    le = encoding == "UTF-16le"
    lone = bytes.fromhex("00d8" if le else "d800")  # a high surrogate, no low one
    a = bytes.fromhex("4100" if le else "0041")

    def build(db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA encoding = '{encoding}'")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b)")
        db.executemany(
            "INSERT INTO t (a, b) VALUES (?, ?)",
            [("日本語", 1), ("emoji 🍣", "x"), ("", b"\x00"), (None, 2.5), ("\ufeffbom", None)],
        )
        # A stored BLOB CAST AS TEXT keeps its bytes as the database's encoding.
        db.execute("CREATE TABLE bytes (a BLOB, b BLOB)")
        db.execute("INSERT INTO bytes VALUES (?, ?)", (lone, lone + a))
        db.execute("INSERT INTO t (a, b) SELECT CAST(a AS TEXT), CAST(b AS TEXT) FROM bytes")
        db.execute("DROP TABLE bytes")
        db.execute("CREATE VIRTUAL TABLE f USING fts4(a)")
        db.execute("INSERT INTO f SELECT a FROM t WHERE id < 6")

    source, restored = round_trip(backup, tmp_path, build)
    files = {f["table"]: f for f in backup.manifest()["sources"][0]["files"]}
    classes = {c["name"]: c["classes"] for c in files["t"]["columns"]}
    assert classes["a"] == ["text", "text_bytes"]
    assert classes["b"] == ["integer", "real", "text", "blob", "text_bytes"]
    sql = "SELECT typeof(a), CAST(a AS BLOB), typeof(b), CAST(b AS BLOB) FROM t WHERE id = 6"
    assert query(restored, sql) == [("text", lone, "text", lone + a)]
    sql = "SELECT rowid FROM f WHERE f MATCH 'emoji'"
    assert query(restored, sql) == query(source, sql) == [(2,)]


# --- the Parquet ------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, bad: bytes, masks: Any = None) -> backup_sqlite.Table:
    path = tmp_path / f"{name}.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (a TEXT)")
        db.executemany("INSERT INTO t VALUES (CAST(? AS TEXT))", [(b"ok",), (bad,)])
        db.commit()
        database = backup_sqlite.read_schema(db, name)
        [table] = database.tables
        backup_sqlite.table_to_parquet(db, table, tmp_path / f"{name}.parquet", name, masks)
    return table


def test_the_fingerprint_covers_the_bytes_of_text_that_does_not_decode(tmp_path: Path) -> None:
    """One byte of a non-UTF-8 TEXT changed is another fingerprint, at backup and read back;
    the Parquet says which values are such TEXT (field text_bytes)."""
    one = _write(tmp_path, "one", b"\xff\x00\xfe")
    two = _write(tmp_path, "two", b"\xff\x00\xfd")
    assert one.fingerprint != two.fingerprint
    for table, name in ((one, "one"), (two, "two")):
        assert backup_sqlite.fingerprint_of(tmp_path / f"{name}.parquet") == (
            2,
            table.fingerprint,
        )
    column = pq.read_table(tmp_path / "one.parquet").column("a")
    assert column.type == pa.struct(
        [("text", pa.large_string()), ("text_bytes", pa.large_binary())]
    )
    assert column.to_pylist() == [
        {"text": "ok", "text_bytes": None},
        {"text": None, "text_bytes": b"\xff\x00\xfe"},
    ]


def test_a_masked_column_of_text_that_does_not_decode_holds_tokens(tmp_path: Path) -> None:
    table = _write(tmp_path, "masked", b"\xff", {"a": lambda v: f"tok:{v!r}"})
    assert table.masked == ["a"] and table.columns[0]["classes"] == ["text"]
    assert pq.read_table(tmp_path / "masked.parquet").column("a").to_pylist() == [
        "tok:'ok'",
        "tok:b'\\xff'",
    ]


def test_a_read_error_that_is_not_bad_text_still_fails(tmp_path: Path) -> None:
    """A read error that is no TEXT of bad bytes is not hidden by reading as bytes."""
    path = tmp_path / "c.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (a TEXT)")
        db.execute("INSERT INTO t VALUES ('x')")
        db.commit()
        [table] = backup_sqlite.read_schema(db, "c").tables
        db.execute("DROP TABLE t")  # gone between reading the schema and the rows
        with pytest.raises(DataError, match="table 't' cannot be read"):
            backup_sqlite.table_to_parquet(db, table, tmp_path / "c.parquet", "c")
    assert not (tmp_path / "c.parquet").exists()
