"""A generation's manifest as typed records, read by ``parse_manifest`` and written by
``encode_manifest`` alone, so that what goes to S3 has one shape and one format version."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import ClassVar, Literal, TypeAlias, TypedDict

from ochinai.runtime.errors import DataError
from ochinai.runtime.storage import ObjectNotFound, Store

MANIFEST = "manifest.json"  # in a generation's prefix: written last, it makes it complete
VERSION = 1  # the format written and the only one read

Kind = Literal["csv", "sqlite"]
Json: TypeAlias = "str | int | float | bool | list[Json] | dict[str, Json] | None"


class CsvColumn(TypedDict):
    """A column of a CSV source's Parquet file."""

    name: str  # in the Parquet: the header's, made unique and non-empty
    type: str  # int64, float64 or string


class SqliteColumn(TypedDict):
    """A column of a table of a SQLite source."""

    name: str
    declared: str  # its declared type as CREATE TABLE says it ('' for none)
    classes: list[str]  # the storage classes its cells hold, NULL aside (sqlite.arrow_type)


class Statement(TypedDict):
    """One row of ``sqlite_master``: a table, index, view or trigger and its SQL."""

    type: str
    name: str
    table: str
    sql: str


@dataclass(frozen=True)
class Encryption:
    """How a file is encrypted (``crypto``): the key's id and the algorithms, never the key."""

    algorithm: str
    key_id: str
    key_wrap: str


@dataclass(frozen=True)
class Options:
    """The settings a source's files depend on: other values write them again."""

    mask: list[str]  # the masked columns (a database's as table.column), sorted
    encoding: str | None = None  # a CSV's: OCHINAI_BACKUP_ENCODING
    key_id: str | None = None  # the id of the key new files are encrypted with


@dataclass(frozen=True)
class SourceState:
    """The source as it was backed up: a changed one is written again."""

    etag: str | None  # None: a local file
    sha256: str
    bytes: int


@dataclass(frozen=True, kw_only=True)
class CsvFile:
    """The Parquet file of a CSV source."""

    key: str
    sha256: str
    bytes: int
    rows: int
    fingerprint: str  # parquet.Fingerprint of the rows
    columns: list[CsvColumn]
    masked: list[str]
    encryption: Encryption | None = None


@dataclass(frozen=True, kw_only=True)
class TableFile:
    """The Parquet file of one table of a SQLite source."""

    key: str
    sha256: str
    bytes: int
    rows: int
    fingerprint: str
    table: str
    rowid: str | None  # the name the rowid was read by; None: WITHOUT ROWID
    columns: list[SqliteColumn]
    masked: list[str]
    encryption: Encryption | None = None


ParquetFile = CsvFile | TableFile


@dataclass(frozen=True, kw_only=True)
class DatabaseSchema:
    """A SQLite source's schema and header numbers, replayed on restore. The page size,
    encoding and auto_vacuum are None in a manifest from before they were kept."""

    schema: list[Statement]  # in sqlite_master order
    user_version: int
    application_id: int
    page_size: int | None = None
    encoding: str | None = None  # as PRAGMA encoding says it
    auto_vacuum: int | None = None  # 0 none, 1 full, 2 incremental

    def pragmas(self) -> dict[str, int | str]:
        """The header numbers kept, by their PRAGMA's name."""
        found: dict[str, int | str | None] = {
            "user_version": self.user_version,
            "application_id": self.application_id,
            "page_size": self.page_size,
            "encoding": self.encoding,
            "auto_vacuum": self.auto_vacuum,
        }
        return {name: value for name, value in found.items() if value is not None}


@dataclass(frozen=True, kw_only=True)
class CsvEntry:
    """A CSV source backed up: one file, and what restore needs to write it back as it was."""

    name: str  # as --source and OCHINAI_BACKUP_MASK_COLUMNS call it
    origin: str  # s3://... or a local path
    state: SourceState
    options: Options | None  # None in a manifest from before they were kept
    files: list[CsvFile]
    encoding: str  # the source's: utf-8, utf-8-sig or cp932
    header: list[str]  # as in the file
    newline: str | None = None  # "\r\n", "\n" or "\r"; None: from before it was kept

    kind: ClassVar[Kind] = "csv"


