"""Tests of the jobs' CSV reader: the record after the file, quotes left open, physical
lines across batches, errors that name file and line, CP932 and UTF-8 with BOM."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pyarrow as pa
import pytest

from ochinai.runtime.csvreader import Batch, CsvReader, NeedsExactLines, ReadAgain
from ochinai.runtime.csvrecords import LAST, QUOTE_HINT
from ochinai.runtime.errors import DataError

WHERE = "s3://ops/in/data.csv"


def reader_of(data: bytes, reopen: bool = True, **options: Any) -> CsvReader:
    again = (lambda: contextlib.nullcontext(io.BytesIO(data))) if reopen else None
    return CsvReader(io.BytesIO(data), WHERE, reopen=again, **options)


def read(data: bytes, names: list[str] | None = None, **options: Any) -> list[Batch]:
    """Every batch of ``data``, its columns ``names`` (the header's by default)."""
    reader = reader_of(data, **options)
    return list(reader.batches(names or reader.header))


def rows(batches: list[Batch]) -> list[dict[str, Any]]:
    return [row for batch in batches for row in batch.records.to_pylist()]


# --- the record after the file --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"id,note\n1,a\n2,b\n", [["1", "a"], ["2", "b"]]),
        (b"id,note\n1,a\n2,b", [["1", "a"], ["2", "b"]]),  # no line break at the end
        (b'id,note\n1,a\n2,"b"', [["1", "a"], ["2", "b"]]),  # a quoted value last
        (b'id,note\r\n1,"a""b"\r\n', [["1", 'a"b']]),  # a doubled quote is a quote
        (b"id,note\r1,a\r2,b\r", [["1", "a"], ["2", "b"]]),  # CR alone ends a line
        (b"id,note\n", []),  # the header alone
    ],
)
@pytest.mark.parametrize("numbered", [True, False])
def test_the_record_after_the_file_is_never_a_row(
    data: bytes, expected: list[list[str]], numbered: bool
) -> None:
    """The rows are the file's, none of them the record read after it; only the last
    batch says it is the last."""
    batches = read(data, numbered=numbered)
    assert [list(row.values()) for row in rows(batches)] == expected
    assert [batch.last for batch in batches] == [False] * (len(batches) - 1) + [True]
    assert all(LAST not in row.values() for row in rows(batches))


def test_in_a_file_of_one_column_an_empty_line_is_a_row() -> None:
    """One column: the empty line is a row (missing), and the record after the file still
    reads as its own row, then dropped."""
    batches = read(b"a\n1\n\n3\n", nulls=True)
    assert [row["a"] for row in rows(batches)] == ["1", None, "3"]


@pytest.mark.parametrize(("nulls", "expected"), [(True, ["1", None, ""]), (False, ["1", "", ""])])
def test_an_unquoted_empty_value_is_null_only_when_asked(
    nulls: bool, expected: list[str | None]
) -> None:
    [row] = rows(read(b'a,b,c\n1,,""\n', nulls=nulls))
    assert list(row.values()) == expected


def test_blank_lines_are_rows_only_when_numbered() -> None:
    """Numbered, a blank line is a row of empty values (so lines stay true); else skipped."""
    data = b"a,b\n1,x\n\n2,y\n"
    assert [r["a"] for r in rows(read(data, numbered=True))] == ["1", "", "2"]
    assert [r["a"] for r in rows(read(data, numbered=False))] == ["1", "2"]


# --- a quote that never closes ---------------------------------------------------------


def open_at(line: int, lines: int = 2000, newline: bytes = b"\n") -> bytes:
    """``lines`` records after a header, the one on ``line`` opening a quote."""
    records = [b"id,note"] + [b"%d,n%d" % (n, n) for n in range(2, lines + 2)]
    records[line - 1] = b'%d,"n' % line
    return newline.join(records) + newline


@pytest.mark.parametrize("numbered", [True, False])
@pytest.mark.parametrize("block_size", [1 << 10, 1 << 20])  # past the block, and within it
@pytest.mark.parametrize("line", [2, 700, 2001])
def test_a_quote_that_never_closes_names_its_line_and_the_bytes_it_swallows(
    numbered: bool, block_size: int, line: int
) -> None:
    data = open_at(line)
    rest = len(data) - data.index(b'"')
    options: dict[str, Any] = {"numbered": numbered, "block_size": block_size}
    if not numbered:
        options["max_block"] = 1 << 24
    with pytest.raises(DataError) as caught:
        read(data, **options)
    assert str(caught.value) == (
        f"{WHERE} line {line}: a quoted value opens here and never closes, so the rest of "
        f"the file ({rest:,} bytes) would be that one value; {QUOTE_HINT}"
    )


