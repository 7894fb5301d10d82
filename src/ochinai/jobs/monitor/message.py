"""The notice of a batch of changes, written for a Japanese operations team."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from decimal import Decimal

from ochinai.jobs.monitor.changes import Change
from ochinai.runtime.notify import Notice


def _yen(value: str | None) -> str:
    if value is None:
        return "-"
    number = Decimal(value)
    shown = f"{number:,.0f}" if number == number.to_integral_value() else f"{number:,}"
    return f"¥{shown}"


def _name(change: Change) -> str:
    name = change.name or change.item
    return name if len(name) <= 60 else name[:59] + "…"


def line(change: Change) -> str:
    """One change as one line: item name, what happened, the link."""
    kind, name = change.kind, _name(change)
    if kind == "price_changed":
        pct = change.change_pct
        what = f"価格 {_yen(change.old)} → {_yen(change.new)}"
        what += f" ({'+' if pct and not pct.startswith('-') else ''}{pct}%)" if pct else ""
    elif kind == "price_below":
        what = f"目標価格 {_yen(change.target)} 以下に ({_yen(change.new)})"
    elif kind == "new":
        what = f"新しく掲載 ({_yen(change.new)})"
    else:
        what = {"gone": "掲載が終了しました", "restocked": "再入荷しました"}.get(
            kind, "在庫切れになりました"
        )
    link = f" {change.link}" if change.link else ""
    return f"・{name}: {what}{link}"


def notice(changes: Sequence[Change], limit: int, source: str) -> Notice:
    """One notice for the changes: the first ``limit`` listed, the rest counted.

    Its id comes from the change ids, so the same batch has the same id (send-once),
    and the ids are in the text for a receiver that drops repeats.
    """
    ids = sorted(c.id for c in changes)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
    shown = [line(c) for c in changes[:limit]]
    more = len(changes) - len(shown)
    text = "\n".join([f"{source} の価格・在庫に変化がありました。", *shown])
    if more:
        text += f"\nほか {more} 件"
    text += "\n\n変更 ID: " + ", ".join(i.removeprefix("monitor/")[:12] for i in ids)
    return Notice(
        key=f"monitor/changes/{digest}",
        subject=f"価格・在庫の変化 {len(changes)} 件",
        text=text,
        kind="changes",
    )
