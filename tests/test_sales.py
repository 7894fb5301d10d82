"""Tests of the sales CSV reader: encodings, line numbers across blocks, typed values, sums."""

from __future__ import annotations

import contextlib
import io
from datetime import date
from typing import Any

import pyarrow as pa
import pytest

from ochinai.jobs.report import sales
from ochinai.jobs.report.sales import (
    NeedsExactLines,
    SalesReader,
    aggregate,
    partial_aggregate,
)
from ochinai.runtime.encoding import detect_encoding
from ochinai.runtime.errors import DataError

HEADER = "date,store,sku,sales,qty,memo"
WHERE = "s3://ops/in/sales.csv"


def read(
    data: bytes, max_bad_rows: int = 0, encoding: str = "auto"
) -> tuple[SalesReader, list[pa.Table]]:
    """Read ``data`` whole as the job does: threaded, again exact if a row needs numbering."""
    options: dict[str, Any] = {
        "max_bad_rows": max_bad_rows,
        "encoding": encoding,
        "reopen": lambda: contextlib.nullcontext(io.BytesIO(data)),
    }
    try:
        reader = SalesReader(io.BytesIO(data), WHERE, **options)
        return reader, list(reader.batches())
    except NeedsExactLines:
        reader = SalesReader(io.BytesIO(data), WHERE, exact=True, **options)
        return reader, list(reader.batches())


def test_threaded_read_asks_for_an_exact_pass_on_a_wrong_field_count() -> None:
    """The threaded parser cannot number a short row, so the reader asks to be run exact."""
    data = f"{HEADER}\n2026-11-28,001,000001,100,1,a\n2026-11-28,001\n".encode()
    with pytest.raises(NeedsExactLines):
        list(SalesReader(io.BytesIO(data), WHERE).batches())
    reader, _ = read(data, max_bad_rows=1)
    assert [b.line for b in reader.bad_rows] == [3]


def long_file() -> bytes:
    """59 lines: a quoted line break on lines 10-11, bad rows on lines 20, 40 and 50."""
    lines = [HEADER]
    for n in range(2, 60):
        if n == 10:
            lines.append('2026-11-28,001,000010,100,1,"two\nlines"')
        elif n == 11:
            continue  # the second half of line 10's value
        elif n == 20:
            lines.append("2026-11-28,001,000020,100,1,memo,extra")
        elif n in (40, 50):
            lines.append(f"2026-11-28,001,0000{n},100,x{n},memo")
        else:
            lines.append(f"2026-11-28,001,{n:06d},100,1,m{n}")
    return ("\n".join(lines) + "\n").encode()


def test_line_numbers_stay_physical_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed in many small blocks, bad rows are still named by their line in the file."""
    monkeypatch.setattr(sales, "BLOCK_SIZE", 64)
    reader, batches = read(long_file(), max_bad_rows=3)
    assert len(batches) > 10
    assert [(bad.line, bad.column) for bad in reader.bad_rows] == [
        (20, None),
        (40, "qty"),
        (50, "qty"),
    ]
    # 58 lines after the header, one of them a continuation, three bad.
    assert reader.rows == sum(b.num_rows for b in batches) == 58 - 1 - 3


def test_a_bad_row_in_a_later_block_stops_the_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an allowance the first bad row, in whichever block, ends the read with its line."""
    monkeypatch.setattr(sales, "BLOCK_SIZE", 64)
    with pytest.raises(DataError, match=rf"^{WHERE} line 20: has 7 fields where the header has 6"):
        read(long_file())


