"""The backup's actions: run (back up, verify, retain), verify, restore and list; verify
and restore read without the job's lock, under a read marker (``Reading``)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa

from ochinai import __version__
from ochinai.jobs.backup import crypto, csvfile, sqlite
from ochinai.jobs.backup.generations import (
    READ_GRACE,
    SHARDS,
    Generation,
    being_read,
    generations,
    keep_reasons,
    lock_reason,
    locked_until,
    reading_key,
    run_retention,
)
from ochinai.jobs.backup.manifest import (
    MANIFEST,
    CsvColumn,
    CsvEntry,
    CsvFile,
    Encryption,
    FailedEntry,
    Kind,
    Manifest,
    ObjectLock,
    Options,
    ParquetFile,
    SourceEntry,
    SourceState,
    SqliteEntry,
    TableFile,
    Totals,
    WrittenBy,
    encode_manifest,
    files_of,
    parse_manifest,
    read_manifest,
)
from ochinai.jobs.backup.parquet import open_file, sha256_file
from ochinai.jobs.backup.settings import BackupSettings, RestoreSettings, VerifySettings
from ochinai.jobs.backup.target import (
    check_object_lock,
    object_lock,
    target_store,
    warn_if_shared,
)
from ochinai.runtime.errors import (
    ConfigError,
    DataError,
    ExternalError,
    LockLost,
    RuleError,
    TransientError,
)
from ochinai.runtime.following import FollowedDownload
from ochinai.runtime.job import Context, Summary
from ochinai.runtime.mask import Masker
from ochinai.runtime.progress import Progress
from ochinai.runtime.storage import ObjectNotFound, PreconditionFailed, PutResult

log = logging.getLogger("ochinai.jobs.backup")

EXTENSIONS: dict[str, Kind] = {
    ".csv": "csv",
    ".sqlite": "sqlite",
    ".sqlite3": "sqlite",
    ".db": "sqlite",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class VerifyError(RuleError):
    """A generation does not read back as its manifest says (66)."""

    outcome = "verify_failed"


class DeletedWhileRead(TransientError):
    """A generation was deleted by retention (or replaced) while verify or restore read
    it (75): not a data error; another run, or another date, reads a whole one."""


@dataclass(frozen=True)
class Source:
    """One thing to back up: an object under the source prefix, or a local file."""

    name: str  # as the manifest, --source and OCHINAI_BACKUP_MASK_COLUMNS call it
    kind: Kind
    origin: str  # s3://... or a local path, for messages
    key: str | None = None
    path: Path | None = None
    etag: str | None = None


def safe(name: str) -> str:
    """A key segment for a name: only [A-Za-z0-9._-]; a changed name gets its hash.

    ``../x``, ``a/b`` and ``order items`` cannot leave the generation's prefix or meet
    another name's key; the manifest keeps the real name.
    """
    cleaned = _UNSAFE.sub("_", name).lstrip(".") or "_"
    if cleaned == name:
        return name
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def discover(ctx: Context[Any]) -> list[Source]:
    """The sources: objects under the source prefix, then the local files listed."""
    s: BackupSettings = ctx.settings
    found: dict[str, Source] = {}

    def add(source: Source) -> None:
        if source.name in found:
            raise ConfigError(
                f"two sources are called {source.name!r}: {found[source.name].origin} and "
                f"{source.origin}; rename one"
            )
        found[source.name] = source

    for info in ctx.store.list(s.source_prefix):
        kind = EXTENSIONS.get(Path(info.key).suffix.lower())
        if kind:
            name = info.key[len(s.source_prefix) :]
            add(Source(name, kind, ctx.store.url(info.key), key=info.key, etag=info.etag))
    for listed in s.sources:
        path = Path(listed)
        if path.is_file():
            files = [(path.name, path)]
        elif path.is_dir():
            files = [(f"{path.name}/{p.relative_to(path)}", p) for p in sorted(path.rglob("*"))]
        else:
            raise ConfigError(f"OCHINAI_BACKUP_SOURCES: {path} is neither a file nor a directory")
        for name, file in files:
            kind = EXTENSIONS.get(file.suffix.lower())
            if kind and file.is_file():
                add(Source(name, kind, str(file), path=file))
    return sorted(found.values(), key=lambda x: x.name)


def this_shard(ctx: Context[Any], sources: list[Source]) -> list[Source]:
    """This pod's share of the sources: all of them, or those of its shard."""
    shards, index = ctx.settings.shards, ctx.runtime.completion_index
    if shards == 1:
        return sources
    if index is None or index >= shards:
        raise ConfigError(
            f"OCHINAI_BACKUP_SHARDS={shards} needs JOB_COMPLETION_INDEX from 0 to {shards - 1} "
            f"(an Indexed Job sets it), not {index}"
        )
    return [x for x in sources if shard_of(x.name, shards) == index]


