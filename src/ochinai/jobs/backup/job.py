"""The backup's actions: run (back up, verify, retain), verify, restore and list."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa

from ochinai import __version__
from ochinai.jobs.backup import crypto, csvfile, sqlite
from ochinai.jobs.backup.generations import (
    MANIFEST,
    READ_GRACE,
    SHARDS,
    VERSION,
    Generation,
    being_read,
    encode,
    generations,
    keep_reasons,
    lock_reason,
    locked_until,
    parse_manifest,
    read_manifest,
    reading_key,
    run_retention,
)
from ochinai.jobs.backup.parquet import open_file, sha256_file
from ochinai.jobs.backup.settings import BackupSettings, RestoreSettings, VerifySettings
from ochinai.jobs.backup.target import check_lock, retention, target_store, warn_if_shared
from ochinai.runtime.errors import (
    ConfigError,
    DataError,
    ExternalError,
    LockLost,
    RuleError,
    TransientError,
)
from ochinai.runtime.job import Context, Summary
from ochinai.runtime.mask import Masker
from ochinai.runtime.progress import Progress
from ochinai.runtime.storage import ObjectNotFound, PreconditionFailed, PutResult

log = logging.getLogger("ochinai.jobs.backup")

EXTENSIONS = {".csv": "csv", ".sqlite": "sqlite", ".sqlite3": "sqlite", ".db": "sqlite"}
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
    kind: str  # csv | sqlite
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


def mine(ctx: Context[Any], sources: list[Source]) -> list[Source]:
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
    check_lock(ctx)
    generation = ctx.business_date.strftime("%Y%m%d")
    base = f"{s.prefix}{generation}/"
    masker = Masker(s.mask_key) if s.mask_columns else None
    crypto.ring(s, writing=True)  # OCHINAI_BACKUP_OLD_KEYS without a KEY: refused here
    every = discover(ctx)
    sources = mine(ctx, every)
    if not every:
        raise DataError(
            f"nothing to back up: no *.csv, *.sqlite, *.sqlite3 or *.db under "
            f"{ctx.store.url(s.source_prefix)} and no OCHINAI_BACKUP_SOURCES"
        )
    shard_key = None if s.shards == 1 else f"{base}{SHARDS}{ctx.runtime.completion_index}.json"
    target_store(ctx).sweep_uploads(s.prefix, owned=_owned_by(s.shards, base, sources, shard_key))
    mine_key = shard_key or base + MANIFEST
    previous = read_manifest(target_store(ctx), mine_key)
    before = {e["name"]: e for e in (previous[0]["sources"] if previous else [])}
    counts: dict[str, Any] = {"sources": len(sources), "files_written": 0, "files_unchanged": 0}
    entries = []
    for source in sources:
        ctx.check()
        entries.append(back_up(ctx, source, base, before.get(source.name), masker, counts))
    manifest = _manifest(ctx, generation, entries)
    wrote = _write(ctx, mine_key, manifest)
    complete: dict[str, Any] | None = manifest
    if shard_key is not None:  # the generation is complete once every shard is
        complete, wrote_all = _complete_shards(ctx, base, generation)
        wrote = wrote or wrote_all
    failed = [e for e in entries if e["status"] == "failed"]
    counts.update(
        rows=sum(f["rows"] for e in entries for f in e.get("files", [])),
        bytes=sum(f["bytes"] for e in entries for f in e.get("files", [])),
        failed_sources=len(failed),
        verified=0,
        deleted_generations=0,
    )
    if complete is not None and wrote and not ctx.dry_run:
        if s.verify_after:
            counts["verified"] = verify_generation(ctx, base, complete)
        counts.update(run_retention(ctx).counts)
    if failed:
        listed = "; ".join(f"{e['name']}: {e['error']}" for e in failed)
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
    before: dict[str, Any] | None,
    masker: Masker | None,
    counts: dict[str, Any],
) -> dict[str, Any]:
    """One source into the generation; its manifest entry (``failed`` with the error)."""
    entry: dict[str, Any] = {"name": source.name, "kind": source.kind, "origin": source.origin}
    options = _options(ctx, source)
    if before is not None and (before["status"] != "ok" or before.get("options") != options):
        before = None  # it failed last time, or is to be written otherwise: again
    if before is not None and source.etag is not None and before.get("source_etag") == source.etag:
        counts["files_unchanged"] += len(before["files"])
        return before
    work = ctx.workdir / "sources" / safe(source.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        path, digest = _materialize(ctx, source, work)
        if source.kind == "sqlite":  # the snapshot's bytes are what is backed up
            copy = work / "snapshot.sqlite"
            sqlite.snapshot(path, copy, source.origin)
            path, digest = copy, None
        digest = digest or sha256_file(path)
        if before is not None and before.get("source_sha256") == digest:
            counts["files_unchanged"] += len(before["files"])
            return {**before, "source_etag": source.etag}
        size = path.stat().st_size
        entry.update(source_etag=source.etag, source_sha256=digest, source_bytes=size)
        entry["options"] = options
        masks = ctx.settings.mask_columns.get(source.name, frozenset())
        progress = ctx.progress(f"backing up {source.origin}")
        ring = crypto.ring(ctx.settings)
        job = _Job(source, path, work, base, digest, masker, masks, progress, ring)
        files = (_csv if source.kind == "csv" else _sqlite)(ctx, job, entry)
        progress.done()
    except DataError as exc:
        log.error("%s: not backed up: %s", source.name, exc, extra={"source": source.name})
        return {**entry, "status": "failed", "error": str(exc)}
    for file in files:
        local = file.pop("local")
        if ring is not None and ring.writes:  # the key's id and the algorithm, never the key
            file["encryption"] = ring.manifest()
        file["key"], file["sha256"], file["bytes"] = _upload(ctx, local, file["key"], counts)
        local.unlink()
    return {**entry, "status": "ok", "files": files}


def _options(ctx: Context[BackupSettings], source: Source) -> dict[str, Any]:
    """The settings a source's files depend on: a change writes them again."""
    masked = sorted(ctx.settings.mask_columns.get(source.name, ()))
    options: dict[str, Any] = (
        {"encoding": ctx.settings.encoding, "mask": masked}
        if source.kind == "csv"
        else {"mask": masked}
    )
    ring = crypto.ring(ctx.settings)
    if ring is not None and ring.current is not None:  # unencrypted: as before, no entry
        options["key_id"] = ring.current.id
    return options


