"""The sales workbook, written row by row with xlsxwriter in constant-memory mode."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xlsxwriter
from xlsxwriter.format import Format
from xlsxwriter.worksheet import Worksheet
from xlsxwriter.xmlwriter import XMLwriter

from ochinai.jobs.report.sheetzip import RowsDeflater, splice
from ochinai.runtime.calendar import NO_CALENDAR, WEEKDAYS_JA, Calendar, dated
from ochinai.runtime.errors import ConfigError

# The xlsxwriter release the fast detail path (DetailRowsXml) was tested against; the
# lock file pins it and a test keeps the two equal.
TESTED_XLSXWRITER = "3.3.1"


def check_xlsxwriter() -> None:
    """A ConfigError (78) at import when the xlsxwriter internals DetailRowsXml uses are gone."""
    sheet = Worksheet()
    wanted = {
        "Worksheet._write_single_row": callable(getattr(sheet, "_write_single_row", None)),
        "Worksheet._check_dimensions": callable(getattr(sheet, "_check_dimensions", None)),
        "Worksheet.row_data_fh": hasattr(sheet, "row_data_fh"),
        "Worksheet.previous_row": hasattr(sheet, "previous_row"),
        "Format._get_xf_index": callable(getattr(Format(), "_get_xf_index", None)),
        "XMLwriter._escape_control_characters": callable(
            getattr(XMLwriter, "_escape_control_characters", None)
        ),
    }
    missing = [name for name, there in wanted.items() if not there]
    if missing:
        raise ConfigError(
            f"ochinai's report writes detail rows through xlsxwriter internals that "
            f"xlsxwriter {xlsxwriter.__version__} does not have ({', '.join(missing)}); "
            f"it was tested with xlsxwriter {TESTED_XLSXWRITER}: install that version "
            "(the lock file pins it)"
        )


check_xlsxwriter()

SUMMARY = "日次売上"
CROSS = "店舗別日次"  # stores down, days across
BY_DAY = "日別合計"
BY_STORE = "店舗別合計"
DETAIL = "明細"
SHEET_MAX_ROWS = 1_048_575  # Excel's 1,048,576 rows less the header
EXCEL_EPOCH_OFFSET = 25_569  # Excel serial number of 1970-01-01
# Detail rows built as XML at a time: a few MB of it, which Arrow builds fastest and
# which the compressing thread takes while the next are built.
ROWS_AT_ONCE = 32_768

# Numbers end a space's width short of their cell's right edge ("_ ") and dates are
# centred: printed, a right-aligned value otherwise runs into the text of the column
# right of it ("2026-12-01001"). An alignment indent would do it in Excel, but
# LibreOffice drops it from some cells.
YEN = '"¥"#,##0_ ;-"¥"#,##0_ '
COUNT = "#,##0_ "
DATE = "yyyy-mm-dd"
# Printing: A4 landscape less 0.5 inch margins each side, at 96 pixels an inch, less
# a third: LibreOffice without Calibri (DejaVu Sans instead) drew the columns 1.32x wider.
PRINTABLE_PX = int((297 / 25.4 - 1.0) * 96 * 0.7)
CHART_PX = (720, 360)  # the daily chart, one empty column right of its table
GAP_PX = int(8.43 * 7 + 5)  # that column, at its default width
# The store x day sheet: the last two months of days and the best-selling stores, so
# that it stays a table a reader scans (Excel would take 16,382 days); past that scale
# it prints over several pages across, the store column on each.
CROSS_DAYS = 62
CROSS_STORES = 1_000
CROSS_MIN_SCALE = 60
HEADING = {"bold": True, "bg_color": "#DDEBF7", "border": 1, "align": "center"}
# Column widths in characters, by column name; text columns are 14.
WIDTHS = {"date": 12, "sales": 16, "qty": 10, "rows": 10}


@dataclass(frozen=True)
class Totals:
    """What the mail and the webhook say about a report."""

    rows: int
    days: int
    stores: int
    groups: int
    sales: int
    qty: int
    top_stores: list[tuple[str, int]]
    day: Day


@dataclass(frozen=True)
class Day:
    """The business date's figures, as a reader of a daily report looks for them first."""

    day: date
    rows: int  # 0: the file has no row for the date
    sales: int
    qty: int
    previous: int | None  # the previous business day's sales, when the file has that day
    week_ago: int | None  # the same weekday a week before, when open and in the file
    top_stores: list[tuple[str, int]]
    first: date | None  # the period the file covers
    last: date | None
    days: int
    period_sales: int
    # The previous business day when closed days lie between (None: the day before).
    previous_day: date | None = None
    week_ago_closed: bool = False  # the same weekday a week before was a closed day

    def lines(self) -> list[str]:
        """The block that leads the mail and the summary sheet."""
        if self.rows == 0:
            first = f"{self.day} の売上はありません(入力にこの日の行がありません)"
        else:
            first = f"{self.day} の売上 ¥{self.sales:,} / 数量 {self.qty:,} / {self.rows:,} 行"
        lines = [first]
        changes = self._changes() if self.rows else []
        if changes:
            lines.append(" / ".join(changes))
        if self.top_stores:
            lines.append(
                "この日の上位店舗: "
                + "、".join(f"{short(store)} ¥{sales:,}" for store, sales in self.top_stores)
            )
        if self.first is not None and self.last is not None:
            lines.append(
                f"入力の期間: {self.first}〜{self.last}, {self.days} 日間, ¥{self.period_sales:,}"
            )
        return lines

    def _changes(self) -> list[str]:
        """前日比 and 前週同曜日比, each against a business day, saying which when not plain."""
        changes = []
        if self.previous is not None:
            before = self.previous_day
            label = "前日" if before is None else f"前営業日 ({dated(before)}) "
            changes.append(f"{label}比 {_change(self.sales, self.previous)}")
        if self.week_ago_closed:
            week_before = dated(self.day - timedelta(days=7))
            changes.append(f"前週同曜日 ({week_before}) は休業日のため比較なし")
        elif self.week_ago is not None:
            changes.append(f"前週同曜日比 {_change(self.sales, self.week_ago)}")
        return changes