def shard_of(name: str, shards: int) -> int:
    """The shard a source belongs to: stable across runs, pods and Python versions."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % shards


# --- run -----------------------------------------------------------------------------


def run(ctx: Context[BackupSettings]) -> Summary:
    """Back up the business date's generation, verify it, and apply retention."""
    s = ctx.settings
    warn_if_shared(ctx)
    check_object_lock(ctx)
    name = ctx.business_date.strftime("%Y%m%d")
    base = f"{s.prefix}{name}/"
    masker = Masker(s.mask_key) if s.mask_columns else None
    crypto.ring(s, writing=True)  # OCHINAI_BACKUP_OLD_KEYS without a KEY: refused here
    discovered = discover(ctx)
    sources = this_shard(ctx, discovered)
    if not discovered:
        raise DataError(
            f"nothing to back up: no *.csv, *.sqlite, *.sqlite3 or *.db under "
            f"{ctx.store.url(s.source_prefix)} and no OCHINAI_BACKUP_SOURCES"
        )
    shard_key = None if s.shards == 1 else f"{base}{SHARDS}{ctx.runtime.completion_index}.json"
    target_store(ctx).sweep_uploads(s.prefix, owned=_owned_by(s.shards, base, sources, shard_key))
    manifest_key = shard_key or base + MANIFEST  # this run's: the shard's, or the generation's
    stored = read_manifest(target_store(ctx), manifest_key)
    previous = {e.name: e for e in (stored.manifest.sources if stored else [])}
    counts: dict[str, Any] = {"sources": len(sources), "files_written": 0, "files_unchanged": 0}
    entries = []
    for source in sources:
        ctx.check()
        entries.append(back_up(ctx, source, base, previous.get(source.name), masker, counts))
    manifest = _build_manifest(ctx, name, entries)
    wrote = _write_manifest(ctx, manifest_key, manifest)
    complete: Manifest | None = manifest
    if shard_key is not None:  # the generation is complete once every shard is
        complete, wrote_all = _complete_shards(ctx, base, name)
        wrote = wrote or wrote_all
    failed = [e for e in entries if isinstance(e, FailedEntry)]
    files = list(files_of(entries))
    counts.update(
        rows=sum(f.rows for f in files),
        bytes=sum(f.bytes for f in files),
        failed_sources=len(failed),
        verified=0,
        deleted_generations=0,
    )
    if complete is not None and wrote and not ctx.dry_run:
        if s.verify_after:
            counts["verified"] = verify_generation(ctx, base, complete)
        counts.update(run_retention(ctx).counts)
    if failed:
        listed = "; ".join(f"{e.name}: {e.error}" for e in failed)
        raise DataError(
            f"{len(failed)} of {len(sources)} sources failed (the rest is backed up): {listed}"
        )
    return Summary("ok" if wrote else "unchanged", counts)


def _owned_by(
    shards: int, base: str, sources: list[Source], shard_key: str | None
) -> Callable[[str], bool]:
    """Which keys this run's lock covers: all of the backup's without shards; with them,
    this shard's files of the day's generation and its manifest (another shard's
    upload, under another lock, may be alive)."""
    if shards == 1:
        return lambda key: True
    names = {safe(x.name) for x in sources}

    def owned(key: str) -> bool:
        if key == shard_key:
            return True
        if not key.startswith(base):
            return False
        return re.split(r"[~/]", key[len(base) :], maxsplit=1)[0] in names

    return owned


def back_up(
    ctx: Context[BackupSettings],
    source: Source,
    base: str,
    previous: SourceEntry | None,
    masker: Masker | None,
    counts: dict[str, Any],
) -> SourceEntry:
    """One source into the generation; its manifest entry (FailedEntry with the error).

    ``previous``: the source's entry in the manifest this run replaces (the same day's),
    kept when the source is as it was then (the same etag or sha256) and its files
    depend on the same settings.
    """
    options = _options(ctx, source)
    kept = _reusable(previous, options)
    if kept is not None and source.etag is not None and kept.state.etag == source.etag:
        counts["files_unchanged"] += len(kept.files)
        return kept
    work = ctx.workdir / "sources" / safe(source.name)
    work.mkdir(parents=True, exist_ok=True)
    state: SourceState | None = None  # once the source is read
    following: FollowedDownload | None = None
    try:
        if source.key is not None and source.kind == "csv" and kept is None:
            # Converted as it downloads; its sha256 (the file's name) once it is in.
            following = FollowedDownload(ctx.store, source.key, work / "source")
            path = following.path
            sha256 = following.sha256
        else:
            path, state = _read_whole(ctx, source, work)
            if kept is not None and kept.state.sha256 == state.sha256:
                counts["files_unchanged"] += len(kept.files)
                return _with_etag(kept, source.etag)
            sha256 = functools.partial(str, state.sha256)
        masks = ctx.settings.mask_columns.get(source.name, frozenset())
        progress = ctx.progress(f"backing up {source.origin}")
        ring = crypto.ring(ctx.settings)
        conversion = _Conversion(
            source, path, work, base, sha256, masker, masks, progress, ring, following
        )
        convert = _convert_csv if source.kind == "csv" else _convert_sqlite
        try:
            converted = convert(ctx, conversion)
        except DataError:
            if following is not None:  # a bad source is recorded whole, as when downloaded first
                state = _state_of(ctx, following, source)
            raise
        if following is not None:
            state = _state_of(ctx, following, source)
        progress.done()
    except DataError as exc:
        log.error("%s: not backed up: %s", source.name, exc, extra={"source": source.name})
        return FailedEntry(
            name=source.name,
            kind=source.kind,
            origin=source.origin,
            error=str(exc),
            state=state,
            options=None if state is None else options,
        )
    finally:
        if following is not None:  # over by now, or the run failed or stops: no waiting
            following.stop()
    assert state is not None  # read whole before converting, or once followed to its end
    uploaded = [_upload(ctx, output, counts) for output in converted.outputs]
    return converted.entry(source, state, options, uploaded, _encryption(conversion.ring))


