"""Tests of the lock's client-go rules over an in-memory backend, with injected clocks."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ochinai.runtime.errors import ConfigError, LockLost, TransientError
from ochinai.runtime.lock import Conflict, LeaderLock, LockRecord, LockTiming, Versioned

T0 = datetime(2026, 11, 28, 6, 10, tzinfo=UTC)
TIMING = LockTiming(duration=60, renew_period=20, renew_deadline=45, poll=2)


class MemoryBackend:
    """A lock record in memory with a version that changes on every write."""

    name = "memory lock"

    def __init__(self) -> None:
        self.current: Versioned | None = None
        self.version = 0
        self.fail_with: Exception | None = None
        self.lock = threading.Lock()

    def get(self) -> Versioned | None:
        if self.fail_with:
            raise self.fail_with
        return self.current

    def _write(self, record: LockRecord) -> Versioned:
        self.version += 1
        self.current = Versioned(record, str(self.version))
        return self.current

    def create(self, record: LockRecord) -> Versioned:
        with self.lock:
            if self.current is not None:
                raise Conflict("exists")
            return self._write(record)

    def update(self, record: LockRecord, version: str) -> Versioned:
        with self.lock:
            if self.fail_with:
                raise self.fail_with
            if self.current is None or self.current.version != version:
                raise Conflict("stale")
            return self._write(record)


class Clock:
    """A monotonic clock that only moves when told; sleeping moves it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.on_sleep: list[object] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for hook in self.on_sleep:
            hook()  # type: ignore[operator]


def elector(backend: MemoryBackend, identity: str, clock: Clock, skew: float = 0) -> LeaderLock:
    return LeaderLock(
        backend,
        identity,
        TIMING,
        clock=clock,
        wallclock=lambda: T0 + timedelta(seconds=clock.now + skew),
        sleep=clock.sleep,
    )


def test_first_acquire_creates_the_record_with_fence_0() -> None:
    """The first run creates the record as holder with leaseTransitions 0."""
    backend, clock = MemoryBackend(), Clock()
    held = elector(backend, "pod-a/run-1", clock).acquire(wait=0)
    assert held is not None and held.term == 0
    assert backend.current and backend.current.record.holder == "pod-a/run-1"
    held.release()


def test_release_clears_holder_and_next_holder_gets_fence_plus_1() -> None:
    """Release sets holder "" and duration 1; the next run takes it at once with fence + 1."""
    backend, clock = MemoryBackend(), Clock()
    first = elector(backend, "a", clock).acquire(wait=0)
    assert first is not None
    first.release()
    assert backend.current and backend.current.record.holder == ""
    assert backend.current.record.duration_s == 1
    second = elector(backend, "b", clock).acquire(wait=0)
    assert second is not None and second.term == 1
    second.release()


def test_live_holder_means_busy_once_a_renewal_is_seen() -> None:
    """A challenger sees the record change (holder renewing) and gives up with None."""
    backend, clock = MemoryBackend(), Clock()
    holder = elector(backend, "a", clock)
    assert holder.try_acquire_or_renew()
    clock.on_sleep.append(holder.try_acquire_or_renew)  # the holder renews while we poll
    assert elector(backend, "b", clock).acquire(wait=0) is None
    assert clock.now < TIMING.duration  # decided as soon as the change was seen
    assert backend.current and backend.current.record.holder == "a"


def test_dead_holder_is_taken_over_after_the_duration_with_fence_plus_1() -> None:
    """A record that does not change for its duration is taken over, fence + 1."""
    backend, clock = MemoryBackend(), Clock()
    assert elector(backend, "a", clock).try_acquire_or_renew()  # then a dies
    held = elector(backend, "b", clock).acquire(wait=0)
    assert held is not None and held.term == 1
    assert clock.now >= TIMING.duration
    assert backend.current and backend.current.record.holder == "b"
    held.release()


def test_expiry_ignores_wall_clocks_so_skew_cannot_steal_a_live_lease() -> None:
    """A holder 10 minutes behind keeps the lock while it renews; renewTime is not compared."""
    backend, clock = MemoryBackend(), Clock()
    slow = elector(backend, "slow", clock, skew=-600)
    assert slow.try_acquire_or_renew()
    challenger = elector(backend, "true-clock", clock)
    for _ in range(100):  # 200 s of polling while the holder renews every 2 s
        clock.sleep(2)
        assert slow.try_acquire_or_renew()
        assert not challenger.try_acquire_or_renew()
    assert backend.current and backend.current.record.holder == "slow"


def test_acquire_waits_when_asked_and_gets_a_released_lock() -> None:
    """With OCHINAI_LOCK_WAIT a challenger polls and takes the lock once it is released."""
    backend, clock = MemoryBackend(), Clock()
    holder = elector(backend, "a", clock)
    assert holder.try_acquire_or_renew()

    def renew_then_release() -> None:
        if clock.now < 30:
            holder.try_acquire_or_renew()
        elif backend.current and backend.current.record.holder == "a":
            rec = replace(backend.current.record, holder="", duration_s=1)
            backend.update(rec, backend.current.version)

    clock.on_sleep.append(renew_then_release)
    held = elector(backend, "b", clock).acquire(wait=300)
    assert held is not None and held.term == 1 and 30 <= clock.now < 60
    held.release()


def test_transient_errors_are_retried_then_raised() -> None:
    """An API that keeps failing makes acquire raise the transient error after the deadline."""
    backend, clock = MemoryBackend(), Clock()
    backend.fail_with = TransientError("lease default/ochinai-x: HTTP 500")
    with pytest.raises(TransientError, match="HTTP 500"):
        elector(backend, "a", clock).acquire(wait=0)
    assert clock.now > TIMING.renew_deadline


def test_lost_renewal_turns_held_false_and_refuses_writes() -> None:
    """Past the renew deadline without a renewal, held() is false and writes raise LockLost."""
    backend, clock = MemoryBackend(), Clock()
    held = elector(backend, "a", clock).acquire(wait=0)
    assert held is not None and held.held()
    held.check_writable()
    clock.now += TIMING.renew_deadline + 1  # the renewal thread never got through
    assert not held.held()
    with pytest.raises(LockLost, match="not renewed within 45s"):
        held.check_writable()
    held.release()


def test_release_never_clears_a_lock_someone_else_took() -> None:
    """Release updates against our version; if another holder wrote since, it is left alone."""
    backend, clock = MemoryBackend(), Clock()
    held = elector(backend, "a", clock).acquire(wait=0)
    assert backend.current is not None and held is not None
    taken = replace(backend.current.record, holder="b", transitions=1)
    backend.update(taken, backend.current.version)
    held.release()
    assert backend.current.record.holder == "b"


@pytest.mark.parametrize(
    ("period", "deadline", "duration"), [(20, 60, 60), (45, 45, 60), (0, 1, 2)]
)
def test_invalid_timing_is_a_config_error(period: float, deadline: float, duration: float) -> None:
    """renew period < renew deadline < duration, or the run stops with a ConfigError."""
    with pytest.raises(ConfigError, match="OCHINAI_LOCK_RENEW_PERIOD"):
        LockTiming(duration=duration, renew_period=period, renew_deadline=deadline)