STORE_IN_LINE = 20  # characters of a store name in a mail line


def short(text: str, width: int = STORE_IN_LINE) -> str:
    """``text`` cut to ``width`` characters with an ellipsis when longer."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _change(value: int, base: int) -> str:
    if base == 0:
        return "-(比較日の売上 ¥0)"
    return f"{(value - base) / abs(base) * 100:+.1f}%"


def day_figures(daily: pa.Table, business_date: date, calendar: Calendar = NO_CALENDAR) -> Day:
    """The business date's figures from the daily table (one row per date and store),
    compared with business days only: closed days (``calendar``) are skipped."""
    before = calendar.previous_business_day(business_date)
    week_before = business_date - timedelta(days=7)
    week_closed = not calendar.is_business_day(week_before)
    by_day: dict[date, dict[str, Any]] = {r["date"]: r for r in _sums(daily, "date").to_pylist()}
    dates = sorted(by_day)
    today = by_day.get(business_date)

    def sales_on(day: date) -> int | None:
        row = by_day.get(day)
        return None if row is None else int(row["sales"])

    that_day = daily.filter(pc.equal(daily["date"], pa.scalar(business_date, daily["date"].type)))
    best = _sums(that_day, "store").sort_by([("sales", "descending"), ("store", "ascending")])
    best = best.slice(0, 3)
    return Day(
        day=business_date,
        rows=int(today["rows"]) if today else 0,
        sales=int(today["sales"]) if today else 0,
        qty=int(today["qty"]) if today else 0,
        previous=sales_on(before),
        week_ago=None if week_closed else sales_on(week_before),
        top_stores=list(zip(best["store"].to_pylist(), best["sales"].to_pylist(), strict=True)),
        first=dates[0] if dates else None,
        last=dates[-1] if dates else None,
        days=len(dates),
        period_sales=sum(int(r["sales"]) for r in by_day.values()),
        previous_day=None if before == business_date - timedelta(days=1) else before,
        week_ago_closed=week_closed,
    )


def totals(
    daily: pa.Table, rows: int, business_date: date, calendar: Calendar = NO_CALENDAR
) -> Totals:
    """Totals, the three best stores and the business date's figures of a daily table."""
    by_store = _sums(daily, "store")
    best = by_store.sort_by([("sales", "descending"), ("store", "ascending")]).slice(0, 3)
    return Totals(
        rows=rows,
        days=pc.count_distinct(daily["date"]).as_py() if daily.num_rows else 0,
        stores=by_store.num_rows,
        groups=daily.num_rows,
        sales=pc.sum(daily["sales"]).as_py() or 0,
        qty=pc.sum(daily["qty"]).as_py() or 0,
        top_stores=list(zip(best["store"].to_pylist(), best["sales"].to_pylist(), strict=True)),
        day=day_figures(daily, business_date, calendar),
    )


