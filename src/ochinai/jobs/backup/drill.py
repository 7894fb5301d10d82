"""``ochinai backup drill``: a generation restored into scratch and used as its users would,
one step past ``verify``, which reads the Parquet files back."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from ochinai.jobs.backup import crypto, csvfile, sqlite
from ochinai.jobs.backup.crypto import KeyRing
from ochinai.jobs.backup.generations import generations
from ochinai.jobs.backup.job import Reading, VerifyError, fetch_checked, safe
from ochinai.jobs.backup.manifest import (
    MANIFEST,
    CsvEntry,
    CsvFile,
    DatabaseSchema,
    FailedEntry,
    Manifest,
    SqliteColumn,
    SqliteEntry,
    TableFile,
    read_manifest,
)
from ochinai.jobs.backup.parquet import Fingerprint
from ochinai.jobs.backup.settings import DrillSettings
from ochinai.jobs.backup.target import target_store
from ochinai.runtime.errors import DataError
from ochinai.runtime.job import Context, Summary
from ochinai.runtime.storage import ObjectNotFound

log = logging.getLogger("ochinai.jobs.backup")

# What a table's rows may raise when they do not fit the manifest's types (an INTEGER
# where it says TEXT, a class it does not list) or cannot be read (sqlite.batches).
_UNFIT = (DataError, pa.ArrowException, ValueError, TypeError, KeyError, OverflowError)


def drill(ctx: Context[DrillSettings]) -> Summary:
    """Restore a generation into the run's directory and check it; VerifyError (66)
    naming each mismatch, DataError (65) when there is no generation to drill.

    It restores as ``restore`` does, into a directory under the run's own (the runtime
    removes it), one source at a time, and opens what came out: each SQLite database
    must open, pass ``PRAGMA integrity_check`` and have the manifest's tables, header
    numbers and columns, each table the manifest's rows and fingerprint
    (``check_database``); each CSV must read back, as the backup read its source, to the
    manifest's header, rows and fingerprint. Everything streams in batches. It reads
    under a read marker (``job.Reading``) and takes no lock; its runs are recorded as
    ``backup.drill``, so that a drill that stops passing opens an incident.
    """
    name, picked = choose(ctx)
    log.info(
        "restore drill of generation %s (%s)",
        name,
        picked,
        extra={"generation": name, "picked": picked},
    )
    with Reading(ctx, name) as reading:
        stored = read_manifest(target_store(ctx), reading.base + MANIFEST)
        if stored is None:
            if ctx.settings.random or ctx.runtime.date is None:  # listed a moment ago
                raise reading.deleted("gone")
            raise DataError(
                f"{target_store(ctx).url(reading.base)}: no complete generation to drill"
            )
        reading.etag = stored.etag
        return _drill(ctx, reading, stored.manifest)


def choose(ctx: Context[DrillSettings]) -> tuple[str, str]:
    """The generation to drill, and how it was picked (for the log): the business date's
    with ``--date``; else the newest complete one; with ``--random`` one of the complete
    ones picked by a seed (``--seed``, else the business date), so that a rerun picks the
    same one while the generations are the same."""
    s = ctx.settings
    if not s.random and ctx.runtime.date is not None:
        return ctx.business_date.strftime("%Y%m%d"), "the date asked"
    complete = [g.name for g in generations(target_store(ctx), s.prefix) if g.complete]
    if not complete:
        raise DataError(f"{target_store(ctx).url(s.prefix)}: no complete generation to drill")
    if not s.random:
        return complete[0], "the newest complete one"
    seed = str(s.seed) if s.seed is not None else ctx.business_date.isoformat()
    return pick(complete, seed), f"at random among {len(complete)} complete, seed {seed}"


def pick(names: list[str], seed: str) -> str:
    """One of ``names`` by ``seed``: the same seed and names, the same one, whatever the
    order listed, the process or the Python version (a sha256, as ``job.shard_of``)."""
    ordered = sorted(names)
    digest = hashlib.sha256(f"ochinai backup drill {seed}".encode()).hexdigest()
    return ordered[int(digest[:16], 16) % len(ordered)]


def _drill(ctx: Context[DrillSettings], reading: Reading, manifest: Manifest) -> Summary:
    where = target_store(ctx).url(reading.base)
    root = ctx.workdir / "drill"
    root.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {
        "generation": reading.name,
        "sources": 0,
        "files": 0,
        "rows": 0,
        "databases_checked": 0,
        "csv_checked": 0,
        "skipped_failed": 0,
    }
    # Every key an encrypted generation needs, before anything is read (78 naming it).
    ring = crypto.ring(ctx.settings)
    crypto.require(ring, manifest.files(), where)
    problems: list[str] = []
    for entry in manifest.sources:
        ctx.check()
        reading.renew()
        if isinstance(entry, FailedEntry):
            log.warning(
                "%s failed in this generation and is not in it: %s",
                entry.name,
                entry.error,
                extra={"source": entry.name},
            )
            counts["skipped_failed"] += 1
            continue
        found = _drill_source(ctx, reading, entry, root, counts, ring)
        problems += [f"source {entry.name!r}: {problem}" for problem in found]
    if problems:
        for problem in problems:
            log.error("drill of %s: %s", where, problem, extra={"generation": reading.name})
        raise VerifyError(
            f"the restore drill of generation {reading.name} ({where}) failed: "
            f"{len(problems)} problem{'s' if len(problems) > 1 else ''}: {'; '.join(problems)}"
        )
    if not counts["sources"]:
        raise VerifyError(
            f"the restore drill of generation {reading.name} ({where}) restored nothing: "
            "every source failed at its backup"
        )
    log.info(
        "restore drill of %s passed: %d sources, %d rows",
        where,
        counts["sources"],
        counts["rows"],
        extra={"generation": reading.name},
    )
    return Summary("ok", counts)


def _drill_source(
    ctx: Context[DrillSettings],
    reading: Reading,
    entry: CsvEntry | SqliteEntry,
    root: Path,
    counts: dict[str, Any],
    ring: KeyRing | None,
) -> list[str]:
    """One source restored under ``root`` and checked; what is wrong with it."""
    try:
        paths = fetch_checked(ctx, entry.files, reading)  # each sha256 as the manifest's
    except VerifyError as exc:
        return [str(exc)]
    except ObjectNotFound as exc:  # not DeletedWhileRead: the manifest is as it was read
        return [f"{exc} (a file the manifest lists is missing)"]
    target = root / safe(entry.name)
    progress = ctx.progress(f"drilling {entry.name}")
    try:
        if isinstance(entry, CsvEntry):
            [file], [parquet] = entry.files, paths
            rows, problems = _drill_csv(ctx, entry, file, parquet, target, progress.update, ring)
            counts["csv_checked"] += 1
        else:
            rows, problems = _drill_sqlite(
                ctx, reading, entry, paths, target, progress.update, ring
            )
            counts["databases_checked"] += 1
    finally:
        progress.done()
        for path in paths:
            path.unlink(missing_ok=True)
        target.unlink(missing_ok=True)  # one source on the disk at a time
    counts["sources"] += 1
    counts["files"] += len(paths)
    counts["rows"] += rows
    if not problems:
        log.info("drilled %s: %d rows", entry.name, rows, extra={"source": entry.name})
    return problems


# --- CSV -----------------------------------------------------------------------------------


def _drill_csv(
    ctx: Context[DrillSettings],
    entry: CsvEntry,
    file: CsvFile,
    parquet: Path,
    target: Path,
    advance: Callable[..., None],
    ring: KeyRing | None,
) -> tuple[int, list[str]]:
    """Restore the CSV as ``restore`` does (the source's encoding, BOM and line ends, or
    OCHINAI_BACKUP_ENCODING's), then read it as the backup read the source, in that
    encoding: its header, rows and fingerprint."""
    s = ctx.settings
    encoding = entry.encoding if s.encoding == "auto" else s.encoding
    newline = entry.newline if entry.newline is not None else "\n"
    try:
        written = csvfile.restore(parquet, entry.header, target, encoding, newline, ring)
    except (DataError, pa.ArrowException, UnicodeError) as exc:
        return 0, [f"not restored ({exc})"]
    out, spill = ctx.workdir / "drill-check.parquet", ctx.workdir / "drill-check.arrow"
    try:
        result = csvfile.to_parquet(
            target,
            f"{entry.name} as restored",
            out,
            spill,
            encoding,
            check=ctx.check,
            advance=lambda rows: advance(rows=rows),
        )
    except DataError as exc:
        return written, [f"the restored CSV does not read back ({exc})"]
    finally:
        out.unlink(missing_ok=True)
        spill.unlink(missing_ok=True)
    problems = []
    if result.header != entry.header:
        problems.append(f"the restored header is {result.header}; the manifest says {entry.header}")
    if result.rows != file.rows or written != file.rows:
        problems.append(
            f"{result.rows} rows in the restored CSV; the manifest says {file.rows} "
            f"({target_store(ctx).url(file.key)})"
        )
    elif result.fingerprint != file.fingerprint:
        problems.append(
            "the restored CSV's rows differ from the source's (fingerprint) "
            f"({target_store(ctx).url(file.key)})"
        )
    return result.rows, problems


# --- SQLite --------------------------------------------------------------------------------


def _drill_sqlite(
    ctx: Context[DrillSettings],
    reading: Reading,
    entry: SqliteEntry,
    paths: list[Path],
    target: Path,
    advance: Callable[..., None],
    ring: KeyRing | None,
) -> tuple[int, list[str]]:
    """Rebuild the database as ``restore`` does, then open it and check it."""
    tables = {f.table: path for f, path in zip(entry.files, paths, strict=True)}
    try:
        sqlite.restore(entry, tables, target, ring)
    except DataError as exc:  # not rebuilt, or it fails integrity_check right away
        return 0, [f"not restored ({exc})"]
    for path in tables.values():  # the database alone on the disk while it is read
        path.unlink()
    return check_database(ctx, reading, entry, target, advance)


def check_database(
    ctx: Context[Any],
    reading: Reading | None,
    entry: SqliteEntry,
    path: Path,
    advance: Callable[..., None] = lambda **_: None,
) -> tuple[int, list[str]]:
    """Open the restored database at ``path`` read-only and check it against the
    manifest's ``entry``: integrity_check, header numbers, tables, columns, and each
    table's rows and fingerprint. Its rows, and what is wrong."""
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return 0, [f"the restored database does not open ({exc})"]
    with closing(db):
        try:
            result = db.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.Error as exc:  # not a database, or malformed past checking
            result = [(f"the restored database does not open ({exc})",)]
        if result != [("ok",)]:
            listed = "; ".join(str(row[0]) for row in result[:3])
            return 0, [f"the restored database fails integrity_check: {listed}"]
        problems = _header_problems(db, entry.database)
        present = _tables(db)
        expected = [f.table for f in entry.files]
        missing = [t for t in expected if t not in present]
        if missing:
            problems.append(f"the restored database lacks the tables {missing}")
        extra = [t for t in present if t not in expected]
        if extra:
            problems.append(f"the restored database has tables the manifest has not: {extra}")
        codec = sqlite.CODECS.get(db.execute("PRAGMA encoding").fetchone()[0], "utf-8")
        where = f"{entry.name} as restored"
        rows = 0
        for file in entry.files:
            if file.table in missing:
                continue
            ctx.check()
            if reading is not None:
                reading.renew()

            def counted(n: int, before: int = rows) -> None:
                advance(rows=before + n)

            found, problem = _check_table(db, file, codec, where, ctx.check, counted)
            rows += found
            if problem:
                problems.append(f"table {file.table!r}: {problem}")
    return rows, problems


def _header_problems(db: sqlite3.Connection, database: DatabaseSchema) -> list[str]:
    """The header numbers the manifest keeps (a manifest from before some were kept has
    fewer), as the restored database has them."""
    problems = []
    for pragma, kept in database.pragmas().items():
        found = db.execute(f"PRAGMA {pragma}").fetchone()[0]
        if found != kept:
            problems.append(f"PRAGMA {pragma} is {found!r}; the manifest says {kept!r}")
    return problems


def _tables(db: sqlite3.Connection) -> list[str]:
    """The tables a backup takes (as ``sqlite.read_schema``): not virtual (their shadow
    tables are), not SQLite's own but sqlite_sequence."""
    rows = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
        "ORDER BY rowid"
    ).fetchall()
    return [
        name
        for name, sql in rows
        if not sqlite.is_virtual(sql)
        and (not name.startswith("sqlite_") or name == "sqlite_sequence")
    ]


