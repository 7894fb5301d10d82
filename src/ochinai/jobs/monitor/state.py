"""``monitor/state.json``: the items as last seen, the API's validators, the outbox and
the history not yet written.

Changed only by compare-and-swap (``Store.update``): a run that loses the race reads
the winner's state, diffs again and tries again, a bounded number of times, and never
overwrites; a state written by a later holder of the lock stops the run (LockLost).
The outbox holds the changes to announce, ``unrecorded`` the
history objects to write; both enter the state in the same write as the new values, so
a change is never lost between the two (a run killed after it leaves them to the next
run), and leave it once delivered or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ochinai.jobs.monitor.items import Row
from ochinai.runtime.errors import DataError
from ochinai.runtime.storage import ObjectNotFound, Store, StoredObject

VERSION = 2  # 2: items as rows (see items.Row); 1: items as objects, read and converted


@dataclass
class State:
    """The state as read, and its etag (None before the first run wrote it)."""

    items: dict[str, Row] | None = None  # None: no baseline yet
    validators: dict[str, dict[str, str]] = field(default_factory=dict)  # per URL
    outbox: list[dict[str, Any]] = field(default_factory=list)
    # History objects committed with the changes, not yet written: {"key", "body"}.
    unrecorded: list[dict[str, str]] = field(default_factory=list)
    generation: int = 0
    etag: str | None = None

    def body(self) -> bytes:
        """The JSON written; the same state gives the same bytes."""
        doc = {
            "version": VERSION,
            "generation": self.generation,
            "items": self.items or {},
            "validators": self.validators,
            "outbox": self.outbox,
        }
        if self.unrecorded:
            doc["unrecorded"] = self.unrecorded
        # Compact UTF-8 JSON in the order built (items in the API's order), as
        # json.dumps(ensure_ascii=False, separators=(",", ":")) writes it, ten times faster.
        return orjson.dumps(doc)


def read_state(store: Store, key: str) -> State:
    """The stored state, or an empty one; a broken object is a DataError naming it."""
    try:
        obj = store.get(key)
    except ObjectNotFound:
        return State()
    return parse_state(obj, store.url(key))


def parse_state(obj: StoredObject, where: str) -> State:
    """The state in a stored object, with its etag; DataError naming ``where``."""
    try:
        doc = orjson.loads(obj.body)
        version = doc.get("version")
        if version not in (1, VERSION):
            raise ValueError(f"version {version!r}, expected {VERSION}")
        items = doc["items"]
        if not isinstance(items, dict):
            raise TypeError("its items are not an object")
        return State(
            items=_from_version_1(items) if version == 1 else items,
            validators=dict(doc.get("validators") or {}),
            outbox=list(doc.get("outbox") or []),
            unrecorded=[_history_entry(e) for e in doc.get("unrecorded") or []],
            generation=int(doc["generation"]),
            etag=obj.etag,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # orjson: ValueError
        raise DataError(
            f"{where}: not a monitor state ({exc}); move it aside to start a new baseline"
        ) from None


def _history_entry(entry: Any) -> dict[str, str]:
    if not (isinstance(entry.get("key"), str) and isinstance(entry.get("body"), str)):
        raise TypeError("an unrecorded history entry is not {key, body}")
    return {"key": entry["key"], "body": entry["body"]}


def _from_version_1(items: dict[str, dict[str, Any]]) -> dict[str, Row]:
    """Version 1 kept each item as an object; the same values as rows."""
    rows: dict[str, Row] = {}
    for key, saved in items.items():
        row = [saved.get(name) for name in ("name", "price", "available", "count", "link")]
        row[0] = row[0] or ""
        missing = int(saved.get("missing") or 0)
        rows[key] = [*row, missing] if missing else row
    return rows
