"""Prices and stock as shops send them, read exactly: Decimal prices, stock as available or
not; a value that cannot be read is a ValueError saying why (the caller says where)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

# Currency marks and words a price may carry around its number. A backslash is there
# because Shift_JIS shows 0x5C as ¥, and CP932 text decoded elsewhere keeps it as "\\".
_CURRENCY = re.compile(
    r"^(?:¥|\\|円|yen|jpy|us\$|\$|usd|€|eur|£|gbp|税込|税抜|\s)+"
    r"|(?:円|yen|jpy|usd|eur|gbp|税込|税抜|\(.*\)|\s)+$",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"^[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?$|^[0-9]+(?:\.[0-9]+)?$")

DEFAULT_IN_STOCK = (
    "in stock, instock, in_stock, available, limitedavailability, onlineonly, "
    "在庫あり, あり, 販売中, 有, ○, 〇, true, yes"
)
DEFAULT_OUT_OF_STOCK = (
    "out of stock, outofstock, out_of_stock, sold out, soldout, sold_out, unavailable, "
    "discontinued, 在庫なし, なし, 売り切れ, 売切れ, 品切れ, 完売, 無, ×, false, no"
)


# A price already written as its exact decimal string would be, once the thousands
# commas are gone: no sign, no leading zero, no exponent. "1,980" -> "1980".
_CANONICAL = re.compile(r"^(?:0|[1-9][0-9]{0,2}(?:,[0-9]{3})+|[1-9][0-9]*)(?:\.[0-9]+)?$")


def price_text(value: Any) -> str | None:
    """The price as the state keeps it: its exact decimal string; None for a JSON null.

    The same as ``format(parse_price(value), "f")``, without making a Decimal for the
    common shapes (a JSON integer, "1980", "1,980", "1980.00"): 100k items a run.
    """
    if type(value) is int and value >= 0:
        return str(value)
    if type(value) is str and _CANONICAL.match(value):
        return value.replace(",", "")
    price = parse_price(value)
    return None if price is None else format(price, "f")


def parse_price(value: Any) -> Decimal | None:
    """An exact, non-negative price; None for a JSON null (no price given).

    A JSON number (read as Decimal, never float), or text such as ``"1,980"``,
    ``"¥1,980"``, ``"１，９８０円"`` or ``"1980.00"``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a price")
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):  # only when the JSON was not read with parse_float=Decimal
        number = Decimal(repr(value))
    elif isinstance(value, str):
        if _NUMBER.match(value):  # the common case: "1,980", "1980.00"
            return Decimal(value.replace(",", ""))
        text = unicodedata.normalize("NFKC", value).strip()
        text = _CURRENCY.sub("", text).strip()
        if not _NUMBER.match(text):
            raise ValueError(f"{value!r} is not a price")
        number = Decimal(text.replace(",", ""))
    else:
        raise ValueError(f"{value!r} is not a price")
    try:
        if not number.is_finite() or number < 0:
            raise ValueError(f"{value!r} is not a price (negative or not finite)")
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a price") from exc
    return number


@dataclass(frozen=True)
class StockWords:
    """The words that mean in stock and out of stock (compared without case, space, _ or -)."""

    in_stock: frozenset[str]
    out_of_stock: frozenset[str]

    @classmethod
    def of(cls, in_stock: str, out_of_stock: str) -> StockWords:
        """From comma-separated lists, as the settings give them."""
        return cls(_words(in_stock), _words(out_of_stock))


def _norm(word: str) -> str:
    word = unicodedata.normalize("NFKC", word).strip().lower()
    word = re.sub(r"^https?://schema\.org/", "", word)  # "  http://schema.org/InStock"
    return re.sub(r"[\s_\-]+", "", word)


def _words(listed: str) -> frozenset[str]:
    return frozenset(_norm(w) for w in listed.split(",") if w.strip())


@dataclass(frozen=True, slots=True)
class Stock:
    """Whether the item can be bought, and how many there are when the shop says."""

    available: bool
    count: int | None = None


_IN, _OUT = Stock(True), Stock(False)
_COUNTS = [Stock(n > 0, n) for n in range(1000)]


def parse_stock(value: Any, words: StockWords) -> Stock | None:
    """Stock from a count, a boolean or words; None for a JSON null (not given).

    Words such as ``"in stock"``, ``"out_of_stock"``, ``"在庫なし"``,
    ``http://schema.org/InStock`` (``StockWords``).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return _IN if value else _OUT
    if type(value) is int and 0 <= value < len(_COUNTS):  # the common case, shared objects
        return _COUNTS[value]
    if isinstance(value, int | Decimal) and value == int(value):
        return _count(int(value), value)
    if isinstance(value, str):
        word = _norm(value)
        if word.isascii() and word.isdigit():
            return _count(int(word), value)
        if word in words.in_stock:
            return _IN
        if word in words.out_of_stock:
            return _OUT
        raise ValueError(
            f"{value!r} is not a stock value; list it in OCHINAI_MONITOR_IN_STOCK or "
            "OCHINAI_MONITOR_OUT_OF_STOCK"
        )
    raise ValueError(f"{value!r} is not a stock value")


# The largest integer every JSON reader keeps exactly (RFC 8259, section 6).
MAX_COUNT = 2**53 - 1


def _count(count: int, value: Any) -> Stock:
    if count < 0:
        raise ValueError(f"{value!r} is not a stock count (negative)")
    if count > MAX_COUNT:
        raise ValueError(f"{value!r} is not a stock count (over {MAX_COUNT})")
    return Stock(count > 0, count)
