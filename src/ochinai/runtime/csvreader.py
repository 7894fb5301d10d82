"""The jobs' CSV reader: one file as pyarrow batches of text, its encoding and header told
from its head, and errors that name the file and the physical line."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ochinai.runtime.csvrecords import (
    LAST,
    QUOTE_HINT,
    CrlfKept,
    Records,
    WithLastRecord,
    line_at,
    open_quote,
    scan,
)
from ochinai.runtime.encoding import (
    HINT,
    CheckedUtf8,
    as_parsed,
    detect_encoding,
    locate,
    newline_byte,
    refuse_utf16,
)
from ochinai.runtime.errors import DataError

# How a file is read: its first PEEK bytes (the head) tell its encoding, line ends and
# header. The rest streams to pyarrow, CP932 decoded to UTF-8 on the way (and UTF-8
# checked on the way when rows are numbered: runtime/encoding.py), followed by the record
# of ``WithLastRecord``: a batch is passed on only once the next one is read, and the last
# one must end with that record's row, dropped here; if it does not, a quote left open
# made the rest of the file one value. The stream is read once; ``reopen`` opens the file
# again from its start, to say where a bad byte, a quote or a record is, and for a read
# with larger blocks (``ReadAgain``).
PEEK = 1 << 16
_FIELD_COUNT = re.compile(r"Expected (\d+) columns, got (\d+)")

Reopen = Callable[[], AbstractContextManager[IO[bytes]]]


class NeedsExactLines(Exception):
    """A row has the wrong number of fields and the threaded parser cannot say where."""


class ReadAgain(Exception):
    """A record is larger than the block: the reader's block now holds it; read it again."""


@dataclass(frozen=True)
class Rejected:
    """A row with the wrong number of fields, left out of the batch (numbered readers)."""

    number: int  # the record's number, the header's being 1
    breaks: int  # line breaks inside its values
    fields: int


@dataclass(frozen=True)
class Batch:
    """Rows of the file as text, a column per name, and where they are in the file."""

    records: pa.RecordBatch
    record: int  # the number of its first row's record, the header's being 1
    # The physical line its first row starts on, the header's first being 1; None when the
    # reader skips blank lines and so cannot number them (numbered=False).
    line: int | None
    newline: int  # the byte that ends a line: LF (also of CRLF), or CR in a CR-only file
    # Rows left out among its rows and right after them, by record number.
    rejected: tuple[Rejected, ...] = ()
    last: bool = False  # the file's last batch, which may have no rows

    def line_of(self, index: int) -> int:
        """The physical line of row ``index``, the rejected rows before it counted."""
        record = self.record + index
        line = self._line + index + count_newlines(self.records.slice(0, index), self.newline)
        for row in self.rejected:
            if row.number > record:
                break
            record += 1
            line += 1 + row.breaks
        return line

    def line_of_rejected(self, k: int) -> int:
        """The physical line of the ``k``-th rejected row."""
        row = self.rejected[k]
        rows_before = row.number - self.record - k
        breaks = count_newlines(self.records.slice(0, rows_before), self.newline)
        breaks += sum(before.breaks for before in self.rejected[:k])
        return row.number + self._line - self.record + breaks

    def following(self) -> tuple[int, int | None]:
        """The record number and the line of the row after this batch's rows."""
        rows = self.records.num_rows + len(self.rejected)
        if self.line is None:
            return self.record + rows, None
        breaks = count_newlines(self.records, self.newline) + sum(r.breaks for r in self.rejected)
        return self.record + rows, self.line + rows + breaks

    @property
    def _line(self) -> int:
        if self.line is None:
            raise ValueError("the reader of this batch does not number lines")
        return self.line


