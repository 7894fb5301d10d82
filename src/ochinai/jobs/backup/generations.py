"""Generations ``backup/YYYYMMDD/`` and their manifests; which are complete; retention.

A generation is complete only when its ``manifest.json`` is there: it is written last,
create-only (a new version later the same day only by compare-and-swap), and it lists
every file. Retention keeps the newest complete generations and deletes older ones
manifest first, so a generation half deleted is never taken for complete; it never
deletes the newest generation without a failed source, and it clears incomplete
generations (no manifest) once they are more than two days old.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from ochinai.runtime.errors import DataError
from ochinai.runtime.storage import ObjectNotFound, PreconditionFailed, Store

log = logging.getLogger("ochinai.jobs.backup")

MANIFEST = "manifest.json"
SHARDS = "shards/"
VERSION = 1
INCOMPLETE_AFTER = timedelta(days=2)
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


def retain(store: Store, prefix: str, keep: int, today: date) -> dict[str, int]:
    """Delete what retention lets go; the counts of what was deleted."""
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
    return counts


def _newest_good(store: Store, prefix: str, complete: list[Generation]) -> str | None:
    """The newest complete generation none of whose sources failed."""
    for generation in complete:
        found = read_manifest(store, f"{prefix}{generation.name}/{MANIFEST}")
        if found is not None and not found[0]["totals"]["failed"]:
            return generation.name
    return None
