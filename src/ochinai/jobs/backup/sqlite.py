"""A SQLite database to Parquet (a file a table) and back, every cell as it was.

The database is first copied with SQLite's online backup API (a live database in WAL
mode is consistent only that way, never as a raw copy of its files), then each table
is read from the copy in rowid (or primary key) order. SQLite is dynamically typed: a
column holds whatever storage class each cell was given. A column whose cells are all
of one class (NULLs aside) becomes that Arrow type (INTEGER int64, REAL float64, TEXT
string, BLOB binary); a column of mixed classes becomes a struct with one field a
class, exactly one of them set in each row, so restore gives back the same value with
the same ``typeof()``: integers exact, REAL bit for bit, BLOBs byte for byte, NULL apart
from ''. The rowid is kept too (``__rowid__``), so rows keep their ids. The schema
(tables, indexes, views, triggers, in their order), ``user_version`` and
``application_id`` go into the manifest and are replayed on restore: tables, rows,
then indexes, views and triggers (so no trigger fires on restored rows).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from ochinai.jobs.backup.parquet import Fingerprint, Writer, read_batches
from ochinai.runtime.errors import DataError

ROWID = "__rowid__"
BATCH = 65_536
# 64-bit offsets for TEXT and BLOB: a batch of large documents may pass 2 GiB.
_ARROW = {
    "integer": pa.int64(),
    "real": pa.float64(),
    "text": pa.large_string(),
    "blob": pa.large_binary(),
}
_PYTHON = {int: "integer", float: "real", str: "text", bytes: "blob"}
_CLASSES = ("integer", "real", "text", "blob")


@dataclass
class Table:
    """One table as the manifest keeps it."""

    name: str
    columns: list[dict[str, Any]]  # name, declared type, classes, arrow type
    rowid: str | None  # the name the rowid was read by, None for WITHOUT ROWID
    rows: int = 0
    fingerprint: str = ""
    masked: list[str] = field(default_factory=list)


@dataclass
class Database:
    """A database's schema and tables as the manifest keeps them."""

    schema: list[dict[str, str]]  # type, name, table, sql: in sqlite_master order
    user_version: int
    application_id: int
    tables: list[Table]


def quoted(name: str) -> str:
    """A name as an SQL identifier, whatever it holds."""
    return '"' + name.replace('"', '""') + '"'


def snapshot(path: Path, copy: Path, where: str) -> None:
    """A consistent copy of the database at ``path`` (live, WAL or not) into ``copy``.

    SQLite opens a file of 0 bytes as a database without tables; as a source it is an
    upload or a copy gone wrong, and backing up nothing would hide that.
    """
    if path.stat().st_size == 0:
        raise DataError(f"{where} is empty (0 bytes): not a SQLite database; upload it again")
    try:
        source = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30)
        with closing(source), closing(sqlite3.connect(copy)) as target:
            source.backup(target)
        with closing(sqlite3.connect(copy)) as check:
            result = check.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        raise DataError(f"{where}: not a readable SQLite database ({exc})") from None
    if result != [("ok",)]:
        problems = "; ".join(str(r[0]) for r in result[:3])
        raise DataError(f"{where}: the SQLite database is corrupt ({problems})")


def read_schema(db: sqlite3.Connection, where: str) -> Database:
    """The schema, the tables to back up, and the two header numbers."""
    entries = db.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
    ).fetchall()
    schema = [{"type": t, "name": n, "table": tb, "sql": sql} for t, n, tb, sql in entries]
    virtual = [e["name"] for e in schema if e["sql"].upper().startswith("CREATE VIRTUAL")]
    if virtual:
        raise DataError(f"{where}: virtual tables ({', '.join(virtual)}) are not backed up")
    names = [e["name"] for e in schema if e["type"] == "table"]
    tables = [_table(db, name, where) for name in names if not _internal(name)]
    user_version = db.execute("PRAGMA user_version").fetchone()[0]
    application_id = db.execute("PRAGMA application_id").fetchone()[0]
    return Database(schema, user_version, application_id, tables)


def _internal(name: str) -> bool:
    return name.startswith("sqlite_") and name != "sqlite_sequence"


