"""Items out of an API answer: JMESPath expressions find the list and each item's fields;
every problem a DataError naming the URL and, where there is one, the item and the field."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from ochinai.jobs.monitor.rows import Row, item_of
from ochinai.jobs.monitor.values import StockWords, parse_stock, price_text
from ochinai.runtime.errors import ConfigError, DataError


class Expression:
    """A compiled JMESPath; a bare field name is looked up directly (100k items x 5 fields)."""

    def __init__(self, expression: str, compiled: Any) -> None:
        self.expression = expression
        self._compiled = compiled
        tree = compiled.parsed
        self._field: str | None = tree["value"] if tree.get("type") == "field" else None

    @classmethod
    def compile(cls, name: str, expression: str) -> Expression:
        """OCHINAI_MONITOR_<NAME>'s expression; a ConfigError naming it when it does not compile."""
        try:
            return cls(expression, jmespath.compile(expression))
        except JMESPathError as exc:
            variable = f"OCHINAI_MONITOR_{name.upper()}"
            raise ConfigError(f"{variable}={expression!r} is not a JMESPath: {exc}") from None

    def search(self, value: Any) -> Any:
        """What it finds in ``value`` (an answer's JSON), None for nothing."""
        if self._field is not None:
            return value.get(self._field) if isinstance(value, dict) else None
        return self._compiled.search(value)

    def in_item(self) -> Callable[[dict[str, Any]], Any]:
        """``search`` for an item known to be an object: a bare field is ``item.get(name)``
        called from C, without a Python call a field (100k items x 5 fields)."""
        if self._field is not None:
            return operator.methodcaller("get", self._field)
        return self.search


@dataclass(frozen=True)
class Fields:
    """The compiled expressions: where the items are, and each item's fields.

    Shapes such as ``{"products": [{"variants": [...]}]}`` are reached with an expression
    (``products[].variants[]``).
    """

    items: Expression
    key: Expression
    name: Expression
    price: Expression
    stock: Expression
    link: Expression
    words: StockWords

    @classmethod
    def compile(
        cls,
        words: StockWords,
        *,
        items: str,
        key: str,
        name: str,
        price: str,
        stock: str,
        link: str,
    ) -> Fields:
        """Compile each expression, in this order; a bad one is a ConfigError naming it."""
        return cls(
            Expression.compile("items", items),
            Expression.compile("key", key),
            Expression.compile("name", name),
            Expression.compile("price", price),
            Expression.compile("stock", stock),
            Expression.compile("link", link),
            words,
        )


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
    """The items of the pages read so far: each key's row, and the page it was on.

    A DataError for invalid JSON (``parse_body``), an items path that finds no list, an
    item without a key, a price or stock that cannot be read, and one key twice with
    different values in one answer.
    """

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
        key_of, name_of, link_of = (
            fields.key.in_item(),
            fields.name.in_item(),
            fields.link.in_item(),
        )
        price_of, stock_of, words = fields.price.in_item(), fields.stock.in_item(), fields.words
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
            row = (
                "" if name is None else str(name),
                price,
                None if stock is None else stock.available,
                None if stock is None else stock.count,
                None if link is None else str(link),
            )
            seen = rows.setdefault(key, row)
            if seen is row:
                where[key] = url
            elif seen != row and not item_of(key, seen).same_as(item_of(key, row)):
                raise DataError(
                    f"{url}: item {key!r} appears twice with different values "
                    f"(first at {where[key]}); the answer is inconsistent"
                )
