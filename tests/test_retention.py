"""Retention by calendar, with restic's ``forget`` semantics.

The pure policy (``keep_reasons``) on cases worked out by hand and over 800 simulated
days with failures in them, against a transcription of restic's ``ApplyPolicy``; then
through the job on moto: ``run`` keeps what the calendar rules keep, ``list`` says why
each generation is kept or that the next run removes it, ``forget --dry-run`` deletes
nothing and says what would go, and ``forget`` deletes exactly that.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from ochinai import cli
from ochinai.jobs.backup import JOB
from ochinai.jobs.backup.generations import NEWEST_GOOD, Generation, keep_reasons
from ochinai.jobs.backup.settings import Policy
from tests.test_backup import BUCKET, SALES, Backup

INCOMPLETE = "incomplete, cleared once older than 2 days"

# --- the pure policy -----------------------------------------------------------------------


def made(days: dict[date, str]) -> list[Generation]:
    """Generations from ``{day: "ok" | "failed" | "incomplete"}``, newest first; the
    complete ones with ``failed`` known, as retention reads them."""
    out = []
    for day, state in sorted(days.items(), reverse=True):
        complete = state != "incomplete"
        out.append(
            Generation(
                f"{day:%Y%m%d}",
                complete=complete,
                failed=(state == "failed") if complete else None,
            )
        )
    return out


def kept(reasons: dict[str, list[str]]) -> dict[str, list[str]]:
    """Only the generations kept, with their reasons."""
    return {name: why for name, why in reasons.items() if why}


def d(text: str) -> date:
    return date.fromisoformat(text)


# 2026-12-22 .. 2027-01-10: the month boundary, and ISO week 2026-W53 (Monday 2026-12-28
# to Sunday 2027-01-03) spanning the year boundary. Days missing, incomplete, failed.
TWENTY_DAYS = {
    d("2026-12-22"): "ok",  # Tue, 2026-W52
    d("2026-12-23"): "ok",
    d("2026-12-24"): "ok",
    # 2026-12-25: no generation
    d("2026-12-26"): "ok",
    d("2026-12-27"): "incomplete",  # Sun, 2026-W52
    d("2026-12-28"): "ok",  # Mon, 2026-W53
    d("2026-12-29"): "ok",
    d("2026-12-30"): "incomplete",
    # 2026-12-31: no generation
    d("2027-01-01"): "failed",  # 2026-W53 still
    d("2027-01-02"): "ok",
    d("2027-01-03"): "incomplete",  # Sun, the last day of 2026-W53
    d("2027-01-04"): "ok",  # Mon, 2027-W01
    d("2027-01-05"): "ok",
    d("2027-01-06"): "failed",
    d("2027-01-07"): "ok",
    d("2027-01-08"): "incomplete",
    # 2027-01-09: no generation
    d("2027-01-10"): "incomplete",  # today: the run that writes it may still be going
}
TODAY = d("2027-01-10")


def test_by_hand_daily_weekly_monthly_across_new_year() -> None:
    """keep-daily 3, keep-weekly 2, keep-monthly 2 (and no last N): what restic keeps.

    daily: the three newest days with a complete generation (01-07, the failed 01-06,
    01-05); weekly: 2027-W01's newest (01-07) and 2026-W53's (01-02, a January day of
    2026's week); monthly: 2027-01's (01-07) and 2026-12's (12-29). Incomplete ones count
    for nothing: 01-08 and 01-10 are young and left, 12-27, 12-30 and 01-03 go.
    """
    policy = Policy(last=0, daily=3, weekly=2, monthly=2)
    assert kept(keep_reasons(made(TWENTY_DAYS), policy, TODAY)) == {
        "20270110": [INCOMPLETE],
        "20270108": [INCOMPLETE],
        "20270107": ["daily", "weekly 2027-W01", "monthly 2027-01", NEWEST_GOOD],
        "20270106": ["daily"],
        "20270105": ["daily"],
        "20270102": ["weekly 2026-W53"],
        "20261229": ["monthly 2026-12"],
    }


def test_by_hand_units_left_keep_the_oldest_too() -> None:
    """A rule with more units than there are (restic 0.16 on): the oldest complete
    generation is kept in addition, said so. keep-weekly 5 finds three weeks, keep-yearly
    3 two years, keep-monthly 3 two months: each keeps 12-22, the oldest."""
    policy = Policy(last=2, weekly=5, monthly=3, yearly=3)
    assert kept(keep_reasons(made(TWENTY_DAYS), policy, TODAY)) == {
        "20270110": [INCOMPLETE],
        "20270108": [INCOMPLETE],
        "20270107": ["last 2", "weekly 2027-W01", "monthly 2027-01", "yearly 2027", NEWEST_GOOD],
        "20270106": ["last 2"],
        "20270102": ["weekly 2026-W53"],
        "20261229": ["monthly 2026-12", "yearly 2026"],
        "20261226": ["weekly 2026-W52"],
        "20261222": [
            "oldest weekly 2026-W52",
            "oldest monthly 2026-12",
            "oldest yearly 2026",
        ],
    }


def test_by_hand_the_newest_good_generation_outlives_the_rules() -> None:
    """The newest generations failed: last 1 and keep-daily 1 keep 01-07 only, and the
    newest without failed sources (01-04) is kept too, for that reason alone. Four days
    on, the incomplete 01-08 and 01-10 are more than two days old: they go."""
    days = {**TWENTY_DAYS, d("2027-01-07"): "failed", d("2027-01-05"): "failed"}
    policy = Policy(last=1, daily=1)
    assert kept(keep_reasons(made(days), policy, d("2027-01-14"))) == {
        "20270107": ["last 1", "daily"],
        "20270104": [NEWEST_GOOD],
    }


def test_by_hand_a_year_of_month_ends_and_gaps() -> None:
    """keep-monthly 4 and keep-yearly 2 over a sparse history: months without a complete
    generation are skipped, not counted (2026-09 has only an incomplete one)."""
    days = {
        d("2025-06-30"): "ok",
        d("2025-12-30"): "ok",
        d("2025-12-31"): "failed",
        d("2026-07-15"): "ok",
        d("2026-08-01"): "ok",
        d("2026-08-31"): "ok",
        d("2026-09-30"): "incomplete",
        d("2026-10-02"): "ok",
        d("2026-10-03"): "ok",
    }
    policy = Policy(last=1, monthly=4, yearly=2)
    assert kept(keep_reasons(made(days), policy, d("2026-10-03"))) == {
        "20261003": ["last 1", "monthly 2026-10", "yearly 2026", NEWEST_GOOD],
        "20260831": ["monthly 2026-08"],
        "20260715": ["monthly 2026-07"],
        "20251231": ["monthly 2025-12", "yearly 2025"],
    }


def test_an_unread_manifest_is_not_guessed() -> None:
    """``failed`` unknown on a generation newer than the newest good one: ValueError."""
    every = made({d("2026-12-01"): "ok", d("2026-12-02"): "ok"})
    every[0].failed = None
    with pytest.raises(ValueError, match="20261202"):
        keep_reasons(every, Policy(), d("2026-12-02"))


def simulated(days: int = 800, seed: int = 7) -> tuple[list[Generation], date]:
    """``days`` days from 2025-01-01 (across 2026-W53 into 2027): most days a complete
    generation, some none, some incomplete, some with failed sources; newest first."""
    rng = random.Random(seed)
    start = d("2025-01-01")
    states: dict[date, str] = {}
    for n in range(days):
        roll = rng.random()
        if roll < 0.10:
            continue
        state = "incomplete" if roll < 0.16 else "failed" if roll < 0.24 else "ok"
        states[start + timedelta(days=n)] = state
    # the newest days: failures, so that the newest good one is further back
    last = start + timedelta(days=days - 1)
    states.update({last: "incomplete", last - timedelta(days=1): "failed"})
    return made(states), last


UNITS: dict[str, Callable[[date], str]] = {
    "daily": lambda day: f"{day:%Y%m%d}",
    "weekly": lambda day: "{}-W{:02d}".format(*day.isocalendar()[:2]),
    "monthly": lambda day: f"{day:%Y-%m}",
    "yearly": lambda day: f"{day:%Y}",
}


def restic_apply(complete: list[Generation], policy: Policy) -> set[str]:
    """The snapshots restic's ``ApplyPolicy`` keeps (internal/data/snapshot_policy.go,
    0.16 and later), written out again as it is there: newest first, for each snapshot
    every bucket with counts left keeps it when its unit differs from the last unit that
    bucket kept, or when it is the oldest snapshot."""
    ordered = sorted(complete, key=lambda g: g.name, reverse=True)
    buckets: list[list[Any]] = [
        [policy.last, lambda day, nr: nr, None],
        [policy.daily, lambda day, nr: UNITS["daily"](day), None],
        [policy.weekly, lambda day, nr: UNITS["weekly"](day), None],
        [policy.monthly, lambda day, nr: UNITS["monthly"](day), None],
        [policy.yearly, lambda day, nr: UNITS["yearly"](day), None],
    ]
    keep = set()
    for nr, snapshot in enumerate(ordered):
        for bucket in buckets:
            count, unit_of, last = bucket
            if count > 0:
                value = unit_of(snapshot.day, nr)
                if value != last or nr == len(ordered) - 1:
                    keep.add(snapshot.name)
                    bucket[2] = value
                    bucket[0] -= 1
    return keep


COMBINATIONS = [
    Policy(last=0, daily=7),
    Policy(last=0, weekly=8),
    Policy(last=0, monthly=12),
    Policy(last=0, yearly=10),
    Policy(last=0, daily=3, weekly=2, monthly=2),
    Policy(last=1, daily=7, weekly=5, monthly=12, yearly=75),
    Policy(last=30, weekly=4, monthly=24),
    Policy(last=0, daily=1000),
    Policy(last=5, monthly=1),
]


def by_rule(reasons: list[str]) -> list[str]:
    """The reasons that are restic's rules (not the newest good one, not incomplete)."""
    return [r for r in reasons if r != NEWEST_GOOD and r != INCOMPLETE]


