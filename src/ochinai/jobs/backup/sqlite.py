"""A SQLite database to Parquet (a file a table) and back, every cell as it was: its value,
its storage class, its rowid, and the schema and header numbers that rebuild the file."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pyarrow as pa

from ochinai.jobs.backup.manifest import (
    DatabaseSchema,
    SqliteColumn,
    SqliteEntry,
    Statement,
    TableFile,
)
from ochinai.jobs.backup.parquet import Fingerprint, Writer, read_batches
from ochinai.jobs.backup.parquet import read_schema as parquet_schema
from ochinai.runtime.errors import DataError

if TYPE_CHECKING:
    from ochinai.jobs.backup.crypto import KeyRing

log = logging.getLogger("ochinai.jobs.backup")

ROWID = "__rowid__"
BATCH = 65_536
RAW = "text_bytes"  # the class of a TEXT whose bytes do not decode
# 64-bit offsets for TEXT and BLOB: a batch of large documents may pass 2 GiB.
_ARROW = {
    "integer": pa.int64(),
    "real": pa.float64(),
    "text": pa.large_string(),
    "blob": pa.large_binary(),
    RAW: pa.large_binary(),
}
_CLASSES = ("integer", "real", "text", "blob", RAW)
# PRAGMA encoding's answers, and the codec of the bytes CAST(text AS BLOB) gives there.
CODECS = {"UTF-8": "utf-8", "UTF-16le": "utf-16-le", "UTF-16be": "utf-16-be"}
_VIRTUAL = re.compile(r"\s*CREATE\s+VIRTUAL\s+TABLE\s", re.IGNORECASE)
_NAME = r"""(?:"(?:[^"]|"")*"|\[[^\]]*\]|`(?:[^`]|``)*`|'(?:[^']|'')*'|[^\s."'`\[(]+)"""
# The module of a CREATE VIRTUAL TABLE: after its (maybe quoted) name, USING <module>.
_MODULE = re.compile(
    rf"\s*CREATE\s+VIRTUAL\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:{_NAME}\s*\.\s*)?{_NAME}"
    r"""\s*USING\s+["'`\[]?(\w+)""",
    re.IGNORECASE,
)


# TEXT that does not decode is restored from its bytes stored as a BLOB in a temporary
# table, then CAST AS TEXT: a stored BLOB is read in the database's encoding, and its
# CAST keeps its bytes (one bound as a parameter counts as UTF-8: in a UTF-16 database
# its CAST would convert them, a bad sequence to U+FFFD).
_STASH = "temp.ochinai_text_bytes"
_STASHED = f"(SELECT CAST(v AS TEXT) FROM {_STASH} WHERE k = ?)"


class RawText(bytes):
    """A TEXT value's bytes, in the database's encoding, that do not decode in it."""


_PYTHON = {int: "integer", float: "real", str: "text", bytes: "blob", RawText: RAW}


@dataclass
class Table:
    """One table as it is backed up (its manifest record is a ``TableFile``).

    SQLite is dynamically typed: a column holds whatever storage class each cell was
    given. A column whose cells are all of one class (NULLs aside) becomes that Arrow
    type; one of mixed classes becomes a struct with one field a class, exactly one of
    them set in each row, so restore gives back the same value with the same
    ``typeof()``: integers exact, REAL bit for bit, BLOBs byte for byte, NULL apart from
    ''. A TEXT whose bytes are not valid in the database's encoding (bytes cast to TEXT,
    a lone UTF-16 surrogate) is one more class, ``text_bytes``: its bytes as stored. The
    rowid is kept too (``__rowid__``), so that rows keep their ids.
    """

    name: str
    columns: list[SqliteColumn]
    rowid: str | None  # the name the rowid was read by, None for WITHOUT ROWID
    rows: int = 0
    fingerprint: str = ""
    masked: list[str] = field(default_factory=list)
    codec: str = "utf-8"  # the database's text encoding, as Python names it


@dataclass
class Database:
    """A database's schema, header numbers and tables as they are backed up."""

    schema: list[Statement]  # in sqlite_master order
    user_version: int
    application_id: int
    tables: list[Table]
    page_size: int = 4096
    encoding: str = "UTF-8"  # as PRAGMA encoding says it
    auto_vacuum: int = 0  # 0 none, 1 full, 2 incremental

    def record(self) -> DatabaseSchema:
        """What the manifest keeps of the database besides its tables' files."""
        return DatabaseSchema(
            schema=self.schema,
            user_version=self.user_version,
            application_id=self.application_id,
            page_size=self.page_size,
            encoding=self.encoding,
            auto_vacuum=self.auto_vacuum,
        )


