"""Japanese business CSVs as they come: header names, ¥ and 円, full-width digits, △
negatives, 年月日 and era dates, total rows.

Every function here reads only the values that failed the strict fast path (sales.py),
so a plain file costs nothing more. Each returns, with the values it rewrote, a mask
per kind of rewrite, so the report counts them and notes them once: nothing changes
silently. ``OCHINAI_REPORT_STRICT=true`` turns all of it off.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ochinai.runtime.errors import DataError

# Header names recognised without OCHINAI_REPORT_COLUMNS, by column, in tiers: the
# first tier with a match in the file decides, and two matches in one tier are
# ambiguous. A store's name is taken only without a store code. Compared after NFKC,
# without spaces, case-insensitively.
HEADER_ALIASES: Mapping[str, Sequence[Sequence[str]]] = {
    "date": (("date", "日付", "年月日", "売上日", "販売日", "伝票日付", "取引日", "取引日時"),),
    "store": (("store", "店舗", "店舗コード", "店舗cd", "店コード"), ("店舗名", "店名")),
    "sku": (("sku", "商品コード", "jan", "janコード", "商品cd"),),
    "sales": (("sales", "売上", "売上金額", "売上高", "金額", "売上額"),),
    "qty": (("qty", "数量", "個数", "点数", "売上数量", "販売数"),),
}

# A row whose date cell is one of these (after NFKC, trimmed) is a total the export added.
TOTAL_LABELS = frozenset({"合計", "小計", "総計", "計", "総合計"})

# The eras of the modern calendar, as the 元号 were proclaimed (the Cabinet's
# 政令, and the Imperial House Law for 令和): the first day of each. A date of an era
# must fall between its first day and the next era's.
ERAS: tuple[tuple[str, str, date], ...] = (
    ("明治", "M", date(1868, 10, 23)),
    ("大正", "T", date(1912, 7, 30)),
    ("昭和", "S", date(1926, 12, 25)),
    ("平成", "H", date(1989, 1, 8)),
    ("令和", "R", date(2019, 5, 1)),
)
_ERA = re.compile(
    r"^(?P<era>明治|大正|昭和|平成|令和|[MTSHR])\s*(?P<year>元|[0-9]{1,2})\s*[.\-/年]\s*"
    r"(?P<month>[0-9]{1,2})\s*[.\-/月]\s*(?P<day>[0-9]{1,2})\s*日?$",
    re.IGNORECASE,
)
_ERA_MARK = r"^(明治|大正|昭和|平成|令和|[MTSHRmtshr][0-9元])"
_KANJI_DATE = r"^([0-9]{4})\s*年\s*([0-9]{1,2})\s*月\s*([0-9]{1,2})\s*日$"
_COMPACT_DATE = r"^([0-9]{4})([0-9]{2})([0-9]{2})$"
# A POS's transaction time (取引日時): the day is the date, the time of day goes.
_DATE_TIME = (
    r"^([0-9]{4}[-/][0-9]{1,2}[-/][0-9]{1,2})[ T][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?$"
)
_YEN = r"^([△▲\-−]?)\s*[¥\\]\s*"  # a sign may come before the ¥, or after it
_MINUS = r"^[△▲−]"


def _key(name: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", name)).lower()


def resolve_header(header: Sequence[str], wanted: Sequence[str], where: str) -> dict[str, str]:
    """Which column of ``header`` each of the ``wanted`` columns (of date, store, sku,
    sales, qty) is, by alias. Only the columns found are in the answer; DataError
    naming both when two columns of one tier match (ambiguous)."""
    found: dict[str, str] = {}
    keys = {name: _key(name) for name in header}
    for canon, tiers in HEADER_ALIASES.items():
        if canon not in wanted:
            continue
        for tier in tiers:
            names = {_key(alias) for alias in tier}
            matches = [name for name in header if keys[name] in names]
            if len(matches) > 1:
                raise DataError(
                    f"{where} line 1: the columns {', '.join(repr(m) for m in matches)} could "
                    f"each be {canon!r}; name the one to use with "
                    f"OCHINAI_REPORT_COLUMNS={canon}=<header>"
                )
            if matches:
                found[canon] = matches[0]
                break
    return found


class Rewrites:
    """Per kind of rewrite, which values of a column were rewritten (a bool mask)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.masks: dict[str, Any] = {}

    def add(self, kind: str, mask: Any) -> None:
        mask = pc.fill_null(mask, False)
        self.masks[kind] = pc.or_(self.masks[kind], mask) if kind in self.masks else mask

    def scattered(self, where: Any) -> dict[str, Any]:
        """The masks over the whole column, the subset having been taken at ``where``."""
        base = pa.array(np.zeros(len(where), dtype=bool))
        return {kind: pc.replace_with_mask(base, where, m) for kind, m in self.masks.items()}


