"""Tests of the workbook writer: rows built as sheet XML read back exactly as written."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from datetime import date, datetime, timedelta
from pathlib import Path

import openpyxl
import pyarrow as pa
import pytest
import xlsxwriter

from ochinai.jobs.report.sales import DAILY_SCHEMA
from ochinai.jobs.report.workbook import SalesWorkbook
from ochinai.runtime.errors import ConfigError

COLUMNS = ["date", "store", "sku", "sales", "qty", "memo"]
TRICKY = [
    "a & b <c> \"d\" 'e'",
    "  leading and trailing  ",
    "tab\there",
    "bell\x07and\x01nul",
    "_x0041_ stays literal",
    "全角\u3000スペース",
    "\u3000全角スペースで字下げ\u3000",
    "line\nbreak",
    "",
]


def detail(n: int) -> pa.Table:
    return pa.table(
        {
            "date": pa.array([date(2026, 11, 1 + i % 28) for i in range(n)], pa.date32()),
            "store": [f"{i % 3:03d}" for i in range(n)],
            "sku": [f"{i:06d}" for i in range(n)],
            "sales": pa.array([i * 1000 - 5 for i in range(n)], pa.int64()),
            "qty": pa.array([i for i in range(n)], pa.int64()),
            "memo": [TRICKY[i % len(TRICKY)] for i in range(n)],
        }
    )


def daily() -> pa.Table:
    return pa.table(
        {
            "date": pa.array(
                [date(2026, 11, 1), date(2026, 11, 1), date(2026, 11, 2)], pa.date32()
            ),
            "store": ["001", "002", "001"],
            "sales": pa.array([100, 200, 300], pa.int64()),
            "qty": pa.array([1, 2, 3], pa.int64()),
            "rows": pa.array([1, 1, 2], pa.int64()),
        },
        schema=DAILY_SCHEMA,
    )


def write(
    tmp_path: Path, rows: pa.Table, sheet_max_rows: int = 1_048_575, notes: tuple[str, ...] = ()
) -> Path:
    path = tmp_path / "book.xlsx"
    book = SalesWorkbook(path, date(2026, 11, 28), COLUMNS, COLUMNS, 10**6, sheet_max_rows)
    for start in range(0, rows.num_rows, 4):  # several batches
        book.add_detail(rows.slice(start, 4))
    book.finish(daily(), list(notes))
    return path


def as_xlsxwriter_writes(tmp_path: Path, texts: list[str]) -> list[str | None]:
    """The texts as openpyxl reads them back from xlsxwriter's own cell-by-cell writing."""
    path = tmp_path / "reference.xlsx"
    with xlsxwriter.Workbook(str(path), {"constant_memory": True}) as wb:
        sheet = wb.add_worksheet()
        for r, text in enumerate(texts):
            sheet.write_string(r, 0, text)
    read = openpyxl.load_workbook(path).active
    return [read.cell(r + 1, 1).value for r in range(len(texts))]


def test_detail_values_read_back_as_xlsxwriter_writes_them(tmp_path: Path) -> None:
    """Escaped, spaced, control and non-ASCII text, dates and numbers survive the XML path."""
    rows = detail(len(TRICKY) * 2)
    expected = as_xlsxwriter_writes(tmp_path, TRICKY)
    book = openpyxl.load_workbook(write(tmp_path, rows))
    got = [list(r) for r in book["明細"].iter_rows(min_row=2, values_only=True)]
    assert len(got) == rows.num_rows
    for i, row in enumerate(got):
        assert row[0] == datetime(2026, 11, 1 + i % 28)
        assert row[1:5] == [f"{i % 3:03d}", f"{i:06d}", i * 1000 - 5, i]
        assert row[5] == (expected[i % len(TRICKY)] or None)
    assert "a & b <c>" in got[0][5] and got[1][5] == "  leading and trailing  "
    assert book["明細"]["D2"].number_format == '"¥"#,##0_ ;-"¥"#,##0_ '