def quoted(name: str) -> str:
    """A name as an SQL identifier, whatever it holds."""
    return '"' + name.replace('"', '""') + '"'


def is_virtual(sql: str | None) -> bool:
    """Whether a schema entry's statement creates a virtual table."""
    return bool(sql and _VIRTUAL.match(sql))


def module_of(sql: str) -> str:
    """The module a ``CREATE VIRTUAL TABLE`` names ('?' when it cannot be told)."""
    found = _MODULE.match(sql)
    return found.group(1) if found else "?"


def snapshot(path: Path, copy: Path, where: str) -> None:
    """A consistent copy of the database at ``path`` (live, WAL or not) into ``copy``, by
    SQLite's online backup API: a live database in WAL mode is consistent only that way.

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
    """The schema, the tables to back up, and the numbers of the header.

    A virtual table (FTS3/4/5, R*Tree, any module) is kept as the sqlite3 shell's
    ``.dump`` keeps it: its ``CREATE VIRTUAL TABLE`` in the schema, not among the
    tables; its shadow tables (where the module keeps its data) are backed up as
    ordinary tables. One whose module this SQLite cannot open is named in a WARNING.
    """
    rows = db.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
    ).fetchall()
    schema = [Statement(type=t, name=n, table=tb, sql=sql) for t, n, tb, sql in rows]
    encoding = db.execute("PRAGMA encoding").fetchone()[0]
    if encoding not in CODECS:
        raise DataError(f"{where}: text encoding {encoding!r} is not one SQLite writes")
    names = [e["name"] for e in schema if e["type"] == "table" and not is_virtual(e["sql"])]
    tables = [_table(db, name, where) for name in names if not _internal(name)]
    for table in tables:
        table.codec = CODECS[encoding]
    for name, module, why in unusable(db):
        log.warning(
            "%s: virtual table %r cannot be opened here (module %s: %s); backed up as its "
            "statement and shadow tables",
            where,
            name,
            module,
            why,
            extra={"table": name, "virtual_module": module},
        )
    return Database(
        schema,
        db.execute("PRAGMA user_version").fetchone()[0],
        db.execute("PRAGMA application_id").fetchone()[0],
        tables,
        page_size=db.execute("PRAGMA page_size").fetchone()[0],
        encoding=encoding,
        auto_vacuum=db.execute("PRAGMA auto_vacuum").fetchone()[0],
    )


def unusable(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The virtual tables this SQLite cannot open: name, module and why (its module is
    not built in, or is but refuses the arguments, e.g. a tokenizer it does not have)."""
    found = []
    for name, sql in db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY rowid"
    ).fetchall():
        if not is_virtual(sql):
            continue
        try:
            db.execute(f"SELECT * FROM {quoted(name)} LIMIT 0").fetchall()
        except sqlite3.Error as exc:
            found.append((name, module_of(sql), str(exc)))
    return found


def without_module(path: Path, where: str) -> list[str]:
    """The virtual tables of the restored database at ``path`` that this SQLite cannot
    open, each named in a WARNING: they are there as their statement and shadow tables,
    and work where their module is."""
    with closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)) as db:
        found = unusable(db)
    for name, module, why in found:
        log.warning(
            "%s: virtual table %r restored without its module %s (%s): its statement and "
            "shadow tables are there; open it with an SQLite that has the module",
            where,
            name,
            module,
            why,
            extra={"table": name, "virtual_module": module},
        )
    return [name for name, _, _ in found]


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
        columns.append(SqliteColumn(name=row[1], declared=row[2], classes=present))
    return Table(name, columns, rowid)


def arrow_type(classes: list[str]) -> pa.DataType:
    """One class: its type; none: string (all NULL); several, or TEXT that does not
    decode: a struct of them (field ``text_bytes`` says those bytes are TEXT)."""
    if not classes:
        return pa.large_string()
    if len(classes) == 1 and classes[0] != RAW:
        return _ARROW[classes[0]]
    return pa.struct([(c, _ARROW[c]) for c in classes])


def schema_of(table: Table) -> pa.Schema:
    """The Parquet schema of a table."""
    fields = [(ROWID, pa.int64())] if table.rowid else []
    fields += [(c["name"], arrow_type(c["classes"])) for c in table.columns]
    return pa.schema(fields)