def test_a_quote_left_open_in_a_crlf_file_is_named_by_its_line() -> None:
    data = open_at(40, lines=100, newline=b"\r\n")
    with pytest.raises(DataError, match=rf"^{WHERE} line 40: a quoted value opens here"):
        read(data, numbered=True)


def test_a_quote_left_open_without_a_way_to_read_again_is_refused_without_a_line() -> None:
    with pytest.raises(DataError) as caught:
        read(open_at(5, lines=10), numbered=True, reopen=False)
    assert (
        str(caught.value) == f"{WHERE}: unreadable CSV: a quoted value never closes; {QUOTE_HINT}"
    )


def test_a_quote_opened_in_a_header_that_is_the_whole_file() -> None:
    """What the backup asks before typing an empty file: the quote's line, or None."""
    assert reader_of(b"id,note\n").quote_left_open() is None
    error = reader_of(b'id,"note\n1,a\n').quote_left_open()
    assert error is not None and str(error).startswith(f"{WHERE} line 1: a quoted value opens")


# --- physical lines --------------------------------------------------------------------


def numbered_file(
    records: int, newline: str = "\n", inside: str | None = None
) -> tuple[bytes, dict[int, int]]:
    """``records`` records after the header ``id,note``: every 7th note quoted over three
    lines (broken by ``inside``, the file's ``newline`` by default), every 11th record with
    a third field; the line each record starts on, by its number (the header's is 1)."""
    inside = newline if inside is None else inside
    texts, starts, line = ["id,note"], {}, 2
    for n in range(records):
        if n % 11 == 5:
            text = f"{n},x,extra"
        elif n % 7 == 3:
            text = f'{n},"first{inside}second{inside}third"'
        else:
            text = f"{n},n{n}"
        texts.append(text)
        starts[n + 2] = line
        line += 1 + text.count(inside)
    return (newline.join(texts) + newline).encode(), starts


def assert_lines(batches: list[Batch], starts: dict[int, int]) -> None:
    """Every row and every rejected row named by the line it starts on, each once."""
    named: dict[int, int] = {}
    for batch in batches:
        for index, n in enumerate(batch.records.column("id").to_pylist()):
            named[int(n) + 2] = batch.line_of(index)
        for k, rejected in enumerate(batch.rejected):
            assert rejected.fields == 3
            named[rejected.number] = batch.line_of_rejected(k)
    assert named == starts


# In a CRLF file the values break lines with LF: pyarrow loses a CRLF's LF inside a
# quoted value when a block ends between the two (see the expected failure below).
@pytest.mark.parametrize(("newline", "inside"), [("\n", "\n"), ("\r\n", "\n"), ("\r", "\r")])
@pytest.mark.parametrize("block_size", [64, 300, 4096, 1 << 20])
def test_rows_are_named_by_their_physical_line_across_batches(
    newline: str, inside: str, block_size: int
) -> None:
    """Quoted line breaks, rows left out for their field count, block boundaries inside
    quoted values (64 bytes hold one or two records): every line is the file's."""
    data, starts = numbered_file(400, newline, inside)
    batches = read(data, numbered=True, threads=False, block_size=block_size)
    if block_size == 64:
        assert len(batches) > 50
    assert_lines(batches, starts)
    quoted = {r["note"] for r in rows(batches) if int(r["id"]) % 7 == 3}
    assert quoted == {f"first{inside}second{inside}third"}  # whole across blocks


def test_a_crlf_inside_a_quoted_value_split_by_a_block_boundary_is_kept() -> None:
    """pyarrow drops the LF of a CRLF inside a quoted value when its block ends between
    the CR and the LF (here at 287 x's): every place of the CRLF around the first block's
    end keeps both."""
    for n in range(250, 320):
        data = b'id,note\r\n1,"' + b"x" * n + b'\r\nsecond"\r\n2,b\r\n'
        notes = [row["note"] for row in rows(read(data, block_size=300))]
        assert notes == ["x" * n + "\r\nsecond", "b"], n


