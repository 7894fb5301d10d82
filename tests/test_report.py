"""Tests of the report job, driven like production: CSV in S3 -> workbook in S3 -> mail, hook."""

from __future__ import annotations

import csv
import email
import email.policy
import functools
import gzip
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import requests
from moto import mock_aws

from ochinai import cli
from ochinai.jobs.report import JOB
from ochinai.jobs.report import job as report
from ochinai.jobs.report.settings import ReportSettings
from ochinai.jobs.report.workbook import CHART_PX, GAP_PX, PRINTABLE_PX, SalesWorkbook
from ochinai.runtime import logs
from ochinai.runtime.declare import load
from ochinai.runtime.run import Runner
from ochinai.runtime.settings import RuntimeSettings
from ochinai.runtime.storage import Store, make_s3_client
from tests.harness import run_job
from tests.servers import free_port
from tests.servers.http import Hook
from tests.servers.smtp import Inbox, StartSmtp
from tests.test_workbook import needs_soffice, printed

DATA = Path(__file__).parent / "data"
INPUT = "in/sales.csv"
WORKBOOK = "out/report_20261128.xlsx"
SPILL = "out/report_20261128.detail.csv.gz"
# 06:10 on 2026-11-29 in Tokyo: the report is about the business day before, 2026-11-28.
NOW = datetime(2026, 11, 28, 21, 10, tzinfo=UTC)
SHEETS = ["日次売上", "日別合計", "店舗別合計", "明細"]  # the long tables
ALL_SHEETS = [SHEETS[0], "店舗別日次", *SHEETS[1:]]  # and the store x day grid
YEN = '"¥"#,##0_ ;-"¥"#,##0_ '
COUNT = "#,##0_ "
D27, D28 = datetime(2026, 11, 27), datetime(2026, 11, 28)


# --- the job, a bucket and what the job left in it ---------------------------------


@dataclass
class Bench:
    """A bucket the job reads and writes, a way to run the job on it, and its JSON logs."""

    client: Any
    bucket: str
    logs: io.StringIO = field(default_factory=io.StringIO)
    runs: int = 0

    def __post_init__(self) -> None:
        logs.configure(fmt="json", stream=self.logs)

    @property
    def url(self) -> str:
        """The input's s3:// URL, as messages name it."""
        return f"s3://{self.bucket}/{INPUT}"

    def upload(self, data: str | bytes) -> None:
        """Put a file of tests/data, or raw bytes, where the job reads its input."""
        body = data if isinstance(data, bytes) else (DATA / data).read_bytes()
        self.client.put_object(Bucket=self.bucket, Key=INPUT, Body=body)

    def env(self, **extra: str) -> dict[str, str]:
        """The job's environment: this bucket, an S3 lock, a fresh run id, then ``extra``."""
        self.runs += 1
        return {
            "OCHINAI_STORE": f"s3://{self.bucket}",
            "OCHINAI_LOCK": "s3",
            "OCHINAI_RUN_ID": f"run-{self.runs}",
            "OCHINAI_NOTIFY_TIMEOUT": "5s",
            **extra,
        }

    def run(self, *, now: datetime = NOW, **extra: str) -> int:
        """Run the report job once as the CronJob would, and return its exit code."""
        env = self.env(**extra)
        runtime, settings = load(RuntimeSettings, env), load(ReportSettings, env)
        return Runner(JOB, runtime, settings, utcnow=lambda: now).run()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs.getvalue().splitlines()]

    def summary(self) -> dict[str, Any]:
        """The last run's summary line."""
        return [line for line in self.lines() if line.get("event") == "summary"][-1]

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]

    def body(self, key: str = WORKBOOK) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def head(self, key: str = WORKBOOK) -> dict[str, Any]:
        return dict(self.client.head_object(Bucket=self.bucket, Key=key))

    def workbook(self, key: str = WORKBOOK) -> Any:
        """The stored workbook as openpyxl reads it."""
        return openpyxl.load_workbook(io.BytesIO(self.body(key)))

    def record(self) -> dict[str, Any]:
        """The last run's record."""
        return dict(json.loads(self.body(f"_runs/report/2026-11-28/run-{self.runs}.json")))


@pytest.fixture(name="ops")
def ops_bench(aws_test_env: None) -> Iterator[Bench]:
    """Bucket ``ops`` in an in-process S3 (moto)."""
    with mock_aws():
        client = make_s3_client(max_attempts=1)
        client.create_bucket(Bucket="ops")
        yield Bench(client, "ops")


@pytest.fixture
def bench(s3: Any, monkeypatch: pytest.MonkeyPatch) -> Bench:
    """A fresh bucket on moto and on SeaweedFS, reached through AWS_ENDPOINT_URL like production."""
    if s3.endpoint_url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    return Bench(s3.client, s3.bucket)


def values(sheet: Any, columns: int | None = None) -> list[list[Any]]:
    """Cell values row by row, optionally only the first ``columns``."""
    return [list(row)[:columns] for row in sheet.iter_rows(values_only=True)]


def table_rows(sheet: Any, columns: int | None = None) -> list[list[Any]]:
    """The sheet's table: the rows from its header (below the summary's lead block) on."""
    rows = values(sheet, columns)
    start = next(i for i, row in enumerate(rows) if row[0] in ("日付", "店舗"))
    return rows[start:]


def lead(sheet: Any) -> list[str]:
    """The lines above the summary sheet's table."""
    rows = values(sheet, 1)
    return [
        row[0] for row in rows[: next(i for i, r in enumerate(rows) if r[0] == "日付")] if row[0]
    ]


LEAD = [
    "2026-11-28 の売上 ¥15,645 / 数量 8 / 4 行",
    "前日比 +1167.8%",
    "この日の上位店舗: 渋谷店 ¥13,345、001 ¥2,300",
    "入力の期間: 2026-11-27〜2026-11-28, 2 日間, ¥16,879",
]


def notes(book: Any) -> list[str]:
    """The notes right of the summary table (column G of 日次売上)."""
    return [cell.value for cell in book[SHEETS[0]]["G"] if cell.value]


# --- what the good files hold ----------------------------------------------------------

