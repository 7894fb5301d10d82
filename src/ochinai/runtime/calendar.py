"""Business days: which day a run is about, and which days are closed.

A business date given relative to the run (``today``, ``yesterday``, ``-3d``,
``previous-business-day``) is a ``RelativeDay``, resolved once, at the start of the
run, in the schedule's time zone. A ``Calendar`` says which days are closed: Japan's
public holidays (from the ``holidays`` package, loaded only when asked for) and the
days a deployment names (weekdays, MM-DD, MM-DD..MM-DD ranges, dates). Without either,
every day is a business day.

A job whose settings have ``default_day()`` and ``business_calendar()`` (``BusinessDays``)
is about that day when no ``--date`` is given; any other job is about today.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import Protocol, runtime_checkable

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAYS_JA = "月火水木金土日"
CALENDARS = ("none", "jp")
# How far back the previous business day is looked for: past any year's closed days.
LOOKBACK_DAYS = 800

_RELATIVE = re.compile(r"^-(\d{1,4})d$")
_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$")
_ITEM_FORMS = "a weekday (mon..sun), MM-DD, MM-DD..MM-DD or YYYY-MM-DD"

MonthDay = tuple[int, int]


def dated(day: date) -> str:
    """A day as the notices write it: ``2026-11-27 金``."""
    return f"{day} {WEEKDAYS_JA[day.weekday()]}"


# --- the day a run is about --------------------------------------------------------


@dataclass(frozen=True)
class RelativeDay:
    """A business date relative to the run's day: ``days_back`` before it, or (``business``)
    the business day before it by the job's calendar."""

    days_back: int = 0
    business: bool = False

    def __str__(self) -> str:
        if self.business:
            return "previous-business-day"
        return {0: "today", 1: "yesterday"}.get(self.days_back, f"-{self.days_back}d")

    def resolve(self, today: date, calendar: Calendar) -> date:
        """The date this names on ``today`` (the run's day in the schedule's time zone)."""
        if self.business:
            return calendar.previous_business_day(today)
        return today - timedelta(days=self.days_back)


TODAY = RelativeDay()
YESTERDAY = RelativeDay(1)
PREVIOUS_BUSINESS_DAY = RelativeDay(business=True)


def relative_day(value: str) -> RelativeDay | None:
    """``today``, ``yesterday``, ``-Nd`` or ``previous-business-day``; None for any other text."""
    text = value.strip().lower()
    named = {
        "today": TODAY,
        "yesterday": YESTERDAY,
        str(PREVIOUS_BUSINESS_DAY): PREVIOUS_BUSINESS_DAY,
    }
    if text in named:
        return named[text]
    found = _RELATIVE.match(text)
    return RelativeDay(int(found.group(1))) if found else None


# --- closed days -------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedDays:
    """The days OCHINAI_CLOSED_DAYS names: weekdays (0 is Monday), month-day ranges (a
    single MM-DD is a range of one day; a range may wrap the year end) and dates."""

    text: str = ""
    weekdays: frozenset[int] = frozenset()
    spans: tuple[tuple[MonthDay, MonthDay], ...] = ()
    dates: frozenset[date] = frozenset()

    def __str__(self) -> str:
        return self.text

    def __bool__(self) -> bool:
        return bool(self.weekdays or self.spans or self.dates)

    def why(self, day: date) -> str | None:
        """Why ``day`` is closed (in Japanese, as notices say it), None when it is not."""
        if day in self.dates:
            return f"休業日 ({day})"
        if day.weekday() in self.weekdays:
            return f"{WEEKDAYS_JA[day.weekday()]}曜日"
        at = (day.month, day.day)
        for first, last in self.spans:
            inside = first <= at <= last if first <= last else at >= first or at <= last
            if inside:
                shown = (
                    _month_day(first)
                    if first == last
                    else f"{_month_day(first)}..{_month_day(last)}"
                )
                return f"休業日 ({shown})"
        return None


def _month_day(md: MonthDay) -> str:
    return f"{md[0]:02d}-{md[1]:02d}"


def _parse_month_day(text: str, item: str) -> MonthDay:
    found = _MONTH_DAY.match(text)
    if found is None:
        raise ValueError(f"{item!r} is not {_ITEM_FORMS}")
    month, day = int(found.group(1)), int(found.group(2))
    try:
        date(2000, month, day)  # a leap year: 02-29 is a day
    except ValueError:
        raise ValueError(f"{item!r}: {text} is not a day of the year") from None
    return month, day


def parse_closed_days(value: str) -> ClosedDays:
    """mon..sun, MM-DD, MM-DD..MM-DD, YYYY-MM-DD, comma-separated, such as sat,sun,12-29..01-03

    A range may wrap the year end (12-29..01-03). A bad item is named in the error.
    """
    weekdays: set[int] = set()
    spans: list[tuple[MonthDay, MonthDay]] = []
    dates: set[date] = set()
    items = [part.strip() for part in value.split(",") if part.strip()]
    for item in items:
        lowered = item.lower()
        if lowered in WEEKDAYS:
            weekdays.add(WEEKDAYS.index(lowered))
        elif ".." in item:
            first, _, last = item.partition("..")
            spans.append(
                (_parse_month_day(first.strip(), item), _parse_month_day(last.strip(), item))
            )
        elif _MONTH_DAY.match(item):
            md = _parse_month_day(item, item)
            spans.append((md, md))
        else:
            try:
                dates.add(date.fromisoformat(item))
            except ValueError:
                raise ValueError(f"{item!r} is not {_ITEM_FORMS}") from None
    closed = ClosedDays(", ".join(items), frozenset(weekdays), tuple(spans), frozenset(dates))
    leap_year = (date(2028, 1, 1) + timedelta(days=n) for n in range(366))
    if items and all(closed.why(day) for day in leap_year):
        raise ValueError("closes every day of the year")
    return closed


# --- the calendar ------------------------------------------------------------------


@cache
def _holidays(country: str, year: int) -> dict[date, str]:
    """The public holidays of one year, named in Japanese."""
    import holidays  # about 0.1 s: only for a job that asks for a calendar

    return dict(holidays.country_holidays(country.upper(), years=year, language="ja"))


@dataclass(frozen=True)
class Calendar:
    """Closed days: a country's public holidays (``jp``, or ``none``) and the named days."""

    holidays: str = "none"
    closed_days: ClosedDays = ClosedDays()

    def why_closed(self, day: date) -> str | None:
        """Why ``day`` is closed (a holiday's name, a weekday, a named day), None if open."""
        if self.holidays != "none":
            name = _holidays(self.holidays, day.year).get(day)
            if name:
                return name
        return self.closed_days.why(day)

    def is_business_day(self, day: date) -> bool:
        """``day`` is not closed."""
        return self.why_closed(day) is None

    def previous_business_day(self, day: date) -> date:
        """The last business day before ``day`` (the day before, when every day of the
        last two years was closed: a calendar that closes every day has none)."""
        for back in range(1, LOOKBACK_DAYS + 1):
            earlier = day - timedelta(days=back)
            if self.is_business_day(earlier):
                return earlier
        return day - timedelta(days=1)


NO_CALENDAR = Calendar()


@runtime_checkable
class BusinessDays(Protocol):
    """A job's settings that say which day its runs are about without ``--date``."""

    def default_day(self) -> RelativeDay:
        """The day a run is about when no ``--date`` is given."""
        ...

    def business_calendar(self) -> Calendar:
        """The days that are closed."""
        ...