def _reusable(previous: SourceEntry | None, options: Options) -> CsvEntry | SqliteEntry | None:
    """The previous entry, unless it failed or its files are to be written otherwise."""
    if previous is None or isinstance(previous, FailedEntry) or previous.options != options:
        return None
    return previous


def _with_etag(entry: CsvEntry | SqliteEntry, etag: str | None) -> CsvEntry | SqliteEntry:
    """The entry of a source whose bytes are the same under another etag."""
    return replace(entry, state=replace(entry.state, etag=etag))


def _options(ctx: Context[BackupSettings], source: Source) -> Options:
    """The settings a source's files depend on: a change writes them again."""
    ring = crypto.ring(ctx.settings)
    return Options(
        mask=sorted(ctx.settings.mask_columns.get(source.name, ())),
        encoding=ctx.settings.encoding if source.kind == "csv" else None,
        # Unencrypted: no key_id, as in manifests from before encryption.
        key_id=ring.current.id if ring is not None and ring.current is not None else None,
    )


@dataclass(frozen=True)
class _Conversion:
    """One source's conversion to Parquet: where it is, where its files go, what is masked."""

    source: Source
    path: Path  # the CSV, or the SQLite snapshot
    work: Path  # its scratch directory
    base: str  # the generation's prefix
    sha256: Callable[[], str]  # the source's, once it is all read
    masker: Masker | None
    masks: frozenset[str]
    progress: Progress
    ring: crypto.KeyRing | None  # new files encrypted with its current key, if any
    following: FollowedDownload | None = None  # the CSV, still downloading

    def key(self, table: str | None = None) -> str:
        """A file's key: named by the source (and table) and the source's sha256, so a
        source that changes during the day gets a new file, never an overwritten one."""
        name = safe(self.source.name) + ("" if table is None else f"/{safe(table)}")
        return f"{self.base}{name}~{self.sha256()[:12]}.parquet"


@dataclass(frozen=True)
class _Output:
    """A Parquet file a conversion wrote, to upload."""

    local: Path
    key: str  # the key asked for (``_upload`` takes the next name if it holds other bytes)


_Uploaded = tuple[str, str, int]  # the key a file went to, its sha256 and size


@dataclass(frozen=True)
class _CsvConverted:
    """A CSV source converted: its file, and what the CSV reader found."""

    outputs: list[_Output]  # one
    result: csvfile.CsvResult

    def entry(
        self,
        source: Source,
        state: SourceState,
        options: Options,
        uploaded: list[_Uploaded],
        encryption: Encryption | None,
    ) -> CsvEntry:
        """Its manifest entry, its file uploaded."""
        [(key, sha256, size)] = uploaded
        r = self.result
        file = CsvFile(
            key=key,
            sha256=sha256,
            bytes=size,
            rows=r.rows,
            fingerprint=r.fingerprint,
            columns=[CsvColumn(name=c["name"], type=c["type"]) for c in r.columns],
            masked=r.masked,
            encryption=encryption,
        )
        return CsvEntry(
            name=source.name,
            origin=source.origin,
            state=state,
            options=options,
            files=[file],
            encoding=r.encoding,
            header=r.header,
            newline=r.newline,
        )


