"""An object downloaded to a local file in a thread, read while it is still arriving.

A backup reads its source twice over the network's time otherwise: the whole object
downloaded, then the file parsed. Here the download runs in a thread (hashing and
writing each MiB) while the parser reads the file behind it; a read that reaches the
end of what has arrived waits for more, and an error of the download (the connection
lost, the run cancelled) is raised by that read, in the reader's thread.

Nothing waits without end: a waiting read wakes when its reader is closed and gives up
on a stop signal (``cancel.cancellation``), as the download itself does between chunks,
so that a stalled store cannot keep a stopped run from its summary.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

from ochinai.runtime.cancel import Terminated, cancellation

THREAD_NAME = "download"
# How long ``stop`` waits for the thread: a read under way ends at the next chunk, or at
# the store's read timeout when the connection hangs; the thread (a daemon) is left then.
STOP_WAIT = 5.0
POLL = 0.25  # seconds between looks at a stop signal while waiting


class Stopped(Exception):
    """The download was given up (the run failed or was stopped) before its end."""


class FollowedDownload:
    """``store``'s object ``key`` into ``path``: ``open`` reads it as it comes, ``result``
    waits for the end (its sha256 and size), ``stop`` gives it up."""

    def __init__(self, store: Any, key: str, path: Path) -> None:
        self.path = path
        self._store, self._key = store, key
        self._arrived = threading.Condition()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._digest = ""
        path.touch()
        self._thread = threading.Thread(target=self._download, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def open(self) -> IO[bytes]:
        """The file from its start, reads waiting for what has not arrived yet; unbuffered
        (the CSV reader buffers it), so that closing it never waits on a reading thread."""
        return cast(IO[bytes], _Following(self))

    def result(self, check: Callable[[], None] = lambda: None) -> tuple[str, int]:
        """The object's sha256 and size, once all of it is in the file; ``check`` is called
        while waiting (the run's ``ctx.check``: a stop request ends the wait)."""
        while self._thread.is_alive():
            check()
            self._thread.join(POLL)
        if self._error is not None:
            raise self._error
        return self._digest, self._size

    def sha256(self) -> str:
        """The object's sha256, once all of it is in the file."""
        return self.result()[0]

    def stop(self) -> None:
        """End the download if it is not over (the run failed or was stopped) and wait a
        while for its thread; readers and ``result`` then raise Stopped."""
        with self._arrived:
            if not self._done and self._error is None:
                self._error = Stopped(f"the download of {self._key} was given up")
            self._arrived.notify_all()
        self._thread.join(STOP_WAIT)

    def _download(self) -> None:
        try:
            self._digest, _ = self._store.download(self._key, self.path, self._arrived_bytes)
        except BaseException as exc:  # raised by the readers, and by result()
            self._error = self._error or exc
        finally:
            with self._arrived:
                self._done = True
                self._arrived.notify_all()

    def _arrived_bytes(self, count: int) -> None:
        """A chunk is in the file: wake the readers; a stop ends the download here."""
        if self._error is not None:
            raise self._error  # stopped: Stopped, kept as the download's error
        if cancellation.requested:
            raise Terminated(cancellation.signal_name or "a signal")
        with self._arrived:
            self._size += count
            self._arrived.notify_all()

    def _wait_beyond(self, offset: int, reader: _Following) -> bool:
        """Wait until bytes past ``offset`` have arrived (True) or none will (False)."""
        with self._arrived:
            while self._size <= offset and not self._done and self._error is None:
                if reader.closed:
                    raise ValueError("read of a closed download")
                if cancellation.requested:
                    raise Terminated(cancellation.signal_name or "a signal")
                self._arrived.wait(POLL)
            if self._error is not None:
                raise self._error
            return self._size > offset


class _Following(io.RawIOBase):
    """The downloaded file, read from its start at the download's pace."""

    def __init__(self, download: FollowedDownload) -> None:
        self._download = download
        self._file = open(download.path, "rb")  # noqa: SIM115 (closed by close())
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._download._wait_beyond(self._offset, self):
            return 0  # the end of the object
        count = self._file.readinto(buffer)
        self._offset += count
        return count

    def close(self) -> None:
        """Closed, also while another thread waits in a read: that read raises."""
        super().close()
        self._file.close()
        with self._download._arrived:
            self._download._arrived.notify_all()
