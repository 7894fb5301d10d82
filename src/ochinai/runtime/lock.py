"""One lock interface over a Kubernetes Lease or an S3 object, with client-go's expiry rule."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from ochinai.runtime.errors import (
    ConfigError,
    DataError,
    LockLost,
    OchinaiError,
    TransientError,
)
from ochinai.runtime.storage import ObjectNotFound, PreconditionFailed, Store

log = logging.getLogger("ochinai.lock")


class Conflict(Exception):
    """Someone else created or updated the record first (HTTP 409 / 412): read again."""


@dataclass(frozen=True)
class LockRecord:
    """client-go's LeaderElectionRecord; ``transitions`` is the fencing token."""

    holder: str  # "" once released
    duration_s: int
    acquired: datetime
    renewed: datetime
    transitions: int


@dataclass(frozen=True)
class Versioned:
    """A record and the version to update it against (resourceVersion or ETag)."""

    record: LockRecord
    version: str


class LockBackend(Protocol):
    """Where the record lives; kept to get/create/update so a fake fits in a test."""

    @property
    def name(self) -> str: ...

    def get(self) -> Versioned | None: ...

    def create(self, record: LockRecord) -> Versioned: ...

    def update(self, record: LockRecord, version: str) -> Versioned: ...


@dataclass(frozen=True)
class LockTiming:
    """Lease duration, renew period and renew deadline, as client-go's LeaderElectionConfig."""

    duration: float = 60.0
    renew_period: float = 20.0
    renew_deadline: float = 45.0
    poll: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.renew_period < self.renew_deadline < self.duration:
            raise ConfigError(
                "lock timing must satisfy 0 < OCHINAI_LOCK_RENEW_PERIOD "
                f"({self.renew_period:g}s) < OCHINAI_LOCK_RENEW_DEADLINE "
                f"({self.renew_deadline:g}s) < OCHINAI_LOCK_DURATION ({self.duration:g}s)"
            )
        if self.duration < 1:
            raise ConfigError("OCHINAI_LOCK_DURATION must be at least 1s")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaderLock:
    """Mutual exclusion over a LockBackend with client-go leader-election semantics.

    Expiry is judged by when *this process* last saw the record change plus the
    record's own duration, never by comparing the holder's renew time with our clock:
    that survives clock skew between nodes. A one-shot job has not watched the record
    before it starts, so ``acquire`` keeps looking until the record either changes
    (the holder is alive: busy) or stays still for its duration (the holder is dead:
    take over, fence + 1).
    """

    def __init__(
        self,
        backend: LockBackend,
        identity: str,
        timing: LockTiming | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.backend = backend
        self.identity = identity
        self.timing = timing or LockTiming()
        self.clock = clock
        self.wallclock = wallclock
        self.sleep = sleep
        self._observed: Versioned | None = None
        self._observed_at = 0.0

    # -- the client-go step -------------------------------------------------------

    def _observe(self, current: Versioned) -> None:
        if self._observed is None or current.version != self._observed.version:
            self._observed = current
            self._observed_at = self.clock()

    def try_acquire_or_renew(self) -> bool:
        """One attempt: create, renew our own record, or take over an expired one."""
        now = self.wallclock()
        duration = max(1, round(self.timing.duration))
        current = self.backend.get()
        if current is None:
            try:
                self._observe(self.backend.create(LockRecord(self.identity, duration, now, now, 0)))
            except Conflict:
                return False
            return True
        self._observe(current)
        record = current.record
        if (
            record.holder
            and record.holder != self.identity
            and self._observed_at + record.duration_s > self.clock()
        ):
            return False
        if record.holder == self.identity:
            wanted = replace(record, duration_s=duration, renewed=now)
        else:
            wanted = LockRecord(self.identity, duration, now, now, record.transitions + 1)
        try:
            self._observe(self.backend.update(wanted, current.version))
        except Conflict:
            return self._was_ours(wanted)
        return True

    def _was_ours(self, wanted: LockRecord) -> bool:
        """After a conflict: did our own update land, its answer lost and the retry refused?

        Clients resend a request whose answer was lost (urllib3 a PUT, botocore any S3
        call); the resend meets the version our first attempt made, and gets 409 or 412.
        If the record is exactly what we wrote (holder, renew time to the microsecond,
        fence), the update is ours and we hold the lock.
        """
        current = self.backend.get()
        if current is None or current.record != wanted:
            return False
        log.info("lock %s: an update's answer was lost, but it landed", self.backend.name)
        self._observe(current)
        return True

    # -- the public interface -----------------------------------------------------

    def acquire(self, wait: float) -> HeldLock | None:
        """Take the lock; None once its holder has shown it is alive and ``wait`` ran out."""
        start = self.clock()
        first_version: str | None = None
        last_error: OchinaiError | None = None
        while True:
            try:
                if self.try_acquire_or_renew():
                    return self._held()
                last_error = None
            except TransientError as exc:
                last_error = exc
                if self.clock() - start > max(wait, self.timing.renew_deadline):
                    raise
                log.warning("lock %s: %s; trying again", self.backend.name, exc)
            if self._observed is not None and last_error is None:
                version = self._observed.version
                if first_version is None:
                    first_version = version
                elif version != first_version and self.clock() - start >= wait:
                    return None  # the record moved while we watched: its holder is alive
            self.sleep(self.timing.poll)

    def describe_holder(self) -> str:
        """Who holds the lock, as last seen, for the skipped_locked warning."""
        if self._observed is None:
            return f"{self.backend.name}: unknown holder"
        r = self._observed.record
        return (
            f"{self.backend.name} held by {r.holder or 'nobody'} since "
            f"{r.acquired.isoformat()} (renewed {r.renewed.isoformat()}, fence {r.transitions})"
        )

    def _held(self) -> HeldLock:
        assert self._observed is not None
        held = HeldLock(self)
        log.info(
            "acquired lock %s",
            self.backend.name,
            extra={"fence": held.fence, "holder": self.identity},
        )
        return held


class HeldLock:
    """The lock while this run holds it: renewed in a thread, released on exit."""

    def __init__(self, owner: LeaderLock) -> None:
        assert owner._observed is not None
        self._owner = owner
        self.fence = owner._observed.record.transitions
        self._last_renew = owner.clock()
        self._lost = False
        self._lost_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="lock-renewal", daemon=True)
        self._thread.start()

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def held(self) -> bool:
        """True while renewal is healthy: renewed within the renew deadline and not taken."""
        timing = self._owner.timing
        return not self._lost and self._owner.clock() - self._last_renew <= timing.renew_deadline

    def check_writable(self) -> None:
        """Raise LockLost when the lock may no longer be ours, before any write."""
        if not self.held():
            self._declare_lost()
            raise LockLost(
                f"lock {self._owner.backend.name} was not renewed within "
                f"{self._owner.timing.renew_deadline:g}s; refusing to write"
            )

    def _declare_lost(self, taken: bool = False) -> None:
        """Mark the lock lost and log it once, whichever thread notices first."""
        with self._lost_lock:
            if self._lost:
                return
            self._lost = True
        owner = self._owner
        if taken:
            log.error(
                "lost lock %s: another run took it; the next write is refused", owner.backend.name
            )
        else:
            log.error(
                "lost lock %s: not renewed within the renew deadline of %gs; "
                "the next write is refused",
                owner.backend.name,
                owner.timing.renew_deadline,
            )

    def _renew_loop(self) -> None:
        owner, timing = self._owner, self._owner.timing
        while not self._stop.wait(timing.renew_period):
            while not self._stop.is_set() and not self._lost:
                try:
                    if owner.try_acquire_or_renew():
                        self._last_renew = owner.clock()
                        break
                    self._declare_lost(taken=True)
                    return
                except Exception as exc:
                    log.warning("lock %s: renewal failed: %s", owner.backend.name, exc)
                if owner.clock() - self._last_renew > timing.renew_deadline:
                    self._declare_lost()
                    return
                self._stop.wait(min(timing.poll, timing.renew_period))

    def release(self) -> None:
        """Stop renewing and clear the holder, against our version so we never clear another's."""
        self._stop.set()
        self._thread.join()
        owner = self._owner
        if self._lost or owner._observed is None:
            return
        current = owner._observed
        now = owner.wallclock()
        released = replace(current.record, holder="", duration_s=1, renewed=now, acquired=now)
        try:
            owner._observe(owner.backend.update(released, current.version))
            log.info("released lock %s", owner.backend.name, extra={"fence": self.fence})
        except Conflict:
            log.warning("lock %s changed hands before release; left as is", owner.backend.name)
        except Exception as exc:
            log.warning(
                "lock %s: release failed, it expires on its own: %s", owner.backend.name, exc
            )