@dataclass(frozen=True)
class _SqliteConverted:
    """A SQLite source converted: a file a table, and the database's schema."""

    outputs: list[_Output]  # a table's, in the order of ``database.tables``
    database: sqlite.Database

    def entry(
        self,
        source: Source,
        state: SourceState,
        options: Options,
        uploaded: list[_Uploaded],
        encryption: Encryption | None,
    ) -> SqliteEntry:
        """Its manifest entry, its files uploaded."""
        files = [
            TableFile(
                key=key,
                sha256=sha256,
                bytes=size,
                rows=table.rows,
                fingerprint=table.fingerprint,
                table=table.name,
                rowid=table.rowid,
                columns=table.columns,
                masked=table.masked,
                encryption=encryption,
            )
            for table, (key, sha256, size) in zip(self.database.tables, uploaded, strict=True)
        ]
        return SqliteEntry(
            name=source.name,
            origin=source.origin,
            state=state,
            options=options,
            files=files,
            database=self.database.record(),
        )


def _state_of(ctx: Context[Any], following: FollowedDownload, source: Source) -> SourceState:
    """The source's state once its download is over (a stop request ends the wait)."""
    digest, size = following.result(check=ctx.check)
    return SourceState(etag=source.etag, sha256=digest, bytes=size)


def _read_whole(ctx: Context[Any], source: Source, work: Path) -> tuple[Path, SourceState]:
    """The source as a local file (a SQLite database's snapshot), before it is converted."""
    path, digest = _materialize(ctx, source, work)
    if source.kind == "sqlite":  # the snapshot's bytes are what is backed up
        copy = work / "snapshot.sqlite"
        sqlite.snapshot(path, copy, source.origin)
        path, digest = copy, None
    digest = digest or sha256_file(path)
    return path, SourceState(etag=source.etag, sha256=digest, bytes=path.stat().st_size)


def _materialize(ctx: Context[Any], source: Source, work: Path) -> tuple[Path, str | None]:
    """The source as a local file; its sha256 when it was hashed on the way (a download)."""
    if source.path is not None:
        return source.path, None
    assert source.key is not None
    target = work / "source"
    digest, _ = ctx.store.download(source.key, target)
    return target, digest


def _convert_csv(ctx: Context[Any], conversion: _Conversion) -> _CsvConverted:
    out = conversion.work / "out.parquet"
    result = csvfile.to_parquet(
        conversion.path,
        conversion.source.origin,
        out,
        conversion.work / "spill.arrow",
        ctx.settings.encoding,
        mask=conversion.masker.array if conversion.masker else None,
        masked=conversion.masks,
        check=ctx.check,
        advance=lambda rows: conversion.progress.update(rows=rows),
        ring=conversion.ring,
        opener=conversion.following.open if conversion.following else None,
    )
    (conversion.work / "spill.arrow").unlink(missing_ok=True)
    return _CsvConverted([_Output(out, conversion.key())], result)


def _convert_sqlite(ctx: Context[Any], conversion: _Conversion) -> _SqliteConverted:
    source, masker = conversion.source, conversion.masker
    by_table: dict[str, set[str]] = {}
    for pair in conversion.masks:
        table_name, _, column = pair.rpartition(".")
        by_table.setdefault(table_name, set()).add(column)
    outputs = []
    with closing(sqlite3.connect(f"file:{conversion.path}?mode=ro", uri=True)) as db:
        try:
            database = sqlite.read_schema(db, source.origin)
        except sqlite3.Error as exc:
            raise DataError(f"{source.origin}: the schema cannot be read ({exc})") from None
        unknown = sorted(set(by_table) - {t.name for t in database.tables})
        if unknown:
            raise DataError(f"{source.origin}: no table {', '.join(unknown)} to mask")
        for table in database.tables:
            ctx.check()
            out = conversion.work / f"{safe(table.name)}.parquet"
            table_masks: dict[str, Callable[[str | bytes], str]] = {}
            if masker is not None:
                table_masks = {c: masker.token for c in by_table.get(table.name, ())}
            before = sum(t.rows for t in database.tables[: database.tables.index(table)])

            def advance(rows: int, before: int = before) -> None:
                conversion.progress.update(rows=before + rows)

            sqlite.table_to_parquet(
                db, table, out, source.origin, table_masks, ctx.check, advance, conversion.ring
            )
            outputs.append(_Output(out, conversion.key(table.name)))
    return _SqliteConverted(outputs, database)


def _upload(ctx: Context[Any], output: _Output, counts: dict[str, Any]) -> _Uploaded:
    """Create-only; the same bytes there already are no write. Never overwrites. The
    local file is removed once uploaded.

    The key it went to, and its sha256 and size (hashed once, by the store).
    """
    key = output.key
    for attempt in range(1, 10):
        name = key if attempt == 1 else key.replace(".parquet", f".{attempt}.parquet")
        try:
            result = target_store(ctx).put(
                name,
                output.local,
                if_none_match=True,
                content_type="application/vnd.apache.parquet",
                retain=object_lock(ctx, ctx.business_date),
            )
        except PreconditionFailed:
            continue  # other bytes under this name (another pyarrow): the next name
        counts["files_written" if result.outcome == "created" else "files_unchanged"] += 1
        output.local.unlink()
        return name, result.sha256, result.size
    raise TransientError(f"{target_store(ctx).url(key)}: nine versions of this file exist already")


