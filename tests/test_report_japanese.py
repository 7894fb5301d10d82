"""Japanese business CSVs as they come: the report reads them as it reads a plain file.

Each shape alone and all of them mixed, in CP932 (as Excel saves it: CRLF, the half-
width ¥ as byte 0x5C) and in UTF-8 with and without a BOM, give the same sums as the
plain CSV of the same values. Wrong values are still refused, shown as the user sees
them (a CP932 0x5C as ¥).
"""

from __future__ import annotations

import codecs
from typing import Any

import pytest

from tests.test_report import Bench, notes, ops_bench, table_rows  # noqa: F401 (ops)

PLAIN = (
    "date,store,sku,sales,qty\n"
    "2026-11-27,001,4901234567890,1234,2\n"
    "2026-11-28,001,4901234567890,1500,3\n"
    "2026-11-28,002,0012,-100,1\n"
    "2026-11-28,002,0012,2000,1\n"
    "2026-11-28,001,0450,-50,0\n"
)
HEADER = "日付,店舗コード,商品コード,売上金額,数量"
# The rows of PLAIN, each in one of the forms Japanese exports write.
MIXED = [
    '2026年11月27日,001,4901234567890,"¥1,234",２',
    'R8.11.28,001,4901234567890,"1,500円",3',
    "令和8年11月28日,002,0012,△100,1",
    '20261128,002,0012,"￥2,000",１',
    "２０２６／１１／２８,001,0450,▲50,0",
]


def encoded(lines: list[str], encoding: str) -> bytes:
    """The lines as a file: CP932 as Excel writes it (CRLF, ¥ as 0x5C), or UTF-8."""
    text = "".join(line + ("\r\n" if encoding == "cp932" else "\n") for line in lines)
    if encoding == "cp932":
        return text.replace("¥", "\\").encode("cp932")
    body = text.encode()
    return codecs.BOM_UTF8 + body if encoding == "utf-8-sig" else body


def daily(ops: Bench) -> list[list[Any]]:
    """The daily table: its header and rows, not the notes' rows beside and below it."""
    rows = table_rows(ops.workbook()["日次売上"], 4)
    return [row for row in rows if any(cell is not None for cell in row)]


def run_plain(ops: Bench) -> list[list[Any]]:
    ops.upload(PLAIN.encode())
    assert ops.run() == 0, ops.logs.getvalue()[-2000:]
    return daily(ops)


@pytest.fixture
def plain(ops: Bench) -> list[list[Any]]:
    return run_plain(ops)