def record_to_json(record: LockRecord) -> dict[str, object]:
    """The S3 lock object's body; ``expires`` is for people, expiry is judged by observation."""
    expires = record.renewed.timestamp() + record.duration_s
    return {
        "holder": record.holder,
        "duration_s": record.duration_s,
        "acquired": record.acquired.isoformat(),
        "renewed": record.renewed.isoformat(),
        "fence": record.transitions,
        "expires": datetime.fromtimestamp(expires, UTC).isoformat(),
    }


def record_from_json(raw: bytes, where: str) -> LockRecord:
    """Parse an S3 lock object; a broken one is a DataError naming the key."""
    try:
        doc = json.loads(raw)
        return LockRecord(
            holder=str(doc["holder"]),
            duration_s=int(doc["duration_s"]),
            acquired=datetime.fromisoformat(doc["acquired"]),
            renewed=datetime.fromisoformat(doc["renewed"]),
            transitions=int(doc["fence"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{where}: not a lock record ({exc}); delete it if no run is active"
        ) from exc


class S3LockBackend:
    """The record as ``_locks/<job>.json``: created create-only, changed only by If-Match."""

    def __init__(self, store: Store, key: str) -> None:
        self.store = store
        self.key = key

    @property
    def name(self) -> str:
        return self.store.url(self.key)

    def get(self) -> Versioned | None:
        try:
            obj = self.store.get(self.key)
        except ObjectNotFound:
            return None
        return Versioned(record_from_json(obj.body, self.name), obj.etag)

    def _put(self, record: LockRecord, **condition: Any) -> Versioned:
        body = json.dumps(record_to_json(record), sort_keys=True).encode()
        try:
            result = self.store.put(self.key, body, content_type="application/json", **condition)
        except PreconditionFailed as exc:
            raise Conflict(str(exc)) from exc
        return Versioned(record, result.etag)

    def create(self, record: LockRecord) -> Versioned:
        return self._put(record, if_none_match=True)

    def update(self, record: LockRecord, version: str) -> Versioned:
        return self._put(record, if_match=version)


class NoLock:
    """No mutual exclusion (OCHINAI_LOCK=none, a dry run): fence 0, always writable."""

    fence = 0

    def acquire(self, wait: float) -> NoLock:
        return self

    def describe_holder(self) -> str:
        return "nobody"

    def __enter__(self) -> NoLock:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def held(self) -> bool:
        return True

    def check_writable(self) -> None:
        return None

    def release(self) -> None:
        return None