def _encryption(ring: crypto.KeyRing | None) -> Encryption | None:
    """What the manifest says of a new file's encryption (the key's id and the
    algorithms, never the key); None when new files are not encrypted."""
    return ring.encryption() if ring is not None and ring.writes else None


def _build_manifest(ctx: Context[Any], name: str, entries: list[SourceEntry]) -> Manifest:
    """The manifest of generation ``name`` (or of this run's shard of it) over ``entries``."""
    entries = sorted(entries, key=lambda e: e.name)
    lock = object_lock(ctx, ctx.business_date)
    return Manifest(
        generation=name,
        date=ctx.business_date,
        shards=ctx.settings.shards,
        sources=entries,
        totals=Totals.of(entries),
        written_by=WrittenBy(
            ochinai=__version__,
            pyarrow=pa.__version__,
            sqlite=sqlite3.sqlite_version,
            python=sys.version.split()[0],
        ),
        # The Object Lock of every object of the generation.
        lock=None if lock is None else ObjectLock(lock.mode.lower(), lock.until),
    )


def _write_manifest(ctx: Context[Any], key: str, manifest: Manifest) -> bool:
    """Write the manifest, a new version by compare-and-swap; False when it is the same.

    Under the run's lock nobody else writes it; a later holder's manifest (a higher
    fence) stops this run with LockLost instead of being replaced.
    """
    return _update_manifest(ctx, key, lambda current: manifest)


def _update_manifest(
    ctx: Context[Any], key: str, build: Callable[[Manifest | None], Manifest | None]
) -> bool:
    where = target_store(ctx).url(key)
    doc = target_store(ctx).update(
        key,
        build,
        load=lambda obj: parse_manifest(obj.body, where),
        dump=encode_manifest,
        retain=object_lock(ctx, ctx.business_date),
    )
    return doc is not None and doc.outcome != "unchanged"


def _complete_shards(ctx: Context[Any], base: str, name: str) -> tuple[Manifest | None, bool]:
    """With every shard's manifest there, the generation's (exactly one pod writes it).

    Built from the shards' manifests as read at each try: another shard that wrote the
    generation's manifest first makes this one read every shard again.
    """
    shards = ctx.settings.shards
    built: list[Manifest] = []

    def build(current: Manifest | None) -> Manifest | None:
        built.clear()
        found: list[SourceEntry] = []
        for index in range(shards):
            part = read_manifest(target_store(ctx), f"{base}{SHARDS}{index}.json")
            if part is None:
                log.info(
                    "shard %d of %d has not finished; the generation is not complete yet",
                    index,
                    shards,
                )
                return None
            found += part.manifest.sources
        built.append(_build_manifest(ctx, name, found))
        return built[0]

    wrote = _update_manifest(ctx, base + MANIFEST, build)
    return (built[0] if built else None), wrote


# --- verify ----------------------------------------------------------------------------


def verify(ctx: Context[VerifySettings]) -> Summary:
    """Read generations back: the business date's, or with --all every complete one.

    With --all, a generation that retention deletes while it is read is skipped with a
    warning (``deleted_while_read``); for one date that is DeletedWhileRead (75).
    """
    s = ctx.settings
    if s.all:
        names = [g.name for g in generations(target_store(ctx), s.prefix) if g.complete]
    else:
        names = [ctx.business_date.strftime("%Y%m%d")]
    counts = {"generations": 0, "verified": 0, "deleted_while_read": 0}
    for name in names:
        try:
            counts["verified"] += _verify_one(ctx, name)
        except DeletedWhileRead as exc:
            if not s.all:
                raise
            log.warning("%s; skipped", exc, extra={"generation": name})
            counts["deleted_while_read"] += 1
            continue
        counts["generations"] += 1
    return Summary("ok", counts)


def _verify_one(ctx: Context[VerifySettings], name: str) -> int:
    """One generation read back under its read marker; the number of files checked."""
    with Reading(ctx, name) as reading:
        stored = read_manifest(target_store(ctx), reading.base + MANIFEST)
        if stored is None:
            if ctx.settings.all:  # listed complete a moment ago: deleted since
                raise reading.deleted("gone")
            raise DataError(f"{target_store(ctx).url(reading.base)}: no complete generation")
        reading.etag = stored.etag
        return verify_generation(ctx, reading.base, stored.manifest, reading)