@pytest.mark.parametrize("policy", COMBINATIONS, ids=str)
def test_800_days_keep_what_restic_keeps(policy: Policy) -> None:
    """Over 800 days, the generations a rule keeps are restic's for the same rules."""
    every, today = simulated()
    reasons = keep_reasons(every, policy, today)
    ours = {name for name, why in reasons.items() if by_rule(why)}
    assert ours == restic_apply([g for g in every if g.complete], policy)


@pytest.mark.parametrize("policy", COMBINATIONS, ids=str)
def test_800_days_properties(policy: Policy) -> None:
    """Every kept generation has a reason that names its own unit; the newest of each of
    the last N units with a complete generation is kept; incomplete ones are kept by no
    rule (only while young); failed ones count; the newest good one is kept."""
    every, today = simulated()
    reasons = keep_reasons(every, policy, today)
    assert set(reasons) == {g.name for g in every}
    complete = [g for g in every if g.complete]
    assert any(g.failed for g in complete) and len(every) < 800
    for generation in every:
        why = reasons[generation.name]
        if not generation.complete:
            young = generation.day >= today - timedelta(days=2)
            assert why == ([INCOMPLETE] if young else []), generation
            continue
        for reason in by_rule(why):
            rule, _, unit = reason.removeprefix("oldest ").partition(" ")
            if rule == "last":
                assert int(unit) == policy.last
            elif rule != "daily":
                assert unit == UNITS[rule](generation.day), (generation, reason)
    for rule, units_of in UNITS.items():
        count: int = getattr(policy, rule)
        units: dict[str, Generation] = {}
        for generation in complete:  # newest first: the first one seen is the newest
            units.setdefault(units_of(generation.day), generation)
        for unit, newest in list(units.items())[:count]:
            label = rule if rule == "daily" else f"{rule} {unit}"
            assert label in reasons[newest.name], (rule, unit)
        said = [r for rs in reasons.values() for r in rs if r.split(" ")[0] == rule]
        assert len(said) == min(count, len(units))
        # units left after the oldest: it is kept too, unless it is its unit's newest
        oldest = [r for r in reasons[complete[-1].name] if r.startswith(f"oldest {rule}")]
        alone = units[units_of(complete[-1].day)] is complete[-1]
        assert len(oldest) == (count > len(units) and not alone)
    newest_good = next(g for g in complete if not g.failed)
    assert newest_good.name != complete[0].name and NEWEST_GOOD in reasons[newest_good.name]
    assert sum(NEWEST_GOOD in why for why in reasons.values()) == 1
    lasts = [name for name, why in reasons.items() if f"last {policy.last}" in why]
    assert lasts == [g.name for g in complete[: policy.last]]