def test_bad_rows_in_blocks_parsed_ahead_keep_their_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow finds rows with the wrong field count blocks ahead of the batch it hands
    over; every bad row, of either kind, is still named by its own line."""
    monkeypatch.setattr(sales, "BLOCK_SIZE", 4096)
    lines, expected, line = [], [], 2
    for n in range(3000):
        if n % 50 == 7:
            lines.append(f"2026-11-28,001,{n:06d},1,1,m{n},extra")
            expected.append((line, None))
        elif n % 40 == 3:
            lines.append(f"2026-11-28,001,{n:06d},1,-1,m{n}")
            expected.append((line, "qty"))
        elif n % 30 == 11:
            lines.append(f'2026-11-28,001,{n:06d},1,1,"m\n{n}"')
            line += 1
        else:
            lines.append(f"2026-11-28,001,{n:06d},1,1,m{n}")
        line += 1
    data = (HEADER + "\n" + "\n".join(lines) + "\n").encode()
    reader, _ = read(data, max_bad_rows=len(expected))
    assert sorted((bad.line, bad.column) for bad in reader.bad_rows) == expected


def test_blank_lines_are_skipped_but_counted() -> None:
    """Empty lines are not rows, yet the lines after them keep their numbers."""
    data = b"date,store,sku,sales,qty\n2026-11-28,001,1,1,1\n\n\n2026-11-28,001,1,1,-1\n"
    with pytest.raises(DataError, match=r"line 5, column qty: '-1' is negative"):
        read(data)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("日付,店舗\n".encode(), "utf-8"),
        (b"\xef\xbb\xbfdate,store\n", "utf-8-sig"),
        ("日付,店舗\n".encode("cp932"), "cp932"),
        ("日付".encode()[:-1], "utf-8"),  # a head cut inside a character is still UTF-8
    ],
)
def test_detect_encoding(head: bytes, expected: str) -> None:
    """UTF-8 with or without BOM is told from CP932 by the head of the file."""
    assert detect_encoding(head) == expected


def test_values_are_typed_and_text_keeps_its_zeros() -> None:
    """Short slashed dates, quoted thousands and zero fractions parse; store and SKU stay text."""
    data = (
        b"date,store,sku,sales,qty\n"
        b'2026/1/5,007,000123,"1,234",2.0\n'
        b"2026-01-05, 007 ,000123,-50,0\n"
    )
    table = pa.concat_tables(read(data)[1])
    assert table.column("date").to_pylist() == [date(2026, 1, 5)] * 2
    assert table.column("sku").to_pylist() == ["000123", "000123"]
    assert table.column("store").to_pylist() == ["007", "007"]  # edge spaces dropped
    assert table.column("sales").to_pylist() == [1234, -50]
    assert table.column("qty").to_pylist() == [2, 0]


@pytest.mark.parametrize(
    "codes",
    [
        ["007", "A-1", "渋谷店"],  # nothing to trim, non-ASCII inside
        ["007", "\t007", "007\r"],  # ASCII whitespace at an edge
        ["\u3000渋谷店\u3000", "007"],  # ideographic space, common in Japanese files
        ["0 7", "x"],  # inner spaces stay
    ],
)
def test_clean_batches_trim_codes_like_arrow(codes: list[str]) -> None:
    """The fast path trims edge whitespace exactly as utf8_trim_whitespace, copying only then."""
    n = len(codes)
    raw = pa.table(
        {
            "date": ["2026-01-05"] * n,
            "store": codes,
            "sku": list(reversed(codes)),
            "sales": ["1"] * n,
            "qty": ["1"] * n,
        }
    )
    clean = sales._typed_if_clean(raw.slice(0, n))
    assert clean is not None
    typed, trimmed = clean
    expected = [c.strip(" \t\r\u3000") for c in codes]
    if expected != codes:  # named as maybe trimmed (non-ASCII edges are checked too)
        assert trimmed == ("store", "sku")
    assert typed.column("store").to_pylist() == expected
    assert typed.column("sku").to_pylist() == list(reversed(expected))


@pytest.mark.parametrize("blank", ["", " ", "\u3000", "\t "])
def test_clean_batches_with_a_blank_code_take_the_checked_path(blank: str) -> None:
    """A blank store or SKU is not clean: the row-by-row checks name it."""
    raw = pa.table(
        {
            "date": ["2026-01-05"] * 2,
            "store": [blank, "001"],
            "sku": ["000001", "000002"],
            "sales": ["1", "2"],
            "qty": ["1", "1"],
        }
    )
    assert sales._typed_if_clean(raw) is None
    assert sales._typed_if_clean(raw.slice(1)) is not None  # a slice's offset honoured
    data = f"date,store,sku,sales,qty\n2026-01-05,001,000001,1,1\n2026-01-05,{blank},2,2,1\n"
    with pytest.raises(DataError, match=r"line 3, column store: .* is empty"):
        read(data.encode())


@pytest.mark.parametrize("written", ["1,2,3,4", "12,34", "1,2345", ",123", "1.5"])
def test_misplaced_thousands_separators_are_not_numbers(written: str) -> None:
    """A separator must sit every three digits: '1,2,3,4' is a bad value, not 1234."""
    data = f'date,store,sku,sales,qty\n2026-01-05,007,000123,"{written}",1\n'.encode()
    with pytest.raises(DataError, match=r"line 2, column sales: .* is not a whole number"):
        read(data)


def test_sums_of_partial_sums_equal_the_sums_of_all_rows() -> None:
    """Aggregating per batch and then combining gives the sums of the whole input, sorted."""
    table = pa.concat_tables(read(long_file(), max_bad_rows=3)[1])
    halves = [table.slice(0, 20), table.slice(20)]
    combined = aggregate([partial_aggregate(half) for half in halves])
    whole = aggregate([partial_aggregate(table)])
    assert combined.equals(whole)
    assert combined.to_pylist() == [
        {"date": date(2026, 11, 28), "store": "001", "sales": 5400, "qty": 54, "rows": 54}
    ]


# --- bytes that do not decode ------------------------------------------------------------


def rows(count: int, start: int = 2) -> list[bytes]:
    """``count`` good data lines, numbered from ``start`` in their memo."""
    return [f"2026-11-28,001,{n:06d},100,1,line{n}".encode() for n in range(start, start + count)]


def file_of(lines: list[bytes], newline: bytes = b"\n") -> bytes:
    return newline.join([HEADER.encode(), *lines]) + newline


@pytest.mark.parametrize(
    ("bad", "shown"),
    [(b"\x97", "0x97"), (b"\xc0\xaf", "0xC0"), ("渋谷".encode("cp932"), "0x8F")],
    ids=["stray-byte", "overlong", "cp932-inside-utf8"],
)
def test_a_bad_byte_past_the_first_64_kib_names_its_line_and_offset(bad: bytes, shown: str) -> None:
    """UTF-8 that stops being UTF-8 far into the file: 65, the right line and byte."""
    good = rows(3000)  # about 100 KiB: the bad line is read long after the encoding was chosen
    lines = [*good[:2630], b"2026-11-28,001,000999,100,1,memo" + bad + b"x", *good[2630:]]
    data = file_of(lines)
    offset = data.index(bad)
    with pytest.raises(DataError) as caught:
        read(data)
    message = str(caught.value)
    assert message.startswith(f"{WHERE} line 2632 (byte {offset}): not valid utf-8 ({shown}")
    assert "set OCHINAI_REPORT_ENCODING" in message


def test_a_bad_cp932_trail_byte_names_its_line_and_offset() -> None:
    """A CP932 lead byte followed by what cannot follow it: 65 with line, byte, encoding."""
    lines = [line.replace(b"line", "行".encode("cp932")) for line in rows(3000)]
    lines[2000] = b"2026-11-28,001,009999,100,1,\x81\x20broken"
    data = file_of(lines)
    offset = data.index(b"\x81\x20")
    with pytest.raises(DataError) as caught:
        read(data, encoding="cp932")
    assert str(caught.value).startswith(f"{WHERE} line 2002 (byte {offset}): not valid cp932 (0x81")


def test_a_cp932_file_still_reads_as_before() -> None:
    """Decoding CP932 ourselves keeps the values: Japanese text, codes with zeros."""
    data = f"{HEADER}\n2026-11-28,渋谷店,000123,1500,3,メモ\n".encode("cp932")
    _, batches = read(data)
    [row] = pa.concat_tables(batches).to_pylist()
    assert (row["store"], row["sku"], row["memo"]) == ("渋谷店", "000123", "メモ")


def test_a_cr_only_file_is_read_with_true_line_numbers() -> None:
    """Old Mac exports end lines with CR alone: read, and a bad row named by its line."""
    lines = rows(5)
    lines[2] = b'2026-11-28,001,000004,100,1,"two\rlines"'
    lines[4] = b"2026-11-28,001,000006,100,x,memo"
    data = file_of(lines, newline=b"\r")
    with pytest.raises(DataError, match=r"line 7, column qty: 'x' is not a whole number"):
        read(data)
    reader, batches = read(data, max_bad_rows=1)
    assert reader.rows == 4 and reader.header == HEADER.split(",")
    assert pa.concat_tables(batches)["memo"].to_pylist()[2] == "two\rlines"


# --- sums that would overflow ------------------------------------------------------------


def test_sums_at_the_int64_bound_are_exact() -> None:
    """Nine 18-digit sales sum to just under 2**63: accepted, summed exactly."""
    big = 999_999_999_999_999_999
    data = file_of([f"2026-11-28,001,{n:06d},{big},1,m".encode() for n in range(9)])
    _, batches = read(data)
    daily = aggregate([partial_aggregate(b) for b in batches])
    assert daily["sales"].to_pylist() == [9 * big]


@pytest.mark.parametrize("column", ["sales", "qty"])
def test_sums_past_the_int64_bound_fail_naming_column_and_line(column: str) -> None:
    """Twelve 18-digit values would wrap around in int64: 65 at the line that passes 2**63."""
    big = 999_999_999_999_999_999
    make = (
        (lambda n: f"2026-11-28,001,{n:06d},{big},1,m")
        if column == "sales"
        else (lambda n: f"2026-11-28,001,{n:06d},100,{big},m")
    )
    data = file_of([make(n).encode() for n in range(12)])
    with pytest.raises(DataError) as caught:
        read(data)
    message = str(caught.value)
    # The tenth data row (line 11) takes the total of |values| past 9,223,372,036,854,775,807.
    assert message.startswith(f"{WHERE} line 11, column {column}: the total of |{column}|")
    assert "9,223,372,036,854,775,807" in message


def test_negative_sales_count_by_their_size() -> None:
    """Alternating ±18-digit sales never wrap a group's sum, but the bound is on |sales|."""
    big = 999_999_999_999_999_999
    lines = [f"2026-11-28,001,{n:06d},{-big if n % 2 else big},1,m".encode() for n in range(10)]
    with pytest.raises(DataError, match="line 11, column sales"):
        read(file_of(lines))
