"""The store x day sheet, and long tables whose printed columns keep apart."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pytest

from ochinai.jobs.report import workbook
from ochinai.jobs.report.workbook import CROSS, SalesWorkbook, cross_tab
from tests.test_workbook import daily_of, needs_soffice, printed

BUSINESS = date(2026, 12, 2)
COLUMNS = ["date", "store", "sku", "sales", "qty", "memo"]
MARK = "FFFFF2CC"  # the business date's cells
MARK_HEAD = "FFFFD966"  # and its header


# Three days, three stores; 渋谷店 sold nothing on 12-01, 002 nothing on 12-02.
SMALL = [
    (date(2026, 11, 30), "001", 1_200),
    (date(2026, 11, 30), "002", 3_400),
    (date(2026, 11, 30), "渋谷店", 56_000),
    (date(2026, 12, 1), "001", 1_000_000),
    (date(2026, 12, 1), "002", 0),
    (date(2026, 12, 2), "001", 700),
    (date(2026, 12, 2), "渋谷店", -300),  # a return larger than the day's sales
]


def detail_of(daily: pa.Table) -> pa.Table:
    """A detail row for each daily row, with a memo right of qty."""
    n = daily.num_rows
    return pa.table(
        {
            "date": daily["date"],
            "store": daily["store"],
            "sku": [f"{i:06d}" for i in range(n)],
            "sales": daily["sales"],
            "qty": pa.array([12_345] * n, pa.int64()),
            "memo": ["セール"] * n,
        }
    )


def build(tmp_path: Path, daily: pa.Table, notes: tuple[str, ...] = ("営業日",)) -> Path:
    path = tmp_path / "book.xlsx"
    book = SalesWorkbook(path, BUSINESS, COLUMNS, COLUMNS, 10**6)
    book.add_detail(detail_of(daily))
    book.finish(daily, list(notes), ["lead line", "second lead line"])
    return path


def grid(sheet: Any) -> tuple[int, list[list[Any]]]:
    """The header row's number (1-based) and the rows from it down, as values."""
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    top = next(i for i, r in enumerate(rows) if r[0] == "店舗")
    return top + 1, rows[top:]


def sums_of(rows: list[tuple[date, str, int]]) -> dict[tuple[str, date], int]:
    sums: dict[tuple[str, date], int] = defaultdict(int)
    for day, store, sales in rows:
        sums[store, day] += sales
    return sums


def test_the_cross_tab_holds_the_daily_sums_and_their_totals(tmp_path: Path) -> None:
    """Stores down, days across, each cell the aggregate's sales, totals both ways."""
    book = openpyxl.load_workbook(build(tmp_path, daily_of(SMALL)))
    assert book.sheetnames[:2] == ["日次売上", CROSS]  # right after the summary
    sheet = book[CROSS]
    top, rows = grid(sheet)
    days = [date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2)]
    assert rows[0] == ["店舗", "11/30(月)", "12/1(火)", "12/2(水)\n営業日", "合計"]
    sums = sums_of(SMALL)
    stores = ["001", "002", "渋谷店"]
    for row, store in zip(rows[1:4], stores, strict=True):
        # A store without sales that day is a blank cell; a day summing to 0 is 0.
        assert row == [
            store,
            *(sums.get((store, d)) for d in days),
            sum(v for (s, _), v in sums.items() if s == store),
        ]
    assert rows[2][2] == 0 and rows[2][3] is None
    day_totals = [sum(v for (_, d), v in sums.items() if d == day) for day in days]
    assert rows[4] == ["合計", *day_totals, sum(s for _, _, s in SMALL)]
    assert rows[4][-1] == 1_061_000 and len(rows) == 5
    # Thousands separators, the header row and store column frozen, and printable.
    assert sheet.cell(top + 2, 3).number_format == "#,##0_ "
    assert sheet.cell(top + 4, 5).font.b  # the totals in bold
    assert sheet.freeze_panes == f"B{top + 1}"
    assert sheet.page_setup.orientation == "landscape"
    assert sheet.print_title_rows == f"${top}:${top}"
    assert 60 <= (sheet.page_setup.scale or 100) <= 100
    # xlsxwriter writes the three day columns as one range, B:D.
    widths = [sheet.column_dimensions[c].width for c in "ABE"]
    assert widths[0] > len("渋谷店") * 2 and widths[1] > len("1,000,000"), widths
    assert widths[2] > len("1,061,000") and max(widths) < 31, widths
    assert sheet["A1"].value.startswith(f"{CROSS}売上(円): 2026-11-30〜2026-12-02、3 日間、3 店舗")


