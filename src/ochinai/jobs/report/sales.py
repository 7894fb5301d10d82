"""Sales CSV: detect the encoding, stream it in batches, validate every row, aggregate.

Over 400 lines on purpose: the reader, the row checks and the physical line numbers
in their messages share the reader's position state; split, each half would reach
into the other's.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ochinai.jobs.report import japanese
from ochinai.jobs.report.settings import COLUMNS
from ochinai.runtime.csvrecords import LAST, QUOTE_HINT, WithLastRecord, left_open, scan
from ochinai.runtime.encoding import (
    CheckedUtf8,
    Cp932ToUtf8,
    as_parsed,
    detect_encoding,
    locate,
    newline_byte,
    refuse_utf16,
)
from ochinai.runtime.errors import DataError

log = logging.getLogger("ochinai.jobs.report.sales")
BLOCK_SIZE = 4 << 20  # bytes per parsed block: a batch is about this much input
SUM_LIMIT = 2**63 - 1  # int64: the largest total of |sales| or |qty| a file may have
_QUOTED = 200  # characters of a bad value quoted in a message
_PEEK = 1 << 16
HINT = "set OCHINAI_REPORT_ENCODING if the file is in another encoding"
# Whole numbers, optionally written as "1,234" or "1234.0" (spreadsheet exports do both).
_INTEGER = r"^-?[0-9]{1,18}(\.0+)?$"
# As written: 1234 or 1,234 (separators every three digits), optionally .0
_WRITTEN_INTEGER = r"^-?([0-9]{1,3}(,[0-9]{3})+|[0-9]+)(\.0+)?$"
_DATE = r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}$"

DAILY_SCHEMA = pa.schema(
    [
        ("date", pa.date32()),
        ("store", pa.string()),
        ("sales", pa.int64()),
        ("qty", pa.int64()),
        ("rows", pa.int64()),
    ]
)


@dataclass(frozen=True)
class BadRow:
    """One rejected row: where it is and why."""

    line: int
    column: str | None
    value: str | None
    reason: str

    def describe(self, where: str) -> str:
        """``s3://b/in/sales.csv line 7, column qty: '-3' is negative``; long values cut."""
        if self.column is None:
            return f"{where} line {self.line}: {self.reason}"
        value = self.value or ""
        shown = (
            repr(value)
            if len(value) <= _QUOTED
            else f"{value[:_QUOTED]!r}… ({len(value):,} characters)"
        )
        return f"{where} line {self.line}, column {self.column}: {shown} {self.reason}"


class NeedsExactLines(Exception):
    """A row has the wrong number of fields and the threaded parser cannot say where."""