def test_800_days_the_defaults_are_todays_rule() -> None:
    """Default settings: the newest 30 complete generations, the newest good one, and the
    incomplete ones not older than two days; exactly what retention kept before."""
    every, today = simulated()
    complete = [g for g in every if g.complete]
    before = {g.name for g in complete[:30]}
    before.add(next(g.name for g in complete if not g.failed))
    before |= {g.name for g in every if not g.complete and g.day >= today - timedelta(days=2)}
    reasons = keep_reasons(every, Policy(), today)
    assert {name for name, why in reasons.items() if why} == before


# --- through the job ---------------------------------------------------------------------


@pytest.fixture
def backup(moto_ops: Any, tmp_path: Path) -> Backup:
    return Backup(moto_ops, tmp_path)


# Fridays and month ends: 10-30 (2026-W44), 11-27 (W48), 11-30 and 12-01 (W49), 12-02.
RUNS = [d("2026-10-30"), d("2026-11-27"), d("2026-11-30"), d("2026-12-01"), d("2026-12-02")]
CALENDAR = {
    "OCHINAI_BACKUP_KEEP": "2",
    "OCHINAI_BACKUP_KEEP_WEEKLY": "2",
    "OCHINAI_BACKUP_KEEP_MONTHLY": "3",
}
TIGHTER = {"OCHINAI_BACKUP_KEEP": "1", "OCHINAI_BACKUP_KEEP_MONTHLY": "2"}