@dataclass(frozen=True, kw_only=True)
class SqliteEntry:
    """A SQLite source backed up: a file a table, and the schema to rebuild it from."""

    name: str
    origin: str
    state: SourceState
    options: Options | None
    files: list[TableFile]
    database: DatabaseSchema

    kind: ClassVar[Kind] = "sqlite"


@dataclass(frozen=True, kw_only=True)
class FailedEntry:
    """A source that failed: not in the generation. ``state`` and ``options`` are there
    when it failed after it was read."""

    name: str
    kind: Kind
    origin: str
    error: str
    state: SourceState | None = None
    options: Options | None = None


SourceEntry = CsvEntry | SqliteEntry | FailedEntry


@dataclass(frozen=True)
class Totals:
    """The manifest's sums, for ``backup list`` without reading every entry."""

    sources: int
    failed: int
    files: int
    rows: int
    bytes: int

    @classmethod
    def of(cls, entries: list[SourceEntry]) -> Totals:
        files = list(files_of(entries))
        return cls(
            sources=len(entries),
            failed=sum(isinstance(e, FailedEntry) for e in entries),
            files=len(files),
            rows=sum(f.rows for f in files),
            bytes=sum(f.bytes for f in files),
        )


@dataclass(frozen=True)
class WrittenBy:
    """The versions that wrote the generation."""

    ochinai: str
    pyarrow: str
    sqlite: str
    python: str


@dataclass(frozen=True)
class ObjectLock:
    """The S3 Object Lock retention of every object of the generation."""

    mode: str  # governance or compliance
    until: datetime


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A generation's manifest (or, with shards, one shard's): every source and file."""

    generation: str  # YYYYMMDD
    date: date
    shards: int
    sources: list[SourceEntry]  # by name
    totals: Totals
    written_by: WrittenBy
    lock: ObjectLock | None = None
    version: int = VERSION

    def files(self) -> Iterator[ParquetFile]:
        """Every file of the generation, source by source."""
        return files_of(self.sources)


def files_of(entries: Iterable[SourceEntry]) -> Iterator[ParquetFile]:
    """The files of the sources backed up, in order."""
    for entry in entries:
        if not isinstance(entry, FailedEntry):
            yield from entry.files


@dataclass(frozen=True)
class StoredManifest:
    """A manifest as read, and its etag then."""

    manifest: Manifest
    etag: str


def read_manifest(store: Store, key: str) -> StoredManifest | None:
    """The manifest at ``key`` and its etag, or None when there is none."""
    try:
        obj = store.get(key)
    except ObjectNotFound:
        return None
    return StoredManifest(parse_manifest(obj.body, store.url(key)), obj.etag)


# --- writing -----------------------------------------------------------------------------


def encode_manifest(manifest: Manifest) -> bytes:
    """A manifest's bytes: the same manifest, the same bytes (keys sorted, one-space indent)."""
    return (
        json.dumps(_manifest_doc(manifest), ensure_ascii=False, sort_keys=True, indent=1) + "\n"
    ).encode()


def _manifest_doc(m: Manifest) -> dict[str, Json]:
    doc: dict[str, Json] = {
        "version": m.version,
        "generation": m.generation,
        "date": m.date.isoformat(),
        "shards": m.shards,
        "sources": [_entry_doc(e) for e in m.sources],
        "totals": {
            "sources": m.totals.sources,
            "failed": m.totals.failed,
            "files": m.totals.files,
            "rows": m.totals.rows,
            "bytes": m.totals.bytes,
        },
        "written_by": {
            "ochinai": m.written_by.ochinai,
            "pyarrow": m.written_by.pyarrow,
            "sqlite": m.written_by.sqlite,
            "python": m.written_by.python,
        },
    }
    if m.lock is not None:
        doc["lock"] = {"mode": m.lock.mode, "until": m.lock.until.isoformat()}
    return doc


def _entry_doc(e: SourceEntry) -> dict[str, Json]:
    doc: dict[str, Json] = {"name": e.name, "kind": e.kind, "origin": e.origin}
    if e.state is not None:  # the source_* fields: all three, or none
        doc["source_etag"] = e.state.etag
        doc["source_sha256"] = e.state.sha256
        doc["source_bytes"] = e.state.bytes
    if e.options is not None:
        doc["options"] = _options_doc(e.options)
    if isinstance(e, FailedEntry):
        doc.update(status="failed", error=e.error)
        return doc
    doc["status"] = "ok"
    if isinstance(e, CsvEntry):
        doc.update(
            encoding=e.encoding, header=list(e.header), files=[_csv_file_doc(f) for f in e.files]
        )
        if e.newline is not None:
            doc["newline"] = e.newline
    else:
        doc["database"] = _database_doc(e.database)
        doc["files"] = [_table_file_doc(f) for f in e.files]
    return doc