def test_the_business_dates_column_is_filled_and_named(tmp_path: Path) -> None:
    sheet = openpyxl.load_workbook(build(tmp_path, daily_of(SMALL)))[CROSS]
    top, _ = grid(sheet)
    assert sheet.cell(top, 4).value.endswith("\n営業日")
    assert sheet.cell(top, 4).fill.fgColor.rgb == MARK_HEAD
    assert sheet.cell(top, 3).fill.fgColor.rgb != MARK_HEAD
    for row in range(top + 1, top + 4):  # the blank cell of 002 as well
        assert sheet.cell(row, 4).fill.fgColor.rgb == MARK, row
        assert sheet.cell(row, 3).fill.fgColor.rgb != MARK, row
    assert sheet["A2"].value == f"色付きの列が営業日 {BUSINESS} です。"


def test_a_business_date_without_sales_marks_no_column(tmp_path: Path) -> None:
    days = [r for r in SMALL if r[0] != BUSINESS]
    sheet = openpyxl.load_workbook(build(tmp_path, daily_of(days)))[CROSS]
    _, rows = grid(sheet)
    assert rows[0] == ["店舗", "11/30(月)", "12/1(火)", "合計"]
    assert sheet["A2"].value == f"営業日 {BUSINESS} の売上は入力にありません。"


def long_daily(days: int, stores: int) -> tuple[pa.Table, list[tuple[date, str, int]]]:
    first = BUSINESS - timedelta(days=days - 1)
    rows = [
        (first + timedelta(days=d), f"{s:04d}", 1_000 * (s + 1) + d)
        for d in range(days)
        for s in range(stores)
    ]
    return daily_of(rows), rows


def test_many_days_are_cut_to_the_last_62_with_a_note(tmp_path: Path) -> None:
    """Five years of days: the last 62 show, and the sheet and the notes say so."""
    daily, rows = long_daily(5 * 366, 2)
    book = openpyxl.load_workbook(build(tmp_path, daily))
    sheet = book[CROSS]
    _, grid_rows = grid(sheet)
    assert len(grid_rows[0]) == 1 + 62 + 1 and sheet.max_column == 64
    # Too wide for one readable page: pages across at 60%, the stores on each.
    assert (sheet.page_setup.scale, sheet.print_title_cols) == (60, "$A:$A")
    first = BUSINESS - timedelta(days=61)
    assert grid_rows[0][1] == f"{first.month}/{first.day}({'月火水木金土日'[first.weekday()]})"
    assert grid_rows[0][62].endswith("営業日")
    shown = [r for r in rows if r[0] >= first]
    assert grid_rows[-1][-1] == sum(s for _, _, s in shown)  # the totals are those 62 days'
    cut = f"{CROSS}: 日数が多いため {first}〜{BUSINESS} の 62 日だけを表示しています"
    cut += "(入力は 1,830 日間)。合計もこの期間の分です。"
    assert sheet["A3"].value.startswith(cut)
    notes = [c.value for c in book["日次売上"]["G"] if c.value]
    assert notes[0] == "営業日" and notes[1].startswith(cut)


