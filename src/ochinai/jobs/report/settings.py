"""The report job's settings: where the CSV is, how to read it, what goes in the workbook."""

from __future__ import annotations

from dataclasses import dataclass

from ochinai.runtime.calendar import (
    CALENDARS,
    PREVIOUS_BUSINESS_DAY,
    TODAY,
    YESTERDAY,
    Calendar,
    ClosedDays,
    RelativeDay,
    parse_closed_days,
)
from ochinai.runtime.declare import (
    choice,
    parse_bool,
    parse_count,
    parse_duration,
    parse_key,
    parse_key_prefix,
    parse_size,
    setting,
)
from ochinai.runtime.encoding import encoding_setting
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.mask import Masker, mask_key_setting

COLUMNS = ("date", "store", "sku", "sales", "qty")
# OCHINAI_REPORT_DAY: the day a report is about when no --date is given.
REPORT_DAYS = {
    "previous-business-day": PREVIOUS_BUSINESS_DAY,
    "previous-day": YESTERDAY,
    "today": TODAY,
}


def parse_column_map(value: str) -> dict[str, str]:
    """COLUMN=HEADER pairs, comma-separated, COLUMN one of date, store, sku, sales, qty"""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, header = item.partition("=")
        if not sep or name.strip() not in COLUMNS or not header.strip():
            raise ValueError(f"{item!r} is not COLUMN=HEADER")
        mapping[name.strip()] = header.strip()
    return mapping


def parse_header_names(value: str) -> frozenset[str]:
    """header names, comma-separated, such as 氏名,電話番号"""
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def parse_link_expiry(value: str) -> float:
    """a duration from 1s to 7d (S3's limit on a presigned URL), such as 7d or 36h"""
    seconds = parse_duration(value)
    if not 1 <= seconds <= 7 * 86400:
        raise ValueError("a presigned link lasts 1 second to 7 days")
    return seconds


@dataclass(frozen=True)
class ReportSettings:
    """``ochinai report``'s own settings."""

    input: str = setting("OCHINAI_REPORT_INPUT", parse_key, "in/sales.csv", "key of the sales CSV")
    output_prefix: str = setting(
        "OCHINAI_REPORT_OUTPUT_PREFIX",
        parse_key_prefix,
        "out/",
        "where report_YYYYMMDD.xlsx goes",
    )
    encoding: str = encoding_setting("OCHINAI_REPORT_ENCODING", "the CSV")
    columns: dict[str, str] = setting(
        "OCHINAI_REPORT_COLUMNS",
        parse_column_map,
        "",
        "header names when they are not date, store, sku, sales, qty",
    )
    max_bad_rows: int = setting(
        "OCHINAI_REPORT_MAX_BAD_ROWS",
        parse_count,
        "0",
        "bad rows to skip (each logged with its line) before the run fails",
    )
    report_day: str = setting(
        "OCHINAI_REPORT_DAY",
        choice(*REPORT_DAYS),
        "previous-business-day",
        "the day a report is about without --date, on the day the run starts in --timezone: "
        "the business day before it (by OCHINAI_CALENDAR and OCHINAI_CLOSED_DAYS; without "
        "them, the day before), the day before, or that day",
    )
    calendar: str = setting(
        "OCHINAI_CALENDAR",
        choice(*CALENDARS),
        "none",
        "public holidays that are closed days: none, or jp (Japan's, substitute and "
        "citizens' holidays included)",
    )
    closed_days: ClosedDays = setting(
        "OCHINAI_CLOSED_DAYS",
        parse_closed_days,
        "",
        "other closed days: weekdays, days of every year, ranges of them and dates",
    )
    closed_day_note: bool = setting(
        "OCHINAI_REPORT_CLOSED_DAY_NOTE",
        parse_bool,
        "false",
        "on a closed day without sales (no report), send a short note that says so",
    )
    strict: bool = setting(
        "OCHINAI_REPORT_STRICT",
        parse_bool,
        "false",
        "read only the plain forms: no Japanese header names, no ¥ 円 △ full-width digits or "
        "Japanese dates, no total rows (each such value is a bad row)",
    )
    require_date: bool = setting(
        "OCHINAI_REPORT_REQUIRE_DATE",
        parse_bool,
        "false",
        "fail (exit 66) when the CSV has no row for the business date, unless it is a closed day",
    )
    detail_max_rows: int = setting(
        "OCHINAI_REPORT_DETAIL_MAX_ROWS",
        parse_count,
        "1000000",
        "detail rows put in the workbook; all rows go to .detail.csv.gz beyond it; 0: no detail",
    )
    mail_max_bytes: int = setting(
        "OCHINAI_MAIL_MAX_BYTES",
        parse_size,
        "10MB",
        "larger reports are mailed as a link instead of an attachment",
    )
    link_expiry: float = setting(
        "OCHINAI_REPORT_LINK_EXPIRY",
        parse_link_expiry,
        "7d",
        "how long the presigned link to the report works",
    )
    mask_columns: frozenset[str] = setting(
        "OCHINAI_REPORT_MASK_COLUMNS",
        parse_header_names,
        "",
        "extra columns (by header) whose values become HMAC tokens in the detail and .csv.gz",
    )
    mask_key: str | None = mask_key_setting()

    def __post_init__(self) -> None:
        if self.mask_columns:  # the key is there and long enough before anything is read
            try:
                Masker(self.mask_key)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (OCHINAI_REPORT_MASK_COLUMNS is set)") from None

    def default_day(self) -> RelativeDay:
        """The day a run is about without --date (OCHINAI_REPORT_DAY)."""
        return REPORT_DAYS[self.report_day]

    def business_calendar(self) -> Calendar:
        """The closed days: OCHINAI_CALENDAR's holidays and OCHINAI_CLOSED_DAYS."""
        return Calendar(self.calendar, self.closed_days)
