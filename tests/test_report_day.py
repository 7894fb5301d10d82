"""Which day a report is about, and quiet days.

The report is about the business day before the run (OCHINAI_REPORT_DAY); --date takes
relative forms resolved at the start of the run; Japan's holidays (OCHINAI_CALENDAR=jp)
and named closed days (OCHINAI_CLOSED_DAYS) are skipped by the default day and by the
comparisons, and a closed day without sales ends ok with no report and no notice.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from ochinai.cli import build_parser, dates_joined
from ochinai.jobs.backup import JOB as BACKUP
from ochinai.jobs.monitor import JOB as MONITOR
from ochinai.jobs.report.settings import ReportSettings
from ochinai.jobs.report.workbook import day_figures
from ochinai.runtime import status
from ochinai.runtime.calendar import Calendar, RelativeDay, parse_closed_days
from ochinai.runtime.declare import load
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.run import business_date, make_store
from ochinai.runtime.settings import RuntimeSettings, StatusSettings
from tests.harness import run_job
from tests.servers.smtp import StartSmtp
from tests.test_report import Bench, body_text, lead, mail_env, parsed
from tests.test_workbook import daily_of

ENV = {"OCHINAI_STORE": "s3://ops"}
JP = {"OCHINAI_CALENDAR": "jp"}
JP_WEEKENDS = {"OCHINAI_CALENDAR": "jp", "OCHINAI_CLOSED_DAYS": "sat,sun"}
HEADER = "date,store,sku,sales,qty\n"


def at_0610(day: date) -> datetime:
    """06:10 on ``day`` in Tokyo, when the CronJob runs, as the runtime's UTC clock."""
    return datetime(day.year, day.month, day.day, 6, 10, tzinfo=UTC) - timedelta(hours=9)


def sales(*days: tuple[date, int]) -> bytes:
    """A sales CSV with one row of ``sales`` yen for store 001 on each day."""
    return (HEADER + "".join(f"{day},001,000123,{amount},1\n" for day, amount in days)).encode()


def report_date(**env: str) -> date:
    """The business date a report run at 06:10 on 2026-11-24 (a Tuesday) is about."""
    runtime = load(RuntimeSettings, {**ENV, **env})
    return business_date(runtime, at_0610(date(2026, 11, 24)), load(ReportSettings, env))


def record(bench: Bench, day: date) -> dict[str, Any]:
    """The last run's record, kept under the business date it resolved."""
    key = f"_runs/report/{day}/run-{bench.runs}.json"
    return dict(json.loads(bench.body(key)))


@pytest.fixture
def ops(moto_ops: Any) -> Bench:
    return Bench(moto_ops, "ops")


# --- --date and OCHINAI_DATE: relative forms ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("today", date(2026, 11, 24)),
        ("yesterday", date(2026, 11, 23)),
        ("-1d", date(2026, 11, 23)),
        ("-3d", date(2026, 11, 21)),
        ("-0d", date(2026, 11, 24)),
        ("previous-business-day", date(2026, 11, 23)),  # no calendar: every day is one
        ("2026-11-02", date(2026, 11, 2)),
    ],
)
def test_date_takes_relative_forms_resolved_when_the_run_starts(value: str, expected: date) -> None:
    assert report_date(OCHINAI_DATE=value) == expected


def test_a_relative_date_resolves_in_the_schedules_time_zone() -> None:
    """23:30 UTC on the 23rd is already the 24th in Tokyo, still the 23rd in New York."""
    now = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
    for zone, day in (("Asia/Tokyo", date(2026, 11, 23)), ("America/New_York", date(2026, 11, 22))):
        runtime = load(
            RuntimeSettings, {**ENV, "OCHINAI_DATE": "yesterday", "OCHINAI_TIMEZONE": zone}
        )
        assert business_date(runtime, now) == day