def days(backup: Backup) -> list[str]:
    return sorted({k.split("/")[1] for k in backup.listed()} - {"_reading"})


def lines_of(backup: Backup, run: Callable[[], int]) -> tuple[int, list[dict[str, Any]]]:
    """Run; its exit code and its own log lines."""
    before = len(backup.lines())
    code = run()
    return code, backup.lines()[before:]


@pytest.fixture
def five_runs(backup: Backup) -> Backup:
    """The five runs under the calendar rules: nothing deleted (KEEP=2 alone would have
    deleted 10-30, 11-27 and 11-30)."""
    backup.put("data/source/sales.csv", SALES.encode())
    for day in RUNS:
        assert backup.run(day=day, **CALENDAR) == 0, backup.buf.getvalue()[-3000:]
        assert backup.summary["deleted_generations"] == 0
    assert days(backup) == [f"{day:%Y%m%d}" for day in RUNS]
    return backup


def test_the_calendar_rules_keep_what_keep_alone_would_delete(five_runs: Backup) -> None:
    """The next day under KEEP=2 alone: 12-03 and 12-02 stay, the rest goes."""
    backup = five_runs
    assert backup.run(day=d("2026-12-03"), OCHINAI_BACKUP_KEEP="2") == 0
    assert backup.summary["deleted_generations"] == 4
    assert days(backup) == ["20261202", "20261203"]


