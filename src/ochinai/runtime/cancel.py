"""SIGTERM as a request to stop, checked at the runtime's own points, never raised from a handler.

Kubernetes stops a pod with SIGTERM, then SIGKILL after the grace period. A handler
that raised inside whatever was running would raise inside botocore or urllib3, which
wrap it, retry, or swallow it; so the handler only records the signal. The runtime
checks it before every store request, lock operation and retry, in its sleeps and
between a job's steps (``check()``), and only in the thread that runs the job and
only while the job's work is under way (``armed``): the lock's renewal, the release,
the run record and the summary line go on, so a stopped run still says so and frees
its lock.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ochinai.runtime.errors import EX_TEMPFAIL, OchinaiError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(OchinaiError):
    """A stop signal arrived while the job worked; the run ends 75 at the next check.

    Not a TransientError, so that no retry loop takes it for a flaky network.
    """

    exit_code = EX_TEMPFAIL
    outcome = "terminated"

    def __init__(self, signal_name: str) -> None:
        super().__init__(
            f"stopped by {signal_name} before the job finished; the next run redoes it"
        )
        self.signal_name = signal_name


class StopNow(BaseException):
    """Raised in the main thread when a stopped run did not reach a check within its grace.

    A BaseException, so that libraries' ``except Exception`` do not retry through it.
    """


_POLL = 0.1  # seconds: how soon a sleeping run notices a stop request


class Cancellation:
    """The process's stop request: set by a signal, checked by the runtime.

    The handler only sets attributes: taking a lock (``Event.set``) in a handler can
    deadlock against the same thread holding it; waits poll instead.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._requested_at: float | None = None
        self._armed_in: int | None = None
        self._armed_since = 0.0
        self.grace = 20.0  # after a stop request, how long the work may go on unchecked
        # After a stop request, when the kubelet's SIGKILL comes (terminationGracePeriodSeconds).
        self.kill_after = 30.0
        # Signals received before the run handled them (recorded by ochinai.entry).
        self.early: list[str] = []

    @property
    def requested(self) -> bool:
        """A stop signal arrived during this run."""
        return self._requested_at is not None

    def request(self, signal_name: str) -> None:
        """Record a stop request (what the signal handler does, and all it does)."""
        if self._requested_at is None:
            self.signal_name = signal_name
            self._requested_at = time.monotonic()

    def reset(self) -> None:
        """Forget a request: a new run starts (tests run many in one process)."""
        self.signal_name = None
        self._requested_at = None
        self._armed_in = None

    def time_left(self, reserve: float = 1.0) -> float | None:
        """Seconds left for the run's ending (lock release, record, notices) before the
        pod is killed, keeping ``reserve`` for the summary line; None when not stopped."""
        at = self._requested_at
        if at is None:
            return None
        return max(0.0, at + self.kill_after - reserve - time.monotonic())

    def check(self) -> None:
        """Raise Terminated when a stop was requested and the job's work is under way here."""
        if self._armed_in == threading.get_ident() and self._requested_at is not None:
            raise Terminated(self.signal_name or "a signal")

    def sleep(self, seconds: float) -> None:
        """Sleep that a stop request cuts short (then ``check()`` raises)."""
        self.check()
        end = time.monotonic() + max(seconds, 0.0)
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(_POLL, left))
            self.check()

    @contextmanager
    def armed(self) -> Iterator[None]:
        """Within the block, in this thread, ``check()`` raises once a stop was requested."""
        previous = self._armed_in
        self._armed_in = threading.get_ident()
        try:
            self.check()
            yield
        finally:
            self._armed_in = previous

    def _overdue(self) -> bool:
        """Stopped, still at work in the main thread, and past the grace: interrupt it."""
        at = self._requested_at
        return (
            at is not None
            and self._armed_in == threading.main_thread().ident
            and time.monotonic() - at > self.grace
        )

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Record SIGTERM and SIGINT instead of dying of them, for the block (main thread).

        A watchdog thread interrupts the main thread (SIGUSR1, which raises StopNow) when
        a stopped run has not reached a check within ``grace``: a request that hangs
        must not keep the pod until SIGKILL, which would leave no summary and a lock.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.request(signal.Signals(signum).name)

        def interrupt(signum: int, frame: FrameType | None) -> None:
            if self._armed_in == threading.get_ident():
                raise StopNow

        done = threading.Event()
        main = threading.main_thread().ident

        def watchdog() -> None:
            while not done.wait(_POLL):
                if self._overdue() and main is not None:
                    signal.pthread_kill(main, signal.SIGUSR1)
                    done.wait(1.0)  # once a second at most

        previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, interrupt)
        for name in self.early:  # a stop asked for during the imports: this run's
            self.request(name)
        self.early.clear()
        thread = threading.Thread(target=watchdog, name="stop-watchdog", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            for sig, old in previous.items():
                signal.signal(sig, old)


# One per process: a run is a process, and a signal is sent to the process.
cancellation = Cancellation()
