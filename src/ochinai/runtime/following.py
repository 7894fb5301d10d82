"""An object downloaded to a local file in a thread, read while it is still arriving.

A backup reads its source twice over the network's time otherwise: the whole object
downloaded, then the file parsed. Here the download runs in a thread (hashing and
writing each MiB) while the parser reads the file behind it; a read that reaches the
end of what has arrived waits for more, and an error of the download (the connection
lost, the run cancelled) is raised by that read, in the reader's thread.
"""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path
from typing import IO, Any

MiB = 1024 * 1024
THREAD_NAME = "download"
# How long ``stop`` waits for the thread: a read under way ends at the next chunk, or at
# the store's read timeout when the connection hangs; the thread (a daemon) is left then.
STOP_WAIT = 5.0


class FollowedDownload:
    """``store``'s object ``key`` into ``path``: ``open`` reads it as it comes, ``result``
    waits for the end (its sha256 and size), ``stop`` gives it up."""

    def __init__(self, store: Any, key: str, path: Path) -> None:
        self.path = path
        self._store, self._key = store, key
        self._arrived = threading.Condition()
        self._size = 0
        self._done = False
        self._stopped = False
        self._error: BaseException | None = None
        self._digest = ""
        path.touch()
        self._thread = threading.Thread(target=self._download, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def open(self) -> IO[bytes]:
        """The file from its start, reads waiting for what has not arrived yet."""
        return io.BufferedReader(_Following(self), MiB)

    def result(self) -> tuple[str, int]:
        """The object's sha256 and size, once all of it is in the file."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest, self._size

    def sha256(self) -> str:
        """The object's sha256, once all of it is in the file."""
        return self.result()[0]

    def stop(self) -> None:
        """End the download (the run failed or was cancelled) and wait for its thread."""
        with self._arrived:
            self._stopped = True
            self._arrived.notify_all()
        self._thread.join(STOP_WAIT)

    def _download(self) -> None:
        digest = hashlib.sha256()
        try:
            with self._store.open_read(self._key) as body, open(self.path, "wb") as out:
                while not self._stopped and (chunk := body.read(MiB)):
                    digest.update(chunk)
                    out.write(chunk)
                    out.flush()  # readers open the file by its name
                    with self._arrived:
                        self._size += len(chunk)
                        self._arrived.notify_all()
            self._digest = digest.hexdigest()
        except BaseException as exc:  # raised by the reader, and by result()
            self._error = exc
        finally:
            with self._arrived:
                self._done = True
                self._arrived.notify_all()

    def _wait_beyond(self, offset: int) -> bool:
        """Wait until bytes past ``offset`` have arrived (True) or none will (False)."""
        with self._arrived:
            while self._size <= offset and not self._done and not self._stopped:
                self._arrived.wait()
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
        if not self._download._wait_beyond(self._offset):
            return 0  # the end of the object
        count = self._file.readinto(buffer)
        self._offset += count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()