def _table(db: sqlite3.Connection, name: str, where: str) -> Table:
    info = db.execute(f"PRAGMA table_xinfo({quoted(name)})").fetchall()
    # cid, name, type, notnull, default, pk, hidden (0 plain; 2, 3 generated)
    plain = [row for row in info if row[6] == 0]
    listed = db.execute("SELECT wr FROM pragma_table_list WHERE name = ?", (name,)).fetchone()
    without_rowid = bool(listed and listed[0])
    taken = {row[1].lower() for row in info}
    aliases = [alias for alias in ("rowid", "_rowid_", "oid") if alias not in taken]
    rowid = None if without_rowid or not aliases else aliases[0]
    if any(row[1] == ROWID for row in plain):
        raise DataError(f"{where}: table {name!r} has a column named {ROWID}")
    columns = []
    select = ", ".join(f"group_concat(DISTINCT typeof({quoted(row[1])}))" for row in plain)
    found = db.execute(f"SELECT {select} FROM {quoted(name)}").fetchone() if plain else ()
    for row, classes in zip(plain, found, strict=True):
        seen = {c for c in (classes or "").split(",") if c and c != "null"}
        present = sorted(seen, key=_CLASSES.index)
        columns.append({"name": row[1], "declared": row[2], "classes": present})
    return Table(name, columns, rowid)


def arrow_type(classes: list[str]) -> pa.DataType:
    """One class: its type; none: string (all NULL); several: a struct of them."""
    if not classes:
        return pa.large_string()
    if len(classes) == 1:
        return _ARROW[classes[0]]
    return pa.struct([(c, _ARROW[c]) for c in classes])


def schema_of(table: Table) -> pa.Schema:
    """The Parquet schema of a table."""
    fields = [(ROWID, pa.int64())] if table.rowid else []
    fields += [(c["name"], arrow_type(c["classes"])) for c in table.columns]
    return pa.schema(fields)


def _order(db: sqlite3.Connection, table: Table) -> str:
    if table.rowid:
        return f"ORDER BY {table.rowid}"
    keys = db.execute(f"PRAGMA table_info({quoted(table.name)})").fetchall()
    pk = [quoted(r[1]) for r in sorted((r for r in keys if r[5]), key=lambda r: r[5])]
    return f"ORDER BY {', '.join(pk)}" if pk else ""


