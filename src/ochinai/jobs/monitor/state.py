"""``monitor/state.json``: the items as last seen, the API's validators and the outbox.

Changed only by compare-and-swap on the etag read at the start: a run that loses the
race reads the winner's state, diffs again and tries again, a bounded number of times,
and never overwrites. The outbox holds the changes to announce; they enter it in the
same write as the new values, so a change is never lost between the two, and leave it
once delivered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ochinai.runtime.errors import DataError
from ochinai.runtime.storage import ObjectNotFound, Store

VERSION = 1


@dataclass
class State:
    """The state as read, and its etag (None before the first run wrote it)."""

    items: dict[str, dict[str, Any]] | None = None  # None: no baseline yet
    validators: dict[str, dict[str, str]] = field(default_factory=dict)  # per URL
    outbox: list[dict[str, Any]] = field(default_factory=list)
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
        # Compact and in the order built (items in the API's order): with an indent or
        # sorted keys json is many times slower at 100k items; the bytes are as stable.
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def read_state(store: Store, key: str) -> State:
    """The stored state, or an empty one; a broken object is a DataError naming it."""
    try:
        obj = store.get(key)
    except ObjectNotFound:
        return State()
    try:
        doc = json.loads(obj.body)
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {VERSION}")
        return State(
            items=dict(doc["items"]),
            validators=dict(doc.get("validators") or {}),
            outbox=list(doc.get("outbox") or []),
            generation=int(doc["generation"]),
            etag=obj.etag,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{store.url(key)}: not a monitor state ({exc}); move it aside to start a new baseline"
        ) from None


def write_state(store: Store, key: str, state: State) -> str:
    """Create or compare-and-swap the state; PreconditionFailed when another run won."""
    if state.etag is None:
        result = store.put(key, state.body(), if_none_match=True, content_type="application/json")
    else:
        result = store.put(key, state.body(), if_match=state.etag, content_type="application/json")
    return result.etag