ENCODINGS = ["cp932", "utf-8", "utf-8-sig"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_shape_mixed_in_one_file_sums_as_the_plain_csv(
    ops: Bench, plain: list[list[Any]], encoding: str
) -> None:
    ops.upload(encoded([HEADER, *MIXED, '合計,,,"¥4,584",7'], encoding))
    assert ops.run() == 0, ops.logs.getvalue()[-3000:]
    assert daily(ops) == plain
    counts = ops.summary()
    assert counts["rows"] == 5 and counts["bad_rows"] == 0
    assert counts["skipped_total_rows"] == 1
    assert counts["normalized_yen"] == 3  # "¥1,234", "1,500円", "￥2,000"
    assert counts["normalized_minus"] == 2  # △100, ▲50
    assert counts["normalized_dates"] == 4  # 年月日, R8., 令和, 20261128 (the 5th: NFKC)
    assert counts["normalized_fullwidth"] == 4  # ２, ￥2,000, １, ２０２６／１１／２８
    said = notes(ops.workbook())
    assert any("列名で読んだ列: 日付→date" in n and "売上金額→sales" in n for n in said)
    assert any("¥・円の付いた金額 3 件(最初は 2 行目 売上金額)" in n for n in said)
    assert any("合計・小計の行 1 行は集計から外しました" in n for n in said)
    assert not any("合いません" in n for n in said)  # the total adds up


SHAPES = [
    pytest.param(0, '2026-11-27,001,4901234567890,"¥1,234",2', "normalized_yen", id="yen"),
    pytest.param(1, "2026-11-28,001,4901234567890,1500円,3", "normalized_yen", id="en"),
    pytest.param(
        0, "2026-11-27,001,4901234567890,１２３４,2", "normalized_fullwidth", id="zenkaku"
    ),
    pytest.param(2, "2026-11-28,002,0012,△100,1", "normalized_minus", id="sankaku"),
    pytest.param(4, "2026-11-28,001,0450,▲50,0", "normalized_minus", id="kuro-sankaku"),
    pytest.param(4, "2026-11-28,001,0450,−50,0", "normalized_minus", id="minus-sign"),
    pytest.param(3, "2026年11月28日,002,0012,2000,1", "normalized_dates", id="nengappi"),
    pytest.param(3, "R8.11.28,002,0012,2000,1", "normalized_dates", id="reiwa-letter"),
    pytest.param(3, "令和8年11月28日,002,0012,2000,1", "normalized_dates", id="reiwa-kanji"),
    pytest.param(3, "20261128,002,0012,2000,1", "normalized_dates", id="yyyymmdd"),
    pytest.param(3, "2026/11/28 14:32:10,002,0012,2000,1", "normalized_dates", id="pos-time"),
]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(("index", "row", "kind"), SHAPES)
def test_each_shape_alone_sums_as_the_plain_csv(
    ops: Bench, plain: list[list[Any]], encoding: str, index: int, row: str, kind: str
) -> None:
    lines = PLAIN.splitlines()
    lines[index + 1] = row
    ops.upload(encoded(lines, encoding))
    assert ops.run() == 0, ops.logs.getvalue()[-3000:]
    assert daily(ops) == plain
    if encoding == "cp932" and "−" in row:  # CP932 has no U+2212: Excel saves －, full-width
        kind = "normalized_fullwidth"
    assert ops.summary()[kind] == 1


def test_era_dates_across_the_change_of_era(ops: Bench) -> None:
    rows = [
        "H31.4.30,001,1,100,1",  # the last day of 平成
        "R1.5.1,001,1,200,1",  # the first of 令和
        "令和元年5月2日,001,1,300,1",
        "平成元年1月8日,001,1,400,1",
        "S64.1.7,001,1,500,1",
    ]
    ops.upload(encoded(["date,store,sku,sales,qty", *rows], "utf-8"))
    assert ops.run(OCHINAI_DATE="2019-05-02") == 0, ops.logs.getvalue()[-3000:]
    table = table_rows(ops.workbook("out/report_20190502.xlsx")["日次売上"], 4)
    days = [row[0] for row in table[1:] if row[0]]
    shown = sorted({d.date().isoformat() for d in days})
    assert shown == ["1989-01-07", "1989-01-08", "2019-04-30", "2019-05-01", "2019-05-02"]


WRONG = [
    pytest.param("sales", '"¥1,2,34"', "'¥1,2,34' is not a whole number", id="yen-bad-commas"),
    pytest.param("sales", "△", "'△' is not a whole number", id="sankaku-alone"),
    pytest.param(
        "sales",
        "１２３４５６７８９０１２３４５６７８９０",
        "'１２３４５６７８９０１２３４５６７８９０' is not a whole number",
        id="zenkaku-overflow",
    ),
    pytest.param(
        "date",
        "R1.4.30",
        "'R1.4.30' is not a date of 令和, which began on 2019-05-01",
        id="r1-4-30",
    ),
    pytest.param(
        "date",
        "令和0年11月28日",
        "'令和0年11月28日' is not a date: 令和 has no year 0 (its first year is 元年)",
        id="reiwa-0",
    ),
    pytest.param(
        "date",
        "H31.5.1",
        "'H31.5.1' is not a date of 平成: 令和 began on 2019-05-01",
        id="h31-5-1",
    ),
    pytest.param("date", "2026年2月30日", "'2026年2月30日' is not a calendar date", id="feb-30"),
]


@pytest.mark.parametrize("encoding", ["cp932", "utf-8"])
@pytest.mark.parametrize(("column", "value", "reason"), WRONG)
def test_wrong_values_are_refused_as_the_user_sees_them(
    ops: Bench, encoding: str, column: str, value: str, reason: str
) -> None:
    fields = {"日付": "2026-11-28", "店舗": "001", "商品コード": "1", "売上": "100", "数量": "1"}
    header = {"date": "日付", "sales": "売上"}[column]
    fields[header] = value
    lines = [",".join(fields), ",".join(fields.values())]
    ops.upload(encoded(lines, encoding))
    assert ops.run() == 65
    error = next(x["message"] for x in ops.lines() if x.get("severity") == "ERROR")
    assert f"line 2, column {header}: {reason}" in error
    assert ops.keys("out/") == []


def test_subtotals_are_skipped_and_a_wrong_last_total_is_a_warning(ops: Bench) -> None:
    rows = [
        "date,store,sku,sales,qty",
        "2026-11-28,001,1,100,1",
        "2026-11-28,001,2,200,2",
        "小計,001,,300,3",
        "2026-11-28,002,1,1000,1",
        "総計,,,1300,3",  # the sales add up, the qty (4) does not
    ]
    ops.upload(encoded(rows, "utf-8"))
    assert ops.run() == 0, ops.logs.getvalue()[-3000:]
    counts = ops.summary()
    assert (counts["rows"], counts["skipped_total_rows"]) == (3, 2)
    mismatch = [n for n in notes(ops.workbook()) if "合いません" in n]
    assert mismatch == ["注意: 6 行目の合計行が合いません: qty 3(上の行の計 4)"]
    assert any(
        x["severity"] == "WARNING" and "the total row says qty 3" in x["message"]
        for x in ops.lines()
    )


def test_a_trailing_row_without_a_date_is_a_total(ops: Bench, plain: list[list[Any]]) -> None:
    ops.upload((PLAIN + ",,,4584,7\n").encode())
    assert ops.run() == 0, ops.logs.getvalue()[-3000:]
    assert daily(ops) == plain
    assert ops.summary()["skipped_total_rows"] == 1


def test_a_row_without_a_date_in_the_middle_is_still_a_bad_row(ops: Bench) -> None:
    lines = PLAIN.splitlines()
    lines.insert(2, ",001,1,100,1")
    ops.upload(("\n".join(lines) + "\n").encode())
    assert ops.run() == 65
    assert "line 3, column date: '' is not a date" in ops.logs.getvalue()


def test_an_ambiguous_header_names_both_columns(ops: Bench) -> None:
    ops.upload("日付,店舗,商品コード,売上,売上金額,数量\n2026-11-28,001,1,100,100,1\n".encode())
    assert ops.run() == 65
    error = next(x["message"] for x in ops.lines() if x.get("severity") == "ERROR")
    assert "line 1: the columns '売上', '売上金額' could each be 'sales'" in error
    assert "OCHINAI_REPORT_COLUMNS=sales=" in error
    # Named, it reads.
    assert ops.run(OCHINAI_REPORT_COLUMNS="sales=売上金額") == 0


def test_a_store_code_is_taken_before_a_store_name(ops: Bench) -> None:
    ops.upload("日付,店舗コード,店舗名,JAN,金額,個数\n2026-11-28,001,渋谷店,1,100,1\n".encode())
    assert ops.run() == 0, ops.logs.getvalue()[-3000:]
    assert [row[1] for row in daily(ops)[1:] if row[1]] == ["001"]


def test_strict_keeps_todays_behaviour(ops: Bench) -> None:
    ops.upload(encoded([HEADER, *MIXED], "utf-8"))
    assert ops.run(OCHINAI_REPORT_STRICT="true") == 65
    assert "missing column 'date'" in ops.logs.getvalue()
    lines = PLAIN.splitlines()
    lines[1] = '2026-11-27,001,4901234567890,"¥1,234",2'
    ops.upload(("\n".join(lines) + "\n").encode())
    assert ops.run(OCHINAI_REPORT_STRICT="true") == 65
    assert "'¥1,234' is not a whole number" in ops.logs.getvalue()