def test_list_forget_dry_run_and_forget(five_runs: Backup) -> None:
    """Under tighter rules, ``list`` says why each generation is kept or that the next
    run removes it; ``forget --dry-run`` deletes nothing and names what would go;
    ``forget`` deletes exactly that. A generation being read is left, said so; an old
    incomplete one goes, a young one stays."""
    backup = five_runs
    backup.put("backup/20261203/half.parquet", b"a run still writing")
    backup.put("backup/20261101/half.parquet", b"left by a crash")
    marker = "backup/_reading/20261127/v-1.json"
    backup.put(marker, b'{"run_id": "v-1", "action": "verify"}')
    written = backup.client.head_object(Bucket=BUCKET, Key=marker)["LastModified"]
    backup.clock = lambda: written + timedelta(minutes=5)
    today = d("2026-12-02")

    code, lines = lines_of(backup, lambda: backup.run("list", day=today, **TIGHTER))
    assert code == 0
    listed = {x["generation"]: x for x in lines if "kept_because" in x}
    assert {name: x["kept_because"] for name, x in listed.items()} == {
        "20261203": [INCOMPLETE],
        "20261202": ["last 1", "monthly 2026-12", NEWEST_GOOD],
        "20261201": [],
        "20261130": ["monthly 2026-11"],
        "20261127": ["being read (v-1)"],
        "20261101": [],
        "20261030": [],
    }
    assert [n for n, x in listed.items() if x["next_run_removes"]] == [
        "20261201",
        "20261101",
        "20261030",
    ]
    assert listed["20261130"]["message"].endswith("; kept: monthly 2026-11")
    assert listed["20261201"]["message"].endswith("; the next run removes it")
    assert backup.summary["next_run_removes"] == 3

    etags = backup.etags()
    code, lines = lines_of(
        backup, lambda: backup.run("forget", day=today, OCHINAI_DRY_RUN="true", **TIGHTER)
    )
    assert code == 0, backup.buf.getvalue()[-3000:]
    assert backup.etags() == etags  # nothing deleted, nothing written
    summary = backup.summary
    assert summary["would_delete"] == ["20261201", "20261101", "20261030"]
    assert summary["would_delete_generations"] == 3 and "deleted" not in summary
    assert summary["left_being_read"] == ["20261127"]
    said = [x["message"] for x in lines]
    for name in summary["would_delete"]:
        assert any(m.startswith(f"would delete s3://ops/backup/{name}/") for m in said)
    assert "would delete complete generation 20261030: 2 files" in " ".join(said)
    assert "would delete incomplete generation 20261101: 1 files" in " ".join(said)

    code, lines = lines_of(backup, lambda: backup.run("forget", day=today, **TIGHTER))
    assert code == 0, backup.buf.getvalue()[-3000:]
    assert backup.summary["deleted"] == summary["would_delete"]
    assert backup.summary["deleted_generations"] == 3 and backup.summary["kept"] == 3
    gone = {k for k in etags if k.split("/")[1] in summary["would_delete"]}
    assert gone and set(backup.etags()) == set(etags) - gone
    assert days(backup) == ["20261127", "20261130", "20261202", "20261203"]
    assert any(x["message"].startswith("deleted 3 of 7 generations: ") for x in lines)

    # Again: nothing left to delete.
    assert backup.run("forget", day=today, **TIGHTER) == 0
    assert backup.summary["outcome"] == "unchanged" and backup.summary["deleted"] == []


def test_forget_takes_the_lock_and_list_does_not() -> None:
    assert JOB.actions["forget"].lock and not JOB.actions["list"].lock


def test_forget_dry_run_from_the_command_line(
    five_runs: Backup, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ochinai backup forget --dry-run --keep 1 --keep-monthly 2``: exit 0, the names
    of what would go, nothing deleted."""
    etags = five_runs.etags()
    capsys.readouterr()
    argv = ["backup", "forget", "--dry-run", "--date", "2026-12-02", "--keep", "1"]
    env = {"OCHINAI_STORE": f"s3://{BUCKET}", "OCHINAI_LOG_FORMAT": "json"}
    assert cli.main([*argv, "--keep-monthly", "2"], env=env) == 0
    out = capsys.readouterr().out
    [summary] = [x for x in map(json.loads, out.splitlines()) if x.get("event") == "summary"]
    assert summary["would_delete"] == ["20261201", "20261127", "20261030"]
    assert five_runs.etags() == etags
