"""A call that ends in time: run in a thread of its own and given up when its time is out.

A request that hangs must not hold the lock's renewal past its deadline, nor the end of
a stopped run past the pod's termination grace. botocore and urllib3 bound a request
only by their timeouts times their retries; this bounds the whole call. A call given
up goes on in its daemon thread, and whatever it returns later is ignored: callers
count validity from when they sent a request, so a late answer never extends anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ochinai.runtime.errors import TransientError

T = TypeVar("T")


class NotInTime(TransientError):
    """The call did not end within its time; it was given up."""


def _wait(event: threading.Event, seconds: float) -> bool:
    return event.wait(seconds)


def within(
    fn: Callable[[], T],
    seconds: float,
    what: str,
    *,
    wait: Callable[[threading.Event, float], bool] = _wait,
) -> T:
    """``fn()``, or NotInTime once ``seconds`` pass first; ``fn``'s own error is raised as is.

    ``wait(event, seconds)`` waits for the call (tests pass one that moves a fake clock).
    """
    if seconds <= 0:
        raise NotInTime(f"{what}: no time left to try")
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=f"bounded {what}", daemon=True).start()
    if not wait(done, seconds):
        raise NotInTime(f"{what}: no answer within {seconds:.1f}s; given up")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