@dataclass
class SalesReader:
    """Reads one sales CSV as validated Arrow batches with columns COLUMNS + extras.

    Line numbers in messages are physical lines of the file (header = line 1), also
    when quoted values contain line breaks.
    """

    stream: IO[bytes]
    where: str
    headers: Mapping[str, str] = field(default_factory=dict)
    encoding: str = "auto"
    max_bad_rows: int = 0
    # Threads parse faster, but then pyarrow cannot number a row with the wrong field
    # count; such a file raises NeedsExactLines and is read again with exact=True.
    exact: bool = False
    log_skipped: bool = True
    # Opens the input again from its start: to say where an undecodable byte is.
    reopen: Callable[[], AbstractContextManager[IO[bytes]]] | None = None
    # OCHINAI_REPORT_STRICT: no header aliases, no Japanese forms of values, no total rows.
    strict: bool = False
    header: list[str] = field(default_factory=list)  # as in the file
    columns: list[str] = field(default_factory=list)  # canonical names, extras as in the file
    rows: int = 0
    bad_row_count: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)  # the first max_bad_rows + 1 at most
    # Store and SKU values that lost white space at their edges (" 007 " is store 007),
    # and the first: "line 12, column store".
    trimmed_codes: int = 0
    first_trimmed: str | None = None
    # Values read in a Japanese form (japanese.py), by kind (yen, fullwidth, minus,
    # dates), and the first of each: "line 2, column 売上".
    normalized: dict[str, int] = field(default_factory=dict)
    first_normalized: dict[str, tuple[int, str]] = field(default_factory=dict)  # line, header
    aliases: dict[str, str] = field(default_factory=dict)  # column: the header it was found by
    skipped_total_rows: int = 0
    # The last row, a total, does not add up: its line, and per column (sales, qty) what
    # it says and what the rows above sum to.
    total_mismatch: tuple[int, list[tuple[str, int, int]]] | None = None
    _encoding: str = "utf-8"
    _final: bool = False  # the batch being checked is the file's last
    _signed: dict[str, int] = field(default_factory=lambda: {"sales": 0, "qty": 0})
    # The last total row seen: its line, sales and qty as written, and the valid rows
    # before it; it is the file's last row when no valid row came after it.
    _last_total: tuple[int, int | None, int | None, int] | None = None
    # (record number, line breaks inside it, fields found) of rows with a wrong field count
    _invalid: list[tuple[int, int, int]] = field(default_factory=list)
    _invalid_seen: int = 0
    _record: int = 2  # record number (header = 1) of the next batch's first row
    _newlines: int = 0  # line breaks inside quoted values before the next batch
    _newline: int = 10  # the byte that ends a line: LF, or CR in a CR-only file
    # The exact total of |sales| and of |qty| so far (see _bound_sums).
    _sum_abs: dict[str, int] = field(default_factory=lambda: {"sales": 0, "qty": 0})
    _kept: Any = None  # the rows of the last batch that passed the checks (None: all)

    def batches(self) -> Iterator[pa.Table]:
        """Validated batches; bad rows are dropped (up to max_bad_rows) or raise DataError."""
        buffered = io.BufferedReader(self.stream, buffer_size=_PEEK)  # type: ignore[type-var]
        head = buffered.peek(_PEEK)[:_PEEK]
        if not head.removeprefix(codecs.BOM_UTF8).strip():
            raise DataError(f"{self.where} is empty")
        refuse_utf16(head, self.where)
        encoding = detect_encoding(head) if self.encoding == "auto" else self.encoding
        self._encoding = encoding
        self._newline = newline_byte(head)
        self._read_header(head, encoding)
        # Decoded (CP932) or checked (UTF-8) here, where a bad byte's position is known.
        checked = Cp932ToUtf8 if encoding == "cp932" else CheckedUtf8
        source = io.BufferedReader(checked(buffered, self.where, self._newline, HINT), _PEEK)
        # Then a record pyarrow reads as its own row only if no quoted value is left open.
        ended = io.BufferedReader(WithLastRecord(source, len(self.columns)), _PEEK)
        reader = self._open(ended, encoding)
        # A batch is checked once the next one is read: the last ends with that record's
        # row, dropped here. With it, how many rejected rows the parser had found by then.
        held: tuple[pa.Table, int] | None = None
        failed: pa.ArrowInvalid | None = None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                failed = exc
                break
            if batch.num_rows == 0:
                continue  # its rejected rows, if any, go with the next batch's
            if held is not None:
                yield from self._validated(*held)
            held = (pa.Table.from_batches([batch]), len(self._invalid))
        if failed is not None:
            if held is not None:  # its rows come before the place pyarrow failed at
                yield from self._validated(*held)
            raise self._arrow_error(failed, encoding) from failed
        last = len(self.columns) - 1
        if held is None or held[0].column(last)[held[0].num_rows - 1].as_py() != LAST:
            # Not a bad row to skip: from the quote on, the file is one value.
            raise self._left_open(encoding)
        self._final = True
        yield from self._validated(held[0].slice(0, held[0].num_rows - 1), len(self._invalid))
        self._check_total()
        # Logged once the file is read: a threaded pass may be read again (NeedsExactLines).
        for row in sorted(self.bad_rows, key=lambda b: b.line) if self.log_skipped else ():
            log.warning("skipped bad row: %s", row.describe(self.where), extra={"line": row.line})
        if self.rows == 0:
            raise DataError(f"{self.where} has a header but no valid data rows")

    def _read_header(self, head: bytes, encoding: str) -> None:
        text = head.decode("utf-8-sig" if encoding.startswith("utf") else encoding, "replace")
        first = next(csv.reader(io.StringIO(text, newline="")), [])  # CR-only ends too
        self.header = [name.strip() for name in first]
        wanted = {canon: self.headers.get(canon, canon) for canon in COLUMNS}
        unnamed = [c for c, h in wanted.items() if h not in self.header and c not in self.headers]
        if unnamed and not self.strict:  # 日付, 店舗コード, 売上金額...: the usual names
            self.aliases = japanese.resolve_header(self.header, unnamed, self.where)
            wanted |= self.aliases
        missing = [f"{h!r}" for h in wanted.values() if h not in self.header]
        if missing:
            raise DataError(
                f"{self.where} line 1: missing column {', '.join(missing)} "
                f"(found: {', '.join(self.header)}); name the columns with OCHINAI_REPORT_COLUMNS"
            )
        if len(set(self.header)) != len(self.header):
            raise DataError(f"{self.where} line 1: a column name appears twice: {self.header}")
        by_header = {h: c for c, h in wanted.items()}
        self.columns = [by_header.get(h, h) for h in self.header]

    def _open(self, stream: IO[bytes], encoding: str) -> Any:
        def invalid(row: Any) -> str:
            breaks = (row.text or "").count(chr(self._newline))
            self._invalid.append((row.number, breaks, row.actual_columns))
            return "skip"

        try:
            return pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    use_threads=not self.exact,
                    block_size=BLOCK_SIZE,
                    encoding="utf8",  # CP932 arrives as UTF-8 (Cp932ToUtf8)
                    column_names=self.columns,
                    skip_rows=1,
                ),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=invalid
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in self.columns},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            raise self._arrow_error(exc, encoding) from exc

    def _arrow_error(self, exc: Exception, encoding: str) -> DataError:
        """The DataError for what pyarrow could not parse; an undecodable byte, located."""
        if "UTF8" in str(exc) and self.reopen is not None:
            with self.reopen() as again:
                found = locate(again, "utf-8", self.where, self._newline, HINT)
            if found is not None:
                return found
        if "straddles two block boundaries" in str(exc) and self.reopen is not None:
            # A record larger than a block: a quote left open makes the rest of the file one.
            with self._as_parsed(encoding) as again:
                if scan(again).open_quote is not None:
                    return self._left_open(encoding)
        line = self._record - 1 + self._newlines
        return DataError(f"{self.where}: unreadable CSV after line {line}: {exc}")

    @contextmanager
    def _as_parsed(self, encoding: str) -> Iterator[IO[bytes]]:
        """The input again from its start, as pyarrow reads it: UTF-8 without a BOM."""
        assert self.reopen is not None
        with self.reopen() as raw:
            buffered = io.BufferedReader(raw, _PEEK)  # type: ignore[type-var]
            yield as_parsed(buffered, encoding, self.where, self._newline, HINT)

    def _left_open(self, encoding: str) -> DataError:
        """The error for an input that ends inside a quoted value: the quote's line if known."""
        if self.reopen is None:
            return DataError(
                f"{self.where}: unreadable CSV: a quoted value never closes; {QUOTE_HINT}"
            )
        return left_open(self.where, lambda: self._as_parsed(encoding))

    # -- validation ---------------------------------------------------------------

    def _take_invalid(self, found: int) -> list[tuple[int, int, int]]:
        """Rows the parser rejected for their field count since the last batch: this batch's,
        the first ``found`` of all."""
        new = self._invalid[self._invalid_seen : found]
        self._invalid_seen = found
        if any(number is None for number, _, _ in new):
            raise NeedsExactLines(self.where)
        return new

    def _line_of(self, index: int, table: pa.Table, invalid: list[tuple[int, int, int]]) -> int:
        """Physical line of row ``index`` of this batch, counting the rejected rows among them."""
        record = self._record + index
        newlines = self._newlines + _count_newlines(table.slice(0, index), self._newline)
        for number, breaks, _ in invalid:
            if number > record:
                break
            record += 1
            newlines += breaks
        return record + newlines

    def _line_of_rejected(
        self, k: int, table: pa.Table, invalid: list[tuple[int, int, int]]
    ) -> int:
        """Physical line of the k-th rejected row of this batch."""
        number = invalid[k][0]
        valid_before = number - self._record - k
        newlines = self._newlines + _count_newlines(table.slice(0, valid_before), self._newline)
        return number + newlines + sum(breaks for _, breaks, _ in invalid[:k])

    def _validated(self, table: pa.Table, found: int) -> Iterator[pa.Table]:
        """The batch's valid rows; ``found``: the rows rejected up to its end, in all."""
        invalid = self._take_invalid(found)
        clean = None if invalid else _typed_if_clean(table)
        self._kept = None
        trimmed: tuple[str, ...]
        if clean is None:
            out, trimmed = self._checked(table, invalid), ("store", "sku")
        else:
            out, trimmed = clean
        self._bound_sums(out, table, invalid)
        self._count_trimmed(out, table, invalid, trimmed)
        self._record += table.num_rows + len(invalid)
        self._newlines += _count_newlines(table, self._newline) + sum(
            breaks for _, breaks, _ in invalid
        )
        self.rows += out.num_rows
        for name in ("sales", "qty"):
            self._signed[name] += int(pc.sum(out.column(name)).as_py() or 0)
        if out.num_rows:
            yield out

    def _count_trimmed(
        self, out: pa.Table, table: pa.Table, invalid: list[Any], names: tuple[str, ...]
    ) -> None:
        """Count the codes whose edge white space was removed; remember the first's place.

        ``names``: the code columns that may have been trimmed (the fast path knows).
        """
        raw = table if self._kept is None else table.filter(self._kept)
        for name in names:
            changed = pc.fill_null(pc.not_equal(out.column(name), raw.column(name)), False)
            count = int(pc.sum(changed).as_py() or 0)
            if not count:
                continue
            self.trimmed_codes += count
            if self.first_trimmed is None:
                k = int(pc.index(changed, True).as_py())
                index = k if self._kept is None else pc.indices_nonzero(self._kept)[k].as_py()
                line = self._line_of(index, table, invalid)
                self.first_trimmed = f"line {line}, column {self.header[self.columns.index(name)]}"

    def _checked(self, table: pa.Table, invalid: list[tuple[int, int, int]]) -> pa.Table:
        """Every row checked column by column; bad ones named, counted and dropped.

        Unless strict, the values that fail the strict forms are read again in their
        Japanese forms (japanese.py) and total rows are set aside (``_totals``).
        """
        empty = _all_empty(table)
        raw = {name: table.column(name).combine_chunks() for name in COLUMNS}
        seen = dict(raw)  # as written: what a message quotes
        lenient = not self.strict
        totals = self._totals(raw, empty) if lenient else pa.array(np.zeros(len(empty), bool))
        rewrites: list[tuple[str, dict[str, Any]]] = []
        era_problems: dict[int, str] = {}
        dates = _iso_dates(raw["date"])
        date_form = pc.match_substring_regex(dates, _DATE)
        if lenient:
            raw["date"], found, era_problems = _reread(
                raw["date"], date_form, totals, japanese.dates
            )
            rewrites.append(("date", found))
            dates = _iso_dates(raw["date"])
            date_form = pc.match_substring_regex(dates, _DATE)
        parsed = pc.strptime(
            pc.if_else(date_form, dates, "1970-01-01"),
            format="%Y-%m-%d",
            unit="s",
            error_is_null=True,
        )
        # strptime rolls 2026-02-30 over to 03-02: a real date prints back as it was written.
        calendar = pc.equal(pc.fill_null(pc.strftime(parsed, format="%Y-%m-%d"), ""), dates)
        integer: dict[str, Any] = {}
        numbers: dict[str, Any] = {}
        for name in ("sales", "qty"):
            numbers[name], integer[name] = _whole(raw[name])
            if lenient:
                raw[name], found, _ = _reread(raw[name], integer[name], totals, japanese.numbers)
                rewrites.append((name, found))
                numbers[name], integer[name] = _whole(raw[name])
        qty = pc.cast(pc.if_else(integer["qty"], numbers["qty"], "0"), pa.int64())
        forms = (
            "YYYY-MM-DD, YYYY/MM/DD, YYYY年M月D日, YYYYMMDD or an era date such as R8.11.28"
            if lenient
            else "YYYY-MM-DD or YYYY/MM/DD"
        )
        checks = [
            ("date", pc.invert(date_form), f"is not a date ({forms})"),
            ("date", pc.invert(calendar), "is not a calendar date"),
            ("store", _blank(raw["store"]), "is empty"),
            ("sku", _blank(raw["sku"]), "is empty"),
            ("sales", pc.invert(integer["sales"]), "is not a whole number"),
            ("qty", pc.invert(integer["qty"]), "is not a whole number"),
            ("qty", pc.less(qty, 0), "is negative"),
        ]
        skipped = pc.or_(empty, totals)
        failed = pc.and_not(_any([mask for _, mask, _ in checks]), skipped)
        failing = pc.indices_nonzero(failed).to_pylist()
        bad = [
            BadRow(
                self._line_of_rejected(k, table, invalid),
                None,
                None,
                f"has {actual} fields where the header has {len(self.columns)}",
            )
            for k, (_, _, actual) in enumerate(invalid)
        ]
        for index in failing[: self.max_bad_rows + 1]:
            column, reason = next((c, r) for c, mask, r in checks if mask[index].as_py())
            if column == "date" and index in era_problems:
                reason = era_problems[index]
            bad.append(
                BadRow(
                    self._line_of(index, table, invalid),
                    self.header[self.columns.index(column)],
                    japanese.as_seen(str(seen[column][index]), self._encoding),
                    reason,
                )
            )
        self._account(bad, len(invalid) + len(failing))
        valid = pc.invert(pc.or_(skipped, failed))
        self._kept = valid
        self._count_rewrites(rewrites, valid, table, invalid)
        typed = {
            "date": pc.cast(pc.filter(parsed, valid), pa.date32()),
            "sales": pc.cast(pc.filter(numbers["sales"], valid), pa.int64()),
            "qty": pc.filter(qty, valid),
            # " 007 " and "007" are one store: codes keep their zeros but lose edge spaces.
            "store": pc.utf8_trim_whitespace(pc.filter(raw["store"], valid)),
            "sku": pc.utf8_trim_whitespace(pc.filter(raw["sku"], valid)),
        }
        self._note_totals(totals, valid, numbers, integer, table, invalid)
        return _with_columns(table.filter(valid), typed)

    def _totals(self, raw: dict[str, Any], empty: Any) -> Any:
        """Rows an export added as totals: a date cell of 合計, 小計, 総計 or 計; and, at the
        end of the file, rows without a date whose amounts are filled."""
        totals = japanese.total_labels(raw["date"])
        if not self._final:
            return totals
        no_date = np.asarray(pc.fill_null(_blank(raw["date"]), True))
        filled = np.asarray(pc.invert(_blank(raw["sales"])))
        dated = np.flatnonzero(~no_date & ~np.asarray(empty))
        after = np.arange(len(no_date)) > (dated[-1] if len(dated) else -1)
        return pc.or_(totals, pa.array(no_date & filled & after))

    def _note_totals(
        self,
        totals: Any,
        valid: Any,
        numbers: dict[str, Any],
        integer: dict[str, Any],
        table: pa.Table,
        invalid: list[tuple[int, int, int]],
    ) -> None:
        """Count the total rows; remember the last, to check it if it ends the file."""
        at = pc.indices_nonzero(totals).to_pylist()
        if not at:
            return
        self.skipped_total_rows += len(at)
        last = at[-1]
        before = int(pc.sum(pc.cast(valid.slice(0, last), pa.int64())).as_py() or 0)
        amounts = [
            int(numbers[name][last].as_py()) if integer[name][last].as_py() else None
            for name in ("sales", "qty")
        ]
        line = self._line_of(last, table, invalid)
        self._last_total = (line, amounts[0], amounts[1], self.rows + before)

    def _check_total(self) -> None:
        """A total that ends the file must be the sum of the rows above it: a WARNING
        (and a note on the summary sheet) when it is not."""
        if self._last_total is None:
            return
        line, sales, qty, rows_before = self._last_total
        if rows_before != self.rows:
            return  # valid rows came after it: a subtotal, not the file's total
        wrong = [
            (name, written, self._signed[name])
            for name, written in (("sales", sales), ("qty", qty))
            if written is not None and written != self._signed[name]
        ]
        if wrong:
            self.total_mismatch = (line, wrong)
            said = ", ".join(f"{n} {w:,} (the rows above sum to {a:,})" for n, w, a in wrong)
            log.warning(
                "%s line %d: the total row says %s",
                self.where,
                line,
                said,
                extra={"line": line, "total": said},
            )

    def _count_rewrites(
        self,
        rewrites: list[tuple[str, dict[str, Any]]],
        valid: Any,
        table: pa.Table,
        invalid: list[tuple[int, int, int]],
    ) -> None:
        """Count the values of valid rows read in a Japanese form, by kind; the first's place."""
        for column, kinds in rewrites:
            for kind, mask in kinds.items():
                used = pc.and_(mask, valid)
                count = int(pc.sum(pc.cast(used, pa.int64())).as_py() or 0)
                if not count:
                    continue
                self.normalized[kind] = self.normalized.get(kind, 0) + count
                if kind not in self.first_normalized:
                    index = int(pc.index(used, True).as_py())
                    line = self._line_of(index, table, invalid)
                    header = self.header[self.columns.index(column)]
                    self.first_normalized[kind] = (line, header)

    def _bound_sums(self, out: pa.Table, table: pa.Table, invalid: list[Any]) -> None:
        """Sums stay exact: the file's total of |sales| (and of |qty|) must fit in int64.

        Every daily, store and grand total is at most that, so none of them can wrap
        around as int64 sums do without a word. Cheap per batch (its largest value
        times its rows bounds it); only a batch that could pass the bound is summed row
        by row, to name the line where it does.
        """
        for name in ("sales", "qty"):
            column = out.column(name)
            if len(column) == 0:
                continue
            extremes = pc.min_max(column)
            peak = max(abs(extremes["min"].as_py()), abs(extremes["max"].as_py()))
            if peak * len(column) <= SUM_LIMIT - self._sum_abs[name]:
                self._sum_abs[name] += pc.sum(pc.abs(column)).as_py()
                continue
            total = self._sum_abs[name]
            for k, value in enumerate(column.to_pylist()):
                total += abs(value)
                if total > SUM_LIMIT:
                    index = k if self._kept is None else pc.indices_nonzero(self._kept)[k].as_py()
                    line = self._line_of(index, table, invalid)
                    header = self.header[self.columns.index(name)]
                    raise DataError(
                        f"{self.where} line {line}, column {header}: the total of |{header}| "
                        f"up to this row passes {SUM_LIMIT:,}, the largest sum the report "
                        "keeps exactly; split the file or check the values"
                    )
            self._sum_abs[name] = total

    def _account(self, bad: list[BadRow], count: int) -> None:
        """Remember and log skipped rows; past max_bad_rows, stop with the first one."""
        self.bad_row_count += count
        self.bad_rows.extend(bad)
        if self.bad_row_count > self.max_bad_rows:
            first = min(self.bad_rows, key=lambda b: b.line)
            more = self.bad_row_count - 1
            also = f" ({more} more bad rows so far)" if more else ""
            raise DataError(
                f"{first.describe(self.where)}{also}; fix the file, or allow skipping up to N "
                f"bad rows with OCHINAI_REPORT_MAX_BAD_ROWS (now {self.max_bad_rows})"
            )