HEADER = ["date", "store", "sku", "sales", "qty"]
DETAIL = [
    [D27, "001", "000123", 1234, 2],
    [D28, "001", "000123", 1500, 3],
    [D28, "渋谷店", "000456", 12345, 1],
    [D28, "001", "000789", 800, 0],
    [D28, "渋谷店", "000123", 1000, 4],
]
SUMMARY = [
    ["日付", "店舗", "売上", "数量", "件数"],
    [D27, "001", 1234, 2, 1],
    [D28, "001", 2300, 3, 2],
    [D28, "渋谷店", 13345, 5, 2],
]
BY_DAY = [["日付", "売上", "数量", "件数"], [D27, 1234, 2, 1], [D28, 15645, 8, 4]]
BY_STORE = [["店舗", "売上", "数量", "件数"], ["001", 3534, 5, 3], ["渋谷店", 13345, 5, 2]]
MEMOS = ["セール", None, "=SUM(A1:A9)", "<b>&amp;</b>", "a, b"]  # an empty value is a blank cell
JAPANESE = "date=日付,store=店舗,sku=商品コード,sales=売上,qty=数量"


def with_memo(rows: list[list[Any]]) -> list[list[Any]]:
    return [[*row[:2], memo, *row[2:]] for row, memo in zip(rows, MEMOS, strict=True)]


GOOD = [
    pytest.param("sales_utf8.csv", {}, HEADER, DETAIL, id="utf8"),
    pytest.param("sales_utf8_bom.csv", {}, HEADER, DETAIL, id="utf8-bom"),
    pytest.param("sales_crlf.csv", {}, HEADER, DETAIL, id="crlf"),
    pytest.param(
        "sales_cp932.csv",
        {"OCHINAI_REPORT_COLUMNS": JAPANESE},
        ["日付", "店舗", "商品コード", "売上", "数量"],
        DETAIL,
        id="cp932-japanese-header",
    ),
    pytest.param("sales_quoted_thousands.csv", {}, HEADER, DETAIL, id="quoted-thousands"),
    pytest.param("sales_slashed_dates.csv", {}, HEADER, DETAIL, id="slashed-dates"),
    pytest.param(
        "sales_extra_column.csv",
        {},
        ["date", "store", "memo", "sku", "sales", "qty"],
        with_memo(DETAIL),
        id="extra-column",
    ),
]