def test_rows_left_out_in_blocks_read_ahead_go_with_their_own_batch() -> None:
    """pyarrow parses blocks ahead of the batch it hands over, so rows it leaves out are
    found early: the lines after them must not move (thousands of rows, 4 KiB blocks)."""
    data, starts = numbered_file(6000)
    for _ in range(3):
        assert_lines(read(data, numbered=True, threads=False, block_size=4096), starts)


def test_a_threaded_read_cannot_number_a_row_left_out() -> None:
    data, _ = numbered_file(40)
    with pytest.raises(NeedsExactLines):
        read(data, numbered=True, threads=True)
    plain, _ = numbered_file(40)  # without the rows left out it can
    assert read(plain.replace(b",x,extra", b",x"), numbered=True, threads=True)


def test_lines_after_a_header_with_a_quoted_line_break() -> None:
    data = b'"id\nnumber",note\n1,a\n2,"b\nc"\n3,d\n'
    batches = read(data, ["id", "note"], numbered=True)
    assert [batches[0].line_of(i) for i in range(3)] == [3, 4, 6]
    assert [r["id"] for r in rows(batches)] == ["1", "2", "3"]


def test_a_plain_reader_does_not_number_lines() -> None:
    [batch] = read(b"a,b\n1,2\n")
    assert batch.line is None
    with pytest.raises(ValueError, match="does not number lines"):
        batch.line_of(0)


# --- errors that name file and line -----------------------------------------------------


def many(records: int) -> list[bytes]:
    return [b"%d,note %d" % (n, n) for n in range(records)]


@pytest.mark.parametrize("numbered", [True, False])
def test_a_bad_byte_past_the_head_names_its_line_and_byte(numbered: bool) -> None:
    """Past the 64 KiB the encoding is told from: checked on the way, or found again."""
    lines = many(8000)  # about 100 KB
    lines[6000] = b"6000,bad \xff here"
    data = b"id,note\n" + b"\n".join(lines) + b"\n"
    with pytest.raises(DataError) as caught:
        read(data, numbered=numbered, hint="set THE_ENCODING")
    offset = data.index(b"\xff")
    assert str(caught.value) == (
        f"{WHERE} line 6002 (byte {offset}): not valid utf-8 (0xFF); set THE_ENCODING"
    )


def test_a_row_with_the_wrong_field_count_is_an_error_naming_its_line() -> None:
    """Not numbered: pyarrow, in threads, cannot say where; the file is read again."""
    data = b'id,note\n1,"two\nlines"\n2,' + b"x" * 3000 + b"\n3,x,extra\n4,x\n"
    with pytest.raises(DataError) as caught:
        read(data, block_size=1 << 13, max_block=1 << 20)
    assert str(caught.value) == f"{WHERE} line 5: has 3 fields where the header has 2"


def test_a_record_larger_than_a_block_is_read_again_with_a_larger_one() -> None:
    data = b'id,doc\n1,short\n2,"' + b"line\n" * 1000 + b'"\n3,short\n'
    reader = reader_of(data, block_size=1 << 10, max_block=1 << 20)
    with pytest.raises(ReadAgain):
        list(reader.batches(reader.header))
    assert reader.block_size == 1 << 13  # the record's 5,009 bytes, to a power of two
    assert [r["doc"] for r in rows(list(reader.batches(reader.header)))] == [
        "short",
        "line\n" * 1000,
        "short",
    ]


def test_a_record_past_the_largest_block_names_its_line_and_size() -> None:
    data = b'id,doc\n1,short\n2,"' + b"x\n" * 3000 + b'"\n3,short\n'
    with pytest.raises(DataError) as caught:
        read(data, block_size=1 << 10, max_block=1 << 12)
    assert str(caught.value).startswith(
        f"{WHERE} line 3: the record that starts here has 6,005 bytes, more than the 4,096"
    )


def test_a_record_larger_than_the_block_of_a_single_pass_names_the_line_before() -> None:
    data = b'id,doc\n1,short\n2,"' + b"x\n" * 3000 + b'"\n3,short\n'
    with pytest.raises(DataError, match=rf"^{WHERE}: unreadable CSV after line 2: straddling"):
        read(data, numbered=True, block_size=1 << 10)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", f"{WHERE} is empty"),
        (b"\xef\xbb\xbf \r\n", f"{WHERE} is empty"),
        ("id,note\n1,a\n".encode("utf-16"), f"{WHERE} is UTF-16"),
    ],
)
def test_files_without_text_to_read_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(DataError, match=f"^{message}"):
        reader_of(data)


