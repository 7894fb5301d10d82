"""The commands' entry point: a stop signal counts from the first instant, imports included.

The runtime records SIGTERM and SIGINT while a run is under way (runtime/cancel.py);
before that, in the second or so of imports and settings, the default action would
end the process with no summary line. Here they are recorded from the start, with only
the standard library loaded, and the run takes them up as soon as it handles signals
itself: it then stops as it would have, with exit 75 and its summary. Once the command
is over, they are ignored, so that Python's shutdown cannot die of one.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import signal
import sys
import threading

_received: list[str] = []


def _record(signum: int, frame: object) -> None:
    _received.append(signal.Signals(signum).name)


def main() -> int:
    """``ochinai`` and the per-job scripts."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _record)
    # Arrow's allocator is chosen when pyarrow first allocates, before any job runs: the
    # C library's, so that what is freed goes back (runtime/memory.py); once mimalloc
    # has started it holds 25 MB more at the 5M-row backup's peak. A value set in the
    # environment is the default instead (the report's and the backup's actions still
    # switch to the C library's for their work: runtime/memory.py).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    sys.meta_path.insert(0, _WithoutPandas())
    from ochinai.runtime.cancel import cancellation

    cancellation.early = _received  # the same list: a signal from now on lands there too
    from ochinai.cli import main as cli_main

    try:
        code = cli_main()
        _exit_now_if_threads_remain(code)
        return code
    finally:
        # The command is over and its exit code stands. Python puts the default action
        # back for the signals it handles while it shuts down, and a SIGTERM then would
        # end the process with -15 after its summary said 0; an ignored signal it leaves
        # ignored.
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, signal.SIG_IGN)


class _WithoutPandas(importlib.abc.MetaPathFinder):
    """pandas is not imported in a command's process: no job uses it.

    pyarrow imports pandas, when it is installed, the first time it converts a Python
    value (``pa.scalar``, ``pa.array``, a number given to a compute function), only to ask
    whether the value is a pandas object: 0.45 s and 35 MB of every report and backup run.
    Told that pandas is missing, it converts the value as it would have.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is not used in ochinai's commands", name=name)
        return None


def _exit_now_if_threads_remain(code: int) -> None:
    """End the process with ``code`` at once when a thread is still at work.

    A call given up in time (runtime/bounded.py: a lock renewal or release that did not
    answer) goes on in its daemon thread, waiting on a socket. Python 3.11 ends such a
    thread during its shutdown, and when the answer arrives just then the process dies
    of SIGABRT after its summary said 0 or 75. The summary is written and the streams are
    flushed: nothing is left to do but exit.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if not any(t.is_alive() for t in others):
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