class SalesWorkbook:
    """Summary sheets first, detail sheets after; same input and date give the same bytes.

    xlsxwriter writes every sheet but the detail rows, which are deflated on the second
    core as they come (sheetzip) and spliced into the file when it is finished.
    """

    def __init__(
        self,
        path: Path,
        business_date: date,
        header: list[str],
        columns: list[str],
        detail_max_rows: int,
        sheet_max_rows: int = SHEET_MAX_ROWS,
    ) -> None:
        self.path = path
        self._parts = path.with_name(path.name + ".parts")  # xlsxwriter's file, then spliced
        self.workbook = xlsxwriter.Workbook(
            str(self._parts),
            {
                "constant_memory": True,
                "tmpdir": str(path.parent),
                # Cells are written as what they are; never guess numbers, formulas or URLs.
                "strings_to_numbers": False,
                "strings_to_formulas": False,
                "strings_to_urls": False,
            },
        )
        # The creation time is the business date, so reruns give the same bytes.
        created = datetime(business_date.year, business_date.month, business_date.day)
        self.workbook.set_properties({"created": created, "title": f"{SUMMARY} {business_date}"})
        self.header = header
        self.columns = columns
        self.business_date = business_date
        self.detail_max_rows = detail_max_rows
        self.sheet_max_rows = sheet_max_rows
        self.detail_rows = 0
        self.cut = Cut()  # text cells cut to Excel's limit, in every sheet
        self._sheet: Any = None
        self._rows_xml: DetailRowsXml
        self._deflaters: dict[str, RowsDeflater] = {}  # zip member name: its rows
        self._sheet_rows = 0
        self._sheets = 0
        wb = self.workbook
        self.fmt_header = wb.add_format(HEADING)
        self.fmt_date = wb.add_format({"num_format": DATE, "align": "center"})
        self.fmt_yen = wb.add_format({"num_format": YEN})
        self.fmt_count = wb.add_format({"num_format": COUNT})
        self.fmt_note = wb.add_format({"italic": True, "font_color": "#9C0006"})
        self.fmt_lead = wb.add_format({"bold": True, "font_size": 12})
        # Lines above a table: left-aligned whatever their column's format (centred dates).
        self.fmt_line = wb.add_format({"align": "left"})
        # Summary sheets are added now so that they come first in the workbook.
        self.summary = wb.add_worksheet(SUMMARY)
        self.cross = wb.add_worksheet(CROSS)
        self.by_day = wb.add_worksheet(BY_DAY)
        self.by_store = wb.add_worksheet(BY_STORE)

    # -- detail -------------------------------------------------------------------

    def _new_detail_sheet(self) -> None:
        self._sheets += 1
        name = DETAIL if self._sheets == 1 else f"{DETAIL} ({self._sheets})"
        sheet = self.workbook.add_worksheet(name)
        formats = {"date": self.fmt_date, "sales": self.fmt_yen, "qty": self.fmt_count}
        widths: list[float] = [WIDTHS.get(canon, 14) for canon in self.columns]
        for col, (title, canon) in enumerate(zip(self.header, self.columns, strict=True)):
            sheet.write_string(0, col, title, self.fmt_header)
            sheet.set_column(col, col, widths[col], formats.get(canon))
        sheet.freeze_panes(1, 0)
        self._page_setup(sheet, 0, widths)
        self._sheet, self._sheet_rows = sheet, 0
        member = f"xl/worksheets/sheet{len(self.workbook.worksheets())}.xml"
        self._rows_xml = DetailRowsXml(
            self.columns,
            {canon: fmt._get_xf_index() for canon, fmt in formats.items()},
            self.cut,
            self.header,
            sink=self._deflaters.setdefault(member, RowsDeflater(self.path.parent)),
        )

    def add_detail(self, batch: pa.Table) -> int:
        """Write the batch's rows until the detail limit; return how many went in."""
        batch = batch.slice(0, max(0, self.detail_max_rows - self.detail_rows))
        written = 0
        while written < batch.num_rows:
            if self._sheet is None or self._sheet_rows >= self.sheet_max_rows:
                self._new_detail_sheet()
            part = batch.slice(written, self.sheet_max_rows - self._sheet_rows)
            self._rows_xml.append(self._sheet, self._sheet_rows + 1, part)
            self._sheet_rows += part.num_rows
            written += part.num_rows
        self.detail_rows += written
        return written

    # -- summary ------------------------------------------------------------------

    def _table(
        self,
        sheet: Any,
        titles: list[str],
        table: pa.Table,
        notes: list[str] | None = None,
        lead: list[str] | None = None,
        chart: bool = False,
    ) -> None:
        """``lead`` lines, then header, typed rows, frozen header, autofilter; ``notes`` in
        a column to the right.

        Columns named date, sales, qty and rows get date, yen and count formats; others
        are text. Constant-memory mode writes a row for good once the next one starts, so
        the rows that carry a note are written cell by cell with it, the rest as XML.
        """
        notes = notes or []
        kinds = {
            "date": self.fmt_date,
            "sales": self.fmt_yen,
            "qty": self.fmt_count,
            "rows": self.fmt_count,
        }
        names = table.column_names
        note_col = len(names) + 1
        if notes:
            sheet.set_column(note_col, note_col, 90)
        for row, line in enumerate(lead or []):  # above the table, the first line in bold
            sheet.write_string(row, 0, line, self.fmt_lead if row == 0 else self.fmt_line)
        top = len(lead) + 1 if lead else 0  # the header's row: after the lead and a blank
        for col, (title, name) in enumerate(zip(titles, names, strict=True)):
            sheet.set_column(col, col, WIDTHS.get(name, 14), kinds.get(name))
            sheet.write_string(top, col, title, self.fmt_header)
        by_cell = min(table.num_rows, max(len(notes) - 1, 0))
        head = table.slice(0, by_cell).to_pylist()
        for r in range(max(by_cell + 1, len(notes))):
            for col, name in enumerate(names):
                if 1 <= r <= by_cell:
                    value = head[r - 1][name]
                    if name == "date":
                        sheet.write_datetime(top + r, col, value, self.fmt_date)
                    elif name in kinds:
                        sheet.write_number(top + r, col, value, kinds[name])
                    else:
                        sheet.write_string(top + r, col, value)
            if r < len(notes):
                sheet.write_string(top + r, note_col, notes[r], self.fmt_note)
        styles = {name: fmt._get_xf_index() for name, fmt in kinds.items() if name in names}
        rows_xml = DetailRowsXml(names, styles, self.cut, titles)
        rows_xml.append(sheet, top + by_cell + 1, table.slice(by_cell))
        sheet.freeze_panes(top + 1, 0)
        sheet.autofilter(top, 0, top + max(table.num_rows, 1), len(names) - 1)
        used: list[float] = [WIDTHS.get(name, 14) for name in names]
        used += [8.43, 90] if notes else []
        self._page_setup(sheet, top, used, GAP_PX + CHART_PX[0] if chart else 0)

    def _page_setup(
        self,
        sheet: Any,
        header_row: int,
        widths: list[float],
        extra_px: int = 0,
        min_scale: int = 10,
    ) -> None:
        """Printable as it is: A4 landscape, one page wide, the header row on every page,
        the sheet's name, the business date and the page number on every page.

        One page wide by a print scale computed from the column widths (``extra_px``: a
        chart right of them), never above 100%: LibreOffice's "fit to 1 page wide" also
        enlarges a narrow sheet, and printed a long one with blank pages at its end.
        Never below ``min_scale`` either: a wider sheet prints over pages across, its
        first column repeated on each.
        """
        sheet.set_paper(9)  # A4
        sheet.set_landscape()
        content = sum(int(w * 7 + 5) for w in widths) + extra_px  # Excel's pixels at 96 dpi
        fit = PRINTABLE_PX * 100 // max(content, 1)
        sheet.set_print_scale(max(min_scale, min(100, fit)))
        if fit < min_scale:
            sheet.repeat_columns(0)
        sheet.repeat_rows(header_row)
        sheet.set_margins(left=0.5, right=0.5, top=0.75, bottom=0.75)
        sheet.set_header(f"&L&A&R営業日 {self.business_date}")
        sheet.set_footer("&C&P / &N")

    def finish(self, daily: pa.Table, notes: list[str], lead: list[str] | None = None) -> None:
        """Write the summary sheets (``lead`` above the first one's table) and the chart,
        then close the file. What the store x day sheet leaves out joins the ``notes``."""
        cross = cross_tab(daily, self.business_date, CROSS_DAYS, CROSS_STORES)
        notes = [*notes, *cross.cuts()]
        self._table(self.summary, ["日付", "店舗", "売上", "数量", "件数"], daily, notes, lead)
        self._cross_tab(cross)
        by_day = _sums(daily, "date")
        self._table(
            self.by_day, ["日付", "売上", "数量", "件数"], by_day, chart=by_day.num_rows > 0
        )
        if by_day.num_rows:
            self._chart(by_day.num_rows)
        self._table(self.by_store, ["店舗", "売上", "数量", "件数"], _sums(daily, "store"))
        try:
            rows = {member: deflater.finish() for member, deflater in self._deflaters.items()}
            self.workbook.close()
            splice(self._parts, self.path, rows)
        except BaseException:
            self.abort()  # and the file half written, if splice had begun it
            raise
        self._release_detail()

    def discard(self) -> None:
        """No workbook after all: close xlsxwriter's temp files and drop the detail's."""
        self._release_detail()
        self.workbook.close()
        self._parts.unlink(missing_ok=True)

    def abort(self) -> None:
        """The run failed: stop compressing the detail, close and remove every temp file
        (xlsxwriter's row files too) and whatever of the workbook was written."""
        self._release_detail()
        if not self.workbook.fileclosed:
            for sheet in self.workbook.worksheets():
                if sheet.row_data_fh is not None and not sheet.row_data_fh_closed:
                    sheet.row_data_fh.close()
                    sheet.row_data_fh_closed = True
                if sheet.row_data_filename:
                    Path(sheet.row_data_filename).unlink(missing_ok=True)
            self.workbook.fileclosed = True  # nothing left for its close() to do
        self.path.unlink(missing_ok=True)

    def _release_detail(self) -> None:
        """The compressing threads stopped and their temp files closed; xlsxwriter's own
        file of the workbook, the spliced one's source, removed."""
        for deflater in self._deflaters.values():
            deflater.abort()
        self._deflaters.clear()
        self._parts.unlink(missing_ok=True)

    def _chart(self, rows: int) -> None:
        chart = self.workbook.add_chart({"type": "column"})
        chart.add_series(
            {
                "name": "売上",
                "categories": [BY_DAY, 1, 0, rows, 0],
                "values": [BY_DAY, 1, 1, rows, 1],
            }
        )
        chart.set_title({"name": "日別売上"})
        chart.set_x_axis({"date_axis": True, "num_format": DATE})
        chart.set_y_axis({"num_format": YEN})
        chart.set_legend({"none": True})
        chart.set_size({"width": CHART_PX[0], "height": CHART_PX[1]})
        self.by_day.insert_chart(1, 5, chart)

    def _cross_tab(self, cross: CrossTab) -> None:
        """Stores down, days across, sales in each cell and totals both ways, the business
        date's column filled and named in its header; frozen on the header and the stores."""
        # Over 60 lines: one sheet's formats and cells top to bottom, read as the sheet is.
        wb, sheet = self.workbook, self.cross
        head = {**HEADING, "valign": "vcenter", "text_wrap": True}
        grid = {"border": 1, "border_color": "#BFBFBF"}
        number = {"num_format": COUNT, **grid}
        total = {"bold": True, "bg_color": "#F2F2F2"}
        last = {**total, "top": 2, "top_color": "#000000"}  # the 合計 row, under a rule
        mark = {"bg_color": "#FFF2CC"}  # the business date's column
        fmt = {
            "head": wb.add_format(head),
            "head_mark": wb.add_format({**head, "bg_color": "#FFD966"}),
            "store": wb.add_format({**grid, "indent": 1}),
            "cell": wb.add_format(number),
            "cell_mark": wb.add_format({**number, **mark}),
            "row_total": wb.add_format({**number, **total}),
            "last_store": wb.add_format({**grid, **last, "indent": 1}),
            "last": wb.add_format({**number, **last}),
            "last_mark": wb.add_format({**number, **last, "bg_color": "#FFD966"}),
        }
        days, sales = cross.days, cross.sales
        if days:
            title = f"{CROSS}売上(円): {days[0]}〜{days[-1]}、{len(days)} 日間"
            title += f"、{cross.stores:,} 店舗"
        else:
            title = f"{CROSS}売上(円): 売上の行がありません"
        legend = (
            f"色付きの列が営業日 {self.business_date} です。"
            if cross.business is not None
            else f"営業日 {self.business_date} の売上は入力にありません。"
        )
        lines = [title, legend, *cross.cuts()]
        for row, line in enumerate(lines):
            style = self.fmt_lead if row == 0 else self.fmt_note if row >= 2 else self.fmt_line
            sheet.write_string(row, 0, line, style)
        top = len(lines) + 1  # the header's row: after the lines and a blank
        by_store, by_day = sales.sum(axis=1), sales.sum(axis=0)
        grand = int(sales.sum())
        ends = (int(sales.min()), int(sales.max())) if sales.size else (0,)
        digits = max(9, *(len(f"{v:,}") for v in ends))  # 9: "11/28(土)"
        widths: list[float] = [min(30, max([4, *map(_text_width, cross.labels)]) + 3)]
        widths += [digits + 2] * len(days) + [max(4, len(f"{grand:,}")) + 4]
        for col, width in enumerate(widths):
            sheet.set_column(col, col, width)
        if cross.business is not None:
            sheet.set_row(top, 33)  # two lines: the day and 営業日
        sheet.write_string(top, 0, "店舗", fmt["head"])
        for col, day in enumerate(days):
            text = f"{day.month}/{day.day}({WEEKDAYS_JA[day.weekday()]})"
            marked = col == cross.business
            text, style = (f"{text}\n営業日", "head_mark") if marked else (text, "head")
            sheet.write_string(top, col + 1, text, fmt[style])
        sheet.write_string(top, len(days) + 1, "合計", fmt["head"])
        for r, label in enumerate(cross.labels):
            row = top + 1 + r
            sheet.write_string(row, 0, label, fmt["store"])
            for col in range(len(days)):
                style = fmt["cell_mark" if col == cross.business else "cell"]
                if cross.present[r, col]:
                    sheet.write_number(row, col + 1, int(sales[r, col]), style)
                else:
                    sheet.write_blank(row, col + 1, None, style)
            sheet.write_number(row, len(days) + 1, int(by_store[r]), fmt["row_total"])
        row = top + 1 + len(cross.labels)
        sheet.write_string(row, 0, "合計", fmt["last_store"])
        for col in range(len(days)):
            style = fmt["last_mark" if col == cross.business else "last"]
            sheet.write_number(row, col + 1, int(by_day[col]), style)
        sheet.write_number(row, len(days) + 1, grand, fmt["last"])
        sheet.freeze_panes(top + 1, 1)
        self._page_setup(sheet, top, widths, min_scale=CROSS_MIN_SCALE)


