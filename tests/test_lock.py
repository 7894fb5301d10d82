"""Tests of the lock's client-go rules over an in-memory backend, with injected clocks."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ochinai.runtime.errors import ConfigError, LockLost, TransientError
from ochinai.runtime.lock import LeaderLock, LockRecord, LockRecordChanged, LockTiming, Versioned

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
                raise LockRecordChanged("exists")
            return self._write(record)

    def update(self, record: LockRecord, version: str) -> Versioned:
        with self.lock:
            if self.fail_with:
                raise self.fail_with
            if self.current is None or self.current.version != version:
                raise LockRecordChanged("stale")
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


# --- the holder's side: validity from the request, renewal that keeps its term -------


class SlowAnswers(MemoryBackend):
    """Writes land at once; their answers come ``delay`` seconds later on ``clock``.

    With ``lose_answer`` the first answer is lost: the client sends the update again
    after ``delay``, which meets the version the first made (LockRecordChanged), as botocore does
    after its read timeout.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.delay = 0.0
        self.lose_answer = False
        self.on_land: list[object] = []

    def update(self, record: LockRecord, version: str) -> Versioned:
        done = super().update(record, version)
        for hook in self.on_land:
            hook()  # type: ignore[operator]
        self.clock.now += self.delay
        if self.lose_answer:
            self.lose_answer = False
            raise LockRecordChanged("the resend met the version the lost first attempt made")
        return done


def no_wait_elector(backend: MemoryBackend, identity: str, clock: Clock) -> LeaderLock:
    """A lock without its renewal thread: the test calls ``renew_once`` on the fake clock."""
    return LeaderLock(
        backend,
        identity,
        TIMING,
        clock=clock,
        wallclock=lambda: T0 + timedelta(seconds=clock.now),
        sleep=clock.sleep,
        background=False,
    )


def test_a_renewal_whose_answer_comes_late_counts_from_when_it_was_sent() -> None:
    """The renewal lands at once and is answered 20 s later: valid until sent + 45 s, not
    answer + 45 s, so the holder stops before a contender that saw the write can start.
    An answer that comes after the validity ran out counts for nothing: lost for good."""
    clock = Clock()
    backend = SlowAnswers(clock)
    held = no_wait_elector(backend, "a", clock).acquire(wait=0)
    assert held is not None
    clock.now = 20.0  # the renew period
    backend.delay = 20.0
    assert held.renew_once() is True
    assert clock.now == 40.0 and held.valid_until == 20.0 + TIMING.renew_deadline
    clock.now = 20.0 + TIMING.renew_deadline
    assert not held.held()
    late = no_wait_elector(SlowAnswers(clock), "b", clock)
    clock.now = 0.0
    again = late.acquire(wait=0)
    assert again is not None
    clock.now, late.backend.delay = 20.0, 30.0  # type: ignore[attr-defined]
    assert again.renew_once() is False  # answered at 50, the validity ended at 45
    assert not again.held() and again.lost


def test_a_renewal_whose_answer_was_lost_never_overlaps_a_contender() -> None:
    """The renewal PUT lands at T; its answer is lost and the resend, 60 s later, gets a
    conflict: the record is ours, but the validity counted from T is over by then, so the
    holder has stopped before the contender (which saw the write at T) takes over at T+60.
    Counted from the answer (as before), both held the lock for 12 s."""
    clock = Clock()
    backend = SlowAnswers(clock)
    holder = no_wait_elector(backend, "a", clock).acquire(wait=0)
    assert holder is not None
    contender = no_wait_elector(backend, "b", clock)
    clock.now = 20.0
    backend.on_land.append(contender.try_acquire_or_renew)  # it sees the write land at T
    backend.delay, backend.lose_answer = 60.0, True
    renewed = holder.renew_once()  # lands at T=20, "answered" at 80
    backend.on_land.clear()
    backend.delay = 0.0
    assert renewed is False and not holder.held()
    both, taken_at = [], None
    while clock.now < 200:
        if contender.try_acquire_or_renew() and taken_at is None:
            taken_at = clock.now
        both.append(taken_at is not None and holder.held())
        clock.now += 1
    assert taken_at == 80.0 and not any(both)


