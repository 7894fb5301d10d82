"""A download read while it arrives: the same bytes, its errors raised to the reader."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from ochinai.runtime.following import THREAD_NAME, FollowedDownload
from ochinai.runtime.storage import Store


class Gated:
    """A store whose object arrives a chunk each time the test opens the gate."""

    download = Store.download  # the store's own loop, over this open_read

    def __init__(
        self, chunks: list[bytes], fail_after: int | None = None, endless: bool = False
    ) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.endless = endless  # the chunks again and again: only a stop ends it
        self.gate = threading.Semaphore(0)

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        store = self

        class Body:
            sent = 0

            def read(self, n: int) -> bytes:
                store.gate.acquire()
                if store.fail_after is not None and self.sent == store.fail_after:
                    raise ConnectionResetError("the connection was reset mid-object")
                if self.sent == len(store.chunks) and not store.endless:
                    return b""
                self.sent += 1
                return store.chunks[(self.sent - 1) % len(store.chunks)]

        yield Body()  # type: ignore[misc]


def threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == THREAD_NAME]


def test_a_reader_gets_each_chunk_as_it_arrives_and_the_whole_at_the_end(
    tmp_path: Path,
) -> None:
    chunks = [bytes([n]) * (1000 + n) for n in range(5)]
    store = Gated(chunks)
    download = FollowedDownload(store, "in/sales.csv", tmp_path / "source")
    with download.open() as reader:
        got = b""
        for chunk in chunks:
            store.gate.release()
            got += reader.read(len(chunk))  # waits for the chunk, no further
            assert got == b"".join(chunks[: len(got) and chunks.index(chunk) + 1])
        store.gate.release()  # the end of the object
        assert reader.read() == b""
    whole = b"".join(chunks)
    assert download.result() == (hashlib.sha256(whole).hexdigest(), len(whole))
    assert (tmp_path / "source").read_bytes() == whole
    with download.open() as again:  # reopened from its start (a second pass)
        assert again.read() == whole
    assert not threads()


def test_a_download_that_fails_half_way_fails_the_reader_with_its_error(
    tmp_path: Path,
) -> None:
    store = Gated([b"a" * 100, b"b" * 100, b"c" * 100], fail_after=2)
    download = FollowedDownload(store, "in/sales.csv", tmp_path / "source")
    for _ in range(3):
        store.gate.release()
    with download.open() as reader, pytest.raises(ConnectionResetError, match="mid-object"):
        reader.read()
    with pytest.raises(ConnectionResetError):
        download.result()
    assert not threads()


def test_stop_ends_a_download_the_reader_no_longer_wants(tmp_path: Path) -> None:
    """An object that would never end: the stop ends the thread at its next chunk."""
    store = Gated([b"x" * 10], endless=True)
    download = FollowedDownload(store, "in/sales.csv", tmp_path / "source")
    store.gate.release()
    with download.open() as reader:
        assert reader.read(10) == b"x" * 10
    store.gate.release(1_000_000)  # the object flows on until the thread sees the stop
    download.stop()
    assert not threads()


def test_a_closed_reader_wakes_the_thread_waiting_in_its_read(tmp_path: Path) -> None:
    """The parser's thread waits for bytes; the job, failing, closes the reader: the read
    raises at once, and no one waits for the stalled store."""
    store = Gated([b"y" * 10])
    download = FollowedDownload(store, "in/sales.csv", tmp_path / "source")
    reader = download.open()
    raised: list[BaseException] = []

    def read() -> None:
        try:
            reader.read(10)
        except BaseException as exc:
            raised.append(exc)

    waiting = threading.Thread(target=read)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()  # no byte has arrived
    reader.close()
    waiting.join(5)
    assert not waiting.is_alive() and isinstance(raised[0], ValueError)
    store.gate.release(10)  # the store answers at last; the download ends
    download.stop()
    assert not threads()


def test_a_stop_signal_ends_a_waiting_read_and_the_download(tmp_path: Path) -> None:
    """SIGTERM while the store stalls: the waiting read raises Terminated (75)."""
    from ochinai.runtime.cancel import Terminated, cancellation

    store = Gated([b"z" * 10], endless=True)
    download = FollowedDownload(store, "in/sales.csv", tmp_path / "source")
    try:
        cancellation.request("SIGTERM")
        with download.open() as reader, pytest.raises(Terminated):
            reader.read(10)
        store.gate.release(10)  # the stalled read returns; the thread sees the request
        download._thread.join(5)
        with pytest.raises(Terminated):
            download.result()
    finally:
        cancellation.reset()
    assert not threads()


def test_a_stopped_download_is_never_read_as_a_shorter_object(tmp_path: Path) -> None:
    """Given up half way, it raises Stopped to readers and to result(), never an end."""
    from ochinai.runtime.following import Stopped

    store = Gated([b"w" * 10], endless=True)
    download = FollowedDownload(store, "in/sales.csv", tmp_path / "source")
    store.gate.release(3)
    store.gate.release(1_000_000)
    download.stop()
    with download.open() as reader, pytest.raises(Stopped):
        reader.read()
    with pytest.raises(Stopped):
        download.result()
    assert not threads()
