"""The report's sales CSV: its columns and rules, every row of runtime/csvreader.py's
batches checked, named by its physical line when rejected, and the sums per day and store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ochinai.jobs.report import japanese
from ochinai.jobs.report.settings import COLUMNS
from ochinai.runtime.csvreader import Batch, CsvReader, Reopen, string_buffers
from ochinai.runtime.csvreader import NeedsExactLines as NeedsExactLines
from ochinai.runtime.errors import DataError

log = logging.getLogger("ochinai.jobs.report.sales")
BLOCK_SIZE = 4 << 20  # bytes per parsed block: a batch is about this much input
SUM_LIMIT = 2**63 - 1  # int64: the largest total of |sales| or |qty| a file may have
_QUOTED = 200  # characters of a bad value quoted in a message
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
    reopen: Reopen | None = None
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
    # The exact total of |sales| and of |qty| so far (see _bound_sums).
    _sum_abs: dict[str, int] = field(default_factory=lambda: {"sales": 0, "qty": 0})
    _kept: Any = None  # the rows of the last batch that passed the checks (None: all)

    def batches(self) -> Iterator[pa.Table]:
        """Validated batches; bad rows are dropped (up to max_bad_rows) or raise DataError."""
        reader = CsvReader(
            self.stream,
            self.where,
            encoding=self.encoding,
            hint=HINT,
            reopen=self.reopen,
            numbered=True,
            threads=not self.exact,
            block_size=BLOCK_SIZE,
        )
        self._encoding = reader.encoding
        self._read_header(reader.header)
        for batch in reader.batches(self.columns):
            self._final = batch.last
            yield from self._validated(batch)
        self._check_total()
        # Logged once the file is read: a threaded pass may be read again (NeedsExactLines).
        for row in sorted(self.bad_rows, key=lambda b: b.line) if self.log_skipped else ():
            log.warning("skipped bad row: %s", row.describe(self.where), extra={"line": row.line})
        if self.rows == 0:
            raise DataError(f"{self.where} has a header but no valid data rows")

    def _read_header(self, header: list[str]) -> None:
        self.header = [name.strip() for name in header]
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

    # -- validation ---------------------------------------------------------------

    def _validated(self, batch: Batch) -> Iterator[pa.Table]:
        """The batch's valid rows."""
        table = pa.Table.from_batches([batch.records])
        clean = None if batch.rejected else _typed_if_clean(table)
        self._kept = None
        trimmed: tuple[str, ...]
        if clean is None:
            out, trimmed = self._checked(table, batch), ("store", "sku")
        else:
            out, trimmed = clean
        self._bound_sums(out, batch)
        self._count_trimmed(out, table, batch, trimmed)
        self.rows += out.num_rows
        for name in ("sales", "qty"):
            self._signed[name] += int(pc.sum(out.column(name)).as_py() or 0)
        if out.num_rows:
            yield out

    def _count_trimmed(
        self, out: pa.Table, table: pa.Table, batch: Batch, names: tuple[str, ...]
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
                line = batch.line_of(index)
                self.first_trimmed = f"line {line}, column {self.header[self.columns.index(name)]}"

    def _checked(self, table: pa.Table, batch: Batch) -> pa.Table:
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
        parsed, date_form, calendar, era_problems = _dates(raw, totals, lenient, rewrites)
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
        bad = self._bad_rows(batch, checks, failing[: self.max_bad_rows + 1], era_problems, seen)
        self._account(bad, len(batch.rejected) + len(failing))
        valid = pc.invert(pc.or_(skipped, failed))
        self._kept = valid
        self._count_rewrites(rewrites, valid, batch)
        typed = {
            "date": pc.cast(pc.filter(parsed, valid), pa.date32()),
            "sales": pc.cast(pc.filter(numbers["sales"], valid), pa.int64()),
            "qty": pc.filter(qty, valid),
            # " 007 " and "007" are one store: codes keep their zeros but lose edge spaces.
            "store": pc.utf8_trim_whitespace(pc.filter(raw["store"], valid)),
            "sku": pc.utf8_trim_whitespace(pc.filter(raw["sku"], valid)),
        }
        self._note_totals(totals, valid, numbers, integer, batch)
        return _with_columns(table.filter(valid), typed)

    def _bad_rows(
        self,
        batch: Batch,
        checks: list[tuple[str, Any, str]],
        failing: list[int],
        era_problems: dict[int, str],
        seen: dict[str, Any],
    ) -> list[BadRow]:
        """The rejected rows of the batch, then the ``failing`` rows, each by the first check
        it fails, quoting the value as written (``seen``)."""
        bad = [
            BadRow(
                batch.line_of_rejected(k),
                None,
                None,
                f"has {rejected.fields} fields where the header has {len(self.columns)}",
            )
            for k, rejected in enumerate(batch.rejected)
        ]
        for index in failing:
            column, reason = next((c, r) for c, mask, r in checks if mask[index].as_py())
            if column == "date" and index in era_problems:
                reason = era_problems[index]
            bad.append(
                BadRow(
                    batch.line_of(index),
                    self.header[self.columns.index(column)],
                    japanese.as_seen(str(seen[column][index]), self._encoding),
                    reason,
                )
            )
        return bad

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
        batch: Batch,
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
        line = batch.line_of(last)
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
        batch: Batch,
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
                    line = batch.line_of(index)
                    header = self.header[self.columns.index(column)]
                    self.first_normalized[kind] = (line, header)

    def _bound_sums(self, out: pa.Table, batch: Batch) -> None:
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
                    line = batch.line_of(index)
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


def _dates(
    raw: dict[str, Any], totals: Any, lenient: bool, rewrites: list[tuple[str, dict[str, Any]]]
) -> tuple[Any, Any, Any, dict[int, str]]:
    """The dates parsed, which values have a date's form, which are calendar dates, and why
    era dates were refused. Unless strict (``lenient``), the values without the form are
    read again in their Japanese forms first, in ``raw``, and the rewrites noted."""
    era_problems: dict[int, str] = {}
    dates = _iso_dates(raw["date"])
    date_form = pc.match_substring_regex(dates, _DATE)
    if lenient:
        raw["date"], found, era_problems = _reread(raw["date"], date_form, totals, japanese.dates)
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
    return parsed, date_form, calendar, era_problems


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
        bounds, raw = string_buffers(chunk)
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
