"""Read the API politely: conditional GET, pagination, through the run's HTTP client.

The first page is asked with the ETag and Last-Modified stored from the last answer;
304 means nothing changed: no parse, no state write. Later pages follow the answer's
``next`` link (a JMESPath) or a ``Link: <...>; rel="next"`` header, up to a page
limit, each resolved against the page it came from and kept to the API's host. The
client spaces requests to a host, never sends two at once, retries 5xx, timeouts and
resets with backoff, and waits out Retry-After up to its cap (else the run ends 75);
401/403 end it 77.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from ochinai.jobs.monitor.items import Fields, Found, Row, parse_body
from ochinai.runtime.errors import DataError
from ochinai.runtime.http import HttpClient, HttpResponse

_LINK_NEXT = re.compile(r'<([^>]+)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)


@dataclass
class Fetched:
    """What the API answered: the items (None when the first page was not modified)."""

    items: dict[str, Row] | None
    validators: dict[str, str]
    pages: int = 0
    not_modified: int = 0


def fetch(
    http: HttpClient,
    url: str,
    fields: Fields,
    next_expression: Any,
    *,
    validators: dict[str, str],
    headers: dict[str, str],
    page_limit: int,
) -> Fetched:
    """Every page of the API, or nothing when the first page is not modified."""
    first = http.get(url, headers=conditional(headers, validators), accept=(304,))
    if first.status == 304:
        return Fetched(None, validators, pages=1, not_modified=1)
    kept = validators_of(first)
    found = Found()
    seen: set[str] = set()
    page_url, response = url, first
    while True:
        seen.add(page_url)
        document = parse_body(response.body, page_url)
        found.extract(document, page_url, fields)
        following = _next(page_url, document, response.headers, next_expression)
        if following is None:
            break
        if following in seen:
            raise DataError(f"{page_url}: the next page is {following}, which was read already")
        if urlsplit(following).netloc != urlsplit(url).netloc:
            raise DataError(f"{page_url}: the next page {following} is on another host")
        if len(seen) >= page_limit:
            raise DataError(
                f"{url}: more than {page_limit} pages; raise OCHINAI_MONITOR_PAGE_LIMIT"
            )
        page_url = following
        response = http.get(page_url, headers=headers)
    return Fetched(found.rows, kept, pages=len(seen))


def conditional(headers: dict[str, str], validators: dict[str, str]) -> dict[str, str]:
    """``headers`` and the If-None-Match / If-Modified-Since of the stored validators."""
    sent = dict(headers)
    if validators.get("etag"):
        sent["If-None-Match"] = validators["etag"]
    if validators.get("last_modified"):
        sent["If-Modified-Since"] = validators["last_modified"]
    return sent


def validators_of(answer: HttpResponse) -> dict[str, str]:
    """The ETag and Last-Modified an answer gave, to send back next time."""
    return {
        name: answer.headers[header]
        for name, header in (("etag", "ETag"), ("last_modified", "Last-Modified"))
        if answer.headers.get(header)
    }


def _next(page_url: str, document: Any, headers: Any, expression: Any) -> str | None:
    """The next page's absolute URL, from the body's next link or a Link header."""
    found = expression.search(document) if isinstance(document, dict) else None
    if isinstance(found, str) and found.strip():
        return urljoin(page_url, found.strip())
    match = _LINK_NEXT.search(headers.get("Link", "") or "")
    return urljoin(page_url, match.group(1)) if match else None
