"""Generations ``backup/YYYYMMDD/`` and their manifests; which are complete; retention.

A generation is complete only when its ``manifest.json`` is there: it is written last,
create-only (a new version later the same day only by compare-and-swap), and it lists
every file. Retention keeps the newest complete generations and deletes older ones
manifest first, so a generation half deleted is never taken for complete; it never
deletes the newest generation without a failed source, and it clears incomplete
generations (no manifest) once they are more than two days old.

``verify`` and ``restore`` read without the job's lock. Before reading a generation
they write a read marker ``<prefix>_reading/<generation>/<run id>.json`` and delete it
when done; retention leaves a generation alone while it has a marker younger than
``READ_GRACE`` (by the marker's Last-Modified) and deletes markers older than that, so
a reader that died does not keep a generation forever. ``_reading`` is not eight
digits: ``generations()`` never takes it for a generation.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from ochinai.runtime.errors import DataError, ExternalError, LockLost
from ochinai.runtime.storage import ObjectNotFound, PreconditionFailed, Store

log = logging.getLogger("ochinai.jobs.backup")

MANIFEST = "manifest.json"
SHARDS = "shards/"
VERSION = 1
INCOMPLETE_AFTER = timedelta(days=2)
READING = "_reading/"  # under the prefix: the read markers, a folder a generation
READ_GRACE = timedelta(hours=1)  # a read marker younger than this protects its generation
_DAY = re.compile(r"^[0-9]{8}$")


def day_of(name: str) -> date:
    """The date of a generation named YYYYMMDD."""
    return date(int(name[:4]), int(name[4:6]), int(name[6:8]))


@dataclass
class Generation:
    """One generation as a listing shows it."""

    name: str  # YYYYMMDD
    keys: list[str] = field(default_factory=list)  # relative to the store
    etags: dict[str, str] = field(default_factory=dict)  # by key, as listed
    size: int = 0
    complete: bool = False

    @property
    def day(self) -> date:
        return day_of(self.name)


def encode(manifest: dict[str, Any]) -> bytes:
    """A manifest's bytes: the same manifest, the same bytes."""
    return (json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode()


def read_manifest(store: Store, key: str) -> tuple[dict[str, Any], str] | None:
    """The manifest at ``key`` and its etag, or None when there is none."""
    try:
        obj = store.get(key)
    except ObjectNotFound:
        return None
    return parse_manifest(obj.body, store.url(key)), obj.etag


def parse_manifest(body: bytes, where: str) -> dict[str, Any]:
    """A manifest's document; DataError naming ``where`` when it is not one."""
    try:
        manifest = json.loads(body)
        if manifest.get("version") != VERSION:
            raise ValueError(f"version {manifest.get('version')!r}, expected {VERSION}")
    except (ValueError, AttributeError) as exc:
        raise DataError(f"{where}: not a backup manifest ({exc})") from None
    return dict(manifest)


def generations(store: Store, prefix: str) -> list[Generation]:
    """Every generation under ``prefix``, newest first."""
    found: dict[str, Generation] = {}
    for info in store.list(prefix):
        name, _, rest = info.key[len(prefix) :].partition("/")
        if not _DAY.match(name) or not rest:
            continue
        generation = found.setdefault(name, Generation(name))
        generation.keys.append(info.key)
        generation.etags[info.key] = info.etag
        generation.size += info.size
        if rest == MANIFEST:
            generation.complete = True
    return sorted(found.values(), key=lambda g: g.name, reverse=True)


def reading_key(prefix: str, generation: str, run_id: str) -> str:
    """The read marker of run ``run_id`` reading ``generation``."""
    return f"{prefix}{READING}{generation}/{run_id}.json"


def retain(store: Store, prefix: str, keep: int, today: date, now: datetime) -> dict[str, int]:
    """Delete what retention lets go; the counts of what was deleted.

    ``now`` is the run's clock: a generation with a read marker younger than
    ``READ_GRACE`` is left for a later run, and older markers are deleted.
    """
    every = generations(store, prefix)
    complete = [g for g in every if g.complete]
    kept = {g.name for g in complete[:keep]}
    good = _newest_good(store, prefix, complete)
    if good is not None:
        kept.add(good)
    counts = {"deleted_generations": 0, "deleted_files": 0, "deleted_bytes": 0}
    for generation in every:
        old_incomplete = not generation.complete and generation.day < today - INCOMPLETE_AFTER
        if generation.name in kept or (not generation.complete and not old_incomplete):
            continue
        readers = _readers(store, prefix, generation.name, now)
        if readers:
            log.info(
                "generation %s is being read (%s); left for the next run",
                generation.name,
                ", ".join(readers),
                extra={"generation": generation.name, "readers": readers},
            )
            continue
        base = f"{prefix}{generation.name}/"
        # The manifest first: a generation half deleted is incomplete, never "complete";
        # then the shard manifests, then the files.
        ordered = sorted(
            generation.keys,
            key=lambda k: (k != base + MANIFEST, not k.startswith(base + SHARDS), k),
        )
        # Each delete only while the object is as listed (If-Match) and no later term of
        # the lock wrote it: one that changed stops this generation's deletion.
        try:
            for key in ordered:
                store.delete(key, if_match=generation.etags[key])
        except PreconditionFailed as exc:
            log.warning(
                "generation %s changed while retention deleted it; left for the next run: %s",
                generation.name,
                exc,
                extra={"generation": generation.name},
            )
            continue
        counts["deleted_generations"] += 1
        counts["deleted_files"] += len(ordered)
        counts["deleted_bytes"] += generation.size
        log.info(
            "deleted %s generation %s: %d files, %d bytes",
            "complete" if generation.complete else "incomplete",
            generation.name,
            len(ordered),
            generation.size,
            extra={"generation": generation.name, "files": len(ordered), "bytes": generation.size},
        )
    _clear_stale_markers(store, prefix, now)
    return counts


def _readers(store: Store, prefix: str, name: str, now: datetime) -> list[str]:
    """The runs reading generation ``name`` now: their markers younger than READ_GRACE.

    Listed right before the generation's deletion, to leave a reader that came just
    before as little time as can be; one that comes later finds the manifest changed
    or gone and says so (exit 75), instead of a data error.
    """
    base = f"{prefix}{READING}{name}/"
    return [
        info.key[len(base) :].removesuffix(".json")
        for info in store.list(base)
        if now - info.last_modified < READ_GRACE
    ]


def _clear_stale_markers(store: Store, prefix: str, now: datetime) -> None:
    """Delete the read markers older than READ_GRACE (left by readers that died), each
    only as listed; a failure is logged and the marker left for the next run."""
    for info in store.list(prefix + READING):
        if now - info.last_modified < READ_GRACE:
            continue
        try:
            store.delete(info.key, if_match=info.etag)
        except LockLost:
            raise
        except ExternalError as exc:  # PreconditionFailed too: its reader renewed or removed it
            log.warning(
                "stale read marker %s not deleted; left for the next run: %s",
                store.url(info.key),
                exc,
                extra={"key": info.key},
            )


def _newest_good(store: Store, prefix: str, complete: list[Generation]) -> str | None:
    """The newest complete generation none of whose sources failed."""
    for generation in complete:
        found = read_manifest(store, f"{prefix}{generation.name}/{MANIFEST}")
        if found is not None and not found[0]["totals"]["failed"]:
            return generation.name
    return None