@dataclass(frozen=True)
class _Job:
    """One source's conversion: where it is, where its files go, what is masked."""

    source: Source
    path: Path  # the CSV, or the SQLite snapshot
    work: Path  # its scratch directory
    base: str  # the generation's prefix
    digest: str  # the source's sha256
    masker: Masker | None
    masks: frozenset[str]
    progress: Progress
    ring: crypto.KeyRing | None  # new files encrypted with its current key, if any

    def key(self, table: str | None = None) -> str:
        """A file's key: named by the source (and table) and the source's sha256, so a
        source that changes during the day gets a new file, never an overwritten one."""
        name = safe(self.source.name) + ("" if table is None else f"/{safe(table)}")
        return f"{self.base}{name}~{self.digest[:12]}.parquet"


def _materialize(ctx: Context[Any], source: Source, work: Path) -> tuple[Path, str | None]:
    """The source as a local file; its sha256 when it was hashed on the way (a download)."""
    if source.path is not None:
        return source.path, None
    assert source.key is not None
    target = work / "source"
    digest, _ = ctx.store.download(source.key, target)
    return target, digest


def _csv(ctx: Context[Any], job: _Job, entry: dict[str, Any]) -> list[dict[str, Any]]:
    out = job.work / "out.parquet"
    result = csvfile.to_parquet(
        job.path,
        job.source.origin,
        out,
        job.work / "spill.arrow",
        ctx.settings.encoding,
        mask=job.masker.array if job.masker else None,
        masked=job.masks,
        check=ctx.check,
        advance=lambda rows: job.progress.update(rows=rows),
        ring=job.ring,
    )
    (job.work / "spill.arrow").unlink(missing_ok=True)
    entry.update(encoding=result.encoding, header=result.header, newline=result.newline)
    return [
        {
            "key": job.key(),
            "local": out,
            "rows": result.rows,
            "fingerprint": result.fingerprint,
            "columns": result.columns,
            "masked": result.masked,
        }
    ]


