"""Capped exponential backoff with full jitter, Retry-After, and durations as seconds."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TypeVar

from ochinai.runtime.cancel import Terminated, cancellation
from ochinai.runtime.errors import TransientError

T = TypeVar("T")
log = logging.getLogger("ochinai.retry")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def to_seconds(value: str | float | int | timedelta) -> float:
    """Turn ``90``, ``"90s"``, ``"15m"``, ``"26h"``, ``"1d"`` or a timedelta into seconds.

    Raises ValueError naming the accepted form; callers that read settings turn it
    into a ConfigError that also names the variable.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration is 0 or more")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(
            f"{value!r} is not a duration; use a number of seconds or 90s, 15m, 26h, 1d"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from Retry-After: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


class GaveUp(TransientError):
    """Retries ran out (or the server asked for too long a wait); ``last`` is the final cause."""

    def __init__(self, message: str, last: BaseException, attempts: int) -> None:
        super().__init__(message)
        self.last = last
        self.attempts = attempts


def _retry_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)


@dataclass
class RetryPolicy:
    """How often and how long to retry; ``sleep``, ``clock`` and ``rng`` are seams for tests.

    The wait before attempt n+1 is uniform in [0, min(cap, base * 2**n)] ("full jitter",
    AWS Architecture Blog, "Exponential Backoff And Jitter"). A ``retry_after`` carried
    by the error replaces the jittered wait when it is at most ``retry_after_cap``; a
    longer one makes the call give up at once: waiting an hour inside a 06:10 job is
    worse than failing transient and letting the next schedule try.
    """

    base: float = 0.5
    cap: float = 30.0
    max_tries: int = 5
    retry_after_cap: float = 120.0
    deadline: float | None = None
    retry_on: Callable[[BaseException], bool] = _retry_transient
    sleep: Callable[[float], None] = cancellation.sleep  # a stop request cuts a wait short
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = field(default=random.random)

    def __post_init__(self) -> None:
        if self.max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must not be negative")

    def backoff(self, attempt: int) -> float:
        """The jittered wait after failed attempt number ``attempt`` (1-based)."""
        return self.rng() * min(self.cap, self.base * 2.0 ** (attempt - 1))

    def call(self, fn: Callable[[], T], what: str = "operation") -> T:
        """Call ``fn`` until it succeeds, a non-retryable error escapes, or the policy gives up."""
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            cancellation.check()  # a run asked to stop makes no further attempt
            try:
                return fn()
            except Exception as exc:
                if not self.retry_on(exc) or isinstance(exc, Terminated):
                    raise
                wait = self._wait_for(exc, attempt, what)
                if self.deadline is not None and self.clock() - started + wait > self.deadline:
                    raise GaveUp(
                        f"{what}: gave up after {attempt} tries, "
                        f"deadline {self.deadline:g}s: {exc}",
                        exc,
                        attempt,
                    ) from exc
                log.warning(
                    "retrying %s in %.2fs after: %s",
                    what,
                    wait,
                    exc,
                    extra={"attempt": attempt, "wait_s": round(wait, 3)},
                )
                self.sleep(wait)

    def _wait_for(self, exc: BaseException, attempt: int, what: str) -> float:
        if attempt >= self.max_tries:
            raise GaveUp(f"{what}: gave up after {attempt} tries: {exc}", exc, attempt) from exc
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is None:
            return self.backoff(attempt)
        if retry_after > self.retry_after_cap:
            raise GaveUp(
                f"{what}: server asked to retry after {retry_after:g}s, "
                f"more than the {self.retry_after_cap:g}s cap: {exc}",
                exc,
                attempt,
            ) from exc
        return float(retry_after)  # a number: checked against the cap above
