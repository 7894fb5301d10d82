"""A change the diff found, as the outbox (in the state, its version) and the history
(``history.VERSION``) keep it: the record, its JSON, and its reader.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict, get_args

Kind = Literal["new", "gone", "price_changed", "price_below", "restocked", "sold_out"]
KINDS: tuple[Kind, ...] = get_args(Kind)


class ChangeJSON(TypedDict):
    """A change as written, its keys in this order; the last three by kind only."""

    id: str
    item: str
    name: str
    link: str | None
    kind: Kind
    old: str | None
    new: str | None
    change_pct: NotRequired[str | None]  # price_changed
    target: NotRequired[str]  # price_below
    missing: NotRequired[int]  # gone


@dataclass(frozen=True, slots=True)
class Change:
    """What changed about one item: its values before and after as text (a price as its
    exact decimal string, availability as ``True``/``False``), and the id that makes it
    announced once."""

    id: str
    item: str  # the item's key
    name: str
    link: str | None
    kind: Kind
    old: str | None
    new: str | None
    change_pct: str | None = None  # price_changed: the change in %; None from a price of 0
    target: str | None = None  # price_below: the target price crossed
    missing: int | None = None  # gone: the successful runs in a row it was missing from

    def to_json(self) -> ChangeJSON:
        """The change as written."""
        doc: ChangeJSON = {
            "id": self.id,
            "item": self.item,
            "name": self.name,
            "link": self.link,
            "kind": self.kind,
            "old": self.old,
            "new": self.new,
        }
        if self.kind == "price_changed":
            doc["change_pct"] = self.change_pct  # null too: a change from a price of 0
        if self.target is not None:
            doc["target"] = self.target
        if self.missing is not None:
            doc["missing"] = self.missing
        return doc

    @classmethod
    def from_json(cls, doc: object) -> Change:
        """A change as written; TypeError saying what in it is not."""
        if not isinstance(doc, dict):
            raise TypeError("a change is not an object")
        kind = doc.get("kind")
        if kind not in KINDS:
            raise TypeError(f"a change's kind is {kind!r}, not one of {', '.join(KINDS)}")
        missing = doc.get("missing")
        if not (missing is None or (type(missing) is int and missing > 0)):
            raise TypeError(f"change {doc.get('id')!r}: its missing is {missing!r}")
        return cls(
            id=_text(doc, "id"),
            item=_text(doc, "item"),
            name=_text(doc, "name"),
            link=_text_or_none(doc, "link"),
            kind=kind,
            old=_text_or_none(doc, "old"),
            new=_text_or_none(doc, "new"),
            change_pct=_text_or_none(doc, "change_pct"),
            target=_text_or_none(doc, "target"),
            missing=missing,
        )


def change_id(key: str, kind: Kind, old: object, new: object, generation: int) -> str:
    """A stable id: the same change of the same state generation has the same id."""
    raw = json.dumps([key, kind, str(old), str(new), generation], ensure_ascii=False)
    return f"monitor/{hashlib.sha256(raw.encode()).hexdigest()[:32]}"


def _text(doc: dict[str, object], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise TypeError(f"change {doc.get('id')!r}: its {key} is {value!r}, not text")
    return value


def _text_or_none(doc: dict[str, object], key: str) -> str | None:
    return None if doc.get(key) is None else _text(doc, key)