def _with_columns(table: pa.Table, columns: dict[str, Any]) -> pa.Table:
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def _typed_if_clean(table: pa.Table) -> tuple[pa.Table, tuple[str, ...]] | None:
    """The common case in one sweep of casts: ISO dates, plain integers, qty >= 0, codes set.

    Arrow's casts are strict (2026-02-30 and "1,234" fail), so any batch that is not
    plainly clean goes through the row-by-row checks instead, which also accept the
    other written forms and name the bad rows. With the table, the code columns that
    had white space to trim.
    """
    try:
        typed = {
            "date": pc.cast(table.column("date"), pa.date32()),
            "sales": pc.cast(table.column("sales"), pa.int64()),
            "qty": pc.cast(table.column("qty"), pa.int64()),
        }
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if (pc.min(typed["qty"]).as_py() or 0) < 0:
        return None
    trimmed: list[str] = []
    for name in ("store", "sku"):
        column = table.column(name)
        codes = _trimmed(column)
        if codes is None:
            return None
        if codes is not column:
            trimmed.append(name)
        typed[name] = codes
    return _with_columns(table, typed), tuple(trimmed)


# Bytes that may begin or end a value utf8_trim_whitespace would change: ASCII controls,
# space and DEL, and every non-ASCII byte (U+3000 and the other Unicode spaces).
_MAYBE_SPACE = np.ones(256, dtype=bool)
_MAYBE_SPACE[0x21:0x7F] = False


