"""Progress of long work: a ``progress`` log line at most every 10 s, and a bar on a terminal.

A job asks its context for one (``ctx.progress("reading s3://b/in/sales.csv",
total_bytes=size)``) and calls ``update(rows=..., bytes=...)`` with what is done so far,
as often as it likes: the reporter decides when to say something. The log line carries
the counts, the total where it is known (an object's size), the rate and the elapsed
time; on a terminal a single bar on stderr is redrawn at most five times a second.
``done()`` says the last line and ends the bar.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

INTERVAL = 10.0  # seconds between two progress lines in the log
BAR_INTERVAL = 0.2  # seconds between two redraws of the terminal bar
BAR_WIDTH = 24


class Progress:
    """One piece of long work's progress."""

    def __init__(
        self,
        what: str,
        log: logging.Logger,
        now: Callable[[], datetime],
        *,
        total_bytes: int | None = None,
        interval: float = INTERVAL,
        bar: IO[str] | None = None,
    ) -> None:
        self.what, self.log, self.now = what, log, now
        self.total_bytes = total_bytes
        self.interval = interval
        self.bar = bar
        self.rows = 0
        self.bytes = 0
        self.lines = 0  # progress lines logged
        self._started = now()
        self._logged_at = 0.0
        self._drawn_at = -BAR_INTERVAL

    def update(self, *, rows: int | None = None, bytes: int | None = None) -> None:
        """What is done so far (totals, not increments)."""
        if rows is not None:
            self.rows = rows
        if bytes is not None:
            self.bytes = bytes
        elapsed = self._elapsed()
        if elapsed - self._logged_at >= self.interval:
            self._logged_at = elapsed
            self._log(elapsed)
        if self.bar is not None and elapsed - self._drawn_at >= BAR_INTERVAL:
            self._drawn_at = elapsed
            self._draw(elapsed)

    def done(self) -> None:
        """The work is over: the bar ends its line; a last log line if any was logged."""
        elapsed = self._elapsed()
        if self.bar is not None:
            self._draw(elapsed)
            self.bar.write("\n")
            self.bar.flush()
        if self.lines:
            self._log(elapsed)

    def _elapsed(self) -> float:
        return (self.now() - self._started).total_seconds()

    def _log(self, elapsed: float) -> None:
        self.lines += 1
        if self.bar is not None:  # the log line on a line of its own; the bar comes back
            self.bar.write("\r\x1b[K")
            self.bar.flush()
        fields: dict[str, object] = {"event": "progress", "elapsed_s": round(elapsed, 1)}
        if self.rows:
            fields.update(rows=self.rows, rows_per_s=round(self.rows / max(elapsed, 1e-9)))
        if self.bytes:
            fields.update(bytes=self.bytes, bytes_per_s=round(self.bytes / max(elapsed, 1e-9)))
        if self.total_bytes:
            fields.update(total_bytes=self.total_bytes)
        self.log.info("%s: %s", self.what, self._words(elapsed), extra=fields)

    def _words(self, elapsed: float) -> str:
        parts = []
        if self.rows:
            parts.append(f"{self.rows:,} rows")
        if self.bytes or self.total_bytes:
            done = _mb(self.bytes)
            if self.total_bytes:
                share = min(self.bytes / self.total_bytes, 1.0)
                done += f" of {_mb(self.total_bytes)} ({share:.0%})"
            parts.append(done)
        if elapsed > 0 and self.bytes:
            parts.append(f"{_mb(self.bytes / elapsed)}/s")
        elif elapsed > 0 and self.rows:
            parts.append(f"{self.rows / elapsed:,.0f} rows/s")
        parts.append(f"{elapsed:.0f} s")
        return ", ".join(parts)

    def _draw(self, elapsed: float) -> None:
        assert self.bar is not None
        if self.total_bytes:
            share = min(self.bytes / self.total_bytes, 1.0)
            filled = int(share * BAR_WIDTH)
            bar = "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] "
        else:
            bar = ""
        self.bar.write(f"\r{bar}{self._words(elapsed)}\x1b[K")
        self.bar.flush()


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def terminal_bar() -> IO[str] | None:
    """stderr when it is a terminal (a person is watching), else None: logs only."""
    return sys.stderr if sys.stderr.isatty() else None


class CountingReader(io.RawIOBase):
    """A binary stream that counts the bytes read through it (``count``)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)