def verify_generation(
    ctx: Context[Any], base: str, manifest: Manifest, reading: Reading | None = None
) -> int:
    """Every file of the manifest read back and checked; VerifyError naming each mismatch.

    ``reading``: read without the lock (``verify``), under a read marker; a file missing
    because retention deleted the generation meanwhile is DeletedWhileRead.
    """
    problems: list[str] = []
    checked = 0
    crypto.require(crypto.ring(ctx.settings), manifest.files(), target_store(ctx).url(base))
    for file in manifest.files():
        ctx.check()
        if reading is not None:
            reading.renew()
        problem = _check_file(ctx, file, reading)
        checked += 1
        if problem:
            problems.append(f"{target_store(ctx).url(file.key)}: {problem}")
    if problems:
        for problem in problems:
            log.error("verify: %s", problem)
        raise VerifyError(
            f"{target_store(ctx).url(base)}: {len(problems)} of {checked} files do not match the "
            f"manifest: {'; '.join(problems)}"
        )
    log.info(
        "verified %s: %d files", target_store(ctx).url(base), checked, extra={"files": checked}
    )
    return checked


def _check_file(ctx: Context[Any], file: ParquetFile, reading: Reading | None) -> str | None:
    """What is wrong with a file as read back (its sha256, size, rows, fingerprint), if
    anything."""
    local = ctx.workdir / "verify.parquet"
    try:
        digest, size = _download(ctx, file.key, local, reading)
        if (digest, size) != (file.sha256, file.bytes):
            said = f"{file.sha256[:12]}, {file.bytes} bytes"
            return f"sha256 {digest[:12]}, {size} bytes; the manifest says {said}"
        try:
            ring = crypto.ring(ctx.settings)
            stored = open_file(local, ring).metadata.num_rows
            if isinstance(file, CsvFile):
                names = [c["name"] for c in file.columns]
                rows, print_ = csvfile.fingerprint_of(local, names, ring)
            else:
                rows, print_ = sqlite.fingerprint_of(local, ring)
        except (pa.ArrowException, OSError) as exc:
            return f"unreadable Parquet ({exc})"
        if rows != file.rows or stored != file.rows:
            return f"{rows} rows read back; the manifest says {file.rows}"
        if print_ != file.fingerprint:
            return "the rows read back differ from the source's (fingerprint)"
        return None
    finally:
        local.unlink(missing_ok=True)


# --- restore ---------------------------------------------------------------------------


def restore(ctx: Context[RestoreSettings]) -> Summary:
    """The business date's generation back into CSV files and SQLite databases under --to.

    Read under a read marker; a generation that retention deletes meanwhile is
    DeletedWhileRead (75).
    """
    with Reading(ctx, ctx.business_date.strftime("%Y%m%d")) as reading:
        return _restore(ctx, reading)


def _restore(ctx: Context[RestoreSettings], reading: Reading) -> Summary:
    s = ctx.settings
    entries = _entries_to_restore(ctx, reading)
    if s.to is None:
        raise ConfigError("restore needs --to DIR (OCHINAI_BACKUP_RESTORE_TO): where to write")
    ring = crypto.ring(s)  # before anything is written: every key the files need
    crypto.require(ring, files_of(entries), target_store(ctx).url(reading.base))
    root = s.to.resolve()
    counts = {
        "sources": 0,
        "files": 0,
        "rows": 0,
        "skipped_failed": 0,
        "virtual_without_module": 0,
        "csv_identical": 0,
    }
    for entry in entries:
        if isinstance(entry, FailedEntry):
            log.warning(
                "%s failed in this generation and is not in it: %s", entry.name, entry.error
            )
            counts["skipped_failed"] += 1
            continue
        _restore_source(ctx, reading, entry, root, ring, counts)
    return Summary("ok", counts)


def _entries_to_restore(ctx: Context[RestoreSettings], reading: Reading) -> list[SourceEntry]:
    """The generation's entries that --source names (all without it), its manifest's etag
    set on ``reading``."""
    base, wanted = reading.base, ctx.settings.source
    stored = read_manifest(target_store(ctx), base + MANIFEST)
    if stored is None:
        raise DataError(f"{target_store(ctx).url(base)}: no complete generation to restore")
    reading.etag = stored.etag
    every = stored.manifest.sources
    entries = [e for e in every if wanted is None or e.name == wanted]
    if not entries:
        names = ", ".join(e.name for e in every)
        raise ConfigError(
            f"{target_store(ctx).url(base)} has no source {wanted!r} (it has: {names})"
        )
    return entries