def _options_doc(o: Options) -> dict[str, Json]:
    doc: dict[str, Json] = {"mask": list(o.mask)}
    if o.encoding is not None:
        doc["encoding"] = o.encoding
    if o.key_id is not None:
        doc["key_id"] = o.key_id
    return doc


def _file_doc(f: ParquetFile) -> dict[str, Json]:
    doc: dict[str, Json] = {
        "key": f.key,
        "sha256": f.sha256,
        "bytes": f.bytes,
        "rows": f.rows,
        "fingerprint": f.fingerprint,
        "masked": list(f.masked),
    }
    if f.encryption is not None:
        doc["encryption"] = {
            "algorithm": f.encryption.algorithm,
            "key_id": f.encryption.key_id,
            "key_wrap": f.encryption.key_wrap,
        }
    return doc


def _csv_file_doc(f: CsvFile) -> dict[str, Json]:
    columns: list[Json] = [{"name": c["name"], "type": c["type"]} for c in f.columns]
    return {**_file_doc(f), "columns": columns}


def _table_file_doc(f: TableFile) -> dict[str, Json]:
    columns: list[Json] = [
        {"name": c["name"], "declared": c["declared"], "classes": list(c["classes"])}
        for c in f.columns
    ]
    return {**_file_doc(f), "table": f.table, "rowid": f.rowid, "columns": columns}


def _database_doc(d: DatabaseSchema) -> dict[str, Json]:
    schema: list[Json] = [
        {"type": s["type"], "name": s["name"], "table": s["table"], "sql": s["sql"]}
        for s in d.schema
    ]
    doc: dict[str, Json] = {
        "schema": schema,
        "user_version": d.user_version,
        "application_id": d.application_id,
    }
    if d.page_size is not None:
        doc["page_size"] = d.page_size
    if d.encoding is not None:
        doc["encoding"] = d.encoding
    if d.auto_vacuum is not None:
        doc["auto_vacuum"] = d.auto_vacuum
    return doc


# --- reading -----------------------------------------------------------------------------


def parse_manifest(body: bytes, where: str) -> Manifest:
    """A manifest from its bytes; DataError naming ``where`` (and the field) when they are
    not one of this version."""
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an object")
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {VERSION}")
        return _read_manifest(_Fields(doc, ""))
    except ValueError as exc:  # json.JSONDecodeError is one
        raise DataError(f"{where}: not a backup manifest ({exc})") from None


class _Fields:
    """A JSON object of a manifest, read field by field: one missing, or of another type,
    is a ValueError naming its path (``sources[2].files[0].rows``)."""

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"{path} is not an object")
        self._doc: dict[str, object] = value
        self._path = path

    def path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def has(self, key: str) -> bool:
        return key in self._doc

    def _get(self, key: str) -> object:
        if key not in self._doc:
            raise ValueError(f"{self.path(key)} is missing")
        return self._doc[key]

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise ValueError(f"{self.path(key)} is not a string")
        return value

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{self.path(key)} is not an integer")
        return value

    def texts(self, key: str) -> list[str]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{self.path(key)} is not a list of strings")
        return [str(v) for v in value]

    def record(self, key: str) -> _Fields:
        return _Fields(self._get(key), self.path(key))

    def records(self, key: str) -> list[_Fields]:
        value = self._get(key)
        if not isinstance(value, list):
            raise ValueError(f"{self.path(key)} is not a list")
        return [_Fields(v, f"{self.path(key)}[{i}]") for i, v in enumerate(value)]

    def optional_text(self, key: str) -> str | None:
        """None when the field is absent or null."""
        return None if self._doc.get(key) is None else self.text(key)

    def optional_integer(self, key: str) -> int | None:
        return None if self._doc.get(key) is None else self.integer(key)

    def optional_record(self, key: str) -> _Fields | None:
        return None if self._doc.get(key) is None else self.record(key)