def _check_table(
    db: sqlite3.Connection,
    file: TableFile,
    codec: str,
    where: str,
    check: Callable[[], None],
    advance: Callable[[int], None],
) -> tuple[int, str | None]:
    """One restored table against its manifest entry: its rows, and what differs."""
    info = db.execute(f"PRAGMA table_xinfo({sqlite.quoted(file.table)})").fetchall()
    names = [row[1] for row in info if row[6] == 0]  # not the generated columns
    expected = [c["name"] for c in file.columns]
    if names != expected:
        return 0, f"its columns are {names}; the manifest says {expected}"
    try:
        rows, fingerprint = table_fingerprint(db, file, codec, where, check, advance)
    except _UNFIT as exc:
        return 0, f"its rows do not read as the manifest's column types ({exc})"
    if rows != file.rows:
        return rows, f"{rows} rows in the restored database; the manifest says {file.rows}"
    if fingerprint != file.fingerprint:
        return rows, "the restored rows differ from the source's (fingerprint)"
    return rows, None


def table_fingerprint(
    db: sqlite3.Connection,
    file: TableFile,
    codec: str,
    where: str,
    check: Callable[[], None] = lambda: None,
    advance: Callable[[int], None] = lambda rows: None,
) -> tuple[int, str]:
    """Rows and fingerprint of a table of a database, read as the backup read it.

    ``file`` is the table's manifest entry: its columns' storage classes give the
    record batches' types (``sqlite.schema_of``), read by ``sqlite.batches`` in the
    order the backup read them (rowid, else primary key), TEXT as its bytes where the
    backup read it so (a UTF-16 database, a column holding TEXT that does not decode).
    """
    columns = [
        SqliteColumn(name=c["name"], declared=c["declared"], classes=list(c["classes"]))
        for c in file.columns
    ]
    table = sqlite.Table(file.table, columns, file.rowid, codec=codec)
    schema = sqlite.schema_of(table)
    texts = frozenset(c["name"] for c in table.columns if {"text", sqlite.RAW} & set(c["classes"]))
    raw = any(sqlite.RAW in c["classes"] for c in table.columns)
    as_bytes = texts if codec != "utf-8" or raw else frozenset()
    print_ = Fingerprint(schema.names)
    for batch in sqlite.batches(db, table, schema, where, as_bytes=as_bytes):
        check()
        print_.update(batch)
        advance(print_.rows)
    return print_.rows, print_.hexdigest()