def _restore_source(
    ctx: Context[RestoreSettings],
    reading: Reading,
    entry: CsvEntry | SqliteEntry,
    root: Path,
    ring: crypto.KeyRing | None,
    counts: dict[str, int],
) -> None:
    """One source written back under ``root``, as its name says; ConfigError when
    something is there already."""
    target = (root / entry.name).resolve()
    if not target.is_relative_to(root):
        raise DataError(f"{entry.name!r} would be restored outside {root}")
    if target.exists():
        raise ConfigError(f"{target} exists; restore into an empty directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    paths = fetch_checked(ctx, entry.files, reading)
    _warn_masked(entry)
    if isinstance(entry, CsvEntry):
        # As the source was (its encoding, BOM and line ends), or as asked.
        encoding = entry.encoding if ctx.settings.encoding == "auto" else ctx.settings.encoding
        newline = entry.newline if entry.newline is not None else "\n"
        rows = csvfile.restore(paths[0], entry.header, target, encoding, newline, ring)
        counts["csv_identical"] += _same_bytes(target, entry)
    else:
        tables = {f.table: path for f, path in zip(entry.files, paths, strict=True)}
        rows = sum(sqlite.restore(entry, tables, target, ring).values())
        counts["virtual_without_module"] += len(sqlite.without_module(target, entry.name))
    counts["sources"] += 1
    counts["files"] += len(paths)
    counts["rows"] += rows
    log.info("restored %s to %s: %d rows", entry.name, target, rows, extra={"rows": rows})
    for path in paths:
        path.unlink()


def _warn_masked(entry: CsvEntry | SqliteEntry) -> None:
    """A WARNING naming the masked columns of a source restored: they hold tokens."""
    masked = sorted(
        {
            f"{f.table if isinstance(f, TableFile) else ''}.{c}".lstrip(".")
            for f in entry.files
            for c in f.masked
        }
    )
    if masked:
        log.warning(
            "%s: masked columns hold tokens, not the values: %s", entry.name, ", ".join(masked)
        )


def _same_bytes(path: Path, entry: CsvEntry) -> int:
    """1 when the restored CSV is the source byte for byte; else 0 and an INFO saying why
    it may not be (quotes the source put where none are needed, another encoding asked)."""
    if sha256_file(path) == entry.state.sha256:
        return 1
    log.info(
        "%s: restored with the same values, not byte for byte (the source quoted values "
        "that need no quotes, wrote numbers otherwise, or another encoding was asked)",
        entry.name,
        extra={"source": entry.name},
    )
    return 0


def fetch_checked(ctx: Context[Any], files: Sequence[ParquetFile], reading: Reading) -> list[Path]:
    """The files downloaded into the run's directory, in order, each checked against its
    sha256."""
    out = []
    for index, file in enumerate(files):
        reading.renew()
        local = ctx.workdir / f"restore-{index}.parquet"
        if _download(ctx, file.key, local, reading)[0] != file.sha256:
            raise VerifyError(
                f"{target_store(ctx).url(file.key)}: sha256 differs from the manifest's"
            )
        out.append(local)
    return out


# --- reading without the lock ---------------------------------------------------------


def _download(ctx: Context[Any], key: str, local: Path, reading: Reading | None) -> tuple[str, int]:
    """``store.download``; a file missing because its generation was deleted (or
    replaced) since its manifest was read is DeletedWhileRead, else ObjectNotFound."""
    try:
        return target_store(ctx).download(key, local)
    except ObjectNotFound as exc:
        if reading is not None:
            reading.recheck(exc)
        raise


class Reading:
    """A generation read without the job's lock (verify, restore).

    Its read marker ``<prefix>_reading/<generation>/<run id>.json`` (create-only, deleted
    when done, renewed while a long read goes on) keeps retention in a concurrent
    ``backup run`` from deleting the generation. ``etag`` is its manifest's as read: a
    file found missing is re-checked against it, to tell a generation that retention
    deleted anyway (a reader that came after retention looked) from a missing file.
    A dry run writes no marker.
    """

    RENEW_AFTER = READ_GRACE / 4

    def __init__(self, ctx: Context[Any], name: str) -> None:
        self.ctx, self.name = ctx, name
        self.base = f"{ctx.settings.prefix}{name}/"
        self.key = reading_key(ctx.settings.prefix, name, ctx.run_id)
        self.etag: str | None = None  # the manifest's, once read
        self._marker: str | None = None  # the marker's etag while it is there
        self._since: datetime | None = None

    def __enter__(self) -> Reading:
        if not self.ctx.dry_run:
            self._mark()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._marker is None:
            return
        try:
            target_store(self.ctx).delete(self.key, if_match=self._marker)
        except Exception as failed:  # the read is done; retention clears it after the grace
            log.warning(
                "read marker %s not deleted (retention deletes it after %s): %s",
                target_store(self.ctx).url(self.key),
                READ_GRACE,
                failed,
                extra={"key": self.key},
            )

    def _body(self, now: datetime) -> bytes:
        return json.dumps(
            {
                "run_id": self.ctx.run_id,
                "action": self.ctx.action,
                "generation": self.name,
                "time": now.isoformat(),
            },
            sort_keys=True,
        ).encode()

    def _mark(self, etag: str | None = None) -> None:
        """Write the marker create-only, or over ``etag`` to renew it. One not as
        expected (left by an earlier try of this run id, or deleted by retention as
        stale) is written again over what is there."""
        now = self.ctx.now()
        body = self._body(now)
        try:
            result = self._put(body, etag)
        except PreconditionFailed as exc:
            result = self._put(body, exc.current_etag)
        self._marker, self._since = result.etag, now

    def _put(self, body: bytes, etag: str | None) -> PutResult:
        store, kind = target_store(self.ctx), "application/json"
        if etag is None:
            return store.put(self.key, body, if_none_match=True, content_type=kind)
        return store.put(self.key, body, if_match=etag, content_type=kind)

    def renew(self) -> None:
        """Between files: write the marker again once it is RENEW_AFTER old, so that a
        read longer than READ_GRACE stays protected; a failure is logged."""
        if self._marker is None or self._since is None:
            return
        if self.ctx.now() - self._since < self.RENEW_AFTER:
            return
        try:
            self._mark(self._marker)
        except LockLost:
            raise
        except ExternalError as exc:
            log.warning(
                "read marker %s not renewed: %s",
                target_store(self.ctx).url(self.key),
                exc,
                extra={"key": self.key},
            )

    def recheck(self, missing: ObjectNotFound) -> None:
        """A file of the manifest is missing: DeletedWhileRead when the manifest is gone
        or is another since it was read; else return (the file is really missing)."""
        stored = read_manifest(target_store(self.ctx), self.base + MANIFEST)
        if stored is None:
            raise self.deleted("gone") from missing
        if stored.etag != self.etag:
            raise self.deleted("replaced") from missing

    def deleted(self, how: str) -> DeletedWhileRead:
        """DeletedWhileRead, the manifest ``gone`` or ``replaced``."""
        again = "run again" + (" into an empty directory" if self.ctx.action == "restore" else "")
        return DeletedWhileRead(
            f"{target_store(self.ctx).url(self.base)}: the generation was deleted by retention "
            f"while it was read (its manifest is {how}); {again}, or pick another date "
            "(ochinai backup list)"
        )


# --- list ------------------------------------------------------------------------------


def _locked_until(
    ctx: Context[BackupSettings],
    generation: Generation,
    manifest: Manifest | None,
    kept: bool,
) -> datetime | None:
    """Until when Object Lock keeps the generation, if later than now: as its manifest
    records it, or, for one that nothing else keeps, as the server says (HEAD)."""
    now = ctx.now()
    recorded = manifest.lock if manifest is not None else None
    if recorded is not None:
        return recorded.until if recorded.until > now else None
    return None if kept else locked_until(target_store(ctx), generation, now)


def listing(ctx: Context[BackupSettings]) -> Summary:
    """Every generation: complete or not, its sources, rows and bytes, and why retention
    keeps it (``kept_because``: ``generations.keep_reasons``, and ``being read (run)``
    for a young read marker) or that the next run removes it (``next_run_removes``), as
    retention would decide at this run's business date and clock (``backup forget``)."""
    s = ctx.settings
    warn_if_shared(ctx)
    every = generations(target_store(ctx), s.prefix)
    manifests: dict[str, Manifest] = {}
    for generation in every:
        if generation.complete:
            stored = read_manifest(target_store(ctx), f"{s.prefix}{generation.name}/{MANIFEST}")
            if stored is not None:
                manifests[generation.name] = stored.manifest
            generation.failed = stored is None or bool(stored.manifest.totals.failed)
    reasons = keep_reasons(every, s.policy, ctx.business_date)
    readers = being_read(target_store(ctx), s.prefix, ctx.now())
    removes = 0
    for generation in every:
        manifest = manifests.get(generation.name)
        kept = reasons[generation.name]
        if generation.name in readers:
            kept.append(f"being read ({', '.join(readers[generation.name])})")
        until = _locked_until(ctx, generation, manifest, bool(kept))
        if until is not None:
            kept.append(lock_reason(until, ctx.runtime.timezone))
        removes += not kept
        _log_generation(generation, manifest, kept)
    complete = sum(g.complete for g in every)
    return Summary(
        "ok",
        {
            "generations": len(every),
            "complete": complete,
            "incomplete": len(every) - complete,
            "next_run_removes": removes,
        },
    )


def _log_generation(generation: Generation, manifest: Manifest | None, kept: list[str]) -> None:
    """One line of ``backup list``: the generation, its totals and why it is kept."""
    totals = asdict(manifest.totals) if manifest is not None else {}
    log.info(
        "%s %s: %s sources, %s failed, %s rows, %d bytes; %s",
        generation.name,
        "complete" if generation.complete else "incomplete",
        totals.get("sources", "?"),
        totals.get("failed", "?"),
        totals.get("rows", "?"),
        generation.size,
        f"kept: {', '.join(kept)}" if kept else "the next run removes it",
        extra={
            "generation": generation.name,
            "complete": generation.complete,
            "sources": [e.name for e in manifest.sources] if manifest is not None else [],
            # In the manifest's order: its keys sorted.
            **{f"total_{k}": v for k, v in sorted(totals.items())},
            "kept_because": kept,
            "next_run_removes": not kept,
        },
    )
