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
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ochinai.runtime.errors import TransientError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Terminated(TransientError):
    """A stop signal arrived while the job worked; the run ends 75 at the next check."""

    outcome = "terminated"

    def __init__(self, signal_name: str) -> None:
        super().__init__(
            f"stopped by {signal_name} before the job finished; the next run redoes it"
        )
        self.signal_name = signal_name


class Cancellation:
    """The process's stop request: set by a signal, checked by the runtime."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None
        self._armed_in: int | None = None

    @property
    def requested(self) -> bool:
        """A stop signal arrived during this run."""
        return self._event.is_set()

    def request(self, signal_name: str) -> None:
        """Record a stop request (what the signal handler does, and all it does)."""
        if self.signal_name is None:
            self.signal_name = signal_name
        self._event.set()

    def reset(self) -> None:
        """Forget a request: a new run starts (tests run many in one process)."""
        self._event.clear()
        self.signal_name = None
        self._armed_in = None

    def check(self) -> None:
        """Raise Terminated when a stop was requested and the job's work is under way here."""
        if self._armed_in == threading.get_ident() and self._event.is_set():
            raise Terminated(self.signal_name or "a signal")

    def sleep(self, seconds: float) -> None:
        """Sleep that a stop request cuts short (then ``check()`` raises)."""
        self.check()
        if seconds > 0:
            self._event.wait(seconds)
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

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Record SIGTERM and SIGINT instead of dying of them, for the block (main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.request(signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


# One per process: a run is a process, and a signal is sent to the process.
cancellation = Cancellation()