def batches(
    db: sqlite3.Connection,
    table: Table,
    schema: pa.Schema,
    where: str,
    masks: Mapping[str, Callable[[str | bytes], str]] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The table's rows in order, as record batches of the Parquet schema.

    A column in ``masks`` has each value replaced by its token (an INTEGER or REAL as
    the text SQLite would show); its NULLs stay NULL.
    """
    columns = ([table.rowid] if table.rowid else []) + [quoted(c["name"]) for c in table.columns]
    if not columns:
        return
    sql = f"SELECT {', '.join(columns)} FROM {quoted(table.name)} {_order(db, table)}"
    masks = masks or {}
    try:
        cursor = db.execute(sql)
        while rows := cursor.fetchmany(BATCH):
            arrays = []
            for values, f in zip(zip(*rows, strict=True), schema, strict=True):
                token = masks.get(f.name)
                if token is not None:
                    values = tuple(v if v is None or v == "" else token(_text(v)) for v in values)
                arrays.append(_array(values, f.type))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    except sqlite3.Error as exc:  # a TEXT value that is not UTF-8, a page gone bad
        raise DataError(f"{where}: table {table.name!r} cannot be read ({exc})") from None


def _text(value: Any) -> str | bytes:
    return value if isinstance(value, str | bytes) else repr(value)


def _array(values: tuple[Any, ...], kind: pa.DataType) -> pa.Array:
    if not pa.types.is_struct(kind):
        return pa.array(values, kind)
    # Mixed classes: one child a class, a row's value in the child of its class.
    children: dict[str, list[Any]] = {kind.field(i).name: [] for i in range(kind.num_fields)}
    for value in values:
        mine = None if value is None else _PYTHON[type(value)]
        for name, child in children.items():
            child.append(value if name == mine else None)
    fields = [kind.field(i) for i in range(kind.num_fields)]
    arrays = [pa.array(children[f.name], f.type) for f in fields]
    mask = pa.array([v is None for v in values], pa.bool_())
    return pa.StructArray.from_arrays(arrays, fields=fields, mask=mask)


def table_to_parquet(
    db: sqlite3.Connection,
    table: Table,
    out: Path,
    where: str,
    masks: Mapping[str, Callable[[str | bytes], str]] | None = None,
    check: Callable[[], None] = lambda: None,
    advance: Callable[[int], None] = lambda rows: None,
) -> None:
    """Write one table to ``out``; its rows and fingerprint go into ``table``.

    ``advance`` is told the table's rows written so far."""
    masks = masks or {}
    unknown = sorted(set(masks) - {c["name"] for c in table.columns})
    if unknown:
        raise DataError(f"{where}: table {table.name!r} has no column {', '.join(unknown)} to mask")
    for column in table.columns:  # a masked column holds tokens: text, or NULL
        if column["name"] in masks:
            column["classes"] = ["text"] if column["classes"] else []
            table.masked.append(column["name"])
    schema = schema_of(table)
    print_ = Fingerprint(schema.names)
    with Writer(out, schema) as writer:  # removed, not left cut short, if the table fails
        for batch in batches(db, table, schema, where, masks):
            check()
            print_.update(batch)
            writer.write(batch)
            advance(print_.rows)
    table.rows, table.fingerprint = print_.rows, print_.hexdigest()


def fingerprint_of(path: Path) -> tuple[int, str]:
    """Rows and fingerprint of a table's Parquet as read back."""
    print_ = Fingerprint(pq.read_schema(path).names)
    for batch in read_batches(path):
        print_.update(batch)
    return print_.rows, print_.hexdigest()


def _python(column: pa.Array) -> list[Any]:
    """The column's values as SQLite takes them back, each in its storage class."""
    if not pa.types.is_struct(column.type):
        values: list[Any] = column.to_pylist()
        return values
    children = [column.field(i).to_pylist() for i in range(column.type.num_fields)]
    valid = column.is_valid().to_pylist()
    out: list[Any] = []
    for row, ok in enumerate(valid):
        out.append(next((c[row] for c in children if c[row] is not None), None) if ok else None)
    return out


def restore(database: dict[str, Any], files: dict[str, Path], out: Path) -> dict[str, int]:
    """Build the database at ``out`` from its schema and tables; the rows of each table."""
    try:
        return _restore(database, files, out)
    except sqlite3.Error as exc:
        masked = [f"{t['table']}.{c}" for t in database["tables"] for c in t.get("masked", [])]
        why = f" (masked columns hold text tokens: {', '.join(masked)})" if masked else ""
        raise DataError(f"{out}: the database cannot be rebuilt: {exc}{why}") from None


def _restore(database: dict[str, Any], files: dict[str, Path], out: Path) -> dict[str, int]:
    schema = database["schema"]
    rows: dict[str, int] = {}
    with closing(sqlite3.connect(out, isolation_level=None)) as db:
        db.execute("BEGIN")
        db.execute(f"PRAGMA user_version = {int(database['user_version'])}")
        db.execute(f"PRAGMA application_id = {int(database['application_id'])}")
        for entry in schema:  # sqlite_* tables come with SQLite (AUTOINCREMENT, ANALYZE)
            if entry["type"] == "table" and not entry["name"].startswith("sqlite_"):
                db.execute(entry["sql"])
        for table in database["tables"]:  # the manifest's file entries, one a table
            rows[table["table"]] = _insert(db, table, files[table["table"]])
        for kind in ("index", "view", "trigger"):
            for entry in schema:
                if entry["type"] == kind:
                    db.execute(entry["sql"])
        db.execute("COMMIT")
        result = db.execute("PRAGMA integrity_check").fetchall()
    if result != [("ok",)]:
        raise DataError(f"{out}: the restored database fails integrity_check: {result[:3]}")
    return rows


def _insert(db: sqlite3.Connection, table: dict[str, Any], parquet: Path) -> int:
    names = [c["name"] for c in table["columns"]]
    target = ([table["rowid"]] if table["rowid"] else []) + [quoted(n) for n in names]
    if table["table"] == "sqlite_sequence":
        db.execute("DELETE FROM sqlite_sequence")
    sql = (
        f"INSERT INTO {quoted(table['table'])} ({', '.join(target)}) "
        f"VALUES ({', '.join('?' * len(target))})"
    )
    rows = 0
    for batch in read_batches(parquet):
        columns = [_python(batch.column(i)) for i in range(batch.num_columns)]
        db.executemany(sql, zip(*columns, strict=True))
        rows += batch.num_rows
    return rows
