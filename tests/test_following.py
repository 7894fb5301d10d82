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


class Gated:
    """A store whose object arrives a chunk each time the test opens the gate."""

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
            got += reader.read1(len(chunk))  # waits for the chunk, no further
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
        assert reader.read1(10) == b"x" * 10
    store.gate.release(1_000_000)  # the object flows on until the thread sees the stop
    download.stop()
    assert not threads()