def _sums(daily: pa.Table, key: str) -> pa.Table:
    """Sales, qty and rows per ``key``, sorted by it."""
    grouped = daily.group_by(key).aggregate([("sales", "sum"), ("qty", "sum"), ("rows", "sum")])
    return pa.table(
        {
            key: grouped[key],
            "sales": grouped["sales_sum"],
            "qty": grouped["qty_sum"],
            "rows": grouped["rows_sum"],
        }
    ).sort_by(key)


@dataclass(frozen=True)
class CrossTab:
    """Sales per store (rows) and day (columns), as much of it as the store x day sheet shows."""

    days: list[date]  # the days shown, in order
    labels: list[str]  # the stores shown, in order, then "その他 n 店舗" when some are folded
    sales: Any  # numpy int64, labels x days
    present: Any  # numpy bool, labels x days: the input has sales of that store that day
    business: int | None  # the business date's column among ``days``; None: not there
    all_days: int  # days in the input
    stores: int  # stores with sales in the days shown
    folded: int  # of those, how many are summed in the last row

    def cuts(self) -> list[str]:
        """What the sheet leaves out: said on it and in the workbook's notes."""
        cuts = []
        if len(self.days) < self.all_days:
            cuts.append(
                f"{CROSS}: 日数が多いため {self.days[0]}〜{self.days[-1]} の {len(self.days)} "
                f"日だけを表示しています(入力は {self.all_days:,} 日間)。合計もこの期間の分です。"
            )
        if self.folded:
            cuts.append(
                f"{CROSS}: 店舗が多いためこの期間の売上の上位 {self.stores - self.folded:,} "
                f"店舗を表示し、残り {self.folded:,} 店舗は最後の「その他」の行にまとめています。"
            )
        return cuts