# --- CP932 and UTF-8 with BOM -------------------------------------------------------------


def test_a_cp932_file_is_read_as_text_with_true_lines() -> None:
    text = '日付,店舗,備考\n2026/11/28,渋谷店,"一行目\n二行目"\n2026/11/29,新宿店,メモ\n'
    reader = reader_of(text.encode("cp932"), numbered=True)
    assert (reader.encoding, reader.header) == ("cp932", ["日付", "店舗", "備考"])
    [batch] = list(reader.batches(["date", "store", "memo"]))
    assert batch.records.to_pylist() == [
        {"date": "2026/11/28", "store": "渋谷店", "memo": "一行目\n二行目"},
        {"date": "2026/11/29", "store": "新宿店", "memo": "メモ"},
    ]
    assert [batch.line_of(0), batch.line_of(1)] == [2, 4]


@pytest.mark.parametrize("numbered", [True, False])
def test_a_bad_cp932_trail_byte_names_its_line_and_byte(numbered: bool) -> None:
    lines = [f"{n},行{n}".encode("cp932") for n in range(5000)]
    lines[3000] = b"3000,\x81\x20broken"
    data = "番号,備考\n".encode("cp932") + b"\n".join(lines) + b"\n"
    with pytest.raises(DataError) as caught:
        read(data, numbered=numbered, encoding="cp932")
    offset = data.index(b"\x81\x20")
    assert str(caught.value).startswith(f"{WHERE} line 3002 (byte {offset}): not valid cp932")


def test_a_cp932_quote_left_open_counts_the_bytes_as_read() -> None:
    data = '名前,値\nりんご,"1\nみかん,2\n'.encode("cp932")
    with pytest.raises(DataError) as caught:
        read(data)
    rest = len('"1\nみかん,2\n'.encode())  # in UTF-8, as pyarrow reads it
    assert str(caught.value).startswith(
        f"{WHERE} line 2: a quoted value opens here and never closes, so the rest of "
        f"the file ({rest:,} bytes)"
    )


@pytest.mark.parametrize("numbered", [True, False])
def test_a_utf8_file_with_a_bom_has_a_clean_header_and_rows(numbered: bool) -> None:
    data = "\ufeffid,名前\r\n1,りんご\r\n2,みかん\r\n".encode()
    reader = reader_of(data, numbered=numbered)
    assert (reader.encoding, reader.header) == ("utf-8-sig", ["id", "名前"])
    assert rows(list(reader.batches(["id", "name"]))) == [
        {"id": "1", "name": "りんご"},
        {"id": "2", "name": "みかん"},
    ]


def test_a_quote_right_after_the_bom_is_named_on_line_1() -> None:
    """pyarrow skips the BOM, so the quote opens a value; the scan must see it so too."""
    data = b'\xef\xbb\xbf"id,name\n1,a\n'
    with pytest.raises(DataError) as caught:
        read(data, ["id"])
    assert str(caught.value).startswith(
        f"{WHERE} line 1: a quoted value opens here and never closes, so the rest of "
        f"the file ({len(data) - 3:,} bytes)"
    )


def test_the_stream_is_read_once_then_again_from_reopen() -> None:
    """The first read takes the stream the reader was made with; a second one reopens."""
    data = b"id\n1\n2\n"
    opened: list[int] = []

    def reopen() -> contextlib.AbstractContextManager[io.BytesIO]:
        opened.append(1)
        return contextlib.nullcontext(io.BytesIO(data))

    reader = CsvReader(io.BytesIO(data), WHERE, reopen=reopen)
    first = rows(list(reader.batches(["id"])))
    assert opened == []
    assert rows(list(reader.batches(["id"]))) == first == [{"id": "1"}, {"id": "2"}]
    assert opened == [1]


def test_batches_are_record_batches_of_text() -> None:
    [batch] = read(b"a,b\n1,2.5\n")
    assert isinstance(batch.records, pa.RecordBatch)
    assert batch.records.schema == pa.schema([("a", pa.string()), ("b", pa.string())])