def test_sheets_split_at_the_row_limit_across_batches(tmp_path: Path) -> None:
    """With 5 rows a sheet, 12 rows fill 明細, 明細 (2) and 明細 (3) as 5, 5, 2, in order."""
    book = openpyxl.load_workbook(write(tmp_path, detail(12), sheet_max_rows=5))
    counts = [book[name].max_row - 1 for name in ("明細", "明細 (2)", "明細 (3)")]
    assert counts == [5, 5, 2]
    assert book["明細 (3)"]["C3"].value == "000011"


def test_notes_sit_beside_the_summary_rows(tmp_path: Path) -> None:
    """Notes longer than the table still land in column G, one a row, with the table intact."""
    notes = [f"note {i}" for i in range(5)]
    book = openpyxl.load_workbook(write(tmp_path, detail(2), notes=tuple(notes)))
    sheet = book["日次売上"]
    assert [sheet.cell(r, 7).value for r in range(1, 6)] == notes
    assert [c.value for c in sheet[4]][:5] == [datetime(2026, 11, 2), "001", 300, 3, 2]
    assert sheet.auto_filter.ref == "A1:E4"


def test_same_input_same_bytes(tmp_path: Path) -> None:
    """Two builds of the same rows and date are byte-identical files."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write(tmp_path / "a", detail(9)).read_bytes()
    second = write(tmp_path / "b", detail(9)).read_bytes()
    assert first == second


class CellByCell(SalesWorkbook):
    """The same workbook with every detail cell written by xlsxwriter's own write_* calls."""

    def add_detail(self, batch: pa.Table) -> int:
        if self._sheet is None:
            self._new_detail_sheet()
        formats = {"date": self.fmt_date, "sales": self.fmt_yen, "qty": self.fmt_count}
        for row in batch.to_pylist():
            self._sheet_rows += 1
            for col, name in enumerate(self.columns):
                value = row[name]
                if name == "date":
                    self._sheet.write_datetime(self._sheet_rows, col, value, formats[name])
                elif name in formats:
                    self._sheet.write_number(self._sheet_rows, col, value, formats[name])
                else:  # write() makes "" a blank cell, as write_string() no longer does
                    self._sheet.write(self._sheet_rows, col, value)
        self.detail_rows += batch.num_rows
        return batch.num_rows


def sheet_xml(path: Path, index: int) -> bytes:
    with zipfile.ZipFile(path) as book:
        return book.read(f"xl/worksheets/sheet{index}.xml")


SOFFICE = shutil.which("soffice")
needs_soffice = pytest.mark.skipif(
    SOFFICE is None,
    reason="LibreOffice is not installed: apt-get install libreoffice-calc-nogui "
    "fonts-ipaexfont-gothic (.ci/run does)",
)