def cross_tab(
    daily: pa.Table,
    business_date: date,
    max_days: int = CROSS_DAYS,
    max_stores: int = CROSS_STORES,
) -> CrossTab:
    """The store x day table of the daily table (one row per date and store).

    The last ``max_days`` days of the input (ending on the business date when later
    days would leave it out), and the ``max_stores`` stores that sold most in them, the
    others summed in one row: the sheet stays a size a reader scans and the totals stay
    whole. Built with Arrow and numpy from the daily table, never row by row.
    """
    days = pc.unique(daily["date"])
    days = days.take(pc.array_sort_indices(days))
    start = max(0, len(days) - max_days)
    at = pc.index(days, pa.scalar(business_date, pa.date32())).as_py()  # -1: not there
    if 0 <= at < start:
        start = max(0, at - max_days + 1)
    shown = days.slice(start, max_days)
    window = daily.filter(pc.is_in(daily["date"], value_set=shown))
    by_store = _sums(window, "store")
    kept = by_store
    if by_store.num_rows > max_stores:
        best = by_store.sort_by([("sales", "descending"), ("store", "ascending")])
        kept = best.slice(0, max_stores).sort_by("store")
    stores = kept["store"].combine_chunks()
    folded = by_store.num_rows - len(stores)
    row = pc.fill_null(pc.index_in(window["store"], value_set=stores), len(stores)).to_numpy()
    col = pc.index_in(window["date"], value_set=shown).to_numpy()
    sales = np.zeros((len(stores) + (1 if folded else 0), len(shown)), dtype=np.int64)
    np.add.at(sales, (row, col), window["sales"].to_numpy())
    present = np.zeros(sales.shape, dtype=bool)
    present[row, col] = True
    return CrossTab(
        days=shown.to_pylist(),
        labels=stores.to_pylist() + ([f"その他 {folded:,} 店舗"] if folded else []),
        sales=sales,
        present=present,
        business=at - start if 0 <= at - start < len(shown) else None,
        all_days=len(days),
        stores=by_store.num_rows,
        folded=folded,
    )