def _trimmed(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Codes without edge whitespace, or None when one is blank.

    Trimming copies every string; most files have nothing to trim, which the first and
    last byte of each value tell without a copy.
    """
    plain = True
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        bounds, raw = _string_buffers(chunk)
        starts, ends = bounds[:-1], bounds[1:]
        if bool(np.any(starts == ends)):
            return None  # an empty value
        if bool(np.any(_MAYBE_SPACE[raw[starts]])) or bool(np.any(_MAYBE_SPACE[raw[ends - 1]])):
            plain = False
            break
    if plain:
        return column
    trimmed = pc.utf8_trim_whitespace(column)
    if len(trimmed) and pc.min(pc.binary_length(trimmed)).as_py() == 0:
        return None
    return trimmed


def _any(masks: list[Any]) -> Any:
    result = masks[0]
    for mask in masks[1:]:
        result = pc.or_(result, mask)
    return result


def _all_empty(table: pa.Table) -> Any:
    """Rows whose every field is empty: blank lines, kept as rows so line numbers stay true."""
    return pc.invert(_any([pc.not_equal(column, "") for column in table.columns]))


def _blank(column: Any) -> Any:
    return pc.equal(pc.utf8_trim_whitespace(column), "")


def _whole(column: Any) -> tuple[Any, Any]:
    """The column as plain digits (``_plain_number``), and which values are whole numbers
    as written (``1234``, ``1,234``, ``1234.0``)."""
    plain = _plain_number(column)
    whole = pc.and_(
        pc.match_substring_regex(pc.utf8_trim_whitespace(column), _WRITTEN_INTEGER),
        pc.match_substring_regex(plain, _INTEGER),
    )
    return plain, whole


def _reread(
    column: pa.Array, ok: Any, skip: Any, read: Callable[[pa.Array], tuple[Any, ...]]
) -> tuple[pa.Array, dict[str, Any], dict[int, str]]:
    """The values that are not ``ok`` (nor in rows to ``skip``) read again by ``read``
    (a function of japanese.py) and put back in place; which values each kind of rewrite
    changed, over the whole column; and ``read``'s reasons, by position in the column."""
    again = pc.and_not(pc.invert(pc.fill_null(ok, False)), skip)
    if not pc.any(again).as_py():
        return column, {}, {}
    subset = pc.filter(column, again)
    fixed, rewrites, *more = read(subset)
    where = pc.indices_nonzero(again).to_pylist()
    reasons = {where[k]: why for k, why in (more[0] if more else {}).items()}
    return pc.replace_with_mask(column, again, fixed), rewrites.scattered(again), reasons


def _plain_number(column: Any) -> Any:
    """'"1,234"' -> '1234', ' 12.00 ' -> '12': separators and a zero fraction dropped."""
    text = pc.replace_substring(pc.utf8_trim_whitespace(column), ",", "")
    return pc.replace_substring_regex(text, r"\.0+$", "")


def _iso_dates(column: Any) -> Any:
    """'2026/1/5' -> '2026-01-05' (Japanese spreadsheets write dates with slashes)."""
    text = pc.replace_substring(pc.utf8_trim_whitespace(column), "/", "-")
    text = pc.replace_substring_regex(text, r"^([0-9]{4})-([0-9])-", r"\1-0\2-")
    return pc.replace_substring_regex(text, r"-([0-9])$", r"-0\1")


def _count_newlines(table: pa.Table, newline: int = 10) -> int:
    """Line breaks inside the values of ``table``, counted in the raw string buffers."""
    total = 0
    for column in table.columns:
        for chunk in column.chunks:
            if len(chunk) == 0:
                continue
            bounds, raw = _string_buffers(chunk)
            total += int(np.count_nonzero(raw[bounds[0] : bounds[-1]] == newline))
    return total


def _string_buffers(chunk: pa.Array) -> tuple[Any, Any]:
    """A string chunk's value bounds (len + 1 offsets, the chunk's slice honoured) and bytes."""
    _, offsets, data = chunk.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return bounds, raw


def _by_date_and_store(table: pa.Table, rows: tuple[str, str]) -> pa.Table:
    """Sales and qty summed per (date, store); ``rows`` is how the row count is aggregated."""
    grouped = table.group_by(["date", "store"]).aggregate([("sales", "sum"), ("qty", "sum"), rows])
    return pa.table(
        {
            "date": grouped["date"],
            "store": grouped["store"],
            "sales": grouped["sales_sum"],
            "qty": grouped["qty_sum"],
            "rows": grouped[f"{rows[0]}_{rows[1]}"],
        },
        schema=DAILY_SCHEMA,
    )


def aggregate(parts: list[pa.Table]) -> pa.Table:
    """Daily sales, qty and row count per (date, store), sorted; sums stay exact integers."""
    if not parts:
        return DAILY_SCHEMA.empty_table()
    table = _by_date_and_store(pa.concat_tables(parts), ("rows", "sum"))
    return table.sort_by([("date", "ascending"), ("store", "ascending")])


def partial_aggregate(batch: pa.Table) -> pa.Table:
    """One batch's sums per (date, store), to be combined by ``aggregate``."""
    return _by_date_and_store(batch, ("sales", "count"))
