"""Which encoding a CSV is in, and where exactly its bytes stop being that encoding.

Bytes that do not decode are bad input (65), never a crash: the message names the
file, the line, the byte offset, the byte and the encoding tried. CP932 goes through
``Cp932ToUtf8`` on its way to pyarrow, and UTF-8 through ``CheckedUtf8`` where a reader
wants it checked there (the report), each knowing the position of a bad byte as it meets
it; otherwise pyarrow checks UTF-8 as it parses, and when it finds a bad byte the file is
read again here (``locate``) to say where.
"""

from __future__ import annotations

import codecs
import io
from typing import IO, Any

from ochinai.runtime.declare import choice, setting
from ochinai.runtime.errors import DataError

HINT = "set the encoding if the file is in another one"  # each job names its setting
_CHUNK = 1 << 20


def detect_encoding(head: bytes) -> str:
    """UTF-8 (with or without BOM) when the head decodes as UTF-8, else CP932 (Shift_JIS)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "cp932"
    return "utf-8"


def refuse_utf16(head: bytes, where: str) -> None:
    """A DataError for UTF-16 (what Excel saves as "Unicode text"), named as such.

    Read as UTF-8 or CP932 it is text with a NUL between every two letters: a header
    that matches nothing, or an error about a byte, neither of which says what to do.
    Told by its byte order mark, or by NULs at every other byte of its start.
    """
    sample = head[:1024]
    halves = (sample[0::2].count(0), sample[1::2].count(0))
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (
        len(sample) >= 8 and max(halves) > len(sample) // 4
    ):
        raise DataError(
            f'{where} is UTF-16 (Excel\'s "Unicode text"); save it as CSV UTF-8 or CP932'
        )


def as_parsed(
    stream: io.BufferedReader[Any], encoding: str, where: str, newline: int, hint: str
) -> IO[bytes]:
    """``stream``, at its start, as pyarrow is to read it: CP932 decoded to UTF-8 (a bad
    byte a DataError naming its place), UTF-8 without its BOM."""
    if encoding == "cp932":
        return io.BufferedReader(Cp932ToUtf8(stream, where, newline, hint))
    if stream.peek(len(codecs.BOM_UTF8)).startswith(codecs.BOM_UTF8):
        stream.read(len(codecs.BOM_UTF8))
    return stream


def newline_byte(head: bytes) -> int:
    """The byte that ends a line: LF (also for CRLF), or CR in a CR-only (old Mac) file."""
    return 13 if b"\r" in head and b"\n" not in head else 10


def undecodable(
    where: str, encoding: str, offset: int, bad: bytes, line: int, hint: str = HINT
) -> DataError:
    """The DataError for a byte at ``offset`` (0-based) on physical ``line`` that is not text."""
    shown = " ".join(f"0x{b:02X}" for b in bad[:4]) or "end of file"
    return DataError(f"{where} line {line} (byte {offset}): not valid {encoding} ({shown}); {hint}")


class _Lines:
    """Counts the line breaks of the bytes seen so far, to name the line of an offset."""

    def __init__(self, newline: int) -> None:
        self.newline = bytes([newline])
        self.breaks = 0

    def line_at(self, chunk: bytes, index: int) -> int:
        """The physical line (1-based) of ``chunk[index]``, given the chunks before it."""
        return self.breaks + chunk.count(self.newline, 0, max(index, 0)) + 1

    def seen(self, chunk: bytes) -> None:
        self.breaks += chunk.count(self.newline)


def locate(
    stream: IO[bytes], encoding: str, where: str, newline: int, hint: str = HINT
) -> DataError | None:
    """Read ``stream`` from its start and return the error for its first undecodable byte."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines, offset = _Lines(newline), 0
    while True:
        chunk = stream.read(_CHUNK)
        pending = decoder.getstate()[0]
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            data = pending + chunk  # pending: a lead byte or two, never a line break
            at = offset - len(pending) + exc.start
            line = lines.line_at(data, exc.start)
            return undecodable(where, encoding, at, data[exc.start : exc.end], line, hint)
        if not chunk:
            return None
        lines.seen(chunk)
        offset += len(chunk)


class Cp932ToUtf8(io.RawIOBase):
    """A raw stream of the UTF-8 that a CP932 stream decodes to; a bad byte is a DataError."""

    encoding = "cp932"

    def __init__(self, raw: IO[bytes], where: str, newline: int, hint: str = HINT) -> None:
        self._raw, self._where, self._hint = raw, where, hint
        self._decoder = codecs.getincrementaldecoder(self.encoding)()
        self._lines = _Lines(newline)
        self._offset = 0
        self._out = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out and not self._done:
            chunk = self._raw.read(_CHUNK)
            pending = self._decoder.getstate()[0]
            try:
                text = self._decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                data = pending + chunk
                at = self._offset - len(pending) + exc.start
                line = self._lines.line_at(data, exc.start)
                raise undecodable(
                    self._where, self.encoding, at, data[exc.start : exc.end], line, self._hint
                ) from None
            self._lines.seen(chunk)
            self._offset += len(chunk)
            self._out = self._converted(chunk, text)
            self._done = not chunk
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _converted(self, chunk: bytes, text: str) -> bytes:
        return text.encode("utf-8")


class CheckedUtf8(Cp932ToUtf8):
    """A raw stream of UTF-8 passed on as it is, checked: a bad byte is a DataError.

    pyarrow checks UTF-8 too, but only once it converts a block, and it cannot name the
    line; a row it rejects for its field count before that has its text decoded by
    pyarrow for the handler, which fails on a bad byte and leaves the row unnumbered.
    """

    encoding = "utf-8"

    def _converted(self, chunk: bytes, text: str) -> bytes:
        return chunk


def encoding_setting(env: str, of: str) -> str:
    """The setting of a CSV's encoding, declared alike by every job that reads CSV."""
    return setting(
        env,
        choice("auto", "utf-8", "utf-8-sig", "cp932"),
        "auto",
        f"encoding of {of}; auto tells UTF-8 (with or without BOM) from CP932",
    )
