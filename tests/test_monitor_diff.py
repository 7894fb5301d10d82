"""Tests of the monitor's reading of shop answers and its diff: exact values, real changes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from ochinai.jobs.monitor.changes import Change
from ochinai.jobs.monitor.diff import Rules, diff
from ochinai.jobs.monitor.items import Fields, Found, parse_body
from ochinai.jobs.monitor.rows import Item, Row, item_of, row_of
from ochinai.jobs.monitor.values import (
    DEFAULT_IN_STOCK,
    DEFAULT_OUT_OF_STOCK,
    Stock,
    StockWords,
    parse_price,
    parse_stock,
)
from ochinai.runtime.errors import ConfigError, DataError

URL = "https://shop.example/products.json"
WORDS = StockWords.of(DEFAULT_IN_STOCK, DEFAULT_OUT_OF_STOCK)
FLAT = Fields.compile(
    WORDS, items="items", key="id", name="name", price="price", stock="stock", link="url"
)
# A Shopify-style answer: each product has its variants; the first one carries the price.
SHOPIFY = Fields.compile(
    WORDS,
    items="products",
    key="id",
    name="title",
    price="variants[0].price",
    stock="variants[0].available",
    link="handle",
)


@pytest.mark.parametrize(
    ("raw", "price"),
    [
        ("1,980", "1980"),
        ("¥1,980", "1980"),
        ("１，９８０円", "1980"),
        ("1980.00", "1980.00"),
        ("1,980円(税込)", "1980"),
        (1980, "1980"),
        (Decimal("19.99"), "19.99"),
        (19.99, "19.99"),
        ("$ 12.50", "12.50"),
    ],
)
def test_prices_are_exact_decimals_whatever_their_form(raw: Any, price: str) -> None:
    """Shops write prices many ways; each reads as the exact decimal it says."""
    assert parse_price(raw) == Decimal(price)


@pytest.mark.parametrize("raw", ["1,98", "-5", "abc", "1.2.3", True, [1], "¥"])
def test_what_is_no_price_is_refused(raw: Any) -> None:
    """Text that is no price, a negative one or a boolean is an error, never a guess."""
    with pytest.raises(ValueError, match="is not a price"):
        parse_price(raw)


@pytest.mark.parametrize(
    ("raw", "stock"),
    [
        (3, Stock(True, 3)),
        (0, Stock(False, 0)),
        (True, Stock(True)),
        ("in stock", Stock(True)),
        ("out_of_stock", Stock(False)),
        ("在庫なし", Stock(False)),
        ("Sold Out", Stock(False)),
        ("  http://schema.org/InStock", Stock(True)),
        ("12", Stock(True, 12)),
    ],
)
def test_stock_reads_counts_booleans_and_words(raw: Any, stock: Stock) -> None:
    """A count, a boolean, English, Japanese and schema.org words all say available or not."""
    assert parse_stock(raw, WORDS) == stock


def test_an_unknown_stock_word_says_which_setting_lists_words() -> None:
    """A word not in either list is an error pointing at the settings that extend them."""
    with pytest.raises(ValueError, match="OCHINAI_MONITOR_IN_STOCK"):
        parse_stock("maybe", WORDS)


def read(body: bytes, fields: Fields) -> dict[str, Row]:
    """The rows of one answer."""
    found = Found()
    found.extract(parse_body(body, URL), URL, fields)
    return found.rows


def answer(items: list[dict[str, Any]]) -> bytes:
    return json.dumps({"items": items}, ensure_ascii=False).encode()


def test_items_are_read_with_exact_prices_from_a_flat_answer() -> None:
    """A JSON number price is read as Decimal (never float): 19.99 stays 19.99."""
    body = b'{"items": [{"id": 7, "name": "\xe7\x8c\xab", "price": 19.99, "stock": 2}]}'
    assert read(body, FLAT) == {"7": ("猫", "19.99", True, 2, None)}
    assert item_of("7", read(body, FLAT)["7"]) == Item(
        "7", "猫", Decimal("19.99"), Stock(True, 2), None
    )


def test_items_are_read_from_a_nested_shopify_shape() -> None:
    """Expressions reach into products and their variants."""
    body = json.dumps(
        {
            "products": [
                {
                    "id": 632910392,
                    "title": "IPod Nano - 8GB",
                    "handle": "ipod-nano",
                    "variants": [{"id": 808950810, "price": "199.00", "available": False}],
                }
            ]
        }
    ).encode()
    [(key, row)] = read(body, SHOPIFY).items()
    item = item_of(key, row)
    assert (item.key, item.price, item.stock) == ("632910392", Decimal("199.00"), Stock(False))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", f"{URL}: the answer is not valid JSON"),
        (b"", f"{URL}: the answer is empty"),
        (b'{"products": []}', f"{URL}: OCHINAI_MONITOR_ITEMS ('items') finds nothing"),
        (b'{"items": {"a": 1}}', f"{URL}: OCHINAI_MONITOR_ITEMS ('items') finds dict, not a list"),
        (b'{"items": [{"name": "x"}]}', f"{URL}: item 0 has no key ('id')"),
        (
            b'{"items": [{"id": "a1", "price": "free"}]}',
            f"{URL}: item 'a1', field price: 'free' is not a price",
        ),
        (
            b'{"items": [{"id": "a1", "stock": "maybe"}]}',
            f"{URL}: item 'a1', field stock: 'maybe' is not a stock value",
        ),
        (
            b'{"items": [{"id": "a1", "stock": 90071992547409920}]}',
            f"{URL}: item 'a1', field stock: 90071992547409920 is not a stock count (over",
        ),
    ],
)
def test_bad_answers_are_data_errors_naming_url_item_and_field(body: bytes, message: str) -> None:
    """Every way an answer can be wrong is a DataError (65) that says where."""
    with pytest.raises(DataError) as caught:
        read(body, FLAT)
    assert str(caught.value).startswith(message)


def test_a_key_twice_with_different_values_is_a_data_error() -> None:
    """The same item on two pages with two prices: the answer contradicts itself."""
    found = Found()
    found.extract(parse_body(answer([{"id": "a", "price": 100}]), URL), URL, FLAT)
    page_2 = parse_body(answer([{"id": "a", "price": "100.00"}]), URL)
    found.extract(page_2, URL + "?page=2", FLAT)
    assert found.rows == {"a": ("", "100", None, None, None)}  # 100 is 100.00: kept once
    page_3 = parse_body(answer([{"id": "a", "price": 120}]), URL)
    with pytest.raises(DataError, match=rf"page=3: item 'a' appears twice .* \(first at {URL}\)"):
        found.extract(page_3, URL + "?page=3", FLAT)
    same_page = answer([{"id": "b", "price": 1}, {"id": "b", "price": 2}])
    with pytest.raises(DataError, match=r"item 'b' appears twice with different values"):
        Found().extract(parse_body(same_page, URL), URL, FLAT)


def test_a_bad_expression_is_a_config_error_naming_the_variable() -> None:
    """A JMESPath that does not compile is 78, naming its setting."""
    with pytest.raises(ConfigError, match=r"OCHINAI_MONITOR_PRICE='price\['"):
        Fields.compile(
            WORDS, items="items", key="id", name="n", price="price[", stock="s", link="u"
        )


# --- the diff -----------------------------------------------------------------------------


def items(*specs: tuple[str, Any, Any]) -> dict[str, Row]:
    """Rows from (key, price, stock) triples."""
    out = {}
    for key, price, stock in specs:
        item = Item(key, f"品 {key}", parse_price(price), parse_stock(stock, WORDS), None)
        out[key] = row_of(item)
    return out


def kinds(changes: list[Change]) -> list[tuple[str, str]]:
    return sorted((c.item, c.kind) for c in changes)


def test_the_first_run_is_a_baseline_and_reports_nothing() -> None:
    """No state yet: everything is recorded and nothing announced."""
    first = diff(None, items(("a", 100, 1), ("b", 200, 0)), Rules(), 1)
    assert first.changes == [] and set(first.items) == {"a", "b"}


def test_each_kind_of_change_is_found_once() -> None:
    """New, price changed, price below, restocked, sold out; the same data again: nothing."""
    rules = Rules(price_below=Decimal(150))
    state = diff(None, items(("a", 200, 1), ("b", 100, 0), ("c", 50, 5)), rules, 1).items
    now = items(("a", 140, 1), ("b", 100, 3), ("c", 50, 0), ("d", 10, 1))
    second = diff(state, now, rules, 2)
    assert kinds(second.changes) == [
        ("a", "price_below"),
        ("a", "price_changed"),
        ("b", "restocked"),
        ("c", "sold_out"),
        ("d", "new"),
    ]
    [changed] = [c for c in second.changes if c.kind == "price_changed"]
    assert (changed.old, changed.new, changed.change_pct) == ("200", "140", "-30.0")
    assert diff(second.items, now, rules, 3).changes == []


def test_an_item_is_gone_only_after_it_is_missing_for_gone_after_runs() -> None:
    """One short page does not alarm: missing twice in a row is gone, once is not."""
    first = diff(None, items(("a", 1, 1), ("b", 2, 1)), Rules(), 1)
    second = diff(first.items, items(("a", 1, 1)), Rules(gone_after=2), 2, first.missing)
    assert second.changes == [] and second.missing == {"b": 1} and "b" in second.items
    third = diff(second.items, items(("a", 1, 1)), Rules(gone_after=2), 3, second.missing)
    assert kinds(third.changes) == [("b", "gone")] and "b" not in third.items
    assert third.changes[0].missing == 2 and third.missing == {}
    back = diff(third.items, items(("a", 1, 1), ("b", 2, 1)), Rules(), 4, third.missing)
    assert kinds(back.changes) == [("b", "new")]


def test_a_missing_item_that_comes_back_in_time_is_no_news() -> None:
    """Missing once, then back with the same values: nothing to announce, counter reset."""
    first = diff(None, items(("a", 1, 1), ("b", 2, 1)), Rules(), 1)
    second = diff(first.items, items(("a", 1, 1)), Rules(), 2, first.missing)
    third = diff(second.items, items(("a", 1, 1), ("b", 2, 1)), Rules(), 3, second.missing)
    assert third.changes == [] and third.missing == {}
    assert third.items["b"] == items(("b", 2, 1))["b"]


def test_price_changes_within_the_threshold_are_quiet() -> None:
    """With a 5% threshold, 3% is quiet and 10% is news; a target is crossed once."""
    rules = Rules(threshold_pct=Decimal(5), targets={"a": Decimal(95)})
    state = diff(None, items(("a", 100, 1)), rules, 1).items
    quiet = diff(state, items(("a", 97, 1)), rules, 2)
    assert quiet.changes == []
    news = diff(quiet.items, items(("a", "87.30", 1)), rules, 3)
    assert kinds(news.changes) == [("a", "price_below"), ("a", "price_changed")]
    assert next(c for c in news.changes if c.kind == "price_changed").change_pct == "-10.0"
    lower = diff(news.items, items(("a", 80, 1)), rules, 4)
    assert kinds(lower.changes) == [("a", "price_changed")], "below already: not announced again"


def test_change_ids_are_stable_for_a_generation_and_differ_across_them() -> None:
    """The same diff of the same state gives the same ids; a later generation new ones."""
    state = diff(None, items(("a", 100, 1)), Rules(), 1).items
    one = diff(state, items(("a", 90, 1)), Rules(), 2).changes
    two = diff(state, items(("a", 90, 1)), Rules(), 2).changes
    later = diff(state, items(("a", 90, 1)), Rules(), 3).changes
    assert [c.id for c in one] == [c.id for c in two]
    assert one[0].id != later[0].id and one[0].id.startswith("monitor/")
