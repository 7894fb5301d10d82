"""The detail rows deflated in a thread and spliced into xlsxwriter's zip."""

from __future__ import annotations

import errno
import threading
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pytest

from ochinai.jobs.report import sheetzip
from ochinai.jobs.report.sheetzip import THREAD_NAME, Deflated, RowsDeflater, splice
from ochinai.jobs.report.workbook import SalesWorkbook
from ochinai.runtime.errors import DataError
from tests.test_workbook import COLUMNS, daily, detail


def deflate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def book_of(path: Path, rows: pa.Table, sheet_max_rows: int = 1_048_575) -> SalesWorkbook:
    book = SalesWorkbook(path, date(2026, 11, 28), COLUMNS, COLUMNS, 10**6, sheet_max_rows)
    for start in range(0, rows.num_rows, 100):
        book.add_detail(rows.slice(start, 100))
    return book


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of 1 KiB, one waiting at most: the builder waits on the thread often."""
    monkeypatch.setattr(sheetzip, "SLICE", 1024)
    monkeypatch.setattr(sheetzip, "QUEUED", 1)


def test_rows_spliced_over_many_slices_read_back_and_check_out(
    tmp_path: Path, small_slices: None
) -> None:
    """Three sheets of rows handed over in 1 KiB slices: every member's CRC and size
    check out, every row is there in order, and the temp files are gone."""
    path = tmp_path / "book.xlsx"
    book = book_of(path, detail(2_500), sheet_max_rows=1_000)
    book.finish(daily(), [])
    with zipfile.ZipFile(path) as zipped:
        assert zipped.testzip() is None  # reads every member, checking its CRC-32
        assert zipped.namelist()[0] == "[Content_Types].xml"
    read = openpyxl.load_workbook(path, read_only=True)
    skus = [
        row[2]
        for name in ("明細", "明細 (2)", "明細 (3)")
        for row in read[name].iter_rows(min_row=2, values_only=True)
    ]
    assert skus == [f"{i:06d}" for i in range(2_500)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.xlsx"]
    assert not deflate_threads()


def test_same_rows_same_bytes_however_they_are_sliced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deflate stream depends on the rows, not on the slices they came in."""
    files = []
    for slice_bytes in (1024, 4 << 20):
        monkeypatch.setattr(sheetzip, "SLICE", slice_bytes)
        (tmp_path / str(slice_bytes)).mkdir()
        path = tmp_path / str(slice_bytes) / "book.xlsx"
        book_of(path, detail(3_000)).finish(daily(), [])
        files.append(path.read_bytes())
    assert files[0] == files[1]


def test_a_failed_write_in_the_thread_is_raised_in_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_slices: None
) -> None:
    """A full disk while compressing is the job's OSError, and the thread is gone."""
    real = RowsDeflater.__init__

    def full_disk(self: RowsDeflater, tmpdir: Path) -> None:
        real(self, tmpdir)

        class Full:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def write(self, data: bytes) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        inner = self._file
        self._file = Full()  # type: ignore[assignment]

    monkeypatch.setattr(RowsDeflater, "__init__", full_disk)
    book = SalesWorkbook(tmp_path / "b.xlsx", date(2026, 11, 28), COLUMNS, COLUMNS, 10**6)
    with pytest.raises(OSError, match="No space left"):
        for _ in range(50):
            book.add_detail(detail(100))
        book.finish(daily(), [])
    book.abort()
    assert not deflate_threads()


def test_abort_ends_a_thread_the_builder_is_waiting_on(tmp_path: Path, small_slices: None) -> None:
    """Given up mid-way (a bad row, a SIGTERM), the thread ends and its file is closed."""
    deflater = RowsDeflater(tmp_path)
    deflater.write(b"<row/>" * 2_000)
    deflater.abort()
    assert not deflate_threads()
    assert deflater._file.closed


def test_a_workbook_over_4_gib_is_refused_naming_the_setting(tmp_path: Path) -> None:
    """Past what a zip without ZIP64 holds: a DataError that says what to lower."""
    path = tmp_path / "book.xlsx"
    book = book_of(path, detail(10))
    book._release_detail()  # the rows' thread stopped: xlsxwriter's zip alone, as splice gets it
    book.workbook.close()
    with (tmp_path / "rows").open("w+b") as rows:
        rows.write(b"\x03\x00")  # an empty deflate block, standing in for 4 GiB of rows
        too_many = Deflated(rows, 0, 1 << 32)
        with pytest.raises(DataError, match="OCHINAI_REPORT_DETAIL_MAX_ROWS"):
            splice(book._parts, tmp_path / "out.xlsx", {"xl/worksheets/sheet5.xml": too_many})


def test_a_failed_last_flush_is_raised_by_finish_not_waited_on(tmp_path: Path) -> None:
    """Rows small enough to stay in the compressor until its last flush, and a disk full
    just then: finish() raises the error instead of waiting for ever."""
    deflater = RowsDeflater(tmp_path)
    inner = deflater._file

    class FullAtTheEnd:
        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def write(self, data: bytes) -> int:
            if data:  # the compressor holds small rows back: only the flush writes
                raise OSError(errno.ENOSPC, "No space left on device")
            return 0

    deflater._file = FullAtTheEnd()  # type: ignore[assignment]
    deflater.write(b"<row/>" * 10)
    outcome: list[BaseException | None] = []

    def finish() -> None:
        try:
            deflater.finish()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=finish)
    waiting.start()
    waiting.join(5)
    assert not waiting.is_alive(), "finish() waited on a thread that had stopped"
    assert isinstance(outcome[0], OSError)
    deflater.abort()
    assert not deflate_threads()


def test_a_failed_run_leaves_no_temp_file_of_the_workbook(tmp_path: Path) -> None:
    """abort() closes and removes xlsxwriter's row files, the detail's and the workbook."""
    book = book_of(tmp_path / "book.xlsx", detail(300), sheet_max_rows=100)
    assert any(tmp_path.iterdir())  # xlsxwriter's row files, one a sheet
    book.abort()
    book.abort()  # twice is harmless
    assert not list(tmp_path.iterdir())
    assert not deflate_threads()