def _text_width(text: str) -> int:
    """Columns ``text`` takes: two for a full-width character, one for the others."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


@dataclass
class Cut:
    """Text cells cut to Excel's 32,767 characters: how many, and the first one's place."""

    cells: int = 0
    first: str | None = None  # e.g. 明細!C12 (memo)


class DetailRowsXml:
    """Detail rows as sheet XML built column-wise by Arrow, appended to xlsxwriter's row
    file, or handed to a ``sink`` (a RowsDeflater) that compresses them for the zip.

    xlsxwriter spends about 35 us per row in Python; a million detail rows would take
    most of a minute. In constant-memory mode it keeps a sheet's finished rows in a temp
    file (``row_data_fh``) and copies that file into the sheet at close, so rows built
    here as the same XML it writes (numbers with a style, inline strings, escaped the
    same way) are appended to that file after the header row. This uses xlsxwriter
    internals (``_write_single_row``, ``row_data_fh``, ``_check_dimensions``,
    ``Format._get_xf_index``), so the version is bounded in pyproject.toml and the
    tests read every cell back with openpyxl.
    """

    def __init__(
        self,
        columns: list[str],
        styles: dict[str, int],
        cut: Cut | None = None,
        titles: list[str] | None = None,
        sink: RowsDeflater | None = None,
    ) -> None:
        self.sink = sink
        self.columns = columns
        self.styles = styles
        self.cut = cut if cut is not None else Cut()
        self.titles = titles or columns

    def append(self, sheet: Any, first_row: int, batch: pa.Table) -> None:
        """Write ``batch`` as rows ``first_row``.. (0-based) of ``sheet``."""
        if batch.num_rows == 0:
            return
        if sheet.previous_row < first_row:
            sheet._write_single_row(first_row)  # flush the header row xlsxwriter holds
        for start in range(0, batch.num_rows, ROWS_AT_ONCE):
            part = batch.slice(start, ROWS_AT_ONCE)
            self._write(sheet, self._rows(sheet, first_row + start, part))
        last = first_row + batch.num_rows - 1
        sheet._check_dimensions(last, len(self.columns) - 1)
        sheet.previous_row = last + 1

    def _rows(self, sheet: Any, first_row: int, batch: pa.Table) -> Any:
        """The rows' XML, one string a row."""
        numbers = pa.array(range(first_row + 1, first_row + 1 + batch.num_rows), pa.int64())
        ref = pc.cast(numbers, pa.string())
        pieces: list[Any] = ['<row r="', ref, '">']
        for col, canon in enumerate(self.columns):
            letter = _column_letter(col)
            values = batch.column(canon)
            if canon in self.styles:
                if canon == "date":
                    values = pc.add(pc.cast(values, pa.int32()), EXCEL_EPOCH_OFFSET)
                style = self.styles[canon]
                pieces += [
                    f'<c r="{letter}',
                    ref,
                    f'" s="{style}"><v>',
                    pc.cast(values, pa.string()),
                    "</v></c>",
                ]
            else:
                text, preserve, long = _inline_text(values)
                if long is not None:
                    self._count_cut(sheet, f"{letter}", first_row, long, col)
                cell = [
                    f'<c r="{letter}',
                    ref,
                    '" t="inlineStr"><is><t',
                    preserve,
                    ">",
                    text,
                    "</t></is></c>",
                ]
                empty = pc.equal(pc.binary_length(text), 0)
                if pc.any(empty).as_py():
                    # An empty string is no cell at all, as xlsxwriter writes it (a blank).
                    pieces.append(pc.if_else(empty, "", _join(cell)))
                else:
                    pieces += cell
        pieces.append("</row>")
        return _join(pieces)

    def _write(self, sheet: Any, rows: Any) -> None:
        """The rows to the sink, kept there (not copied) until compressed; or else to the
        end of xlsxwriter's row file, its text layer flushed before and its bytes after."""
        fh = sheet.row_data_fh
        if self.sink is None:
            fh.flush()
        write = fh.buffer.write if self.sink is None else self.sink.write
        for chunk in rows.chunks if isinstance(rows, pa.ChunkedArray) else [rows]:
            # A string array's data buffer holds its values back to back: write it whole.
            _, offsets, data = chunk.buffers()
            bounds = np.frombuffer(offsets, dtype=np.int32)
            start, end = bounds[chunk.offset], bounds[chunk.offset + len(chunk)]
            write(memoryview(data)[start:end])
        if self.sink is None:
            fh.buffer.flush()

    def _count_cut(self, sheet: Any, letter: str, first_row: int, long: Any, col: int) -> None:
        self.cut.cells += int(pc.sum(long).as_py() or 0)
        if self.cut.first is None:
            row = first_row + 1 + int(pc.index(long, True).as_py())
            self.cut.first = f"{sheet.name}!{letter}{row} ({self.titles[col]})"