def printed(workbook: Path, tmp_path: Path) -> list[str]:
    """Each page's text of ``workbook`` printed to PDF by LibreOffice (beside it)."""
    import pypdf

    done = subprocess.run(
        [
            str(SOFFICE),
            "--headless",
            f"-env:UserInstallation=file://{tmp_path}/lo",
            "--convert-to",
            "pdf",
            "--outdir",
            str(workbook.parent),
            str(workbook),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    pdf = workbook.with_suffix(".pdf")
    assert pdf.exists(), done.stdout + done.stderr
    return [page.extract_text() for page in pypdf.PdfReader(pdf).pages]


def test_the_fast_detail_path_writes_the_xml_xlsxwriter_writes(tmp_path: Path) -> None:
    """Golden check: the detail sheet built as Arrow XML is byte for byte xlsxwriter's own.

    If an xlsxwriter release changes how it writes cells, this fails before a workbook
    that Excel reads differently ships.
    """
    rows = detail(len(TRICKY) * 3)
    # Over Excel's 32,767 UTF-16 units: plain text, and emoji that count two units each.
    memos = [*rows["memo"].to_pylist()[:-2], "x" * 40_000, "a" + "😀" * 20_000]
    rows = rows.set_column(5, "memo", pa.array(memos))
    fast = write(tmp_path, rows)
    (tmp_path / "ref").mkdir()
    reference = tmp_path / "ref" / "book.xlsx"
    book = CellByCell(reference, date(2026, 11, 28), COLUMNS, COLUMNS, 10**6)
    for start in range(0, rows.num_rows, 4):
        book.add_detail(rows.slice(start, 4))
    book.finish(daily(), [])
    assert sheet_xml(fast, 5) == sheet_xml(reference, 5)  # after the four summary sheets
    for summary in (1, 2, 3, 4):  # the summary sheets take the same path for most rows
        assert sheet_xml(fast, summary) == sheet_xml(reference, summary)


def test_missing_xlsxwriter_internals_fail_naming_both_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An xlsxwriter without the internals the fast path uses is a config error (78), clearly."""
    from xlsxwriter.worksheet import Worksheet

    from ochinai.jobs.report import workbook

    monkeypatch.delattr(Worksheet, "_write_single_row")
    monkeypatch.setattr(xlsxwriter, "__version__", "9.0.0")
    with pytest.raises(ConfigError) as caught:
        workbook.check_xlsxwriter()
    message = str(caught.value)
    assert "xlsxwriter 9.0.0" in message and "Worksheet._write_single_row" in message
    assert f"tested with xlsxwriter {workbook.TESTED_XLSXWRITER}" in message


# --- the business date's figures, first in the mail and on the summary sheet ----------


def daily_of(rows: list[tuple[date, str, int]]) -> pa.Table:
    from ochinai.jobs.report.sales import DAILY_SCHEMA

    return pa.table(
        {
            "date": [r[0] for r in rows],
            "store": [r[1] for r in rows],
            "sales": [r[2] for r in rows],
            "qty": [1] * len(rows),
            "rows": [2] * len(rows),
        },
        schema=DAILY_SCHEMA,
    )


def test_a_week_of_sales_leads_with_the_day_and_its_comparisons() -> None:
    from ochinai.jobs.report.workbook import day_figures

    week = [(date(2026, 11, 26) + timedelta(days=n), "001", 1000 + n * 10) for n in range(7)]
    week.append((date(2026, 11, 25), "001", 2000))  # the same weekday a week before
    week.append((date(2026, 12, 2), "渋谷ハチ公前スクランブル交差点南口駅前店舗", 500))
    lines = day_figures(daily_of(week), date(2026, 12, 2)).lines()
    assert lines == [
        "2026-12-02 の売上 ¥1,560 / 数量 2 / 4 行",  # 1,060 + 500: that day only
        "前日比 +48.6% / 前週同曜日比 -22.0%",  # against 1,050 and 2,000
        "この日の上位店舗: 001 ¥1,060、渋谷ハチ公前スクランブル交差点南口駅前… ¥500",
        "入力の期間: 2026-11-25〜2026-12-02, 8 日間, ¥9,710",
    ]


def test_a_single_day_has_no_comparison() -> None:
    from ochinai.jobs.report.workbook import day_figures

    lines = day_figures(daily_of([(date(2026, 12, 2), "001", 700)]), date(2026, 12, 2)).lines()
    assert lines == [
        "2026-12-02 の売上 ¥700 / 数量 1 / 2 行",
        "この日の上位店舗: 001 ¥700",
        "入力の期間: 2026-12-02〜2026-12-02, 1 日間, ¥700",
    ]


def test_a_file_without_the_business_date_says_so_first() -> None:
    from ochinai.jobs.report.workbook import day_figures

    days = [(date(2026, 11, 30), "001", 700), (date(2026, 12, 1), "001", 800)]
    lines = day_figures(daily_of(days), date(2026, 12, 2)).lines()
    assert lines == [
        "2026-12-02 の売上はありません(入力にこの日の行がありません)",
        "入力の期間: 2026-11-30〜2026-12-01, 2 日間, ¥1,500",
    ]