def _sqlite(ctx: Context[Any], job: _Job, entry: dict[str, Any]) -> list[dict[str, Any]]:
    by_table: dict[str, set[str]] = {}
    for pair in job.masks:
        table_name, _, column = pair.rpartition(".")
        by_table.setdefault(table_name, set()).add(column)
    files = []
    with closing(sqlite3.connect(f"file:{job.path}?mode=ro", uri=True)) as db:
        try:
            database = sqlite.read_schema(db, job.source.origin)
        except sqlite3.Error as exc:
            raise DataError(f"{job.source.origin}: the schema cannot be read ({exc})") from None
        unknown = sorted(set(by_table) - {t.name for t in database.tables})
        if unknown:
            raise DataError(f"{job.source.origin}: no table {', '.join(unknown)} to mask")
        for table in database.tables:
            ctx.check()
            out = job.work / f"{safe(table.name)}.parquet"
            table_masks: dict[str, Callable[[str | bytes], str]] = {}
            if job.masker is not None:
                table_masks = {c: job.masker.token for c in by_table.get(table.name, ())}
            before = sum(t.rows for t in database.tables[: database.tables.index(table)])

            def advance(rows: int, before: int = before) -> None:
                job.progress.update(rows=before + rows)

            sqlite.table_to_parquet(
                db, table, out, job.source.origin, table_masks, ctx.check, advance, job.ring
            )
            files.append(
                {
                    "key": job.key(table.name),
                    "local": out,
                    "table": table.name,
                    "rows": table.rows,
                    "fingerprint": table.fingerprint,
                    "columns": table.columns,
                    "rowid": table.rowid,
                    "masked": table.masked,
                }
            )
    entry["database"] = database.manifest()
    return files


def _upload(
    ctx: Context[Any], local: Path, key: str, counts: dict[str, Any]
) -> tuple[str, str, int]:
    """Create-only; the same bytes there already are no write. Never overwrites.

    The key it went to, and its sha256 and size (hashed once, by the store).
    """
    for attempt in range(1, 10):
        name = key if attempt == 1 else key.replace(".parquet", f".{attempt}.parquet")
        try:
            result = target_store(ctx).put(
                name,
                local,
                if_none_match=True,
                content_type="application/vnd.apache.parquet",
                retain=retention(ctx, ctx.business_date),
            )
        except PreconditionFailed:
            continue  # other bytes under this name (another pyarrow): the next name
        counts["files_written" if result.outcome == "created" else "files_unchanged"] += 1
        return name, result.sha256, result.size
    raise TransientError(f"{target_store(ctx).url(key)}: nine versions of this file exist already")


