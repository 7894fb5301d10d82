"""Where a CSV's records start and end as pyarrow reads them: the largest, a quote left open.

pyarrow takes a quoted value that runs to the end of the file as a value, so one quote
that never closes makes the rest of the file a single value; and it refuses a record
larger than its block without saying which. ``scan`` tells the two apart and says where,
reading the stream once, a chunk at a time, by pyarrow's rules: a quote opens a quoted
value only at the start of a field; inside one, two quotes are a quote and one ends the
quoting; after that, as in an unquoted value, a quote is text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO

CHUNK = 1 << 20
_QUOTE = ord('"')
# A field: quoted, then any text up to its end; or text; or nothing. Possessive, so a
# quoted value that does not end in the chunk fails the match rather than backtracking.
_FIELD = rb'(?:"(?:[^"]++|"")*+"[^,\r\n]*+|[^,\r\n"][^,\r\n]*+)?'
# A record that ends in the chunk (a CR at its end may be half of a CRLF).
_RECORD = re.compile(rb"%s(?:,%s)*+(?:\r\n|\n|\r(?!\Z))" % (_FIELD, _FIELD))
_FIELD_END = re.compile(rb",|\r\n|\r|\n")
_START, _TEXT, _QUOTED, _CLOSING = range(4)  # in a field: at its start, text, quoted, a quote


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
