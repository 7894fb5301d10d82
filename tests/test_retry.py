"""Tests of the retry policy and duration parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from ochinai.runtime.errors import EX_TEMPFAIL, PermanentError, TransientError
from ochinai.runtime.retry import GaveUp, RetryPolicy, parse_retry_after, to_seconds


class Flaky:
    """Fails with the given errors in turn, then returns "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def policy(waits: list[float], **kw: object) -> RetryPolicy:
    return RetryPolicy(sleep=waits.append, rng=lambda: 1.0, **kw)  # type: ignore[arg-type]


def test_waits_double_up_to_the_cap() -> None:
    """With jitter at its maximum the waits are base * 2**n, never above the cap."""
    waits: list[float] = []
    fn = Flaky(*[TransientError("x")] * 5)
    assert policy(waits, base=1, cap=5, max_tries=6).call(fn) == "done"
    assert waits == [1, 2, 4, 5, 5]
    assert fn.calls == 6


def test_full_jitter_scales_the_wait() -> None:
    """The wait is the random fraction times the exponential bound (full jitter)."""
    waits: list[float] = []
    p = RetryPolicy(base=2, cap=100, max_tries=3, sleep=waits.append, rng=lambda: 0.25)
    p.call(Flaky(TransientError("a"), TransientError("b")))
    assert waits == [0.5, 1.0]


def test_gives_up_after_max_tries_with_the_last_cause() -> None:
    """After max_tries the call raises GaveUp (transient, 75) carrying the last error."""
    waits: list[float] = []
    last = TransientError("third")
    with pytest.raises(GaveUp) as info:
        policy(waits, max_tries=3).call(
            Flaky(TransientError("1"), TransientError("2"), last), "GET x"
        )
    assert info.value.last is last
    assert info.value.__cause__ is last
    assert info.value.attempts == 3
    assert info.value.exit_code == EX_TEMPFAIL
    assert "GET x" in str(info.value) and "third" in str(info.value)
    assert len(waits) == 2


def test_permanent_errors_are_not_retried() -> None:
    """A permanent error escapes at once, with no wait."""
    waits: list[float] = []
    fn = Flaky(PermanentError("403"))
    with pytest.raises(PermanentError):
        policy(waits).call(fn)
    assert waits == [] and fn.calls == 1


def test_retry_after_seconds_replaces_the_backoff() -> None:
    """A Retry-After under the cap is waited exactly."""
    waits: list[float] = []
    policy(waits, retry_after_cap=60).call(Flaky(TransientError("429", retry_after=7)))
    assert waits == [7.0]


def test_retry_after_over_the_cap_gives_up_as_transient() -> None:
    """A Retry-After above the cap ends the call at once as transient."""
    waits: list[float] = []
    with pytest.raises(GaveUp) as info:
        policy(waits, retry_after_cap=60).call(Flaky(TransientError("429", retry_after=3600)))
    assert waits == []
    assert "3600" in str(info.value) and info.value.exit_code == EX_TEMPFAIL


def test_deadline_stops_before_a_wait_that_would_pass_it() -> None:
    """With a deadline the policy gives up rather than sleep past it."""
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    p = RetryPolicy(
        base=4,
        cap=100,
        max_tries=10,
        deadline=10,
        sleep=sleep,
        clock=lambda: now[0],
        rng=lambda: 1.0,
    )
    with pytest.raises(GaveUp, match="deadline"):
        p.call(Flaky(*[TransientError("x")] * 9))
    assert waits == [4]  # a second wait of 8 s would end at 12 s, past the 10 s deadline


def test_parse_retry_after_seconds_and_http_date() -> None:
    """Retry-After is read as delta-seconds or as an HTTP-date relative to now."""
    now = datetime(2026, 11, 28, 6, 10, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    http_date = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(http_date, now) == 90
    past = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(past, now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90),
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("26h", 93600),
        ("1d", 86400),
        ("250ms", 0.25),
        (timedelta(minutes=2), 120),
        ("1.5h", 5400),
    ],
)
def test_to_seconds_accepts_the_documented_forms(value: object, seconds: float) -> None:
    """Durations are numbers of seconds or a number with ms, s, m, h or d."""
    assert to_seconds(value) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "15 minutes", "-5s", "h", -1, True])
def test_to_seconds_rejects_other_forms(value: object) -> None:
    """Anything else is a ValueError that shows the accepted form."""
    with pytest.raises(ValueError, match=r"90s, 15m, 26h|negative|not a duration"):
        to_seconds(value)  # type: ignore[arg-type]
