"""HTML mode: the product pages to watch, one item each, each asked conditionally and only
where robots.txt allows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ochinai.jobs.monitor.fetched import Fetched, Validators, conditional, validators_of
from ochinai.jobs.monitor.html import Robots, read_page
from ochinai.jobs.monitor.rows import Row, row_of
from ochinai.jobs.monitor.state import State
from ochinai.jobs.monitor.values import StockWords
from ochinai.runtime.http import HttpClient


@dataclass(frozen=True)
class Pages:
    """The pages (``keys``: {each page as set: its key, ``urls.url_key``}); an item is kept
    by its page's key, which is its link too. CSS ``selectors`` (``price``, ``stock``) read
    what a page's schema.org markup lacks."""

    keys: Mapping[str, str]
    words: StockWords
    selectors: Mapping[str, str]
    headers: Mapping[str, str]

    def fetch(self, http: HttpClient, known: State) -> Fetched:
        """Each page (robots.txt permitting); a 304 keeps its item as the state has it, and
        no items at all when every page answers 304."""
        robots = Robots(http)
        headers, selectors = dict(self.headers), dict(self.selectors)
        found: dict[str, Row] = {}
        validators: dict[str, Validators] = {}
        not_modified = 0
        for page, key in self.keys.items():
            robots.check(page)
            saved = known.validators.get(key, {})
            answer = http.get(page, headers=conditional(headers, saved), accept=(304,))
            previous = (known.items or {}).get(key)
            if answer.status == 304 and previous is not None:
                not_modified += 1
                found[key], validators[key] = previous, saved
                continue
            found[key] = row_of(read_page(key, answer.body, self.words, selectors))
            validators[key] = validators_of(answer)
        items = None if not_modified == len(self.keys) else found
        return Fetched(items, validators, pages=len(self.keys), not_modified=not_modified)