def _manifest(ctx: Context[Any], generation: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    entries = sorted(entries, key=lambda e: e["name"])
    files = [f for e in entries for f in e.get("files", [])]
    manifest = {
        "version": VERSION,
        "generation": generation,
        "date": ctx.business_date.isoformat(),
        "shards": ctx.settings.shards,
        "sources": entries,
        "totals": {
            "sources": len(entries),
            "failed": sum(e["status"] == "failed" for e in entries),
            "files": len(files),
            "rows": sum(f["rows"] for f in files),
            "bytes": sum(f["bytes"] for f in files),
        },
        "written_by": {
            "ochinai": __version__,
            "pyarrow": pa.__version__,
            "sqlite": sqlite3.sqlite_version,
            "python": sys.version.split()[0],
        },
    }
    lock = retention(ctx, ctx.business_date)
    if lock is not None:  # the Object Lock of every object of the generation
        manifest["lock"] = {"mode": lock.mode.lower(), "until": lock.until.isoformat()}
    return manifest


def _write(ctx: Context[Any], key: str, manifest: dict[str, Any]) -> bool:
    """Write the manifest, a new version by compare-and-swap; False when it is the same.

    Under the run's lock nobody else writes it; a later holder's manifest (a higher
    fence) stops this run with LockLost instead of being replaced.
    """
    return _update(ctx, key, lambda current: manifest)


def _update(
    ctx: Context[Any], key: str, build: Callable[[dict[str, Any] | None], dict[str, Any] | None]
) -> bool:
    where = target_store(ctx).url(key)
    doc = target_store(ctx).update(
        key,
        build,
        load=lambda obj: parse_manifest(obj.body, where),
        dump=encode,
        retain=retention(ctx, ctx.business_date),
    )
    return doc is not None and doc.outcome != "unchanged"


def _complete_shards(
    ctx: Context[Any], base: str, generation: str
) -> tuple[dict[str, Any] | None, bool]:
    """With every shard's manifest there, the generation's (exactly one pod writes it).

    Built from the shards' manifests as read at each try: another shard that wrote the
    generation's manifest first makes this one read every shard again.
    """
    shards = ctx.settings.shards
    built: list[dict[str, Any]] = []

    def build(current: dict[str, Any] | None) -> dict[str, Any] | None:
        built.clear()
        found = []
        for index in range(shards):
            part = read_manifest(target_store(ctx), f"{base}{SHARDS}{index}.json")
            if part is None:
                log.info(
                    "shard %d of %d has not finished; the generation is not complete yet",
                    index,
                    shards,
                )
                return None
            found += part[0]["sources"]
        built.append(_manifest(ctx, generation, found))
        return built[0]

    wrote = _update(ctx, base + MANIFEST, build)
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
    with _Reading(ctx, name) as reading:
        found = read_manifest(target_store(ctx), reading.base + MANIFEST)
        if found is None:
            if ctx.settings.all:  # listed complete a moment ago: deleted since
                raise reading.deleted("gone")
            raise DataError(f"{target_store(ctx).url(reading.base)}: no complete generation")
        reading.etag = found[1]
        return verify_generation(ctx, reading.base, found[0], reading)


def verify_generation(
    ctx: Context[Any], base: str, manifest: dict[str, Any], reading: _Reading | None = None
) -> int:
    """Every file of the manifest read back and checked; VerifyError naming each mismatch.

    ``reading``: read without the lock (``verify``), under a read marker; a file missing
    because retention deleted the generation meanwhile is DeletedWhileRead.
    """
    problems: list[str] = []
    checked = 0
    files = [f for entry in manifest["sources"] for f in entry.get("files", [])]
    crypto.require(crypto.ring(ctx.settings), files, target_store(ctx).url(base))
    for entry in manifest["sources"]:
        for file in entry.get("files", []):
            ctx.check()
            if reading is not None:
                reading.renew()
            problem = _check_file(ctx, entry, file, reading)
            checked += 1
            if problem:
                problems.append(f"{target_store(ctx).url(file['key'])}: {problem}")
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


def _check_file(
    ctx: Context[Any], entry: dict[str, Any], file: dict[str, Any], reading: _Reading | None
) -> str | None:
    local = ctx.workdir / "verify.parquet"
    try:
        digest, size = _download(ctx, file["key"], local, reading)
        if (digest, size) != (file["sha256"], file["bytes"]):
            said = f"{file['sha256'][:12]}, {file['bytes']} bytes"
            return f"sha256 {digest[:12]}, {size} bytes; the manifest says {said}"
        try:
            ring = crypto.ring(ctx.settings)
            stored = open_file(local, ring).metadata.num_rows
            if entry["kind"] == "csv":
                names = [c["name"] for c in file["columns"]]
                rows, print_ = csvfile.fingerprint_of(local, names, ring)
            else:
                rows, print_ = sqlite.fingerprint_of(local, ring)
        except (pa.ArrowException, OSError) as exc:
            return f"unreadable Parquet ({exc})"
        if rows != file["rows"] or stored != file["rows"]:
            return f"{rows} rows read back; the manifest says {file['rows']}"
        if print_ != file["fingerprint"]:
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
    with _Reading(ctx, ctx.business_date.strftime("%Y%m%d")) as reading:
        return _restore(ctx, reading)


def _restore(ctx: Context[RestoreSettings], reading: _Reading) -> Summary:
    s = ctx.settings
    base = reading.base
    found = read_manifest(target_store(ctx), base + MANIFEST)
    if found is None:
        raise DataError(f"{target_store(ctx).url(base)}: no complete generation to restore")
    reading.etag = found[1]
    entries = [e for e in found[0]["sources"] if s.source is None or e["name"] == s.source]
    if not entries:
        names = ", ".join(e["name"] for e in found[0]["sources"])
        raise ConfigError(
            f"{target_store(ctx).url(base)} has no source {s.source!r} (it has: {names})"
        )
    if s.to is None:
        raise ConfigError("restore needs --to DIR (OCHINAI_BACKUP_RESTORE_TO): where to write")
    ring = crypto.ring(s)  # before anything is written: every key the files need
    crypto.require(
        ring, [f for e in entries for f in e.get("files", [])], target_store(ctx).url(base)
    )
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
        if entry["status"] != "ok":
            log.warning(
                "%s failed in this generation and is not in it: %s", entry["name"], entry["error"]
            )
            counts["skipped_failed"] += 1
            continue
        target = (root / entry["name"]).resolve()
        if not target.is_relative_to(root):
            raise DataError(f"{entry['name']!r} would be restored outside {root}")
        if target.exists():
            raise ConfigError(f"{target} exists; restore into an empty directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        local = _fetch_checked(ctx, entry, reading)
        masked = sorted(
            {f"{f.get('table', '')}.{c}".lstrip(".") for f in entry["files"] for c in f["masked"]}
        )
        if masked:
            log.warning(
                "%s: masked columns hold tokens, not the values: %s",
                entry["name"],
                ", ".join(masked),
            )
        if entry["kind"] == "csv":
            # As the source was (its encoding, BOM and line ends), or as asked.
            encoding = entry.get("encoding", "utf-8") if s.encoding == "auto" else s.encoding
            newline = entry.get("newline", "\n")
            rows = csvfile.restore(local[0][1], entry["header"], target, encoding, newline, ring)
            counts["csv_identical"] += _same_bytes(target, entry)
        else:
            files = {f["table"]: path for f, path in local}
            database = {**entry["database"], "tables": entry["files"]}
            rows = sum(sqlite.restore(database, files, target, ring).values())
            counts["virtual_without_module"] += len(sqlite.without_module(target, entry["name"]))
        counts["sources"] += 1
        counts["files"] += len(local)
        counts["rows"] += rows
        log.info("restored %s to %s: %d rows", entry["name"], target, rows, extra={"rows": rows})
        for _, path in local:
            path.unlink()
    return Summary("ok", counts)


def _same_bytes(path: Path, entry: dict[str, Any]) -> int:
    """1 when the restored CSV is the source byte for byte; else 0 and an INFO saying why
    it may not be (quotes the source put where none are needed, another encoding asked)."""
    if sha256_file(path) == entry.get("source_sha256"):
        return 1
    log.info(
        "%s: restored with the same values, not byte for byte (the source quoted values "
        "that need no quotes, wrote numbers otherwise, or another encoding was asked)",
        entry["name"],
        extra={"source": entry["name"]},
    )
    return 0


def _fetch_checked(
    ctx: Context[Any], entry: dict[str, Any], reading: _Reading
) -> list[tuple[dict[str, Any], Path]]:
    """The source's files, downloaded and checked against their sha256."""
    out = []
    for index, file in enumerate(entry["files"]):
        reading.renew()
        local = ctx.workdir / f"restore-{index}.parquet"
        if _download(ctx, file["key"], local, reading)[0] != file["sha256"]:
            raise VerifyError(
                f"{target_store(ctx).url(file['key'])}: sha256 differs from the manifest's"
            )
        out.append((file, local))
    return out


# --- reading without the lock ---------------------------------------------------------


def _download(
    ctx: Context[Any], key: str, local: Path, reading: _Reading | None
) -> tuple[str, int]:
    """``store.download``; a file missing because its generation was deleted (or
    replaced) since its manifest was read is DeletedWhileRead, else ObjectNotFound."""
    try:
        return target_store(ctx).download(key, local)
    except ObjectNotFound as exc:
        if reading is not None:
            reading.recheck(exc)
        raise


class _Reading:
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

    def __enter__(self) -> _Reading:
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
        found = read_manifest(target_store(self.ctx), self.base + MANIFEST)
        if found is None:
            raise self.deleted("gone") from missing
        if found[1] != self.etag:
            raise self.deleted("replaced") from missing

    def deleted(self, manifest: str) -> DeletedWhileRead:
        again = "run again" + (" into an empty directory" if self.ctx.action == "restore" else "")
        return DeletedWhileRead(
            f"{target_store(self.ctx).url(self.base)}: the generation was deleted by retention "
            f"while it was read (its manifest is {manifest}); {again}, or pick another date "
            "(ochinai backup list)"
        )


# --- list ------------------------------------------------------------------------------


def _locked(
    ctx: Context[BackupSettings],
    generation: Generation,
    manifest: dict[str, Any] | None,
    kept: bool,
) -> datetime | None:
    """Until when Object Lock keeps the generation, if later than now: as its manifest
    records it, or, for one that nothing else keeps, as the server says (HEAD)."""
    now = ctx.now()
    recorded = (manifest or {}).get("lock")
    if recorded is not None:
        until = datetime.fromisoformat(recorded["until"])
        return until if until > now else None
    return None if kept else locked_until(target_store(ctx), generation, now)


def listing(ctx: Context[BackupSettings]) -> Summary:
    """Every generation: complete or not, its sources, rows and bytes, and why retention
    keeps it (``kept_because``: ``generations.keep_reasons``, and ``being read (run)``
    for a young read marker) or that the next run removes it (``next_run_removes``), as
    retention would decide at this run's business date and clock (``backup forget``)."""
    s = ctx.settings
    warn_if_shared(ctx)
    every = generations(target_store(ctx), s.prefix)
    manifests: dict[str, dict[str, Any]] = {}
    for generation in every:
        if generation.complete:
            found = read_manifest(target_store(ctx), f"{s.prefix}{generation.name}/{MANIFEST}")
            if found is not None:
                manifests[generation.name] = found[0]
            generation.failed = found is None or bool(found[0]["totals"]["failed"])
    reasons = keep_reasons(every, s.policy, ctx.business_date)
    readers = being_read(target_store(ctx), s.prefix, ctx.now())
    removes = 0
    for generation in every:
        manifest = manifests.get(generation.name)
        totals = manifest["totals"] if manifest else {}
        kept = reasons[generation.name]
        if generation.name in readers:
            kept.append(f"being read ({', '.join(readers[generation.name])})")
        until = _locked(ctx, generation, manifest, bool(kept))
        if until is not None:
            kept.append(lock_reason(until, ctx.runtime.timezone))
        removes += not kept
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
                "sources": [e["name"] for e in manifest["sources"]] if manifest else [],
                **{f"total_{k}": v for k, v in totals.items()},
                "kept_because": kept,
                "next_run_removes": not kept,
            },
        )
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
