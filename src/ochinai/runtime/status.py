"""The dead-man's switch: has each job succeeded recently enough?"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from ochinai.runtime.errors import DataError, OchinaiError
from ochinai.runtime.health import (
    Health,
    Policy,
    after_status,
    read_health,
    send_outbox,
    update_health,
)
from ochinai.runtime.jsonrecord import VERSION, parse_object
from ochinai.runtime.notify import SendOnce
from ochinai.runtime.records import RECORD_PREFIX, HealthSummary, read_latest
from ochinai.runtime.storage import ObjectNotFound, PreconditionFailed, Store

log = logging.getLogger("ochinai.status")

# When status first looked at this store: a job without records yet is "pending", not
# missing, until its max age has passed since then (a fresh install is not an alarm).
FIRST_SEEN = f"{RECORD_PREFIX}/status-first-seen.json"
FIRST_SEEN_VERSION = 1

# `ochinai status` exit codes: 0 every job is fresh; 1 a job is stale or never succeeded.
# Errors reading the store end with the codes of docs/architecture.md "Exit codes" (75,
# 77, 78).
EX_STALE = 1


@dataclass(frozen=True)
class FirstSeen:
    """``_runs/status-first-seen.json``: when status first looked at this store."""

    first_seen: datetime

    def body(self) -> bytes:
        """The record as stored."""
        doc = {"first_seen": self.first_seen.isoformat(), VERSION: FIRST_SEEN_VERSION}
        return json.dumps(doc).encode()

    @classmethod
    def parse(cls, body: bytes, where: str) -> FirstSeen:
        """A stored record; DataError naming ``where`` when it is not one."""
        try:
            doc = parse_object(body)
            doc.version(FIRST_SEEN_VERSION)
            return cls(datetime.fromisoformat(doc.text("first_seen")))
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"{where}: not a record of when status first ran ({exc}); delete it, the "
                "next status run writes it again"
            ) from None


@dataclass(frozen=True)
class JobStatus:
    """One job's line in the status table."""

    job: str
    state: str  # fresh | stale | missing | pending
    last_success: str | None
    age_s: float | None
    last_outcome: str | None
    last_run: str | None
    max_age_s: float = 0.0
    health: HealthSummary | None = None  # the job's health record, as health.py sums it up

    def described(self) -> str:
        """What status knows of the job, for a notice (in Japanese, as the notices are)."""
        if self.last_run is None:
            return "記録された実行がありません(一度も始まっていないか、記録を書けていません)。"
        success = self.last_success or "なし"
        return (
            f"最後の実行: {self.last_run}({self.last_outcome})、最後の成功: {success}、"
            f"期限: {self.max_age_s / 3600:g} 時間。"
        )


def first_seen(store: Store, now: datetime) -> datetime:
    """When status first ran against this store (recorded now, create-only, if never)."""
    try:
        found = store.get(FIRST_SEEN)
    except ObjectNotFound:  # the first status run: a read, not a write, every other time
        pass
    else:
        return FirstSeen.parse(found.body, store.url(FIRST_SEEN)).first_seen
    body = FirstSeen(now).body()
    try:
        store.put(FIRST_SEEN, body, if_none_match=True, content_type="application/json")
    except PreconditionFailed:  # another status run recorded it just now
        return first_seen(store, now)
    return now


def discover_jobs(store: Store) -> list[str]:
    """Jobs that have a ``latest.json`` under ``_runs/``.

    Sub-actions (``backup.verify``) are checked only when named: one run of an action
    by hand must not make a plain ``ochinai status`` stale for ever after.
    """
    suffix = "/latest.json"
    names = (
        info.key[len(RECORD_PREFIX) + 1 : -len(suffix)]
        for info in store.list(f"{RECORD_PREFIX}/")
        if info.key.endswith(suffix) and info.key.count("/") == 2
    )
    return sorted(name for name in names if "." not in name)