def _changed(before: Any, after: Any) -> Any:
    return pc.fill_null(pc.not_equal(before, after), False)


def numbers(values: pa.Array) -> tuple[pa.Array, Rewrites]:
    """Amounts as Japanese exports write them, rewritten as plain numbers: full-width
    digits and signs (NFKC), a leading ¥ or ￥ (or the backslash that a CP932 0x5C
    decodes to), a trailing 円, △ ▲ − as the minus sign."""
    rewrites = Rewrites(len(values))
    text = pc.utf8_trim_whitespace(values)
    normal = pc.utf8_normalize(text, "NFKC")
    rewrites.add("fullwidth", _changed(text, normal))
    yen = pc.replace_substring_regex(normal, _YEN, r"\1")
    yen = pc.utf8_trim_whitespace(pc.replace_substring_regex(yen, r"\s*円$", ""))
    rewrites.add("yen", _changed(normal, yen))
    signed = pc.replace_substring_regex(yen, _MINUS, "-")
    rewrites.add("minus", _changed(yen, signed))
    return signed, rewrites


def dates(values: pa.Array) -> tuple[pa.Array, Rewrites, dict[int, str]]:
    """Dates as Japanese exports write them, rewritten as YYYY-MM-DD: full-width digits,
    2026年11月28日, 20261128, a POS's 2026/11/28 14:32:10 (the day), and era dates
    (R8.11.28, 令和8年11月28日, H31.4.30, 令和元年…).
    With the reasons an era date is not one, by position (令和0年, R1.4.30, H31.5.1)."""
    rewrites = Rewrites(len(values))
    text = pc.utf8_trim_whitespace(values)
    normal = pc.utf8_normalize(text, "NFKC")
    rewrites.add("fullwidth", _changed(text, normal))
    kanji = pc.replace_substring_regex(normal, _KANJI_DATE, r"\1-\2-\3")
    rewrites.add("dates", _changed(normal, kanji))
    compact = pc.replace_substring_regex(kanji, _COMPACT_DATE, r"\1-\2-\3")
    rewrites.add("dates", _changed(kanji, compact))
    day_only = pc.replace_substring_regex(compact, _DATE_TIME, r"\1")
    rewrites.add("dates", _changed(compact, day_only))
    compact = day_only
    problems: dict[int, str] = {}
    # Era dates are converted one by one: only the values that begin with an era's mark.
    marked = pc.fill_null(pc.match_substring_regex(compact, _ERA_MARK), False)
    at = pc.indices_nonzero(marked).to_pylist()
    if not at:
        return compact, rewrites, problems
    written = pc.take(compact, pa.array(at, pa.int64())).to_pylist()
    era = np.zeros(len(compact), dtype=bool)
    for index, value in zip(at, written, strict=True):
        found = _ERA.match(value)
        if found is None:
            continue
        era[index] = True
        converted = _era_date(found)
        if isinstance(converted, str):
            problems[index] = converted
        else:
            written[at.index(index)] = converted.isoformat()
    rewrites.add("dates", pa.array(era))
    replaced = pc.replace_with_mask(compact, marked, pa.array(written, pa.string()))
    return replaced, rewrites, problems


def _era_date(found: re.Match[str]) -> date | str:
    """The date an era date names, or why it names none."""
    mark = found["era"]
    index = next(
        n for n, (name, letter, _) in enumerate(ERAS) if mark in (name, letter, letter.lower())
    )
    name, _, first = ERAS[index]
    year = 1 if found["year"] == "元" else int(found["year"])
    if year < 1:
        return f"is not a date: {name} has no year 0 (its first year is 元年)"
    try:
        day = date(first.year + year - 1, int(found["month"]), int(found["day"]))
    except ValueError:
        return "is not a calendar date"
    if day < first:
        return f"is not a date of {name}, which began on {first.isoformat()}"
    if index + 1 < len(ERAS) and day >= ERAS[index + 1][2]:
        following = ERAS[index + 1]
        return f"is not a date of {name}: {following[0]} began on {following[2].isoformat()}"
    return day


def total_labels(values: pa.Array) -> Any:
    """Rows whose date cell says 合計, 小計, 総計 or 計: totals an export appended."""
    text = pc.utf8_normalize(pc.utf8_trim_whitespace(values), "NFKC")
    return pc.is_in(text, value_set=pa.array(sorted(TOTAL_LABELS)))


def as_seen(value: str, encoding: str) -> str:
    """A value as the user sees it: in a CP932 file, byte 0x5C is ¥ in every Japanese
    font, though it decodes to a backslash."""
    return value.replace("\\", "¥") if encoding == "cp932" else value