def _order(db: sqlite3.Connection, table: Table) -> str:
    """The order a table's rows are read in: rowid, else its primary key."""
    if table.rowid:
        return f"ORDER BY {table.rowid}"
    keys = db.execute(f"PRAGMA table_info({quoted(table.name)})").fetchall()
    pk = [quoted(r[1]) for r in sorted((r for r in keys if r[5]), key=lambda r: r[5])]
    return f"ORDER BY {', '.join(pk)}" if pk else ""


class _Unreadable(DataError):
    """A table's rows could not be read (a TEXT not UTF-8 read as str, a bad page)."""


def batches(
    db: sqlite3.Connection,
    table: Table,
    schema: pa.Schema,
    where: str,
    masks: Mapping[str, Callable[[str | bytes], str]] | None = None,
    as_bytes: frozenset[str] = frozenset(),
) -> Iterator[pa.RecordBatch]:
    """The table's rows in order, as record batches of the Parquet schema.

    A column in ``masks`` has each value replaced by its token (an INTEGER or REAL as
    the text SQLite would show); its NULLs stay NULL. A column in ``as_bytes`` has its
    TEXT read as the bytes stored (``CAST AS BLOB``, never decoded by SQLite or the
    driver), then decoded here: a value that does not decode is a RawText.
    """
    names = [c["name"] for c in table.columns]
    if not names and not table.rowid:
        return
    select = [table.rowid] if table.rowid else []
    for name in names:
        q = quoted(name)
        if name in as_bytes:
            select += [f"CASE WHEN typeof({q}) = 'text' THEN CAST({q} AS BLOB) ELSE {q} END"]
            select += [f"typeof({q}) = 'text'"]
        else:
            select += [q]
    sql = f"SELECT {', '.join(select)} FROM {quoted(table.name)} {_order(db, table)}"
    masks = masks or {}
    try:
        cursor = db.execute(sql)
        while rows := cursor.fetchmany(BATCH):
            read = iter(zip(*rows, strict=True))
            columns: list[tuple[Any, ...]] = [next(read)] if table.rowid else []
            for name in names:
                values = next(read)
                if name in as_bytes:
                    values = _decoded(values, next(read), table.codec)
                columns.append(values)
            arrays = []
            for values, f in zip(columns, schema, strict=True):
                token = masks.get(f.name)
                if token is not None:
                    values = tuple(v if v is None or v == "" else token(_text(v)) for v in values)
                arrays.append(_array(values, f.type))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    except sqlite3.Error as exc:  # a TEXT value that is not UTF-8, a page gone bad
        raise _Unreadable(f"{where}: table {table.name!r} cannot be read ({exc})") from None


def _decoded(values: tuple[Any, ...], text: tuple[int, ...], codec: str) -> tuple[Any, ...]:
    """Values with each TEXT's bytes (``text`` says which) as str, or RawText."""
    out = []
    for value, is_text in zip(values, text, strict=True):
        if is_text:
            try:
                value = value.decode(codec)
            except UnicodeDecodeError:
                value = RawText(value)
        out.append(value)
    return tuple(out)


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
    ring: KeyRing | None = None,
) -> None:
    """Write one table to ``out`` (encrypted with ``ring`` when it has a current key);
    its rows and fingerprint go into ``table``.

    TEXT is read as str, the fast way, in a UTF-8 database until one does not decode;
    then (and in a UTF-16 database) the table is read as bytes: once to find the
    columns holding TEXT that does not decode (their class ``text_bytes``), once to
    write it. ``advance`` is told the table's rows written so far."""
    masks = masks or {}
    unknown = sorted(set(masks) - {c["name"] for c in table.columns})
    if unknown:
        raise DataError(f"{where}: table {table.name!r} has no column {', '.join(unknown)} to mask")
    texts = frozenset(c["name"] for c in table.columns if "text" in c["classes"])
    for column in table.columns:  # a masked column holds tokens: text, or NULL
        if column["name"] in masks:
            column["classes"] = ["text"] if column["classes"] else []
            table.masked.append(column["name"])
    if table.codec == "utf-8" or not texts:
        try:
            _write_table(db, table, out, where, masks, check, advance, frozenset(), ring)
            return
        except _Unreadable:
            if not texts:  # no TEXT to read otherwise
                raise
    _classify(db, table, texts - set(masks), where, check)
    _write_table(db, table, out, where, masks, check, advance, texts, ring)