def test_a_renewal_call_that_hangs_is_given_up_at_the_deadline() -> None:
    """An update that never answers: the call is abandoned when the validity runs out, and
    the lock is lost then, not when (if ever) the call returns."""
    clock = Clock()
    backend = MemoryBackend()
    hung = threading.Event()

    def hang(record: LockRecord, version: str) -> Versioned:
        hung.wait(5)
        raise TransientError("never answered")

    waited: list[float] = []

    def fake_wait(event: threading.Event, seconds: float) -> bool:
        waited.append(seconds)
        clock.now += seconds
        return False  # the call did not end in time

    lock = LeaderLock(
        backend,
        "a",
        TIMING,
        clock=clock,
        wallclock=lambda: T0 + timedelta(seconds=clock.now),
        sleep=clock.sleep,
        wait=fake_wait,
        background=False,
    )
    held = lock.acquire(wait=0)
    assert held is not None
    backend.update = hang  # type: ignore[method-assign]
    clock.now = 20.0
    assert held.renew_once() is False
    hung.set()
    assert waited and waited[-1] <= TIMING.renew_deadline
    assert clock.now <= TIMING.renew_deadline and not held.held()
    with pytest.raises(LockLost):
        held.check_writable()


def test_renewal_never_takes_back_a_lock_that_another_run_took_and_released() -> None:
    """A loses the lock, B takes it, works and releases it; A's renewal finds the record
    released and A stays lost: no new term, no write (before, A took the lock again)."""
    clock = Clock()
    backend = MemoryBackend()
    a = no_wait_elector(backend, "a", clock).acquire(wait=0)
    assert a is not None
    clock.now = 61.0  # A was paused past the lease
    b = no_wait_elector(backend, "b", clock).acquire(wait=0)
    assert b is not None and b.term == 1
    b.release()
    assert backend.current is not None and backend.current.record.holder == ""
    released = backend.current
    clock.now = 62.0
    a.valid_until = clock.now + 10  # even a holder that believes it is still valid
    assert a.renew_once() is False and not a.held()
    assert backend.current == released, "A's renewal must not write"
    with pytest.raises(LockLost):
        a.check_writable()


@pytest.mark.parametrize("what", ["deleted", "taken", "same holder, another term"])
def test_renewal_of_a_record_that_is_no_longer_this_term_is_lost(what: str) -> None:
    clock = Clock()
    backend = MemoryBackend()
    held = no_wait_elector(backend, "a", clock).acquire(wait=0)
    assert held is not None and backend.current is not None
    record = backend.current.record
    if what == "deleted":
        backend.current = None
    elif what == "taken":
        backend.update(replace(record, holder="b", transitions=1), backend.current.version)
    else:
        backend.update(replace(record, transitions=5), backend.current.version)
    before = backend.current
    clock.now = 20.0
    assert held.renew_once() is False and not held.held()
    assert backend.current == before


def test_release_stops_holding_before_the_record_is_cleared() -> None:
    """From the release's request on the run holds nothing: a contender may take the lock
    as soon as the record is cleared."""
    clock = Clock()
    backend = MemoryBackend()
    held = no_wait_elector(backend, "a", clock).acquire(wait=0)
    assert held is not None
    seen: list[bool] = []
    update = backend.update

    def watching(record: LockRecord, version: str) -> Versioned:
        seen.append(held.held())
        return update(record, version)

    backend.update = watching  # type: ignore[method-assign]
    assert held.release() is True
    assert seen == [False]


def test_an_s3_lock_record_from_before_epochs_is_read_and_taken_over() -> None:
    """Records written before the epoch field: read with an empty epoch, taken over by the
    next run (fence + 1), and kept in that epoch."""
    from ochinai.runtime.lock import record_from_json

    old = (
        b'{"acquired": "2026-11-28T06:10:00+00:00", "duration_s": 1, "expires": "x", '
        b'"fence": 4, "holder": "", "renewed": "2026-11-28T06:10:00+00:00"}'
    )
    record = record_from_json(old, "s3://ops/_locks/ochinai-report.json")
    assert (record.transitions, record.epoch) == (4, "")
    backend, clock = MemoryBackend(), Clock()
    backend.current = Versioned(record, "before")
    held = elector(backend, "b", clock).acquire(wait=0)
    assert held is not None and held.term == 5
    assert backend.current is not None and backend.current.record.epoch == ""
    held.release()