def test_previous_business_day_in_date_uses_the_reports_calendar() -> None:
    """The Monday is 勤労感謝の日 and the weekend is closed: Friday the 20th."""
    assert report_date(OCHINAI_DATE="previous-business-day", **JP_WEEKENDS) == date(2026, 11, 20)
    assert report_date(OCHINAI_DATE="yesterday", **JP_WEEKENDS) == date(2026, 11, 23)


@pytest.mark.parametrize("argv", [["--date=-1d"], ["--date", "-1d"]])
def test_date_minus_n_days_works_joined_or_apart(argv: list[str]) -> None:
    """argparse takes ``-1d`` after ``--date`` for an option; the CLI joins it to its flag."""
    args = build_parser().parse_args(dates_joined(["report", *argv]))
    assert args.date == "-1d"
    assert dates_joined(["monitor", "--date", "-3d", "--dry-run"]) == [
        "monitor",
        "--date=-3d",
        "--dry-run",
    ]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--date", "-1w"], {}, "--date='-1w'"),
        (["--date=-1.5d"], {}, "--date='-1.5d'"),
        (["--date", "tomorrow"], {}, "--date='tomorrow'"),
        ([], {"OCHINAI_DATE": "+1d"}, "OCHINAI_DATE='+1d'"),
        ([], {"OCHINAI_DATE": "previous-business"}, "OCHINAI_DATE='previous-business'"),
        ([], {"OCHINAI_REPORT_DAY": "last-business-day"}, "OCHINAI_REPORT_DAY"),
    ],
)
def test_a_bad_date_is_78_naming_the_value(
    args: list[str], env: dict[str, str], named: str
) -> None:
    result = run_job("report", *args, env={**ENV, **env})
    assert result.code == 78
    assert named in result.out
    assert result.summary["outcome"] == "config_error"


@pytest.mark.parametrize("job", [MONITOR, BACKUP])
def test_monitor_and_backup_keep_today_and_take_the_relative_forms(job: Any) -> None:
    """They are about today whatever the report's day and calendar; --date -2d is two days back."""
    now = at_0610(date(2026, 11, 24))
    own = {"OCHINAI_MONITOR_URL": "https://shop.example/api/items"}  # the monitor needs one
    settings = load(job.settings, {**ENV, **own, "OCHINAI_REPORT_DAY": "previous-day", **JP})
    assert business_date(load(RuntimeSettings, ENV), now, settings) == date(2026, 11, 24)
    runtime = load(RuntimeSettings, ENV, {"date": "-2d"})
    assert business_date(runtime, now, settings) == date(2026, 11, 22)
    runtime = load(RuntimeSettings, ENV, {"date": "previous-business-day"})
    assert business_date(runtime, now, settings) == date(2026, 11, 23)  # no calendar of theirs


# --- OCHINAI_REPORT_DAY, OCHINAI_CALENDAR, OCHINAI_CLOSED_DAYS -----------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, date(2026, 11, 23)),  # the default: the business day before, every day one
        ({"OCHINAI_REPORT_DAY": "previous-day"}, date(2026, 11, 23)),
        ({"OCHINAI_REPORT_DAY": "today"}, date(2026, 11, 24)),
        (JP, date(2026, 11, 22)),  # Monday the 23rd is 勤労感謝の日
        (JP_WEEKENDS, date(2026, 11, 20)),  # and the weekend before it is closed
        ({**JP_WEEKENDS, "OCHINAI_REPORT_DAY": "previous-day"}, date(2026, 11, 23)),
        ({"OCHINAI_CLOSED_DAYS": "2026-11-23, sun"}, date(2026, 11, 21)),
        ({"OCHINAI_CLOSED_DAYS": "11-21..11-23"}, date(2026, 11, 20)),
    ],
)
def test_the_report_is_about_the_previous_business_day(env: dict[str, str], expected: date) -> None:
    assert report_date(**env) == expected