class CsvReader:
    """One CSV file: its head read when made, its rows by ``batches``.

    ``numbered``: every row has its physical line (``Batch.line_of``): blank lines are
    rows of empty values, and a row with the wrong number of fields is left out and
    handed over (``Batch.rejected``); a threaded read raises ``NeedsExactLines`` on such
    a row, as pyarrow cannot number it. Otherwise blank lines are skipped (but in a file
    of one column, where one is a row) and such a row is a DataError naming its line.
    ``nulls``: an unquoted empty value is null, else every value is a string.
    ``max_block``: with it, a record larger than ``block_size`` raises ``ReadAgain`` with
    a block that holds it, up to ``max_block``; without it, it is a DataError.
    """

    def __init__(
        self,
        stream: IO[bytes],
        where: str,
        *,
        encoding: str = "auto",
        hint: str = HINT,
        reopen: Reopen | None = None,
        numbered: bool = False,
        nulls: bool = False,
        threads: bool = True,
        block_size: int = 1 << 20,
        max_block: int | None = None,
    ) -> None:
        self.where, self.hint, self.reopen = where, hint, reopen
        self.numbered, self.nulls, self.threads = numbered, nulls, threads
        self.block_size, self.max_block = block_size, max_block
        buffered = io.BufferedReader(stream, PEEK)  # type: ignore[type-var]
        self._stream: io.BufferedReader[Any] | None = buffered
        self.head = buffered.peek(PEEK)[:PEEK]
        if not self.head.removeprefix(codecs.BOM_UTF8).strip():
            raise DataError(f"{where} is empty")
        refuse_utf16(self.head, where)
        self.encoding = detect_encoding(self.head) if encoding == "auto" else encoding
        self.newline = newline_byte(self.head)
        self.header: list[str] = next(self.head_records(), [])  # as in the file
        self._records: Records | None = None

    @property
    def complete(self) -> bool:
        """The head is the whole file."""
        return len(self.head) < PEEK

    def head_records(self) -> Iterator[list[str]]:
        """The records of the head, the header first, as the csv module reads them."""
        text_encoding = "utf-8-sig" if self.encoding.startswith("utf") else self.encoding
        text = self.head.decode(text_encoding, "replace")
        return csv.reader(io.StringIO(text, newline=""))  # a CR alone ends a line too

    def batches(self, names: list[str]) -> Generator[Batch, None, None]:
        """The rows after the header, as text in columns ``names``; DataError if unreadable.

        The first call reads the stream the reader was made with, later ones ``reopen``.
        """
        if self._stream is not None:
            stream, self._stream = self._stream, None
            yield from self._batches(stream, names)
            return
        with self._reopened() as stream:
            yield from self._batches(stream, names)

    def quote_left_open(self) -> DataError | None:
        """The error for a quoted value the file ends in, naming its line; None if none is."""
        if self._scanned().open_quote is None:
            return None
        return self._left_open()

    def _batches(self, stream: io.BufferedReader[Any], names: list[str]) -> Iterator[Batch]:
        # Rejected rows as pyarrow finds them (number, line breaks, fields): it may have
        # parsed blocks ahead of the batch it returns, so they go with batches by number.
        found: list[tuple[int | None, int, int]] = []
        taken = 0  # found[:taken] went with the batches passed on
        # The record and the line the next batch starts on: after the header, which may
        # hold line breaks in quoted names.
        breaks = sum(name.count(chr(self.newline)) for name in self.header)
        after: tuple[int, int | None] = (2, 2 + breaks if self.numbered else None)
        try:
            reader = self._open(stream, names, found)
        except pa.ArrowInvalid as exc:
            raise self._unreadable(exc, after[1]) from exc
        held: pa.RecordBatch | None = None
        failed: pa.ArrowInvalid | None = None
        while True:
            try:
                records = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                failed = exc
                break
            if records.num_rows == 0:
                continue  # its rejected rows, if any, go with the next batch's
            if held is not None:
                batch = self._batch(held, found, taken, after)
                yield batch
                taken, after = taken + len(batch.rejected), batch.following()
            held = records
        if failed is not None:
            if held is not None:  # its rows come before the place pyarrow failed at
                batch = self._batch(held, found, taken, after)
                yield batch
                after = batch.following()
            raise self._unreadable(failed, after[1]) from failed
        rows = held.num_rows - 1 if held is not None else 0
        if held is None or held.column(len(names) - 1)[rows].as_py() != LAST:
            raise self._left_open()  # not a bad row: from the quote on, the file is one value
        yield self._batch(held.slice(0, rows), found, taken, after, last=True)

    def _batch(
        self,
        records: pa.RecordBatch,
        found: list[tuple[int | None, int, int]],
        taken: int,
        at: tuple[int, int | None],
        last: bool = False,
    ) -> Batch:
        """The batch of ``records``, its first row at record and line ``at``, with the rows
        rejected among its rows and right after them, before the next batch's first (all
        those left, with the file's last batch)."""
        rejected: list[Rejected] = []
        for number, breaks, fields in itertools.islice(found, taken, None):
            if number is None:  # read in threads
                raise NeedsExactLines(self.where)
            rows_before = number - at[0] - len(rejected)  # of this batch
            if not last and rows_before > records.num_rows:
                break  # after a row of the next batch: that batch's
            rejected.append(Rejected(number, breaks, fields))
        return Batch(records, at[0], at[1], self.newline, tuple(rejected), last)

    def _open(self, stream: io.BufferedReader[Any], names: list[str], found: list[Any]) -> Any:
        """pyarrow's reader of ``stream`` (at its start) followed by the last record."""
        if self.numbered and self.encoding != "cp932":
            # Checked on the way, where a bad byte's line is known: pyarrow decodes a
            # rejected row's text for the handler, and fails on a bad byte unnumbered.
            checked = CheckedUtf8(stream, self.where, self.newline, self.hint)
            source: IO[bytes] = io.BufferedReader(checked, PEEK)
        else:
            source = as_parsed(stream, self.encoding, self.where, self.newline, self.hint)
        ended = io.BufferedReader(WithLastRecord(source, len(names)), PEEK)

        def rejected(row: Any) -> str:
            breaks = (row.text or "").count(chr(self.newline))
            found.append((row.number, breaks, row.actual_columns))
            return "skip"

        nulls: dict[str, Any] = {"strings_can_be_null": self.nulls}
        if self.nulls:
            nulls["null_values"] = [""]
        return pacsv.open_csv(
            CrlfKept(ended),
            read_options=pacsv.ReadOptions(
                use_threads=self.threads,
                block_size=self.block_size,
                encoding="utf8",  # CP932 arrives as UTF-8
                column_names=names,
                # The header as a record: a quoted name may hold a line break.
                skip_rows_after_names=1,
            ),
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True,
                ignore_empty_lines=not self.numbered and len(names) > 1,
                invalid_row_handler=rejected if self.numbered else None,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                quoted_strings_can_be_null=False,
                **nulls,
            ),
        )

    def _unreadable(self, exc: Exception, line: int | None) -> Exception:
        """The error for what pyarrow could not read, found again in the file where it can be;
        ``line``: the one its next row starts on, if known."""
        said = str(exc)
        if "UTF8" in said and self.reopen is not None and self.encoding != "cp932":
            with self.reopen() as again:
                located = locate(again, "utf-8", self.where, self.newline, self.hint)
            if located is not None:
                return located
        if "straddles two block boundaries" in said and self.reopen is not None:
            records = self._scanned()
            if records.open_quote is not None:  # the rest of the file is one record
                return self._left_open()
            if self.max_block is not None:
                self.block_size = self._larger_block(records)
                return ReadAgain(self.where)
        counts = _FIELD_COUNT.search(said)
        if counts is not None and self.reopen is not None:  # threaded: pyarrow says no line
            expected, got = int(counts[1]), int(counts[2])
            at = self._line_with_fields(expected)
            if at is not None:
                return DataError(
                    f"{self.where} line {at}: has {got} fields where the header has {expected}"
                )
        if line is not None:
            return DataError(f"{self.where}: unreadable CSV after line {line - 1}: {exc}")
        return DataError(f"{self.where}: unreadable CSV: {exc}")

    def _left_open(self) -> DataError:
        """The error for a file that ends inside a quoted value: the quote's line if known."""
        records = self._scanned() if self.reopen is not None else None
        if records is None or records.open_quote is None:  # pyarrow saw one the scan did not
            return open_quote(self.where)
        line = self._line(records.open_quote)
        return open_quote(self.where, line, records.end - records.open_quote)

    def _larger_block(self, records: Records) -> int:
        """A block that holds the largest record; DataError past ``max_block``."""
        assert self.max_block is not None
        block = 1 << (records.largest - 1).bit_length()
        if block <= self.block_size:  # the scan and pyarrow disagree
            raise DataError(
                f"{self.where}: unreadable CSV: a record does not fit in {self.block_size:,} bytes"
            )
        if block > self.max_block:
            raise DataError(
                f"{self.where} line {self._line(records.largest_at)}: the record that starts "
                f"here has {records.largest:,} bytes, more than the {self.max_block:,} a record "
                "may have; if no value in it is that large, one of its quotes opens a value "
                f"that closes much later: {QUOTE_HINT}"
            )
        return block

    def _scanned(self) -> Records:
        """The file's largest record and a quote left open: scanned once, when needed."""
        if self._records is None:
            with self._parsed_again() as source:
                self._records = scan(source)
        return self._records

    def _line(self, offset: int) -> int:
        """The line of a byte of the file as pyarrow reads it."""
        with self._parsed_again() as source:
            return line_at(source, offset)

    def _line_with_fields(self, expected: int) -> int | None:
        """The physical line where the first record without ``expected`` fields starts."""
        text_encoding = "utf-8-sig" if self.encoding.startswith("utf") else self.encoding
        # Values of megabytes are read, not refused.
        limit = csv.field_size_limit(self.max_block or self.block_size)
        try:
            with self._reopened() as stream:
                text = io.TextIOWrapper(stream, text_encoding, errors="replace", newline="")
                reader = csv.reader(text)
                end = 0  # the last line of the record before
                for record in reader:
                    if end and record and len(record) != expected:
                        return end + 1
                    end = reader.line_num
        finally:
            csv.field_size_limit(limit)
        return None

    @contextmanager
    def _reopened(self) -> Iterator[io.BufferedReader[Any]]:
        """The file again from its start."""
        if self.reopen is None:
            raise ValueError(f"{self.where} cannot be read again")
        with self.reopen() as raw:
            yield io.BufferedReader(raw, PEEK)

    @contextmanager
    def _parsed_again(self) -> Iterator[IO[bytes]]:
        """The file again from its start, as pyarrow reads it: UTF-8 without a BOM."""
        with self._reopened() as stream:
            yield as_parsed(stream, self.encoding, self.where, self.newline, self.hint)


def count_newlines(records: pa.RecordBatch, newline: int = 10) -> int:
    """Line breaks inside the values of ``records``, counted in the raw string buffers."""
    total = 0
    for column in records.columns:
        if len(column) == 0:
            continue
        bounds, raw = string_buffers(column)
        total += int(np.count_nonzero(raw[bounds[0] : bounds[-1]] == newline))
    return total


def string_buffers(chunk: pa.Array) -> tuple[Any, Any]:
    """A string array's value bounds (len + 1 offsets, the array's slice honoured) and bytes."""
    _, offsets, data = chunk.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return bounds, raw
