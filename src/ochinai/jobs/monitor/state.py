"""``monitor/state.json``: the items as last seen, the validators, the outbox and the history
not yet written; its format version, and the one reader and writer of it (``StateFile``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import NotRequired, TypedDict, TypeVar

import orjson

from ochinai.jobs.monitor.changes import Change, ChangeJSON
from ochinai.jobs.monitor.fetched import Validators, read_validators
from ochinai.jobs.monitor.history import Pending, PendingJSON
from ochinai.jobs.monitor.rows import (
    MissingRow,
    Row,
    read_rows,
    read_rows_version_1,
    write_rows,
)
from ochinai.runtime.errors import DataError
from ochinai.runtime.storage import Document, ObjectNotFound, Store, StoredObject

# 2: items as rows (rows.Row); 1: items as objects, read and written as rows at the next change
VERSION = 2
V = TypeVar("V")


class StateJSON(TypedDict):
    """The state as written, its keys in this order."""

    version: int
    generation: int
    items: Mapping[str, Row | MissingRow]
    validators: Mapping[str, Validators]  # per URL key
    outbox: list[ChangeJSON]
    unrecorded: NotRequired[list[PendingJSON]]  # only when there is some


@dataclass(frozen=True)
class State:
    """The state as read, and its etag (None before the first run wrote it).

    The outbox holds the changes to announce, ``unrecorded`` the history objects to
    write; both enter the state in the same write as the new values, so a change is
    never lost between the two (a run killed after it leaves them to the next run), and
    leave it once delivered or written. Never changed in place (``dataclasses.replace``):
    a state read is shared by the reads of the same bytes (``StateFile``).
    """

    items: dict[str, Row] | None = None  # None: no baseline yet
    missing: dict[str, int] = field(default_factory=dict)  # {key: successful runs missing}
    validators: dict[str, Validators] = field(default_factory=dict)  # per URL key
    outbox: tuple[Change, ...] = ()
    unrecorded: tuple[Pending, ...] = ()  # history objects committed, not yet written
    generation: int = 0
    etag: str | None = None

    def body(self) -> bytes:
        """The JSON written; the same state gives the same bytes."""
        doc: StateJSON = {
            "version": VERSION,
            "generation": self.generation,
            "items": write_rows(self.items or {}, self.missing),
            "validators": self.validators,
            "outbox": [c.to_json() for c in self.outbox],
        }
        if self.unrecorded:
            doc["unrecorded"] = [p.to_json() for p in self.unrecorded]
        # Compact UTF-8 JSON in the order built (items in the API's order), as
        # json.dumps(ensure_ascii=False, separators=(",", ":")) writes it, ten times faster.
        return orjson.dumps(doc)


def parse_state(body: bytes) -> State:
    """The state in ``body`` (without an etag); ValueError, TypeError, KeyError or
    AttributeError saying what is wrong with it."""
    doc = orjson.loads(body)
    version = doc.get("version")
    if version not in (1, VERSION):
        raise ValueError(f"version {version!r}, expected {VERSION}")
    items, missing = (read_rows_version_1 if version == 1 else read_rows)(doc["items"])
    return State(
        items=items,
        missing=missing,
        validators=read_validators(doc.get("validators") or {}),
        outbox=tuple(Change.from_json(c) for c in doc.get("outbox") or []),
        unrecorded=tuple(Pending.from_json(e) for e in doc.get("unrecorded") or []),
        generation=int(doc["generation"]),
    )


class StateFile:
    """One run's reads and writes of its state object.

    Changed only by compare-and-swap (``Store.update``): a run that loses the race reads
    the winner's state, diffs again and tries again, a bounded number of times, and never
    overwrites; a state written by a later holder of the lock stops the run (LockLost).
    The state is 8 MB of JSON at 100k items, read up to three times a run (at its start,
    by each compare-and-swap): bytes read again as they were read or written last are
    not parsed again, the State they are is reused.
    """

    def __init__(self, store: Store, key: str) -> None:
        self.store, self.key = store, key
        self._last: tuple[bytes, State] | None = None

    def read(self) -> State:
        """The stored state, or an empty one; a broken object is a DataError naming it."""
        try:
            return self._load(self.store.get(self.key))
        except ObjectNotFound:
            return State()

    def update(self, build: Callable[[State | None], State | None]) -> Document[State] | None:
        """``Store.update`` of the state: ``build`` gets the state stored (None: none)."""
        return self.store.update(self.key, build, load=self._load, dump=self._dump)

    def _load(self, obj: StoredObject) -> State:
        if self._last is not None and self._last[0] == obj.body:
            return replace(self._last[1], etag=obj.etag)
        try:
            state = parse_state(obj.body)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # orjson: ValueError
            raise DataError(
                f"{self.store.url(self.key)}: not a monitor state ({exc}); move it aside to "
                "start a new baseline"
            ) from None
        self._last = (obj.body, state)
        return replace(state, etag=obj.etag)

    def _dump(self, state: State) -> bytes:
        body = state.body()
        # What these bytes read back as: the same values (items None is written as {}).
        self._last = (body, replace(state, items=state.items or {}, etag=None))
        return body


def renamed(state: State, earlier: Mapping[str, str | None]) -> State:
    """``state`` with the items and validators an earlier version kept under another key
    (``urls.earlier_keys``) under their key now; those of an unknown one dropped.

    A key there already keeps its own values: they are newer.
    """
    if not earlier:
        return state
    validators = _moved(state.validators, _new_keys(state.validators, earlier))
    if state.items is None:
        return replace(state, validators=validators)
    keys = _new_keys(state.items, earlier)
    missing = state.missing
    if keys is not None and missing:
        # A missing count goes with its row (of two rows for one key, the later is kept).
        missing = {}
        for old, new in keys.items():
            if old in state.missing:
                missing[new] = state.missing[old]
            else:
                missing.pop(new, None)
    return replace(state, items=_moved(state.items, keys), missing=missing, validators=validators)


def _new_keys(
    found: Mapping[str, object], earlier: Mapping[str, str | None]
) -> dict[str, str] | None:
    """{each key of ``found`` kept: its key now}; None when none is an earlier one."""
    if not any(k in earlier for k in found):
        return None
    keys: dict[str, str] = {}
    for k in found:
        new = earlier.get(k, k)
        if new is not None and (new == k or new not in found):
            keys[k] = new
    return keys


def _moved(found: dict[str, V], keys: dict[str, str] | None) -> dict[str, V]:
    return found if keys is None else {new: found[old] for old, new in keys.items()}