def test_holidays_come_from_the_holidays_package_in_japanese() -> None:
    """Fixed, moving, substitute and citizens' holidays: the reason the package is used."""
    jp = Calendar("jp")
    assert jp.why_closed(date(2027, 1, 11)) == "成人の日"  # the second Monday of January
    assert jp.why_closed(date(2026, 11, 23)) == "勤労感謝の日"
    assert jp.why_closed(date(2026, 5, 6)) == "振替休日"
    assert jp.why_closed(date(2026, 9, 22)) == "国民の休日"
    assert jp.why_closed(date(2026, 11, 24)) is None
    assert jp.previous_business_day(date(2027, 1, 12)) == date(2027, 1, 10)  # a Sunday: open
    assert Calendar().previous_business_day(date(2027, 1, 12)) == date(2027, 1, 11)


def test_closed_days_take_weekdays_month_days_ranges_over_the_year_end_and_dates() -> None:
    closed = parse_closed_days("Sat, sun,12-29..01-03,08-15,2026-12-25")
    why = Calendar("none", closed).why_closed
    assert why(date(2026, 11, 28)) == "土曜日"
    assert why(date(2026, 12, 31)) == why(date(2027, 1, 1)) == "休業日 (12-29..01-03)"
    assert why(date(2028, 8, 15)) == "休業日 (08-15)"
    assert why(date(2026, 12, 25)) == "休業日 (2026-12-25)"
    assert why(date(2027, 12, 24)) is None and why(date(2026, 12, 28)) is None
    assert why(date(2027, 1, 4)) is None
    assert str(closed) == "Sat, sun, 12-29..01-03, 08-15, 2026-12-25"
    assert not parse_closed_days("")