def _join(pieces: list[Any]) -> Any:
    """Concatenate string arrays and constants element-wise (adjacent constants first)."""
    merged: list[Any] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    arrow = [
        pa.scalar(p, pa.string()) if isinstance(p, str) else p
        for p in merged
        if not (isinstance(p, str) and p == "")
    ]
    return pc.binary_join_element_wise(*arrow, "")


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


_CONTROL = "[\\x00-\\x08\\x0b-\\x1f]|_x[0-9a-fA-F]{4}_|\ufffe|\uffff"
# Excel's limit on a cell's text, counted in UTF-16 code units: a character above U+FFFF
# (an emoji) counts twice. xlsxwriter truncates to it the same way.
_MAX_CELL_UNITS = 32_767


def _truncate_utf16(text: str) -> str:
    """``text`` cut to Excel's limit without splitting a character above U+FFFF."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > _MAX_CELL_UNITS:
            return text[:index]
    return text


def _excel_length_text(values: Any) -> tuple[Any, Any]:
    """Values longer than Excel takes, truncated, and the mask of those cut (None: none).

    Only a value over half the limit can be too long, so the others are not measured.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    long = pc.fill_null(pc.greater(pc.utf8_length(values), _MAX_CELL_UNITS // 2), False)
    if not pc.any(long).as_py():
        return values, None
    kept = pc.filter(values, long).to_pylist()
    cut = [_truncate_utf16(v) for v in kept]
    changed = np.zeros(len(values), dtype=bool)
    changed[np.flatnonzero(long.to_numpy(zero_copy_only=False))] = [
        a != b for a, b in zip(kept, cut, strict=True)
    ]
    if not changed.any():
        return values, None
    return pc.replace_with_mask(values, long, pa.array(cut, pa.string())), pa.array(changed)


# White space as xlsxwriter's (Python's) \s finds it at a text's edges, where it writes
# xml:space="preserve": Unicode's, the ideographic space U+3000 among it; Arrow's regex
# engine (RE2) takes \s for ASCII white space only.
_SPACE = "[" + "".join(f"\\x{{{c:04x}}}" for c in range(0x3001) if chr(c).isspace()) + "]"
_EDGES = f"^{_SPACE}|{_SPACE}$"
# Anything in a text that is written otherwise than as it is: XML's special characters,
# control characters (as _xHHHH_) and white space at an edge.
_SPECIAL = f"[&<>]|{_CONTROL}|{_EDGES}"


def _inline_text(values: Any) -> tuple[Any, Any, Any]:
    """XML-escaped text, the xml:space attribute where edges have white space, and the
    mask of values cut to Excel's limit (None when none was)."""
    values, long = _excel_length_text(values)
    if not pc.any(pc.match_substring_regex(values, _SPECIAL)).as_py():
        return values, "", long  # the usual text column: codes, names
    if pc.any(pc.match_substring_regex(values, _CONTROL)).as_py():
        # Rare: let xlsxwriter's own code turn control characters into _xHHHH_.
        values = pa.array(
            [XMLwriter._escape_control_characters(v) for v in values.to_pylist()], pa.string()
        )
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        values = pc.replace_substring(values, char, entity)
    edges = pc.match_substring_regex(values, _EDGES)
    if not pc.any(edges).as_py():
        return values, "", long
    preserve = pc.if_else(edges, ' xml:space="preserve"', "")
    return values, preserve, long
