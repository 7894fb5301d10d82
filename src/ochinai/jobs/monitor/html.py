"""HTML mode's reading: one product page is one item, read from its schema.org Product
markup or CSS selectors; and robots.txt, obeyed for our User-Agent."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from protego import Protego
from selectolax.lexbor import LexborHTMLParser as HTMLParser
from selectolax.lexbor import LexborNode as Node

from ochinai.jobs.monitor.rows import Item
from ochinai.jobs.monitor.values import StockWords, parse_price, parse_stock
from ochinai.runtime.errors import ConfigError, DataError, PermanentError, TransientError
from ochinai.runtime.http import HttpClient

AGENT = "ochinai"  # the product token robots.txt rules name


@dataclass
class Robots:
    """robots.txt of each host, read once per run, as RFC 9309 says.

    A 4xx answer means everything is allowed, a 5xx (or no answer) that nothing may be
    fetched, so the run ends transient (75) without reading the page. A page it
    disallows is a ConfigError (78): the setting asks for what the site forbids. protego
    reads it: it follows RFC 9309 where the standard library's parser does not.
    """

    http: HttpClient
    parsed: dict[str, Protego | None] = field(default_factory=dict)  # None: allow all

    def check(self, url: str) -> None:
        """ConfigError when robots.txt disallows ``url`` for us; 75 when it cannot be read."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self.parsed:
            self.parsed[origin] = self._read(f"{origin}/robots.txt")
        rules = self.parsed[origin]
        if rules is not None and not rules.can_fetch(url, AGENT):
            raise ConfigError(
                f"{url}: robots.txt of {origin} disallows it for {AGENT}; "
                "remove it from OCHINAI_MONITOR_PAGES"
            )

    def _read(self, robots: str) -> Protego | None:
        try:
            answer = self.http.get(robots, accept=range(400, 500))
        except (TransientError, PermanentError) as exc:
            # RFC 9309 2.3.1.4: unreachable (5xx, network) means fetch nothing.
            raise TransientError(
                f"{robots} cannot be read ({exc}); no page of it is fetched"
            ) from None
        if 400 <= answer.status < 500:
            return None  # RFC 9309 2.3.1.3: "unavailable", everything is allowed
        return Protego.parse(answer.text)


def read_page(url: str, body: bytes, words: StockWords, selectors: dict[str, str]) -> Item:
    """The item a product page shows; ``url`` is its key and its link.

    Name, price and availability come from the page's schema.org ``Product`` and its
    ``Offer`` when it has them, as JSON-LD (``<script type="application/ld+json">``;
    pages in the wild carry invalid blocks beside valid ones, which are passed over) or
    as microdata (``itemscope itemtype=".../Product"``). Otherwise, or for what the
    markup lacks, the CSS ``selectors`` are used; a selector matching nothing or more
    than one element is a DataError naming it and the URL. selectolax parses (a fast,
    well-kept HTML5 parser with CSS selectors); the JSON-LD and microdata readers are the
    few lines below rather than extruct, which brings lxml, rdflib and more for the same
    two fields.
    """
    tree = HTMLParser(body)
    found = _json_ld(tree) or _microdata(tree)
    name, price, availability = found if found else (None, None, None)
    if price is None and selectors.get("price"):
        price = _select(tree, selectors["price"], url, "OCHINAI_MONITOR_PRICE_SELECTOR")
    if availability is None and selectors.get("stock"):
        availability = _select(tree, selectors["stock"], url, "OCHINAI_MONITOR_STOCK_SELECTOR")
    if name is None:
        title = tree.css_first("title")
        name = title.text(strip=True) if title is not None else url
    try:
        field_name = "price"
        parsed_price = parse_price(price)
        field_name = "stock"
        stock = parse_stock(availability, words)
    except ValueError as exc:
        raise DataError(f"{url}: field {field_name}: {exc}") from None
    if parsed_price is None and stock is None:
        raise DataError(
            f"{url}: no schema.org Product with a price or availability, and no "
            "OCHINAI_MONITOR_PRICE_SELECTOR or OCHINAI_MONITOR_STOCK_SELECTOR to read them"
        )
    return Item(url, str(name), parsed_price, stock, url)


def _select(tree: HTMLParser, selector: str, url: str, setting: str) -> str:
    try:
        nodes = tree.css(selector)
    except ValueError as exc:
        raise ConfigError(f"{setting}={selector!r} is not a CSS selector: {exc}") from None
    if len(nodes) != 1:
        count = "nothing" if not nodes else f"{len(nodes)} elements"
        raise DataError(f"{url}: {setting} {selector!r} matches {count}, not one element")
    node = nodes[0]
    return str(node.attributes.get("content") or node.text(strip=True))


def _is_product(thing: Any) -> bool:
    kind = thing.get("@type") if isinstance(thing, dict) else None
    kinds = kind if isinstance(kind, list) else [kind]
    return any(isinstance(k, str) and k.rsplit("/", 1)[-1] == "Product" for k in kinds)


def _things(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return [t for d in doc for t in _things(d)]
    if isinstance(doc, dict) and isinstance(doc.get("@graph"), list):
        return [t for d in doc["@graph"] for t in _things(d)]
    return [doc]


def _json_ld(tree: HTMLParser) -> tuple[Any, Any, Any] | None:
    for script in tree.css('script[type="application/ld+json"]'):
        try:
            doc = json.loads(script.text(), parse_float=Decimal)
        except ValueError:
            continue  # an invalid block beside the valid one is common: pass it over
        for thing in _things(doc):
            if _is_product(thing):
                offer = thing.get("offers")
                offer = offer[0] if isinstance(offer, list) and offer else offer
                offer = offer if isinstance(offer, dict) else {}
                price = offer.get("price", offer.get("lowPrice"))
                return thing.get("name"), price, offer.get("availability")
    return None


def _microdata(tree: HTMLParser) -> tuple[Any, Any, Any] | None:
    for product in tree.css("[itemscope][itemtype]"):
        if (product.attributes.get("itemtype") or "").rstrip("/").rsplit("/", 1)[-1] != "Product":
            continue
        return (
            _prop(product, "name"),
            _prop(product, "price"),
            _prop(product, "availability"),
        )
    return None


def _prop(scope: Node, name: str) -> str | None:
    node = scope.css_first(f'[itemprop="{name}"]')
    if node is None:
        return None
    attrs = node.attributes
    value = attrs.get("content") or attrs.get("href") or node.text(strip=True)
    return None if value is None else str(value)