@pytest.mark.parametrize(
    ("value", "item"),
    [
        ("sat,saturday", "'saturday'"),
        ("sat,13-01", "'13-01'"),
        ("02-30", "'02-30'"),
        ("12-29..", "'12-29..'"),
        ("2026-02-30", "'2026-02-30'"),
        ("mon,tue,wed,thu,fri,sat,sun", "closes every day of the year"),
        ("01-01..12-31", "closes every day of the year"),
    ],
)
def test_a_bad_closed_day_is_78_naming_the_setting_and_the_item(value: str, item: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(ReportSettings, {"OCHINAI_CLOSED_DAYS": value})
    assert caught.value.exit_code == 78
    assert f"OCHINAI_CLOSED_DAYS='{value}' is invalid" in str(caught.value)
    assert item in str(caught.value)


# --- comparisons skip closed days ---------------------------------------------------


def test_a_business_day_after_a_long_weekend_compares_with_the_day_before_it() -> None:
    """Tuesday the 24th after Sat, Sun and 勤労感謝の日: against Friday the 20th."""
    calendar = Calendar("jp", parse_closed_days("sat,sun"))
    daily = daily_of(
        [
            (date(2026, 11, 17), "001", 1200),
            (date(2026, 11, 20), "001", 1000),
            (date(2026, 11, 23), "001", 9000),  # a holiday with sales: not the day compared
            (date(2026, 11, 24), "001", 1500),
        ]
    )
    lines = day_figures(daily, date(2026, 11, 24), calendar).lines()
    assert lines[1] == "前営業日 (2026-11-20 金) 比 +50.0% / 前週同曜日比 +25.0%"
    # Without the calendar, today's comparison with the day before.
    plain = day_figures(daily, date(2026, 11, 24)).lines()
    assert plain[1] == "前日比 -83.3% / 前週同曜日比 +25.0%"


def test_the_same_weekday_a_week_before_on_a_holiday_is_no_comparison() -> None:
    """Monday the 30th: a week before was 勤労感謝の日, so there is no 前週同曜日比."""
    calendar = Calendar("jp", parse_closed_days("sat,sun"))
    days = [(date(2026, 11, 23), 700), (date(2026, 11, 27), 800), (date(2026, 11, 30), 1000)]
    daily = daily_of([(day, "001", amount) for day, amount in days])
    lines = day_figures(daily, date(2026, 11, 30), calendar).lines()
    assert lines[1] == (
        "前営業日 (2026-11-27 金) 比 +25.0% / 前週同曜日 (2026-11-23 月) は休業日のため比較なし"
    )


# --- whole runs on a fake clock --------------------------------------------------------


def test_the_0610_run_reports_the_previous_business_day(ops: Bench, start_smtp: StartSmtp) -> None:
    """At 06:10 on Tuesday the 24th, with Japan's holidays and weekends closed, the report,
    its record and its mail are about Friday the 20th; a rerun later that day is unchanged."""
    inbox, port = start_smtp()
    ops.upload(sales((date(2026, 11, 19), 800), (date(2026, 11, 20), 1000)))
    now = at_0610(date(2026, 11, 24))
    assert ops.run(now=now, **JP_WEEKENDS, **mail_env(port)) == 0
    assert ops.keys("out/") == ["out/report_20261120.xlsx"]
    assert record(ops, date(2026, 11, 20))["outcome"] == "ok"
    assert lead(ops.workbook("out/report_20261120.xlsx")["日次売上"])[:2] == [
        "2026-11-20 の売上 ¥1,000 / 数量 1 / 1 行",
        "前日比 +25.0%",
    ]
    msg = parsed(inbox)
    assert msg["Subject"] == "売上日報 2026-11-20"
    assert body_text(msg).splitlines()[:3] == [
        "営業日 2026-11-20 金(前営業日)の売上日報です。",
        "",
        "2026-11-20 の売上 ¥1,000 / 数量 1 / 1 行",
    ]
    assert ops.run(now=now + timedelta(hours=2), **JP_WEEKENDS, **mail_env(port)) == 0
    assert (ops.summary()["outcome"], ops.summary()["notified"]) == ("unchanged", "already_sent")
    # The same day asked for by its date: the same report.
    assert ops.run(now=now + timedelta(days=3), OCHINAI_DATE="2026-11-20", **JP_WEEKENDS) == 0
    assert ops.summary()["outcome"] == "unchanged" and len(inbox.mails) == 1


def test_the_report_after_a_long_weekend_compares_with_friday(ops: Bench) -> None:
    """Wednesday's run reports Tuesday the 24th, compared with Friday the 20th in the
    workbook as in the mail (Sat, Sun and 勤労感謝の日 closed)."""
    ops.upload(
        sales((date(2026, 11, 17), 1200), (date(2026, 11, 20), 1000), (date(2026, 11, 24), 1500))
    )
    assert ops.run(now=at_0610(date(2026, 11, 25)), **JP_WEEKENDS) == 0
    book = ops.workbook("out/report_20261124.xlsx")
    assert lead(book["日次売上"])[1] == "前営業日 (2026-11-20 金) 比 +50.0% / 前週同曜日比 +25.0%"


def test_date_yesterday_and_minus_n_days_key_the_outputs(ops: Bench) -> None:
    ops.upload(sales((date(2026, 11, 21), 500), (date(2026, 11, 23), 1000)))
    now = at_0610(date(2026, 11, 24))
    assert ops.run(now=now, OCHINAI_DATE="yesterday") == 0
    assert ops.run(now=now, OCHINAI_DATE="-3d") == 0
    assert ops.keys("out/") == ["out/report_20261121.xlsx", "out/report_20261123.xlsx"]
    assert record(ops, date(2026, 11, 21))["date"] == "2026-11-21"


def test_a_closed_day_with_sales_is_reported_as_usual(ops: Bench, start_smtp: StartSmtp) -> None:
    inbox, port = start_smtp()
    ops.upload(sales((date(2026, 11, 20), 1000), (date(2026, 11, 23), 3000)))
    now = at_0610(date(2026, 11, 24))
    env = {"OCHINAI_REPORT_DAY": "previous-day", **JP_WEEKENDS, **mail_env(port)}
    assert ops.run(now=now, **env) == 0
    assert ops.keys("out/") == ["out/report_20261123.xlsx"]
    assert ops.summary()["report"] == "created" and ops.summary()["notified"] == "sent"
    text = body_text(parsed(inbox))
    assert text.splitlines()[:2] == [
        "営業日 2026-11-23 月(前日)の売上日報です。",
        "この日は休業日(勤労感謝の日)ですが、売上があるためお送りします。",
    ]
    assert "前営業日 (2026-11-20 金) 比 +200.0%" in text


def test_a_closed_day_without_sales_ends_closed_day_with_no_report_and_no_notice(
    ops: Bench, start_smtp: StartSmtp
) -> None:
    """勤労感謝の日 without a row: no workbook, no mail, a success status sees fresh,
    and OCHINAI_REPORT_REQUIRE_DATE does not make it a rule error."""
    inbox, port = start_smtp()
    ops.upload(sales((date(2026, 11, 20), 1000), (date(2026, 11, 24), 1200)))
    now = at_0610(date(2026, 11, 25))
    env = {"OCHINAI_DATE": "2026-11-23", "OCHINAI_REPORT_REQUIRE_DATE": "true", **JP}
    assert ops.run(now=now, **env, **mail_env(port)) == 0
    line = ops.summary()
    assert (line["outcome"], line["report"], line["notified"]) == (
        "closed_day",
        "none",
        "not_asked",
    )
    assert (line["closed"], line["rows"], line["days"]) == ("勤労感謝の日", 2, 2)
    assert ops.keys("out/") == [] and inbox.mails == []
    assert ops.keys("_sent/") == []
    assert record(ops, date(2026, 11, 23))["outcome"] == "closed_day"
    assert line["exit_code"] == 0 and line["severity"] == "INFO"
    store = make_store(load(StatusSettings, ENV), "status")
    assert status.job_status(store, "report", now + timedelta(hours=1), 26 * 3600).state == "fresh"
    # A business day without a row is still the rule error REQUIRE_DATE asks for.
    assert ops.run(now=now, **{**env, "OCHINAI_DATE": "2026-11-19"}) == 66


def test_a_closed_day_note_is_sent_once_when_asked_for(ops: Bench, start_smtp: StartSmtp) -> None:
    inbox, port = start_smtp()
    ops.upload(sales((date(2026, 11, 27), 1000)))
    now = at_0610(date(2026, 11, 30))  # Monday: the report is about Sunday the 29th
    env = {"OCHINAI_REPORT_DAY": "previous-day", "OCHINAI_CLOSED_DAYS": "sun"}
    env |= {"OCHINAI_REPORT_CLOSED_DAY_NOTE": "true", **mail_env(port)}
    assert ops.run(now=now, **env) == 0
    assert (ops.summary()["outcome"], ops.summary()["notified"]) == ("closed_day", "sent")
    [mail] = [parsed(inbox, n) for n in range(len(inbox.mails))]
    assert mail["Subject"] == "売上日報 2026-11-29(休業日)"
    assert list(mail.iter_attachments()) == []
    assert body_text(mail).strip() == (
        "2026-11-29 日 は休業日(日曜日)で売上がないため、日報はお休みします。"
    )
    assert ops.keys("out/") == []
    assert ops.run(now=now + timedelta(minutes=30), **env) == 0
    assert ops.summary()["notified"] == "already_sent" and len(inbox.mails) == 1


def test_the_default_day_needs_no_setting_for_a_relative_form() -> None:
    """OCHINAI_REPORT_DAY's values are the relative days the runtime resolves."""
    settings = load(ReportSettings, {"OCHINAI_REPORT_DAY": "previous-day"})
    assert settings.default_day() == RelativeDay(1)
    assert str(load(ReportSettings, {}).default_day()) == "previous-business-day"