def _write_table(
    db: sqlite3.Connection,
    table: Table,
    out: Path,
    where: str,
    masks: Mapping[str, Callable[[str | bytes], str]],
    check: Callable[[], None],
    advance: Callable[[int], None],
    as_bytes: frozenset[str],
    ring: KeyRing | None,
) -> None:
    schema = schema_of(table)
    print_ = Fingerprint(schema.names)
    with Writer(out, schema, ring) as writer:  # removed, not left cut short, if the table fails
        for batch in batches(db, table, schema, where, masks, as_bytes):
            check()
            print_.update(batch)
            writer.write(batch)
            advance(print_.rows)
    table.rows, table.fingerprint = print_.rows, print_.hexdigest()


def _classify(
    db: sqlite3.Connection,
    table: Table,
    names: frozenset[str],
    where: str,
    check: Callable[[], None],
) -> None:
    """The classes of the columns ``names`` with their TEXT read as bytes: ``text`` if
    some decodes, ``text_bytes`` if some does not."""
    if not names:
        return
    columns = [c for c in table.columns if c["name"] in names]
    select = ", ".join(
        f"CASE WHEN typeof({q}) = 'text' THEN CAST({q} AS BLOB) END"
        for q in (quoted(c["name"]) for c in columns)
    )
    found: list[set[str]] = [set() for _ in columns]
    try:
        cursor = db.execute(f"SELECT {select} FROM {quoted(table.name)}")
        while rows := cursor.fetchmany(BATCH):
            check()
            for values, seen in zip(zip(*rows, strict=True), found, strict=True):
                if len(seen) == 2:
                    continue
                for value in values:
                    if value is not None:
                        seen.add("text" if _decodes(value, table.codec) else RAW)
    except sqlite3.Error as exc:
        raise DataError(f"{where}: table {table.name!r} cannot be read ({exc})") from None
    for column, seen in zip(columns, found, strict=True):
        others = set(column["classes"]) - {"text"}
        column["classes"] = sorted(others | seen, key=_CLASSES.index)


def _decodes(value: bytes, codec: str) -> bool:
    try:
        value.decode(codec)
    except UnicodeDecodeError:
        return False
    return True


def fingerprint_of(path: Path, ring: KeyRing | None = None) -> tuple[int, str]:
    """Rows and fingerprint of a table's Parquet as read back (decrypted with ``ring``
    when it is encrypted)."""
    print_ = Fingerprint(parquet_schema(path, ring).names)
    for batch in read_batches(path, ring=ring):
        print_.update(batch)
    return print_.rows, print_.hexdigest()


def _python(column: pa.Array) -> list[Any]:
    """The column's values as SQLite takes them back, each in its storage class (a
    ``text_bytes`` value as RawText)."""
    if not pa.types.is_struct(column.type):
        values: list[Any] = column.to_pylist()
        return values
    children = []
    for i in range(column.type.num_fields):
        values = column.field(i).to_pylist()
        if column.type.field(i).name == RAW:
            values = [None if v is None else RawText(v) for v in values]
        children.append(values)
    valid = column.is_valid().to_pylist()
    out: list[Any] = []
    for row, ok in enumerate(valid):
        out.append(next((c[row] for c in children if c[row] is not None), None) if ok else None)
    return out


def restore(
    entry: SqliteEntry, paths: dict[str, Path], out: Path, ring: KeyRing | None = None
) -> dict[str, int]:
    """Build the database at ``out`` from the manifest's ``entry`` and its tables' Parquet
    files (``paths``, by table; decrypted with ``ring`` when encrypted); the rows of each
    table.

    The header numbers first, then the tables, their rows, then indexes, views and
    triggers (so that no trigger fires on restored rows). A virtual table's statement is
    written into ``sqlite_schema`` under ``PRAGMA writable_schema``: its module does not
    run, so it creates no fresh shadow tables over those restored, and a full-text or
    range query gives what it gave on the source. A module this SQLite lacks changes
    none of that (``without_module`` names the table).
    """
    try:
        return _restore(entry, paths, out, ring)
    except sqlite3.Error as exc:
        masked = [f"{t.table}.{c}" for t in entry.files for c in t.masked]
        why = f" (masked columns hold text tokens: {', '.join(masked)})" if masked else ""
        raise DataError(f"{out}: the database cannot be rebuilt: {exc}{why}") from None


