"""What really changed between the last state and this run's items: a pure function of the
two, so that a run that lost its state write (CAS) diffs again against the state that won."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from ochinai.jobs.monitor.changes import KINDS as KINDS  # the kinds, as the summary counts them
from ochinai.jobs.monitor.changes import Change, Kind, change_id
from ochinai.jobs.monitor.rows import Item, Row, item_of


@dataclass(frozen=True)
class Rules:
    """How much must change to be news."""

    gone_after: int = 2
    threshold_pct: Decimal = Decimal(0)
    price_below: Decimal | None = None  # a target for every item
    targets: dict[str, Decimal] | None = None  # per item key, over the global target


@dataclass(frozen=True)
class Diff:
    """The items to keep (this run's, in its order, then the missing ones), for how many
    successful runs in a row each missing one has been absent, and the changes."""

    items: dict[str, Row]
    missing: dict[str, int] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)


def pct(old: Decimal, new: Decimal) -> Decimal | None:
    """The change in %, one decimal; None from a price of 0."""
    if old == 0:
        return None
    return ((new - old) / old * 100).quantize(Decimal("0.1"))


def diff(
    previous: Mapping[str, Row] | None,
    current: Mapping[str, Row],
    rules: Rules,
    generation: int,
    missing: Mapping[str, int] | None = None,
) -> Diff:
    """This run's items against the ``previous`` ones (``missing``: their missing counts).

    Kinds: ``new``, ``gone`` (absent for ``gone_after`` successful runs in a row, so one
    short page does not alarm), ``price_changed`` (beyond a threshold in %),
    ``price_below`` (crossing a target), ``restocked``, ``sold_out``. The first run
    (no ``previous``) records a baseline and reports nothing.
    """
    if previous is None:  # the first run: a baseline, nothing to announce
        return Diff(dict(current))
    found = _Found(generation)
    items: dict[str, Row] = {}
    get = previous.get
    for key, row in current.items():
        items[key] = row
        saved = get(key)
        if saved == row:
            continue  # the common case: nothing about it changed
        item = item_of(key, row)
        if saved is None:
            found.add(item, "new", None, item.price)
            continue
        before = item_of(key, saved)
        _price_changes(before, item, rules, found)
        was, now = before.stock, item.stock
        if was is not None and now is not None and was.available != now.available:
            found.add(
                item, "restocked" if now.available else "sold_out", was.available, now.available
            )
    still: dict[str, int] = {}
    for key, saved in previous.items():
        if key in current:
            continue
        runs = (missing or {}).get(key, 0) + 1
        if runs >= rules.gone_after:
            before = item_of(key, saved)
            found.add(before, "gone", before.price, None, missing=runs)
        else:
            items[key], still[key] = saved, runs
    return Diff(items, still, found.changes)


@dataclass
class _Found:
    """The changes of one diff, each with its id."""

    generation: int
    changes: list[Change] = field(default_factory=list)

    def add(
        self,
        item: Item,
        kind: Kind,
        old: object,
        new: object,
        *,
        change_pct: str | None = None,
        target: str | None = None,
        missing: int | None = None,
    ) -> None:
        self.changes.append(
            Change(
                id=change_id(item.key, kind, old, new, self.generation),
                item=item.key,
                name=item.name,
                link=item.link,
                kind=kind,
                old=None if old is None else str(old),
                new=None if new is None else str(new),
                change_pct=change_pct,
                target=target,
                missing=missing,
            )
        )


def _price_changes(before: Item, item: Item, rules: Rules, found: _Found) -> None:
    old, new = before.price, item.price
    if old is None or new is None or old == new:
        return
    change = pct(old, new)
    if change is None or abs(change) > rules.threshold_pct:
        found.add(
            item, "price_changed", old, new, change_pct=None if change is None else str(change)
        )
    target = (rules.targets or {}).get(item.key, rules.price_below)
    if target is not None and new <= target < old:
        found.add(item, "price_below", old, new, target=format(target, "f"))