def test_data_files_have_the_bytes_they_claim() -> None:
    """The fixture files really are BOM-prefixed, CRLF and CP932 where their names say so."""
    assert (DATA / "sales_utf8_bom.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    crlf = (DATA / "sales_crlf.csv").read_bytes()
    assert crlf.count(b"\r\n") == crlf.count(b"\n") == 6
    cp932 = (DATA / "sales_cp932.csv").read_bytes()
    assert cp932.decode("cp932").startswith("日付,店舗,商品コード,売上,数量\r\n")
    with pytest.raises(UnicodeDecodeError):
        cp932.decode("utf-8")
    assert (DATA / "bad_empty.csv").read_bytes() == b""


# --- good input -> the workbook ------------------------------------------------------


@pytest.mark.parametrize(("name", "env", "header", "detail"), GOOD)
def test_good_file_gives_the_workbook(
    ops: Bench, name: str, env: dict[str, str], header: list[str], detail: list[list[Any]]
) -> None:
    """Each accepted CSV form gives the same sums, typed cells and formats, and its rows as read."""
    ops.upload(name)
    assert ops.run(**env) == 0
    assert ops.keys("out/") == [WORKBOOK]
    book = ops.workbook()
    assert book.sheetnames == ALL_SHEETS
    summary, by_day, by_store, details = (book[name] for name in SHEETS)

    assert table_rows(summary, 5) == SUMMARY
    assert lead(summary) == LEAD
    assert values(by_day) == BY_DAY
    assert values(by_store) == BY_STORE
    assert values(details) == [header, *detail]
    assert notes(book) == [f"営業日 2026-11-28、入力 {ops.url}"]

    # Typed cells: dates are dates, sums whole numbers, store and SKU text with their zeros.
    first = len(LEAD) + 3  # the lead, a blank row, the header: the first row of figures
    assert summary[f"A{first}"].is_date and summary[f"C{first}"].data_type == "n"
    sku = details.cell(2, detail[0].index("000123") + 1)
    assert summary[f"B{first}"].data_type == "s" and (sku.data_type, sku.value) == ("s", "000123")
    if "memo" in header:
        assert details["C4"].data_type == "s"  # "=SUM(A1:A9)" stays text, not a formula
    formatted = [summary[f"{c}{first}"].number_format for c in "ACDE"]
    assert formatted == ["yyyy-mm-dd", YEN, COUNT, COUNT]
    assert [by_day[f"{c}2"].number_format for c in "ABC"] == ["yyyy-mm-dd", YEN, COUNT]
    assert [by_store[f"{c}2"].number_format for c in "BC"] == [YEN, COUNT]
    formats = {h: details.cell(2, i + 1).number_format for i, h in enumerate(header)}
    assert [formats[header[i]] for i in (0, -2, -1)] == ["yyyy-mm-dd", YEN, COUNT]

    assert [book[name].freeze_panes for name in SHEETS] == [f"A{first}", "A2", "A2", "A2"]
    assert summary.auto_filter.ref == f"A{first - 1}:E{first + 2}"
    assert [len(book[name]._charts) for name in SHEETS] == [0, 1, 0, 0]

    line = ops.summary()
    assert (line["outcome"], line["exit_code"], line["rows"]) == ("ok", 0, 5)


COUNTS = ["rows", "bad_rows", "days", "stores", "groups", "detail_rows_in_workbook"]


def test_summary_line_counts_what_the_run_did(ops: Bench) -> None:
    """The summary line carries every count docs/jobs/report.md lists, bytes matching the
    stored object."""
    ops.upload("sales_utf8.csv")
    assert ops.run() == 0
    line = ops.summary()
    counts = {k: line[k] for k in ("rows", "bad_rows", "days", "stores", "groups")}
    assert counts == {"rows": 5, "bad_rows": 0, "days": 2, "stores": 2, "groups": 3}
    assert line["detail_rows_in_workbook"] == 5
    assert line["bytes"] == len(ops.body()) == ops.head()["ContentLength"]
    assert (line["report"], line["notified"]) == ("created", "not_configured")
    assert ops.record()["counts"]["rows"] == 5


def test_detail_is_split_across_sheets(ops: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the per-sheet limit the detail continues on 明細 (2), 明細 (3), each with a header."""
    monkeypatch.setattr(report, "SalesWorkbook", functools.partial(SalesWorkbook, sheet_max_rows=3))
    ops.upload("sales_seven_rows.csv")
    assert ops.run() == 0
    book = ops.workbook()
    assert book.sheetnames == [*ALL_SHEETS, "明細 (2)", "明細 (3)"]
    parts = [values(book[name]) for name in ("明細", "明細 (2)", "明細 (3)")]
    assert [len(part) - 1 for part in parts] == [3, 3, 1]
    assert {tuple(part[0]) for part in parts} == {("date", "store", "sku", "sales", "qty", "memo")}
    rows = [row for part in parts for row in part[1:]]
    assert [row[2] for row in rows] == [f"00000{i}" for i in range(1, 8)]
    assert rows[4] == [datetime(2026, 11, 26), "001", "000005", 1500, 5, "五"]
    assert [book[name].freeze_panes for name in ("明細 (2)", "明細 (3)")] == ["A2", "A2"]
    assert ops.summary()["detail_rows_in_workbook"] == 7


def test_detail_past_the_limit_is_written_beside_the_workbook(ops: Bench) -> None:
    """With OCHINAI_REPORT_DETAIL_MAX_ROWS=3 the book keeps 3 rows and the .csv.gz has all 7."""
    ops.upload("sales_seven_rows.csv")
    assert ops.run(OCHINAI_REPORT_DETAIL_MAX_ROWS="3") == 0
    assert ops.keys("out/") == [SPILL, WORKBOOK]
    book = ops.workbook()
    assert len(values(book["明細"])) == 1 + 3
    spill_url = f"s3://ops/{SPILL}"
    assert any(spill_url in note and "7 行のうち 3 行" in note for note in notes(book))
    assert sum(values(book["日別合計"])[r][1] for r in range(1, 8)) == 3800  # sums: all 7 rows

    with gzip.open(io.BytesIO(ops.body(SPILL)), "rt", encoding="utf-8") as text:
        spilled = list(csv.reader(text))
    assert spilled[0] == ["date", "store", "sku", "sales", "qty", "memo"]
    assert len(spilled) == 1 + 7
    assert spilled[1] == ["2026-11-22", "001", "000001", "100", "1", "一"]
    assert spilled[5] == ["2026-11-26", "001", "000005", "1500", "5", "五"]
    line = ops.summary()
    assert (line["rows"], line["detail_rows_in_workbook"]) == (7, 3)


def test_corrected_input_that_fits_removes_the_old_spill(ops: Bench) -> None:
    """A replaced report whose detail now fits the workbook leaves no stale .csv.gz behind."""
    ops.upload("sales_seven_rows.csv")
    assert ops.run(OCHINAI_REPORT_DETAIL_MAX_ROWS="3") == 0
    assert SPILL in ops.keys("out/")
    ops.upload(b"date,store,sku,sales,qty,memo\n2026-11-28,001,000001,100,1,x\n")
    assert ops.run(OCHINAI_REPORT_DETAIL_MAX_ROWS="3") == 0
    assert ops.summary()["report"] == "replaced"
    assert ops.keys("out/") == [WORKBOOK]


def test_a_workbook_a_later_holder_wrote_is_never_replaced(ops: Bench) -> None:
    """The workbook carries its writer's fence: a run of an earlier term (paused past its
    lease while a later one wrote) ends 75 and leaves the later one's workbook as it is."""
    ops.upload("sales_seven_rows.csv")
    assert ops.run() == 0
    meta = ops.head()["Metadata"]
    later = {**meta, "fence": "9"}  # a later holder of the same lock wrote it
    ops.client.copy_object(
        Bucket="ops",
        Key=WORKBOOK,
        CopySource={"Bucket": "ops", "Key": WORKBOOK},
        Metadata=later,
        MetadataDirective="REPLACE",
    )
    before = ops.body()
    ops.upload(b"date,store,sku,sales,qty,memo\n2026-11-28,001,000001,100,1,x\n")
    assert ops.run() == 75
    assert "fence 9 > 1" in " ".join(line["message"] for line in ops.lines())
    assert ops.body() == before and ops.head()["Metadata"]["fence"] == "9"


def test_an_unchanged_run_sweeps_the_uploads_killed_runs_left(ops: Bench) -> None:
    """Every run sweeps its prefix, whether or not it writes: an upload a killed run left
    under out/ is aborted by the next run, though that run finds nothing to do."""
    ops.upload("sales_seven_rows.csv")
    assert ops.run() == 0
    ops.client.create_multipart_upload(Bucket="ops", Key=WORKBOOK)
    assert ops.run() == 0 and ops.summary()["outcome"] == "unchanged"
    assert ops.client.list_multipart_uploads(Bucket="ops").get("Uploads", []) == []


def test_dry_run_writes_nothing(ops: Bench) -> None:
    """OCHINAI_DRY_RUN builds the report but leaves no object behind, not even a run record."""
    ops.upload("sales_utf8.csv")
    assert ops.run(OCHINAI_DRY_RUN="true") == 0
    assert ops.keys() == [INPUT]
    assert ops.summary()["report"] == "dry_run"


# --- bad input -> exit 65, nothing written -----------------------------------------


BAD = [
    pytest.param("bad_empty.csv", "{url} is empty", id="empty-object"),
    pytest.param(
        "bad_header_only.csv", "{url} has a header but no valid data rows", id="header-only"
    ),
    pytest.param(
        "bad_missing_column.csv",
        "{url} line 1: missing column 'qty' (found: date, store, sku, sales)",
        id="missing-column",
    ),
    pytest.param(
        "bad_date.csv",
        "{url} line 3, column date: '28.11.2026' is not a date (YYYY-MM-DD, YYYY/MM/DD, "
        "YYYY年M月D日, YYYYMMDD or an era date such as R8.11.28)",
        id="unparseable-date",
    ),
    pytest.param(
        "bad_impossible_date.csv",
        "{url} line 4, column date: '2026-02-30' is not a calendar date",
        id="impossible-date",
    ),
    pytest.param(
        "bad_qty_not_number.csv",
        "{url} line 2, column qty: 'two' is not a whole number",
        id="non-numeric-qty",
    ),
    pytest.param(
        "bad_sales_not_number.csv",
        "{url} line 5, column sales: '¥8,00' is not a whole number",
        id="non-numeric-sales",
    ),
    pytest.param(
        "bad_negative_qty.csv", "{url} line 8, column qty: '-3' is negative", id="negative-qty"
    ),
    pytest.param(
        "bad_cp932_negative_qty.csv",
        "{url} line 5, column 数量: '-3' is negative",
        id="cp932-negative-qty",
    ),
    pytest.param(
        "bad_too_many_fields.csv",
        "{url} line 3: has 6 fields where the header has 5",
        id="too-many-fields",
    ),
    pytest.param(
        "bad_too_few_fields.csv",
        "{url} line 5: has 4 fields where the header has 5",
        id="too-few-fields",
    ),
    pytest.param(
        "bad_after_multiline.csv",
        "{url} line 5, column qty: 'x1' is not a whole number",
        id="line-after-multiline-value",
    ),
    pytest.param(
        "bad_utf8_stray_byte.csv",
        "{url} line 4 (byte 93): not valid cp932 (0x97); set OCHINAI_REPORT_ENCODING",
        id="stray-byte",
    ),
    pytest.param(
        "bad_shift_jis_trail_byte.csv",  # English headers, so no column mapping
        "{url} line 3 (byte 82): not valid cp932 (0x81",
        id="cp932-bad-trail-byte",
    ),
    pytest.param(
        "bad_sum_overflow.csv",
        "{url} line 11, column sales: the total of |sales| up to this row passes",
        id="sum-past-int64",
    ),
    pytest.param(None, "{url} does not exist; upload the sales CSV first", id="missing-object"),
]


@pytest.mark.parametrize(("name", "message"), BAD)
def test_bad_input_exits_65_naming_the_place_and_writes_nothing(
    ops: Bench, name: str | None, message: str
) -> None:
    """Bad input stops with 65; the ERROR line and run record name file, line, column, value."""
    if name is not None:
        ops.upload(name)
    # The CP932 file has Japanese headers, mapped as its users would map them.
    env = {"OCHINAI_REPORT_COLUMNS": JAPANESE} if name and "cp932" in name else {}
    assert ops.run(**env) == 65
    expected = message.format(url=ops.url)
    [error] = [line for line in ops.lines() if " failed: " in line["message"]]
    assert error["severity"] == "ERROR" and expected in error["message"]
    assert expected in ops.record()["error"]["message"]
    assert ops.summary()["outcome"] == "data_error"
    assert ops.keys("out/") == []


def test_a_bad_byte_in_a_row_of_the_wrong_width_is_located(ops: Bench) -> None:
    """Past the 64 KiB head, a bad byte in a row with a field too many: its line and byte."""
    rows = b"2026-11-28,001,000123,100,1\n" * 3000
    ops.upload(b"date,store,sku,sales,qty\n" + rows + b"2026-11-28,001,\xed\xa0\x80,100,1,x\n")
    assert ops.run() == 65
    message = ops.record()["error"]["message"]
    assert f"{ops.url} line 3002 (byte 84040): not valid utf-8 (0xED)" in message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_file_is_refused_saying_so(ops: Bench, encoding: str) -> None:
    """Excel's "Unicode text" (UTF-16, with a BOM or without): 65 naming it, nothing written."""
    ops.upload((DATA / "sales_utf8.csv").read_text(encoding="utf-8").encode(encoding))
    assert ops.run() == 65
    assert f"{ops.url} is UTF-16" in ops.record()["error"]["message"]
    assert ops.keys("out/") == []


def test_a_cr_only_file_gives_the_same_report_as_its_lf_twin(ops: Bench) -> None:
    """An old Mac export (CR line ends) is read, not refused: same sums as the LF file."""
    ops.upload("sales_utf8.csv")
    assert ops.run(OCHINAI_REPORT_OUTPUT_PREFIX="lf/") == 0
    lf = ops.summary()
    ops.upload("sales_cr_only.csv")
    assert ops.run(OCHINAI_REPORT_OUTPUT_PREFIX="cr/") == 0
    cr = ops.summary()
    for count in ("rows", "days", "stores", "groups"):
        assert cr[count] == lf[count], count
    lf_sheet = ops.workbook("lf/report_20261128.xlsx")["日次売上"]
    cr_sheet = ops.workbook("cr/report_20261128.xlsx")["日次売上"]
    cells = [[c.value for c in row[:5]] for row in lf_sheet.iter_rows()]
    assert cells == [[c.value for c in row[:5]] for row in cr_sheet.iter_rows()]


def test_sigterm_during_the_build_stops_at_the_next_batch(
    ops: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow reads in threads of its own, so the job checks between batches: 75, no upload."""
    import os
    import signal

    from ochinai.jobs.report import sales

    monkeypatch.setattr(sales, "BLOCK_SIZE", 4096)  # about a hundred rows a batch
    rows = "".join(f"2026-11-28,{i % 7:03d},{i:06d},{i},1\n" for i in range(3000))
    ops.upload(f"date,store,sku,sales,qty\n{rows}".encode())
    calls: list[int] = []

    class Signalling(SalesWorkbook):
        def add_detail(self, batch: Any) -> int:
            calls.append(batch.num_rows)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().add_detail(batch)

    monkeypatch.setattr(report, "SalesWorkbook", Signalling)
    assert ops.run() == 75
    assert len(calls) == 2, "the batch after the signal is never written"
    assert ops.summary()["outcome"] == "terminated" and ops.keys("out/") == []


def test_a_1_mb_bad_field_gives_log_lines_a_log_stack_can_carry(ops: Bench) -> None:
    """A 1 MB value in a bad row: 65, the value cut with its length, every line under 16 KiB."""
    huge = "9" * 1_048_576 + "x"
    ops.upload(f"date,store,sku,sales,qty\n2026-11-28,001,000001,100,{huge}\n".encode())
    assert ops.run() == 65
    raw = ops.logs.getvalue().splitlines()
    assert raw and all(len(line.encode()) <= logs.MAX_LINE_BYTES for line in raw)
    [error] = [line for line in ops.lines() if " failed: " in line["message"]]
    assert "line 2, column qty: '9999" in error["message"]
    assert "… (1,048,577 characters) is not a whole number" in error["message"]
    assert "1,048,577 characters" in ops.record()["error"]["message"]


def pos_export(rows: int, end: str = "\n") -> list[str]:
    """A POS export's lines: the report's columns, then a memo (商品名) it does not use."""
    body = [f"2026-11-28,{n % 3:03d},{n:06d},{100 + n},1,商品 {n}" for n in range(1, rows)]
    return [line + end for line in ["date,store,sku,sales,qty,memo", *body]]


@pytest.mark.parametrize(
    ("line", "encoding", "end", "env"),
    [
        pytest.param(11, "utf-8", "\n", {}, id="line-11"),
        pytest.param(400, "utf-8", "\n", {}, id="last-line"),
        pytest.param(398, "utf-8-sig", "\r\n", {}, id="near-the-end-bom-crlf"),
        pytest.param(11, "cp932", "\r\n", {}, id="cp932"),
        pytest.param(399, "cp932", "\r", {}, id="cp932-cr-only-near-the-end"),
        pytest.param(11, "utf-8", "\n", {"OCHINAI_REPORT_MAX_BAD_ROWS": "100"}, id="allowance"),
    ],
)
def test_a_quote_that_never_closes_in_the_memo_ends_65_naming_its_line(
    ops: Bench, line: int, encoding: str, end: str, env: dict[str, str]
) -> None:
    """Not a report of the rows before it: 65 naming the line, whatever the allowance."""
    lines = pos_export(400, end)
    lines[line - 1] = lines[line - 1].replace("商品", '"商品')
    ops.upload("".join(lines).encode(encoding))
    assert ops.run(**env) == 65
    message = ops.record()["error"]["message"]
    assert message.startswith(f"{ops.url} line {line}: a quoted value opens here and never closes")
    assert '("")' in message
    if encoding == "utf-8":
        rest = len("".join(lines[line - 1 :]).encode()) - lines[line - 1].index('"')
        assert f"the rest of the file ({rest:,} bytes) would be that one value" in message
    assert ops.summary()["outcome"] == "data_error" and ops.keys("out/") == []


def test_a_quote_that_never_closes_mid_row_is_not_a_skipped_bad_row(ops: Bench) -> None:
    """The record it opens has too few fields, but the rest of the file is lost: 65, not 0."""
    lines = pos_export(400)
    lines[10] = lines[10].replace(",001,", ',"001,')
    ops.upload("".join(lines).encode())
    assert ops.run(OCHINAI_REPORT_MAX_BAD_ROWS="100") == 65
    message = ops.record()["error"]["message"]
    assert message.startswith(f"{ops.url} line 11: a quoted value opens here and never closes")
    assert ops.keys("out/") == []


def test_a_quote_that_never_closes_past_a_block_is_named(
    ops: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rest of the file larger than a parser block: the quote's line, not pyarrow's words."""
    from ochinai.jobs.report import sales

    monkeypatch.setattr(sales, "BLOCK_SIZE", 1 << 14)
    lines = pos_export(3000)
    lines[10] = lines[10].replace("商品", '"商品')
    ops.upload("".join(lines).encode("cp932"))
    assert ops.run() == 65
    message = ops.record()["error"]["message"]
    assert message.startswith(f"{ops.url} line 11: a quoted value opens here and never closes")
    assert "straddl" not in message and ops.keys("out/") == []


def test_quoted_memos_that_close_are_read_to_the_last_row(ops: Bench) -> None:
    """Quotes that close, a doubled one, a line break in a memo on the last line: every row."""
    lines = pos_export(400)
    lines[10] = lines[10].replace("商品 10", '"商品 ""10"""')
    lines[-1] = lines[-1].replace("商品 399", '"商品\n399"')
    ops.upload("".join(lines).encode())
    assert ops.run() == 0
    assert ops.summary()["rows"] == 399
    detail = values(ops.workbook()["明細"])
    assert detail[10][5] == '商品 "10"' and detail[-1][5] == "商品\n399"


def test_bad_rows_within_the_allowance_are_skipped_and_counted(ops: Bench) -> None:
    """OCHINAI_REPORT_MAX_BAD_ROWS=2 skips two bad rows, logging their lines, noted in the book."""
    ops.upload("bad_two_rows.csv")
    assert ops.run(OCHINAI_REPORT_MAX_BAD_ROWS="2") == 0
    warnings = [line for line in ops.lines() if line["severity"] == "WARNING"]
    assert [(w["line"], w["message"]) for w in warnings] == [
        (3, f"skipped bad row: {ops.url} line 3: has 6 fields where the header has 5"),
        (5, f"skipped bad row: {ops.url} line 5, column qty: 'x' is not a whole number"),
    ]
    line = ops.summary()
    assert (line["rows"], line["bad_rows"]) == (5, 2)
    book = ops.workbook()
    assert any("不正な行 2 行を除外しました" in note for note in notes(book))
    assert [row[2] for row in values(book["明細"])[1:]] == [
        "000123",
        "000456",
        "000789",
        "000123",
        "000456",
    ]


def test_bad_rows_past_the_allowance_fail_with_the_first(ops: Bench) -> None:
    """A third bad row with OCHINAI_REPORT_MAX_BAD_ROWS=2 ends 65 naming the first bad line."""
    ops.upload("bad_three_rows.csv")
    assert ops.run(OCHINAI_REPORT_MAX_BAD_ROWS="2") == 65
    message = ops.record()["error"]["message"]
    assert message.startswith(f"{ops.url} line 3: has 6 fields where the header has 5")
    assert "(2 more bad rows so far)" in message
    assert "OCHINAI_REPORT_MAX_BAD_ROWS (now 2)" in message
    assert ops.keys("out/") == []


def test_missing_business_date_is_a_rule_error(
    ops: Bench, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --require-date and no row for the business date it exits 66, writes nothing."""
    ops.upload("sales_utf8.csv")
    env = ops.env(OCHINAI_LOG_FORMAT="json")
    assert cli.main(["report", "--date", "2026-11-30", "--require-date"], env=env) == 66
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [error] = [line for line in printed if " failed: " in line["message"]]
    assert f"{ops.url} has no row for the business date 2026-11-30" in error["message"]
    assert printed[-1]["outcome"] == "rule_error" and printed[-1]["exit_code"] == 66
    assert ops.keys("out/") == []
    assert cli.main(["report", "--date", "2026-11-28", "--require-date"], env=ops.env()) == 0
    assert ops.keys("out/") == [WORKBOOK]


# --- reruns, corrections and a second writer ---------------------------------------


def corrected() -> bytes:
    """sales_utf8.csv with one sale corrected from 1500 to 1600."""
    return (DATA / "sales_utf8.csv").read_bytes().replace(b",1500,", b",1600,")


def test_rerun_is_unchanged_and_byte_identical(bench: Bench) -> None:
    """A rerun on the same input writes nothing: same bytes, etag and time; outcome unchanged."""
    bench.upload("sales_utf8.csv")
    assert bench.run() == 0
    first, head, created = bench.body(), bench.head(), bench.summary()
    assert bench.run(now=NOW + timedelta(minutes=30)) == 0
    line = bench.summary()
    assert (line["outcome"], line["report"]) == ("unchanged", "unchanged")
    counted = [*COUNTS, "bytes", "notified"]  # the rerun's summary still tells the whole story
    assert {k: line[k] for k in counted} == {k: created[k] for k in counted}
    assert bench.body() == first
    again = bench.head()
    assert (again["ETag"], again["LastModified"]) == (head["ETag"], head["LastModified"])


def test_same_input_gives_the_same_bytes_in_another_run(ops: Bench) -> None:
    """Built again by another run, hours later, under another prefix, the bytes are identical."""
    ops.upload("sales_cp932.csv")
    assert ops.run(OCHINAI_REPORT_COLUMNS=JAPANESE) == 0
    again = {"OCHINAI_DATE": "2026-11-28", "OCHINAI_REPORT_OUTPUT_PREFIX": "again/"}
    assert ops.run(now=NOW + timedelta(hours=5), OCHINAI_REPORT_COLUMNS=JAPANESE, **again) == 0
    assert ops.summary()["report"] == "created"
    assert ops.body("again/report_20261128.xlsx") == ops.body()


def test_corrected_input_replaces_the_report(bench: Bench) -> None:
    """Re-uploading a corrected CSV replaces the report by CAS with the corrected sums."""
    bench.upload("sales_utf8.csv")
    assert bench.run() == 0
    old = bench.head()["ETag"]
    bench.upload(corrected())
    assert bench.run() == 0
    line = bench.summary()
    assert (line["outcome"], line["report"]) == ("ok", "replaced")
    assert bench.head()["ETag"] != old
    assert table_rows(bench.workbook()["日次売上"], 5)[2] == [D28, "001", 2400, 3, 2]


OTHER = b"another writer's report"


@pytest.mark.parametrize("moment", ["before-cas", "after-head"])
def test_second_writer_during_replace_wins_and_run_exits_75(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """When another writer replaces the report mid-CAS, the run ends 75 and leaves its bytes."""
    bench.upload("sales_utf8.csv")
    assert bench.run() == 0
    bench.upload(corrected())
    struck: list[str] = []

    def strike(etag: str) -> None:
        if not struck:
            struck.append(etag)
            bench.client.put_object(Bucket=bench.bucket, Key=WORKBOOK, Body=OTHER, IfMatch=etag)

    if moment == "before-cas":  # the store's own HEAD sees the change
        put = Store.put

        def racing_put(self: Store, key: str, body: Any, **kw: Any) -> Any:
            if key == WORKBOOK and kw.get("if_match"):
                strike(kw["if_match"])
            return put(self, key, body, **kw)

        monkeypatch.setattr(Store, "put", racing_put)
    else:  # between the store's HEAD and its PUT: only the server's If-Match can see it
        upload = Store._upload

        def racing_upload(self: Store, key: str, data: Any, *args: Any) -> Any:
            cond = args[2]  # content_type, metadata, cond, retain
            if key == WORKBOOK and "IfMatch" in cond:
                strike(cond["IfMatch"])
            return upload(self, key, data, *args)

        monkeypatch.setattr(Store, "_upload", racing_upload)

    assert bench.run() == 75
    assert struck
    expected = f"s3://{bench.bucket}/{WORKBOOK} changed while this run replaced it"
    assert expected in bench.record()["error"]["message"]
    assert bench.summary()["outcome"] == "transient_error"
    assert bench.body() == OTHER


# --- mail and webhook ----------------------------------------------------------------


def mail_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "OCHINAI_SMTP_HOST": "127.0.0.1",
        "OCHINAI_SMTP_PORT": str(port),
        "OCHINAI_SMTP_TLS": "none",
        "OCHINAI_MAIL_FROM": "ochinai@example.com",
        "OCHINAI_MAIL_TO": "sales@example.com",
        **extra,
    }


def short_sha256(body: bytes) -> str:
    """The first 16 hex digits of the report's sha256, as notice keys carry them."""
    return hashlib.sha256(body).hexdigest()[:16]


def parsed(inbox: Inbox, index: int = -1) -> EmailMessage:
    msg = email.message_from_bytes(inbox.mails[index][2], policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body_text(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_report_is_mailed_once_with_the_stored_bytes(ops: Bench, start_smtp: StartSmtp) -> None:
    """The mail carries the stored workbook byte for byte; an unchanged rerun mails nothing more."""
    inbox, port = start_smtp()
    ops.upload("sales_utf8.csv")
    assert ops.run(**mail_env(port)) == 0
    assert ops.summary()["notified"] == "sent"
    msg = parsed(inbox)
    assert msg["Subject"] == "売上日報 2026-11-28"
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "report_20261128.xlsx"
    assert attachment.get_payload(decode=True) == ops.body()
    text = body_text(msg)
    # Which day it is about, then its figures, then the period the file covers.
    assert text.splitlines()[:6] == ["営業日 2026-11-28 土(前営業日)の売上日報です。", "", *LEAD]
    size = round(len(ops.body()) / 1000)
    assert f"添付: report_20261128.xlsx ({size} KB)" in text
    assert re.search(r"リンクの有効期限: \d{4}-\d\d-\d\d \d\d:\d\d \(Asia/Tokyo\)", text)

    assert ops.run(**mail_env(port)) == 0
    line = ops.summary()
    assert (line["outcome"], line["notified"]) == ("unchanged", "already_sent")
    assert len(inbox.mails) == 1


def test_a_delivery_recorded_where_earlier_versions_record_it_is_not_sent_again(
    ops: Bench, start_smtp: StartSmtp
) -> None:
    """A mail recorded as _sent/report/<date>/<sha256[:16]>/smtp.json is never mailed again."""
    inbox, port = start_smtp()
    ops.upload("sales_utf8.csv")
    assert ops.run(**mail_env(port)) == 0
    sha = ops.head()["Metadata"]["sha256"]
    assert ops.keys("_sent/") == [f"_sent/report/2026-11-28/{sha[:16]}/smtp.json"]
    assert parsed(inbox)["X-Ochinai-Key"] == f"report/2026-11-28/{sha[:16]}"
    ops.client.delete_object(Bucket=ops.bucket, Key=WORKBOOK)  # rebuilt, same bytes
    assert ops.run(**mail_env(port)) == 0
    assert ops.summary()["notified"] == "already_sent" and len(inbox.mails) == 1


def test_large_report_is_mailed_as_a_working_link(bench: Bench, start_smtp: StartSmtp) -> None:
    """Above OCHINAI_MAIL_MAX_BYTES the mail has no attachment but a presigned link that works."""
    inbox, port = start_smtp()
    bench.upload("sales_utf8.csv")
    assert bench.run(**mail_env(port, OCHINAI_MAIL_MAX_BYTES="100")) == 0
    msg = parsed(inbox)
    assert list(msg.iter_attachments()) == []
    text = body_text(msg)
    assert "ファイルが大きいため添付せず、リンクでお送りします: report_20261128.xlsx" in text
    [link] = re.findall(r"https?://\S+", text)
    assert f"/{WORKBOOK}?" in link and "X-Amz-Signature=" in link
    answer = requests.get(link, timeout=10)  # no credentials: the signature is the key
    assert answer.status_code == 200 and answer.content == bench.body()


def test_failed_mail_exits_75_and_the_next_run_sends_only_the_mail(
    ops: Bench, start_smtp: StartSmtp, hook: Hook
) -> None:
    """With the mail server down the report is stored and the run ends 75; the rerun mails once.

    The webhook took the notice the first time, so the rerun does not post it again.
    """
    port = free_port()
    env = mail_env(port, OCHINAI_WEBHOOK_URL=hook.url)
    ops.upload("sales_utf8.csv")
    assert ops.run(**env) == 75
    assert ops.keys("out/") == [WORKBOOK]
    assert f"smtp://127.0.0.1:{port}" in ops.record()["error"]["message"]
    assert ops.summary()["outcome"] == "transient_error"

    inbox, _ = start_smtp(port=port)
    assert ops.run(**env) == 0
    line = ops.summary()
    assert (line["outcome"], line["report"], line["notified"]) == ("ok", "unchanged", "sent")
    subjects = [str(parsed(inbox, n)["Subject"]) for n in range(len(inbox.mails))]
    # The report once; the incident the first run opened (its mail waited for the server)
    # and its recovery, each once.
    assert subjects.count("売上日報 2026-11-28") == 1 and len(subjects) == 3
    keys = [headers["Idempotency-Key"] for headers, _ in hook.received]
    assert keys == [
        f"report/2026-11-28/{short_sha256(ops.body())}",
        "report/incident/run-1/opened",
        "report/incident/run-1/recovered",
    ]


def test_corrected_report_is_mailed_again(ops: Bench, start_smtp: StartSmtp) -> None:
    """A replaced report is new content, so it is mailed once more."""
    inbox, port = start_smtp()
    ops.upload("sales_utf8.csv")
    assert ops.run(**mail_env(port)) == 0
    ops.upload(corrected())
    assert ops.run(**mail_env(port)) == 0
    assert len(inbox.mails) == 2
    [attachment] = list(parsed(inbox).iter_attachments())
    assert attachment.get_payload(decode=True) == ops.body()


def test_webhook_gets_one_post_with_the_totals(ops: Bench, hook: Hook) -> None:
    """The webhook receives one JSON POST whose text has the totals and the report's link."""
    ops.upload("sales_utf8.csv")
    assert ops.run(OCHINAI_WEBHOOK_URL=hook.url) == 0
    assert ops.run(OCHINAI_WEBHOOK_URL=hook.url) == 0
    [(headers, body)] = hook.received
    assert headers["Content-Type"] == "application/json"
    text = json.loads(body)["text"]
    assert text.startswith("*売上日報 2026-11-28*\n")
    assert LEAD[0] in text and LEAD[-1] in text
    assert f"/{WORKBOOK}?" in text
    assert "services" not in ops.logs.getvalue()  # the hook's secret path is never logged


def test_detail_off_writes_summaries_only(ops: Bench) -> None:
    """OCHINAI_REPORT_DETAIL_MAX_ROWS=0: no detail sheet, no .csv.gz, the totals all there."""
    ops.upload("sales_seven_rows.csv")
    assert ops.run(OCHINAI_REPORT_DETAIL_MAX_ROWS="0") == 0
    assert ops.keys("out/") == [WORKBOOK]
    book = ops.workbook()
    assert book.sheetnames == ALL_SHEETS[:4]
    assert sum(values(book["日別合計"])[r][1] for r in range(1, 8)) == 3800
    assert any("OCHINAI_REPORT_DETAIL_MAX_ROWS=0" in note for note in notes(book))
    assert (ops.summary()["rows"], ops.summary()["detail_rows_in_workbook"]) == (7, 0)


def test_spill_keeps_the_file_column_order(ops: Bench) -> None:
    """The .detail.csv.gz has the input's own header and order, the date not first."""
    ops.upload(
        b"store,date,sku,sales,qty\n001,2026-11-27,000001,100,1\n002,2026/11/28,000002,200,2\n"
    )
    assert ops.run(OCHINAI_REPORT_DETAIL_MAX_ROWS="1") == 0
    with gzip.open(io.BytesIO(ops.body(SPILL)), "rt", encoding="utf-8") as text:
        spilled = list(csv.reader(text))
    assert spilled == [
        ["store", "date", "sku", "sales", "qty"],
        ["001", "2026-11-27", "000001", "100", "1"],
        ["002", "2026-11-28", "000002", "200", "2"],
    ]


# --- nothing cut or trimmed without a word ---------------------------------------------


def test_trimmed_codes_and_cut_cells_are_counted_logged_once_and_noted(ops: Bench) -> None:
    """Edge white space of codes and text past Excel's limit: kept as before, but said."""
    long = "長" * 40_000  # past 32,767 characters: Excel cannot hold it
    body = (
        "date,store,sku,sales,qty,memo\n"
        "2026-11-28,001,000123,100,1,ok\n"
        "2026-11-28, 007 ,000123,200,1,ok\n"  # line 3: the first trimmed
        f"2026-11-28,007,\u3000000456\u3000,300,1,{long}\n"
        f"2026-11-28,001,000456,400,1,{long}\n"
    ).encode()
    ops.upload(body)
    assert ops.run() == 0
    summary = ops.summary()
    assert (summary["trimmed_codes"], summary["truncated_cells"]) == (2, 2)
    warnings = [line for line in ops.lines() if line["severity"] == "WARNING"]
    trimmed = [w for w in warnings if "white space" in w["message"]]
    cut = [w for w in warnings if "32,767" in w["message"]]
    assert len(trimmed) == 1 and "first at line 3, column store" in trimmed[0]["message"]
    assert len(cut) == 1 and "first at 明細!F4 (memo)" in cut[0]["message"]
    assert long not in ops.logs.getvalue()
    book = ops.workbook()
    assert [n for n in notes(book) if "空白" in n or "32,767" in n] == [
        "店舗・SKU の前後の空白を 2 件取り除きました(最初は line 3, column store)。",
        "Excel の上限 32,767 文字を超える値 2 件を切り詰めました(最初は 明細!F4 (memo))。",
    ]
    assert len(book["明細"]["F4"].value) == 32_767
    assert [r[1] for r in table_rows(book["日次売上"])[1:]] == ["001", "007"]
    # A rerun says the same: the counts travel with the stored report.
    assert ops.run() == 0
    again = ops.summary()
    assert (again["outcome"], again["trimmed_codes"], again["truncated_cells"]) == (
        "unchanged",
        2,
        2,
    )


# --- the workbook prints -----------------------------------------------------------------


def test_every_sheet_is_set_up_to_print(ops: Bench) -> None:
    """Page setup as openpyxl reads it back: A4 landscape, one page wide, header repeated."""
    ops.upload("sales_utf8.csv")
    assert ops.run() == 0
    book = ops.workbook()
    for name in SHEETS:
        sheet = book[name]
        setup = sheet.page_setup
        assert (setup.orientation, setup.paperSize) == ("landscape", 9), name
        # One page wide: the columns' width (and the chart's) times the scale fits A4.
        dims = sheet.column_dimensions.values()
        # xlsxwriter writes a width with 0.71 characters of padding.
        used = sum(int((d.width - 0.71) * 7 + 5) * (d.max - d.min + 1) for d in dims)
        if name == "日別合計":
            used += GAP_PX + CHART_PX[0]
        scale = setup.scale or 100  # 100: the default, not written
        assert 10 <= scale <= 100 and used * scale / 100 <= PRINTABLE_PX, name
        header_row = len(LEAD) + 2 if name == SHEETS[0] else 1
        assert sheet.print_title_rows == f"${header_row}:${header_row}", name
        assert "&A" in sheet.oddHeader.left.text and "2026-11-28" in sheet.oddHeader.right.text
        assert sheet.oddFooter.center.text == "&P / &N"


@needs_soffice
@pytest.mark.parametrize(("rows", "pages"), [(None, 5), (1344, None)])
def test_the_workbook_prints_from_libreoffice(
    ops: Bench, tmp_path: Path, rows: int | None, pages: int | None
) -> None:
    """LibreOffice renders it to PDF: the summaries a page each, chart included, no ###."""
    if rows is None:
        ops.upload("sales_utf8.csv")
    else:  # a week of five stores, as make run-local puts it
        sys.path.insert(0, str(Path(__file__).parent.parent / "docker"))
        import sample_data

        ops.upload(sample_data.sample_sales(date(2026, 11, 28)))
    assert ops.run() == 0
    workbook = tmp_path / WORKBOOK.split("/")[-1]
    workbook.write_bytes(ops.body())
    texts = printed(workbook, tmp_path)
    sheets = [text.split()[0] for text in texts]  # the page header starts with the sheet
    assert sheets[:4] == ALL_SHEETS[:4]  # each summary on one page: the chart is not split
    assert set(sheets[4:]) == {"明細"}
    if pages is not None:
        assert len(texts) == pages
    assert all(f"/ {len(texts)}" in text for text in texts)  # "page / pages" in the footer
    assert not [n for n, text in enumerate(texts, 1) if "###" in text]  # no column too narrow
    assert "2026-11-28 の売上" in texts[0].replace("  ", " ")


# --- personal data masked ----------------------------------------------------------------

KEY = "a-key-of-sixteen-bytes-or-more"
CUSTOMERS = (
    "date,store,sku,sales,qty,氏名,電話番号\n"
    "2026-11-28,001,000123,100,1,佐藤 花子,090-1234-5678\n"
    "2026-11-28,001,000456,200,1,鈴木 太郎,080-2222-3333\n"
    "2026-11-28,002,000123,300,1,佐藤 花子,090-1234-5678\n"
    "2026-11-27,002,000123,400,1,,\n"
)
MASK = {"OCHINAI_REPORT_MASK_COLUMNS": "氏名,電話番号", "OCHINAI_MASK_KEY": KEY}


def test_masked_columns_are_tokens_in_the_detail_and_the_spill_and_nowhere_in_clear(
    ops: Bench,
) -> None:
    from ochinai.runtime.mask import Masker

    ops.upload(CUSTOMERS.encode())
    assert ops.run(**MASK, OCHINAI_REPORT_DETAIL_MAX_ROWS="2") == 0
    token = Masker(KEY).token
    detail = table_rows_of(ops.workbook()["明細"])
    assert [row[5:] for row in detail] == [
        [token("佐藤 花子"), token("090-1234-5678")],
        [token("鈴木 太郎"), token("080-2222-3333")],
    ]
    spilled = gzip.decompress(ops.body(SPILL)).decode()
    assert token("佐藤 花子") in spilled and spilled.count(token("090-1234-5678")) == 2
    for clear in ("佐藤", "鈴木", "090-1234", "080-2222"):
        assert clear not in spilled and clear not in ops.logs.getvalue(), clear
    assert ',"",""' in spilled or ",," in spilled  # an empty value stays empty
    assert any("氏名、電話番号" in n for n in notes(ops.workbook()))
    # The sums are those of the clear file.
    assert table_rows(ops.workbook()["日次売上"], 5)[1:] == [
        [D27, "002", 400, 1, 1],
        [D28, "001", 300, 2, 2],
        [D28, "002", 300, 1, 1],
    ]


def table_rows_of(sheet: Any) -> list[list[Any]]:
    return [list(row) for row in sheet.iter_rows(min_row=2, values_only=True)]


def test_the_same_customer_is_the_same_token_in_another_file_and_day(ops: Bench) -> None:
    ops.upload(CUSTOMERS.encode())
    assert ops.run(**MASK) == 0
    first = table_rows_of(ops.workbook()["明細"])[0][5]
    other = "date,store,sku,sales,qty,氏名,電話番号\n2026-11-29,009,000999,1,1,佐藤 花子,x\n"
    ops.upload(other.encode())
    assert ops.run(**MASK, OCHINAI_DATE="2026-11-29") == 0
    later = ops.workbook("out/report_20261129.xlsx")["明細"]
    assert table_rows_of(later)[0][5] == first


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"OCHINAI_REPORT_MASK_COLUMNS": "氏名"}, "OCHINAI_MASK_KEY is not set"),
        ({**MASK, "OCHINAI_MASK_KEY": "short"}, "too short"),
    ],
)
def test_a_missing_or_short_mask_key_is_78_before_anything_is_read(
    ops: Bench, env: dict[str, str], said: str
) -> None:
    """The key is checked when the settings load: no input there is still 78 (not 65), and
    nothing is read or written, not even the lock."""
    result = run_job("report", env=ops.env(**env))
    assert result.code == 78 and said in result.out
    assert "OCHINAI_REPORT_MASK_COLUMNS" in result.out and ops.keys() == []


@pytest.mark.parametrize(
    ("env", "code", "said"),
    [
        ({**MASK, "OCHINAI_REPORT_MASK_COLUMNS": "store"}, 78, "cannot be masked"),
        ({**MASK, "OCHINAI_REPORT_MASK_COLUMNS": "住所"}, 65, "no column 住所 to mask"),
    ],
)
def test_masking_that_cannot_be_done_writes_nothing(
    ops: Bench, env: dict[str, str], code: int, said: str
) -> None:
    ops.upload(CUSTOMERS.encode())
    assert ops.run(**env) == code
    assert ops.keys("out/") == []
    assert said in ops.logs.getvalue()
    assert "佐藤" not in ops.logs.getvalue()
