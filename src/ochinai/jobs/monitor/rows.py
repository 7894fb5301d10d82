"""An item as a run reads it (``Item``) and as the state keeps it (``Row``, a JSON array):
the one reader and writer of the state's items.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from ochinai.jobs.monitor.values import Stock


@dataclass(frozen=True, slots=True)
class Item:
    """One watched item as this run read it."""

    key: str
    name: str
    price: Decimal | None
    stock: Stock | None
    link: str | None

    def same_as(self, other: Item) -> bool:
        """The same values (prices compared as numbers: 1980 is 1980.00)."""
        return (self.name, self.price, self.stock, self.link) == (
            other.name,
            other.price,
            other.stock,
            other.link,
        )


# An item as the state keeps it and the diff compares it, in bulk: (name, price,
# available, count, link), the price as an exact decimal string. 100k items are read,
# compared and written as rows; an Item is made only for a change.
Row = tuple[str, str | None, bool | None, int | None, str | None]
# A row as written: while its item is missing, a sixth element, the successful runs in a
# row it has been missing from.
MissingRow = tuple[str, str | None, bool | None, int | None, str | None, int]

# The names of a row's values: version 1 of the state kept each item as an object of them.
FIELDS = ("name", "price", "available", "count", "link")


def row_of(item: Item) -> Row:
    """An item's row."""
    stock = item.stock
    return (
        item.name,
        None if item.price is None else format(item.price, "f"),
        None if stock is None else stock.available,
        None if stock is None else stock.count,
        item.link,
    )


def item_of(key: str, row: Row) -> Item:
    """The item a row describes."""
    name, price, available, count, link = row
    stock = None if available is None else Stock(available, count)
    return Item(key, name, None if price is None else Decimal(price), stock, link)


# --- the state's items as JSON -------------------------------------------------------------


def read_rows(doc: object) -> tuple[dict[str, Row], dict[str, int]]:
    """The state's items as written (``{key: row}``, JSON arrays in the order written):
    (the rows, {key: runs missing} of the missing ones). TypeError saying which item is
    not a row.

    One loop over the rows, its checks by ``type() is`` (an int is not a bool here): 100k
    rows take about as long as orjson takes to parse them.
    """
    if not isinstance(doc, dict):
        raise TypeError("its items are not an object")
    rows: dict[str, Row] = {}
    missing: dict[str, int] = {}
    for key, value in doc.items():
        if type(value) is not list or len(value) not in (len(FIELDS), len(FIELDS) + 1):
            raise TypeError(_not_a_row(key, value))
        if len(value) == len(FIELDS):
            name, price, available, count, link = value
            runs = 0
        else:
            name, price, available, count, link, runs = value
        if (
            type(name) is not str
            or (price is not None and type(price) is not str)
            or (available is not None and type(available) is not bool)
            or (count is not None and type(count) is not int)
            or (link is not None and type(link) is not str)
            or type(runs) is not int
        ):
            raise TypeError(_not_a_row(key, value))
        rows[key] = (name, price, available, count, link)
        if runs > 0:
            missing[key] = runs
    return rows, missing


def read_rows_version_1(doc: object) -> tuple[dict[str, Row], dict[str, int]]:
    """Version 1 of the state kept each item as an object (``FIELDS`` and ``missing``):
    the same values as rows, checked as ``read_rows`` checks them."""
    if not isinstance(doc, dict):
        raise TypeError("its items are not an object")
    written: dict[str, list[object]] = {}
    for key, saved in doc.items():
        row = [saved.get(name) for name in FIELDS]
        row[0] = row[0] or ""
        missing = int(saved.get("missing") or 0)
        written[key] = [*row, missing] if missing else row
    return read_rows(written)


def write_rows(rows: dict[str, Row], missing: Mapping[str, int]) -> Mapping[str, Row | MissingRow]:
    """The state's items as written: each key's row in order, a missing one with its count."""
    if not missing:
        return rows
    with_counts: dict[str, MissingRow] = {key: (*rows[key], n) for key, n in missing.items()}
    return {**rows, **with_counts}


def _not_a_row(key: object, value: object) -> str:
    return (
        f"item {key!r} is not a row [name, price, available, count, link(, runs missing)]: "
        f"{value!r}"
    )
