"""API mode: the items of a JSON API, every page of it, asked politely (conditionally, up
to a page limit, on the API's host only).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from ochinai.jobs.monitor.fetched import Fetched, conditional, validators_of
from ochinai.jobs.monitor.items import Expression, Fields, Found, parse_body
from ochinai.jobs.monitor.state import State
from ochinai.runtime.errors import DataError
from ochinai.runtime.http import HttpClient

_LINK_NEXT = re.compile(r'<([^>]+)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)


@dataclass(frozen=True)
class Api:
    """The API to watch: its first page (``url``, kept in the state by ``key``).

    The first page is asked with the ETag and Last-Modified stored from the last answer;
    304 means nothing changed: no parse, no state write. Later pages follow the answer's
    ``next`` link (a JMESPath) or a ``Link: <...>; rel="next"`` header, up to a page
    limit, each resolved against the page it came from and kept to the API's host. The
    client spaces requests to a host, never sends two at once, retries 5xx, timeouts and
    resets with backoff, and waits out Retry-After up to its cap (else the run ends 75);
    401/403 end it 77.
    """

    url: str
    key: str
    fields: Fields
    next: Expression
    headers: Mapping[str, str]
    page_limit: int

    @property
    def keys(self) -> dict[str, str]:
        """{the URL as set: its key}."""
        return {self.url: self.key}

    def fetch(self, http: HttpClient, known: State) -> Fetched:
        """Every page of the API, or no items when the first page is not modified."""
        url, headers = self.url, dict(self.headers)
        saved = known.validators.get(self.key, {})
        first = http.get(url, headers=conditional(headers, saved), accept=(304,))
        if first.status == 304:
            return Fetched(None, {self.key: saved}, pages=1, not_modified=1)
        found = Found()
        seen: set[str] = set()
        page_url, response = url, first
        while True:
            seen.add(page_url)
            document = parse_body(response.body, page_url)
            found.extract(document, page_url, self.fields)
            following = _next(page_url, document, response.headers, self.next)
            if following is None:
                break
            if following in seen:
                raise DataError(f"{page_url}: the next page is {following}, which was read already")
            if urlsplit(following).netloc != urlsplit(url).netloc:
                raise DataError(f"{page_url}: the next page {following} is on another host")
            if len(seen) >= self.page_limit:
                raise DataError(
                    f"{url}: more than {self.page_limit} pages; raise OCHINAI_MONITOR_PAGE_LIMIT"
                )
            page_url = following
            response = http.get(page_url, headers=headers)
        return Fetched(found.rows, {self.key: validators_of(first)}, pages=len(seen))


def _next(
    page_url: str, document: Any, headers: Mapping[str, str], expression: Expression
) -> str | None:
    """The next page's absolute URL, from the body's next link or a Link header."""
    found = expression.search(document) if isinstance(document, dict) else None
    if isinstance(found, str) and found.strip():
        return urljoin(page_url, found.strip())
    match = _LINK_NEXT.search(headers.get("Link", "") or "")
    return urljoin(page_url, match.group(1)) if match else None
