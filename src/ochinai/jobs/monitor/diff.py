"""What really changed between the last state and this run's items.

A pure function of the two, so that a run that lost its state write (CAS) can diff
again against the state that won. Kinds: ``new``, ``gone`` (absent for ``gone_after``
successful runs in a row, so one short page does not alarm), ``price_changed`` (beyond
a threshold in %), ``price_below`` (crossing a target), ``restocked``, ``sold_out``.
The first run records a baseline and reports nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ochinai.jobs.monitor.items import MISSING, Item, Row, item_of, missing_of

KINDS = ("new", "gone", "price_changed", "price_below", "restocked", "sold_out")


@dataclass(frozen=True)
class Rules:
    """How much must change to be news."""

    gone_after: int = 2
    threshold_pct: Decimal = Decimal(0)
    price_below: Decimal | None = None  # a target for every item
    targets: dict[str, Decimal] | None = None  # per item key, over the global target


def change_id(key: str, kind: str, old: Any, new: Any, generation: int) -> str:
    """A stable id: the same change of the same state generation has the same id."""
    raw = json.dumps([key, kind, str(old), str(new), generation], ensure_ascii=False)
    return f"monitor/{hashlib.sha256(raw.encode()).hexdigest()[:32]}"


def pct(old: Decimal, new: Decimal) -> Decimal | None:
    """The change in %, one decimal; None from a price of 0."""
    if old == 0:
        return None
    return ((new - old) / old * 100).quantize(Decimal("0.1"))


def diff(
    previous: dict[str, Row] | None,
    current: dict[str, Row],
    rules: Rules,
    generation: int,
) -> tuple[dict[str, Row], list[dict[str, Any]]]:
    """(the new items state, the changes to announce) of this run."""
    if previous is None:  # the first run: a baseline, nothing to announce
        return dict(current), []
    state: dict[str, Row] = {}
    changes: list[dict[str, Any]] = []

    def add(key: str, item: Item, kind: str, old: Any, new: Any, **extra: Any) -> None:
        changes.append(
            {
                "id": change_id(key, kind, old, new, generation),
                "item": key,
                "name": item.name,
                "link": item.link,
                "kind": kind,
                "old": None if old is None else str(old),
                "new": None if new is None else str(new),
                **extra,
            }
        )

    get = previous.get
    for key, row in current.items():
        state[key] = row
        saved = get(key)
        if saved == row:
            continue  # the common case: nothing about it changed
        item = item_of(key, row)
        if saved is None:
            add(key, item, "new", None, item.price)
            continue
        before = item_of(key, saved)
        _price_changes(key, before, item, rules, add)
        was, now = before.stock, item.stock
        if was is not None and now is not None and was.available != now.available:
            kind = "restocked" if now.available else "sold_out"
            add(key, item, kind, was.available, now.available)
    for key, saved in previous.items():
        if key in current:
            continue
        missing = missing_of(saved) + 1
        before = item_of(key, saved)
        if missing >= rules.gone_after:
            add(key, before, "gone", before.price, None, missing=missing)
        else:
            state[key] = [*saved[:MISSING], missing]
    return state, changes


def _price_changes(key: str, before: Item, item: Item, rules: Rules, add: Any) -> None:
    old, new = before.price, item.price
    if old is None or new is None or old == new:
        return
    change = pct(old, new)
    if change is None or abs(change) > rules.threshold_pct:
        add(
            key, item, "price_changed", old, new, change_pct=None if change is None else str(change)
        )
    target = (rules.targets or {}).get(key, rules.price_below)
    if target is not None and new <= target < old:
        add(key, item, "price_below", old, new, target=format(target, "f"))
