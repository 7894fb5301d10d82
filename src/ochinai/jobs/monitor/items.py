"""Items out of an API answer: JMESPath expressions find the list and each item's fields.

Shapes such as ``{"products": [{"variants": [...]}]}`` are reached with an expression
(``products[].variants[]``). Every problem is a DataError naming the URL and, where
there is one, the item and the field: invalid JSON, an items path that finds no list,
an item without a key, a price or stock that cannot be read, and one key twice with
different values in one answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from ochinai.jobs.monitor.values import Stock, StockWords, parse_stock, price_text
from ochinai.runtime.errors import ConfigError, DataError


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


# An item as the state keeps it and the diff compares it, in bulk: a JSON list
# [name, price, available, count, link], the price as an exact decimal string, and a
# sixth element, the runs it has been missing for, only while it is missing. 100k
# items are read, compared and written as lists; an Item is made only for a change.
Row = list[Any]
NAME, PRICE, AVAILABLE, COUNT, LINK, MISSING = range(6)


def row_of(item: Item) -> Row:
    """An item's row (not missing)."""
    stock = item.stock
    return [
        item.name,
        None if item.price is None else format(item.price, "f"),
        None if stock is None else stock.available,
        None if stock is None else stock.count,
        item.link,
    ]


def item_of(key: str, row: Row) -> Item:
    """The item a row describes."""
    available, count = row[AVAILABLE], row[COUNT]
    stock = None if available is None else Stock(bool(available), count)
    price = None if row[PRICE] is None else Decimal(row[PRICE])
    return Item(key, row[NAME] or "", price, stock, row[LINK])


def missing_of(row: Row) -> int:
    """For how many successful runs in a row the item has been absent."""
    return int(row[MISSING]) if len(row) > MISSING else 0


@dataclass(frozen=True)
class Fields:
    """The compiled expressions: where the items are, and each item's fields."""

    items: Any
    key: Any
    name: Any
    price: Any
    stock: Any
    link: Any
    words: StockWords

    @classmethod
    def compile(cls, words: StockWords, **expressions: str) -> Fields:
        """Compile ``items``, ``key``, ... ; a bad expression is a ConfigError naming it."""
        compiled: dict[str, Any] = {}
        for name, expression in expressions.items():
            try:
                compiled[name] = _Expression(expression, jmespath.compile(expression))
            except JMESPathError as exc:
                variable = f"OCHINAI_MONITOR_{name.upper()}"
                raise ConfigError(f"{variable}={expression!r} is not a JMESPath: {exc}") from None
        return cls(words=words, **compiled)


class _Expression:
    """A compiled JMESPath; a bare field name is looked up directly (100k items x 5 fields)."""

    def __init__(self, expression: str, compiled: Any) -> None:
        self.expression = expression
        self._compiled = compiled
        tree = compiled.parsed
        self._field: str | None = tree["value"] if tree.get("type") == "field" else None

    def search(self, value: Any) -> Any:
        if self._field is not None:
            return value.get(self._field) if isinstance(value, dict) else None
        return self._compiled.search(value)


def parse_body(body: bytes, url: str) -> Any:
    """JSON with every number as int or Decimal, never float; a DataError naming the URL."""
    if not body.strip():
        raise DataError(f"{url}: the answer is empty")
    try:
        return json.loads(body, parse_float=Decimal)
    except ValueError as exc:
        raise DataError(f"{url}: the answer is not valid JSON: {exc}") from None
    except RecursionError:  # the parser recurses once a level: [[[[... 100,000 deep
        raise DataError(f"{url}: the answer is JSON nested too deeply to read") from None


@dataclass
class Found:
    """The items of the pages read so far: each key's row, and the page it was on."""

    rows: dict[str, Row] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)

    def extract(self, document: Any, url: str, fields: Fields) -> None:
        """Add one answer's items, in their order.

        One key twice (on this page or an earlier one) with different values is a
        DataError; with the same values (1980 is 1980.00) it is kept once.
        """
        found = fields.items.search(document)
        if not isinstance(found, list):
            raise DataError(
                f"{url}: OCHINAI_MONITOR_ITEMS ({fields.items.expression!r}) finds "
                f"{'nothing' if found is None else type(found).__name__}, not a list of items"
            )
        rows, where = self.rows, self.where
        key_of, name_of, link_of = fields.key.search, fields.name.search, fields.link.search
        price_of, stock_of, words = fields.price.search, fields.stock.search, fields.words
        for index, raw in enumerate(found):
            key = key_of(raw) if isinstance(raw, dict) else None
            if key is None or key == "" or isinstance(key, dict | list):
                raise DataError(
                    f"{url}: item {index} has no key ({fields.key.expression!r}); "
                    "set OCHINAI_MONITOR_KEY to the field that names an item"
                )
            key = str(key)
            try:
                field_name = "price"
                price = price_text(price_of(raw))
                field_name = "stock"
                stock = parse_stock(stock_of(raw), words)
            except ValueError as exc:
                raise DataError(f"{url}: item {key!r}, field {field_name}: {exc}") from None
            name, link = name_of(raw), link_of(raw)
            row = [
                "" if name is None else str(name),
                price,
                None if stock is None else stock.available,
                None if stock is None else stock.count,
                None if link is None else str(link),
            ]
            seen = rows.setdefault(key, row)
            if seen is row:
                where[key] = url
            elif seen != row and not item_of(key, seen).same_as(item_of(key, row)):
                raise DataError(
                    f"{url}: item {key!r} appears twice with different values "
                    f"(first at {where[key]}); the answer is inconsistent"
                )