def test_the_shown_days_end_on_the_business_date_when_later_days_follow() -> None:
    daily, _ = long_daily(100, 1)
    later = BUSINESS - timedelta(days=30)
    tab = cross_tab(daily, later, max_days=10)
    assert tab.days[-1] == later and tab.business == 9 and len(tab.days) == 10
    assert cross_tab(daily, BUSINESS + timedelta(days=5), max_days=10).business is None


def test_many_stores_fold_into_one_row_and_the_totals_stay_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the store limit the best sellers show in code order, the rest sum in その他."""
    monkeypatch.setattr(workbook, "CROSS_STORES", 3)
    daily, rows = long_daily(4, 7)  # store n sells more the higher n
    book = openpyxl.load_workbook(build(tmp_path, daily))
    _, grid_rows = grid(book[CROSS])
    assert [r[0] for r in grid_rows[1:]] == ["0004", "0005", "0006", "その他 4 店舗", "合計"]
    others = [r for r in rows if r[1] < "0004"]
    assert grid_rows[4][-1] == sum(s for _, _, s in others)
    assert grid_rows[5][-1] == sum(s for _, _, s in rows)
    note = f"{CROSS}: 店舗が多いためこの期間の売上の上位 3 店舗を表示し、残り 4 店舗は"
    assert any(c.value and c.value.startswith(note) for c in book["日次売上"]["G"])


def test_a_large_aggregate_gives_a_bounded_sheet(tmp_path: Path) -> None:
    """200 days of 1,500 stores (300,000 daily rows): 62 days, 1,000 stores and その他."""
    daily, _ = long_daily(200, 1_500)
    tab = cross_tab(daily, BUSINESS)
    assert tab.sales.shape == (1_001, 62) and tab.folded == 500
    assert int(tab.sales.sum()) == int(
        pa.compute.sum(
            daily.filter(pa.compute.greater_equal(daily["date"], tab.days[0]))["sales"]
        ).as_py()
    )


def test_printed_columns_keep_apart(tmp_path: Path) -> None:
    """Dates centred, numbers padded on their right: no value touches the next column's text."""
    book = openpyxl.load_workbook(build(tmp_path, daily_of(SMALL)))
    summary = book["日次売上"]
    first = next(r for r in range(1, 20) if summary.cell(r, 1).value == "日付") + 1
    detail = book["明細"]
    for sheet, row in ((summary, first), (book["日別合計"], 2), (detail, 2)):
        date_cell = sheet.cell(row, 1)
        assert date_cell.is_date and date_cell.alignment.horizontal == "center", sheet.title
        assert sheet.column_dimensions["A"].width >= 12
    for cell in (summary.cell(first, 3), summary.cell(first, 4), detail["D2"], detail["E2"]):
        assert cell.number_format.endswith("_ "), cell.coordinate  # qty before memo
    assert summary["A2"].alignment.horizontal == "left"  # the lead, not centred like a date


@needs_soffice
def test_the_cross_tab_and_the_long_tables_print_readably(tmp_path: Path) -> None:
    """LibreOffice prints the cross tab on one page with stores and totals, and the long
    tables with the date apart from the store and the quantity apart from the memo."""
    texts = printed(build(tmp_path, daily_of(SMALL)), tmp_path)
    sheets = [text.split()[0] for text in texts]  # the page header starts with the sheet
    assert sheets == ["日次売上", CROSS, "日別合計", "店舗別合計", "明細"]
    cross = texts[1]
    for text in ("001", "002", "渋谷店", "合計", "1,001,900", "1,000,000", "1,061,000", "営業日"):
        assert text in cross, text
    assert not [n for n, text in enumerate(texts, 1) if "###" in text]
    for name, text in zip(sheets, texts, strict=True):
        assert not re.search(r"\d{4}-\d\d-\d\d\d", text), name  # "2026-11-30001"
    assert "2026-11-30 001" in texts[0] and "2026-11-30 001" in texts[4]
    assert "12,345 セール" in texts[4] and "12,345セール" not in texts[4]
