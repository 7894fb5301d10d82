"""The monitor job's settings: the API or the pages, where the items and their fields are,
the rules; and their checks across settings (``MonitorSettings.validate``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ochinai.jobs.monitor.values import DEFAULT_IN_STOCK, DEFAULT_OUT_OF_STOCK
from ochinai.runtime.declare import (
    choice,
    parse_duration,
    parse_positive_int,
    parse_size,
    parse_text,
    setting,
)
from ochinai.runtime.errors import ConfigError


def parse_hosts(value: str) -> frozenset[str]:
    """host names, comma-separated, such as cdn.shop.example,api2.shop.example"""
    hosts = set()
    for given in (h.strip().lower() for h in value.split(",")):
        host = given.strip("[]")
        if not given:
            continue
        if "/" in host or "@" in host or (":" in host and not _is_ipv6(host)):
            raise ValueError(f"{given!r} is not a host name (no scheme, port or path)")
        hosts.add(host)
    return frozenset(hosts)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def parse_url(value: str) -> str:
    """an http(s) URL"""
    url = value.strip()
    if not url.startswith(("http://", "https://")) or len(url) < 10:
        raise ValueError("is not an http(s) URL")
    return url


def parse_urls(value: str) -> list[str]:
    """http(s) URLs, comma-separated"""
    return [parse_url(part) for part in value.split(",") if part.strip()]


def parse_decimal(value: str) -> Decimal:
    """a number such as 1980 or 2.5, 0 or more"""
    try:
        number = Decimal(value.strip().replace(",", ""))
    except InvalidOperation:
        raise ValueError("is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError("must be 0 or more")
    return number


def parse_targets(value: str) -> dict[str, Decimal]:
    """KEY=PRICE pairs, comma-separated, such as sku-1=1500,sku-2=980"""
    targets: dict[str, Decimal] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, price = item.rpartition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not KEY=PRICE")
        targets[key.strip()] = parse_decimal(price)
    return targets


@dataclass(frozen=True)
class MonitorSettings:
    """``ochinai monitor``'s own settings."""

    mode: str = setting(
        "OCHINAI_MONITOR_MODE",
        choice("api", "html"),
        "api",
        "api: a JSON API of items; html: product pages, one item each",
    )
    url: str | None = setting(
        "OCHINAI_MONITOR_URL",
        parse_url,
        None,
        "the price/stock API's first page (api mode needs it)",
    )
    pages: list[str] = setting(
        "OCHINAI_MONITOR_PAGES", parse_urls, "", "html mode: the product pages to watch (needed)"
    )
    price_selector: str | None = setting(
        "OCHINAI_MONITOR_PRICE_SELECTOR",
        parse_text,
        None,
        "html mode: CSS selector of the price where the page has no schema.org Offer",
    )
    stock_selector: str | None = setting(
        "OCHINAI_MONITOR_STOCK_SELECTOR",
        parse_text,
        None,
        "html mode: CSS selector of the availability where the page has no schema.org Offer",
    )
    api_key_header: str | None = setting(
        "OCHINAI_MONITOR_API_KEY_HEADER",
        parse_text,
        None,
        "header that carries the API key, such as X-API-Key",
    )
    api_key: str | None = setting(
        "OCHINAI_MONITOR_API_KEY", parse_text, None, "the API key", secret=True
    )
    allow_hosts: frozenset[str] = setting(
        "OCHINAI_MONITOR_ALLOW_HOSTS",
        parse_hosts,
        "",
        "other hosts a redirect may lead to; the API key is never sent there",
    )
    items: str = setting(
        "OCHINAI_MONITOR_ITEMS", parse_text, "items", "JMESPath to the list of items"
    )
    key: str = setting("OCHINAI_MONITOR_KEY", parse_text, "id", "JMESPath to an item's key")
    name: str = setting("OCHINAI_MONITOR_NAME", parse_text, "name", "JMESPath to its name")
    price: str = setting("OCHINAI_MONITOR_PRICE", parse_text, "price", "JMESPath to its price")
    stock: str = setting("OCHINAI_MONITOR_STOCK", parse_text, "stock", "JMESPath to its stock")
    link: str = setting("OCHINAI_MONITOR_LINK", parse_text, "url", "JMESPath to its page")
    in_stock: str = setting(
        "OCHINAI_MONITOR_IN_STOCK", parse_text, DEFAULT_IN_STOCK, "stock words for available"
    )
    out_of_stock: str = setting(
        "OCHINAI_MONITOR_OUT_OF_STOCK",
        parse_text,
        DEFAULT_OUT_OF_STOCK,
        "stock words for not available",
    )
    next: str = setting(
        "OCHINAI_MONITOR_NEXT",
        parse_text,
        "next",
        "JMESPath to the next page's URL in an answer (a Link rel=next header works too)",
    )
    page_limit: int = setting(
        "OCHINAI_MONITOR_PAGE_LIMIT", parse_positive_int, "50", "pages read at most"
    )
    timeout: float = setting(
        "OCHINAI_MONITOR_TIMEOUT",
        parse_duration,
        "10s",
        "connect timeout, and the most time to read an answer",
    )
    min_interval: float = setting(
        "OCHINAI_MONITOR_MIN_INTERVAL",
        parse_duration,
        "1s",
        "least time between two requests to one host",
    )
    tries: int = setting(
        "OCHINAI_MONITOR_TRIES", parse_positive_int, "4", "tries of a request, the first included"
    )
    backoff_base: float = setting(
        "OCHINAI_MONITOR_BACKOFF_BASE", parse_duration, "1s", "first backoff's upper bound"
    )
    backoff_cap: float = setting(
        "OCHINAI_MONITOR_BACKOFF_CAP", parse_duration, "30s", "longest backoff"
    )
    retry_after_cap: float = setting(
        "OCHINAI_MONITOR_RETRY_AFTER_CAP",
        parse_duration,
        "120s",
        "longest Retry-After waited for; a longer one ends the run (75)",
    )
    max_bytes: int = setting(
        "OCHINAI_MONITOR_MAX_BYTES", parse_size, "20MB", "larger answers are refused (65)"
    )
    gone_after: int = setting(
        "OCHINAI_MONITOR_GONE_AFTER",
        parse_positive_int,
        "2",
        "successful runs in a row an item must be missing from to be gone",
    )
    price_threshold_pct: Decimal = setting(
        "OCHINAI_MONITOR_PRICE_THRESHOLD_PCT",
        parse_decimal,
        "0",
        "price changes of at most this many % are not announced",
    )
    price_below: Decimal | None = setting(
        "OCHINAI_MONITOR_PRICE_BELOW",
        parse_decimal,
        None,
        "announce an item whose price falls to or below this",
    )
    targets: dict[str, Decimal] = setting(
        "OCHINAI_MONITOR_TARGETS", parse_targets, "", "per item key, a price_below target"
    )
    max_notify: int = setting(
        "OCHINAI_MONITOR_MAX_NOTIFY",
        parse_positive_int,
        "20",
        "changes listed in one message; the rest are counted as ほか N 件",
    )
    state_prefix: str = setting(
        "OCHINAI_MONITOR_PREFIX",
        parse_text,
        "monitor/",
        "where state.json and history/ go",
    )

    def __post_init__(self) -> None:
        # The settings load before the lock is taken and before any request (cli.main,
        # runtime.declare.load): what they lack is said then, not after the lock.
        self.validate()

    def validate(self) -> None:
        """The checks across settings: what the mode needs. ConfigError (78) saying what
        to set."""
        if self.mode == "api" and not self.url:
            raise ConfigError(
                "OCHINAI_MONITOR_URL is not set and no --url was given; expected the API's "
                "first page, such as https://shop.example/api/items (or OCHINAI_MONITOR_MODE=html)"
            )
        if self.mode == "html" and not self.pages:
            raise ConfigError(
                "OCHINAI_MONITOR_PAGES is not set and no --pages was given; expected the "
                "product pages' URLs, comma-separated"
            )
