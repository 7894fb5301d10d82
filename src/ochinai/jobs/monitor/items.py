"""Items out of an API answer: JMESPath expressions find the list and each item's fields.

Shapes such as ``{"products": [{"variants": [...]}]}`` are reached with an expression
(``products[].variants[]``). Every problem is a DataError naming the URL and, where
there is one, the item and the field: invalid JSON, an items path that finds no list,
an item without a key, a price or stock that cannot be read, and one key twice with
different values in one answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from ochinai.jobs.monitor.values import Stock, StockWords, parse_price, parse_stock
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


def extract(document: Any, url: str, fields: Fields) -> list[Item]:
    """The items of one answer, in their order."""
    found = fields.items.search(document)
    if not isinstance(found, list):
        raise DataError(
            f"{url}: OCHINAI_MONITOR_ITEMS ({fields.items.expression!r}) finds "
            f"{'nothing' if found is None else type(found).__name__}, not a list of items"
        )
    items: list[Item] = []
    for index, raw in enumerate(found):
        key = fields.key.search(raw) if isinstance(raw, dict) else None
        if key is None or key == "" or isinstance(key, dict | list):
            raise DataError(
                f"{url}: item {index} has no key ({fields.key.expression!r}); "
                "set OCHINAI_MONITOR_KEY to the field that names an item"
            )
        key = str(key)
        items.append(_item(raw, key, url, fields))
    return items


def _item(raw: dict[str, Any], key: str, url: str, fields: Fields) -> Item:
    name = fields.name.search(raw)
    link = fields.link.search(raw)
    try:
        field = "price"
        price = parse_price(fields.price.search(raw))
        field = "stock"
        stock = parse_stock(fields.stock.search(raw), fields.words)
    except ValueError as exc:
        raise DataError(f"{url}: item {key!r}, field {field}: {exc}") from None
    return Item(
        key, "" if name is None else str(name), price, stock, None if link is None else str(link)
    )


def merge(pages: list[tuple[str, list[Item]]]) -> dict[str, Item]:
    """All pages' items by key; one key twice with different values is a DataError."""
    merged: dict[str, Item] = {}
    where: dict[str, str] = {}
    for url, items in pages:
        for item in items:
            seen = merged.get(item.key)
            if seen is not None and not seen.same_as(item):
                raise DataError(
                    f"{url}: item {item.key!r} appears twice with different values "
                    f"(first at {where[item.key]}); the answer is inconsistent"
                )
            merged.setdefault(item.key, item)
            where.setdefault(item.key, url)
    return merged