def _restore(
    entry: SqliteEntry, paths: dict[str, Path], out: Path, ring: KeyRing | None
) -> dict[str, int]:
    database = entry.database
    rows: dict[str, int] = {}
    with closing(sqlite3.connect(out, isolation_level=None)) as db:
        _set_header(db, database)
        db.execute("BEGIN")
        db.execute(f"PRAGMA user_version = {int(database.user_version)}")
        db.execute(f"PRAGMA application_id = {int(database.application_id)}")
        for statement in database.schema:  # sqlite_* come with SQLite (AUTOINCREMENT, ANALYZE)
            if statement["type"] != "table" or statement["name"].startswith("sqlite_"):
                continue
            if is_virtual(statement["sql"]):  # as .dump: the statement, not the module's run
                db.execute("PRAGMA writable_schema = ON")
                db.execute(
                    "INSERT INTO sqlite_schema (type, name, tbl_name, rootpage, sql) "
                    "VALUES ('table', ?, ?, 0, ?)",
                    (statement["name"], statement["table"], statement["sql"]),
                )
                db.execute("PRAGMA writable_schema = OFF")
            else:
                db.execute(statement["sql"])
        for file in entry.files:  # one a table
            rows[file.table] = _insert(db, file, paths[file.table], ring)
        for kind in ("index", "view", "trigger"):
            for statement in database.schema:
                if statement["type"] == kind:
                    db.execute(statement["sql"])
        db.execute("COMMIT")
    # Read again from the file: this connection's schema has not loaded the virtual tables.
    with closing(sqlite3.connect(out)) as db:
        result = db.execute("PRAGMA integrity_check").fetchall()
    if result != [("ok",)]:
        raise DataError(f"{out}: the restored database fails integrity_check: {result[:3]}")
    return rows


def _set_header(db: sqlite3.Connection, database: DatabaseSchema) -> None:
    """The page size, text encoding and auto_vacuum of the source, set while the new
    database is still empty (a manifest from before they were kept leaves SQLite's)."""
    encoding = database.encoding if database.encoding is not None else "UTF-8"
    if encoding not in CODECS:
        raise DataError(f"the manifest's text encoding {encoding!r} is not one SQLite writes")
    db.execute(f"PRAGMA encoding = '{encoding}'")
    if database.page_size is not None:
        db.execute(f"PRAGMA page_size = {int(database.page_size)}")
    if database.auto_vacuum is not None:
        db.execute(f"PRAGMA auto_vacuum = {int(database.auto_vacuum)}")


def _insert(db: sqlite3.Connection, file: TableFile, parquet: Path, ring: KeyRing | None) -> int:
    names = [c["name"] for c in file.columns]
    target = ([file.rowid] if file.rowid else []) + [quoted(n) for n in names]
    if file.table == "sqlite_sequence":
        db.execute("DELETE FROM sqlite_sequence")
    kinds = parquet_schema(parquet, ring).types
    raw = [pa.types.is_struct(k) and k.get_field_index(RAW) >= 0 for k in kinds]
    values = [f"coalesce({_STASHED}, ?)" if r else "?" for r in raw]
    sql = f"INSERT INTO {quoted(file.table)} ({', '.join(target)}) VALUES ({', '.join(values)})"
    if any(raw):
        db.execute(f"CREATE TEMP TABLE {_STASH} (k INTEGER PRIMARY KEY, v BLOB)")
    rows = 0
    for batch in read_batches(parquet, ring=ring):
        columns: list[list[Any]] = []
        stash: list[tuple[int, bytes]] = []
        for i in range(batch.num_columns):
            column = _python(batch.column(i))
            if raw[i]:  # the key of its bytes in the stash, then the value if not those
                keys: list[int | None] = []
                for value in column:
                    if type(value) is RawText:
                        stash.append((len(stash), bytes(value)))
                    keys.append(len(stash) - 1 if type(value) is RawText else None)
                columns.append(keys)
                column = [None if type(v) is RawText else v for v in column]
            columns.append(column)
        if stash:
            db.execute(f"DELETE FROM {_STASH}")
            db.executemany(f"INSERT INTO {_STASH} VALUES (?, ?)", stash)
        db.executemany(sql, zip(*columns, strict=True))
        rows += batch.num_rows
    if any(raw):
        db.execute(f"DROP TABLE {_STASH}")
    return rows
