"""What a run's fetch found, whichever the mode (``api.py``, ``pages.py``), and the
validators of a conditional GET: sent back next time, kept in the state per URL key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, cast

from ochinai.jobs.monitor.rows import Row
from ochinai.runtime.http import HttpResponse


class Validators(TypedDict, total=False):
    """The ETag and Last-Modified an answer gave, as the state keeps them."""

    etag: str
    last_modified: str


@dataclass(frozen=True)
class Fetched:
    """What the API or the pages answered this run."""

    items: dict[str, Row] | None  # None: nothing modified since the last run
    # The validators the state keeps after this run: those of this run's URLs only, so
    # that a URL no longer watched, or an earlier version's key for one, leaves the state.
    validators: dict[str, Validators]
    pages: int
    not_modified: int = 0


_NAMES = frozenset(Validators.__optional_keys__)


def conditional(headers: dict[str, str], validators: Validators) -> dict[str, str]:
    """``headers`` and the If-None-Match / If-Modified-Since of the stored validators."""
    sent = dict(headers)
    if validators.get("etag"):
        sent["If-None-Match"] = validators["etag"]
    if validators.get("last_modified"):
        sent["If-Modified-Since"] = validators["last_modified"]
    return sent


def validators_of(answer: HttpResponse) -> Validators:
    """The ETag and Last-Modified an answer gave, to send back next time."""
    found: Validators = {}
    if answer.headers.get("ETag"):
        found["etag"] = answer.headers["ETag"]
    if answer.headers.get("Last-Modified"):
        found["last_modified"] = answer.headers["Last-Modified"]
    return found


def read_validators(doc: object) -> dict[str, Validators]:
    """The validators as the state keeps them (``{URL key: validators}``); TypeError when
    they are not."""
    if not isinstance(doc, dict):
        raise TypeError("its validators are not an object")
    for kept in doc.values():
        if not (
            isinstance(kept, dict)
            and kept.keys() <= _NAMES
            and all(isinstance(v, str) for v in kept.values())
        ):
            raise TypeError(f"a URL's validators are {kept!r}, not {{etag, last_modified}}")
    return cast(dict[str, Validators], doc)