def job_status(
    store: Store, job: str, now: datetime, max_age: float, since: datetime | None = None
) -> JobStatus:
    """Read ``_runs/<job>/latest.json`` and judge the last success against ``max_age``.

    A job that never ran is "pending" while ``since`` (when status first ran) is younger
    than its max age, then "missing". One whose ``latest.json`` does not parse is
    "unreadable" (a failure, said in an ERROR), and the other jobs are still judged.
    """
    try:
        latest = read_latest(store, job)
    except DataError as exc:
        log.error("%s: cannot judge its last success: %s", job, exc, extra={"job_checked": job})
        return JobStatus(job, "unreadable", None, None, None, None, max_age)
    if latest is None:
        young = since is not None and (now - since).total_seconds() <= max_age
        return JobStatus(job, "pending" if young else "missing", None, None, None, None, max_age)
    last_run, success = latest.last_run, latest.last_success
    if success is None or not success.finished:
        return JobStatus(job, "missing", None, None, last_run.outcome, last_run.run_id, max_age)
    finished = datetime.fromisoformat(success.finished.replace("Z", "+00:00"))
    age = (now - finished).total_seconds()
    return JobStatus(
        job,
        "fresh" if age <= max_age else "stale",
        success.finished,
        round(age, 1),
        last_run.outcome,
        last_run.run_id,
        max_age,
    )


def check(
    store: Store,
    jobs: Iterable[str],
    now: datetime,
    max_age: float,
    max_ages: dict[str, float] | None = None,
    since: datetime | None = None,
) -> list[JobStatus]:
    """The status of every named job (or of every job with records when none is named).

    Each job is judged by its own max age in ``max_ages``, else by ``max_age``.
    """
    names = list(jobs) or discover_jobs(store)
    ages = max_ages or {}
    return [job_status(store, n, now, ages.get(n, max_age), since) for n in names]


def announce(
    store: Store,
    statuses: list[JobStatus],
    now: datetime,
    notices: SendOnce,
    policy: Policy,
) -> list[JobStatus]:
    """Open, remind and close each job's ``stale`` incident (health.py) and send what that
    commits; the statuses with each job's health. A store that refuses the write (read-only
    credentials) or a channel that fails is a WARNING: the exit code says the rest."""
    out = []
    for s in statuses:

        def change(h: Health, judged: JobStatus = s) -> Health:
            return after_status(h, judged.state, now, judged.described(), policy)

        try:
            health = update_health(store, s.job, change)
            health = send_outbox(store, s.job, health, notices)
        except OchinaiError as exc:
            log.warning("%s: the stale incident could not be recorded or sent: %s", s.job, exc)
            health = read_health(store, s.job)
        out.append(replace(s, health=health.summary()))
    return out


def exit_code(statuses: list[JobStatus]) -> int:
    """0 only when there is at least one job and every job is fresh."""
    if not statuses or any(s.state not in ("fresh", "pending") for s in statuses):
        return EX_STALE
    return 0


def render_table(statuses: list[JobStatus], max_age: float) -> str:
    """A table for people."""
    if not statuses:
        return f"no run records under {RECORD_PREFIX}/: no job has run yet\n"
    rows = [("JOB", "STATE", "LAST SUCCESS", "AGE", "MAX AGE", "LAST OUTCOME", "LAST RUN")]
    for s in statuses:
        age = "-" if s.age_s is None else _human(s.age_s)
        limit = _human(s.max_age_s or max_age)
        outcome, run = s.last_outcome or "-", s.last_run or "-"
        rows.append((s.job, s.state, s.last_success or "-", age, limit, outcome, run))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def render_json(statuses: list[JobStatus], max_age: float) -> str:
    """One JSON document for machines."""
    return (
        json.dumps(
            {
                "ok": exit_code(statuses) == 0,
                "max_age_s": max_age,
                "jobs": [asdict(s) for s in statuses],
            },
            ensure_ascii=False,
        )
        + "\n"
    )


def _human(seconds: float) -> str:
    if seconds >= 86400 and (seconds % 86400 == 0 or seconds >= 2 * 86400):
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"
