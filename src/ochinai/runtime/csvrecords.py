"""Where a CSV's records start and end as pyarrow reads them: the largest, and a quote
left open; and the record after the source that tells the second."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import IO, Any

from ochinai.runtime.errors import DataError

# pyarrow takes a quoted value that runs to the end of the file as a value, so one quote
# that never closes makes the rest of the file a single value, without complaint; and it
# refuses a record larger than its block without saying which. ``WithLastRecord`` puts a
# record after the source that pyarrow reads as its own row only if no quote is left
# open. ``scan`` tells the two apart and says where, reading the stream once, a chunk at
# a time, by pyarrow's rules: a quote opens a quoted value only at the start of a field;
# inside one, two quotes are a quote and one ends the quoting; after that, as in an
# unquoted value, a quote is text.

CHUNK = 1 << 20
_QUOTE = ord('"')
# A field: quoted, then any text up to its end; or text; or nothing. Possessive, so a
# quoted value that does not end in the chunk fails the match rather than backtracking.
_FIELD = rb'(?:"(?:[^"]++|"")*+"[^,\r\n]*+|[^,\r\n"][^,\r\n]*+)?'
# A record that ends in the chunk (a CR at its end may be half of a CRLF).
_RECORD = re.compile(rb"%s(?:,%s)*+(?:\r\n|\n|\r(?!\Z))" % (_FIELD, _FIELD))
_FIELD_END = re.compile(rb",|\r\n|\r|\n")
_START, _TEXT, _QUOTED, _CLOSING = range(4)  # in a field: at its start, text, quoted, a quote


QUOTE_HINT = 'end the value with a quote, and write a quote inside a value as two ("")'

# The last value of the record read after the source: after a source that ends in a
# quoted value, that record's quote ends the value instead, and no row ends with LAST.
LAST = '\x01"\x02'


def open_quote(where: str, line: int | None = None, rest: int = 0) -> DataError:
    """The error for a quote on ``line`` that opens a value the file's last ``rest`` bytes
    are; without the line when it is not known."""
    if line is None:
        return DataError(f"{where}: unreadable CSV: a quoted value never closes; {QUOTE_HINT}")
    return DataError(
        f"{where} line {line}: a quoted value opens here and never closes, so the rest of "
        f"the file ({rest:,} bytes) would be that one value; {QUOTE_HINT}"
    )


class WithLastRecord(io.RawIOBase):
    """The source, then a record of ``fields`` fields whose last value is ``LAST``."""

    def __init__(self, source: IO[bytes], fields: int) -> None:
        self._source = source
        self._last = b"\n"
        self._tail: bytes | None = None
        self._record = b"," * (fields - 1) + LAST.encode() + b"\n"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._tail is None:
            data = self._source.read(len(buffer))
            if data:
                buffer[: len(data)] = data
                self._last = data[-1:]
                return len(data)
            # A line break first unless the source ends with one (an empty line is a row
            # in a one-column file).
            self._tail = (b"" if self._last in b"\r\n" else b"\n") + self._record
        n = min(len(buffer), len(self._tail))
        buffer[:n] = self._tail[:n]
        self._tail = self._tail[n:]
        return n


class CrlfKept(io.RawIOBase):
    """The source, read so that no read ends between a CR and what follows it.

    pyarrow drops the LF of a CRLF inside a quoted value when one of its blocks ends
    between the CR and the LF; a block here is what one read returns, so a read that
    would end in a CR leaves it for the next one (pyarrow takes short reads as they are).
    """

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self._held = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        if self._held and want <= len(self._held):  # room for the CR held back alone
            buffer[:1], self._held = self._held, b""
            return 1
        data = self._held + self._source.read(want - len(self._held))
        self._held = b""
        if len(data) > 1 and data.endswith(b"\r"):
            data, self._held = data[:-1], b"\r"
        buffer[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class Records:
    """What the scan found, as offsets in the stream."""

    largest: int  # bytes, its line break included
    largest_at: int  # where that record starts
    open_quote: int | None  # the quote that opens a value the file ends in
    end: int  # the stream's length


def scan(stream: IO[bytes]) -> Records:
    """The largest record of ``stream`` and the quote left open at its end, if one is."""
    scanner = _Scanner()
    while chunk := stream.read(CHUNK):
        scanner.feed(chunk)
    return scanner.finish()


def line_at(stream: IO[bytes], offset: int) -> int:
    """The physical line (1-based) of the byte at ``offset``: lines end in LF, CRLF or CR."""
    breaks, seen, cr = 0, 0, False
    while seen < offset and (chunk := stream.read(min(CHUNK, offset - seen))):
        breaks += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
        if cr and chunk.startswith(b"\n"):  # a CRLF across two chunks
            breaks -= 1
        cr = chunk.endswith(b"\r")
        seen += len(chunk)
    return breaks + 1


class _Scanner:
    """Records matched whole while they end in the chunk; one that goes on, lexed."""

    def __init__(self) -> None:
        self.offset = 0  # of the chunk being fed
        self.start = 0  # of the record being read
        self.lexing = False  # the record did not end in the chunk it started in
        self.state = _START
        self.quote = 0  # where the last quoted value opened
        self.largest, self.largest_at = 0, 0

    def feed(self, chunk: bytes) -> None:
        pos: int | None = 0
        while pos is not None and pos < len(chunk):
            if not self.lexing:
                match = _RECORD.match(chunk, pos)
                if match is not None:
                    pos = match.end()
                    self._ended(self.offset + pos)
                    continue
                self.lexing, self.state = True, _START
            pos = self._lex(chunk, pos)
        self.offset += len(chunk)

    def finish(self) -> Records:
        open_quote = None
        if self.lexing:  # the last record has no line break
            if self.state == _QUOTED:
                open_quote = self.quote
            else:
                self._ended(self.offset)
        return Records(self.largest, self.largest_at, open_quote, self.offset)

    def _ended(self, end: int) -> None:
        if end - self.start > self.largest:
            self.largest, self.largest_at = end - self.start, self.start
        self.start = end

    def _lex(self, chunk: bytes, pos: int) -> int | None:
        """Read on in the record: where it ends in ``chunk``, None if it goes on after it."""
        while pos < len(chunk):
            if self.state == _QUOTED:
                pos = chunk.find(b'"', pos) + 1
                if not pos:
                    return None
                self.state = _CLOSING
            elif self.state == _CLOSING:  # two quotes are one; after one, text
                if chunk[pos] == _QUOTE:
                    self.state, pos = _QUOTED, pos + 1
                else:
                    self.state = _TEXT
            elif self.state == _START and chunk[pos] == _QUOTE:
                self.state, self.quote, pos = _QUOTED, self.offset + pos, pos + 1
            else:
                end = _FIELD_END.search(chunk, pos)
                if end is None:
                    self.state = _TEXT
                    return None
                pos, self.state = end.end(), _START
                if end[0] != b",":
                    self.lexing = False
                    self._ended(self.offset + pos)
                    return pos
        return None