def _read_manifest(f: _Fields) -> Manifest:
    totals, by, lock = f.record("totals"), f.record("written_by"), f.optional_record("lock")
    return Manifest(
        generation=f.text("generation"),
        date=date.fromisoformat(f.text("date")),
        shards=f.integer("shards"),
        sources=[_read_entry(e) for e in f.records("sources")],
        totals=Totals(
            *(totals.integer(k) for k in ("sources", "failed", "files", "rows", "bytes"))
        ),
        written_by=WrittenBy(*(by.text(k) for k in ("ochinai", "pyarrow", "sqlite", "python"))),
        lock=None if lock is None else _read_lock(lock),
        version=f.integer("version"),
    )


def _read_lock(f: _Fields) -> ObjectLock:
    return ObjectLock(f.text("mode"), datetime.fromisoformat(f.text("until")))


def _read_entry(f: _Fields) -> SourceEntry:
    name, origin, kind, status = f.text("name"), f.text("origin"), _read_kind(f), f.text("status")
    state = _read_state(f) if f.has("source_sha256") else None
    options = _read_options(f.record("options")) if f.has("options") else None
    if status == "failed":
        error = f.text("error")
        return FailedEntry(
            name=name, kind=kind, origin=origin, error=error, state=state, options=options
        )
    if status != "ok":
        raise ValueError(f"{f.path('status')} is {status!r}, not ok or failed")
    if state is None:
        raise ValueError(f"{f.path('source_sha256')} is missing")
    if kind == "csv":
        return CsvEntry(
            name=name,
            origin=origin,
            state=state,
            options=options,
            files=[_read_csv_file(x) for x in f.records("files")],
            encoding=f.text("encoding"),
            header=f.texts("header"),
            newline=f.optional_text("newline"),
        )
    return SqliteEntry(
        name=name,
        origin=origin,
        state=state,
        options=options,
        files=[_read_table_file(x) for x in f.records("files")],
        database=_read_database(f.record("database")),
    )


def _read_kind(f: _Fields) -> Kind:
    kind = f.text("kind")
    if kind == "csv":
        return "csv"
    if kind == "sqlite":
        return "sqlite"
    raise ValueError(f"{f.path('kind')} is {kind!r}, not csv or sqlite")


def _read_state(f: _Fields) -> SourceState:
    etag = f.optional_text("source_etag")
    return SourceState(etag, f.text("source_sha256"), f.integer("source_bytes"))


def _read_options(f: _Fields) -> Options:
    return Options(f.texts("mask"), f.optional_text("encoding"), f.optional_text("key_id"))


def _read_encryption(f: _Fields) -> Encryption | None:
    found = f.optional_record("encryption")
    if found is None:
        return None
    return Encryption(found.text("algorithm"), found.text("key_id"), found.text("key_wrap"))


def _read_csv_file(f: _Fields) -> CsvFile:
    columns = [CsvColumn(name=c.text("name"), type=c.text("type")) for c in f.records("columns")]
    return CsvFile(
        key=f.text("key"),
        sha256=f.text("sha256"),
        bytes=f.integer("bytes"),
        rows=f.integer("rows"),
        fingerprint=f.text("fingerprint"),
        columns=columns,
        masked=f.texts("masked"),
        encryption=_read_encryption(f),
    )


def _read_table_file(f: _Fields) -> TableFile:
    columns = [
        SqliteColumn(name=c.text("name"), declared=c.text("declared"), classes=c.texts("classes"))
        for c in f.records("columns")
    ]
    return TableFile(
        key=f.text("key"),
        sha256=f.text("sha256"),
        bytes=f.integer("bytes"),
        rows=f.integer("rows"),
        fingerprint=f.text("fingerprint"),
        table=f.text("table"),
        rowid=f.optional_text("rowid"),
        columns=columns,
        masked=f.texts("masked"),
        encryption=_read_encryption(f),
    )


def _read_database(f: _Fields) -> DatabaseSchema:
    schema = [
        Statement(
            type=s.text("type"), name=s.text("name"), table=s.text("table"), sql=s.text("sql")
        )
        for s in f.records("schema")
    ]
    return DatabaseSchema(
        schema=schema,
        user_version=f.integer("user_version"),
        application_id=f.integer("application_id"),
        page_size=f.optional_integer("page_size"),
        encoding=f.optional_text("encoding"),
        auto_vacuum=f.optional_integer("auto_vacuum"),
    )
