"""A job's health between runs: incidents opened once, reminded rarely, closed by a recovery.

``_runs/<job>/health.json`` (changed only through ``Store.update``, fenced like the
other records) says whether the job is ``ok`` or ``failing``, since when, how many runs
in a row failed, the last success and the last error. A failed run that finds the job
``ok`` opens an incident and sends one notice; the failures after it send nothing, but
a reminder once the last notice is older than ``OCHINAI_REMIND_AFTER``; the first
success sends one recovery notice. ``ochinai status`` keeps a second incident in the
same record, ``stale``: the job has not succeeded within its max age (a run that never
started says nothing itself).

Notices are committed to the record's outbox in the same write as the transition, then
sent once (``SendOnce``, by the incident's own ids) and taken out: a run killed between
the two leaves them to the next one, and never sends one twice with another id. The
transitions are pure functions of the record and the run (``after_run``,
``after_status``), tested without a store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypedDict
from zoneinfo import ZoneInfo

from ochinai.runtime.cancel import Terminated
from ochinai.runtime.errors import DataError, LockLost, OchinaiError
from ochinai.runtime.jsonrecord import VERSION, Fields, JsonObject, parse_object, sorted_json
from ochinai.runtime.notify import Notice, SendOnce
from ochinai.runtime.records import RECORD_PREFIX, HealthSummary
from ochinai.runtime.storage import ObjectNotFound, Store

log = logging.getLogger("ochinai.health")

OK, FAILING = "ok", "failing"
HEALTH_VERSION = 1  # of health.json


class OutboxNotice(TypedDict):
    """A notice an incident's transition committed to the health record, not yet sent."""

    id: str  # the incident's own: ``<job>/incident/<run id>/opened``, ``.../reminder-2``...
    subject: str
    text: str
    severity: str
    kind: str


@dataclass
class Incident:
    """An open incident: who opened it, since when, when it was last announced."""

    id: str  # the run id that opened it (for status: "stale-" and the time it was seen)
    since: str  # ISO time: the first failed run's start, or when the job became stale
    notified: str  # ISO time of the last notice (the opening or a reminder)
    reminders: int = 0
    failed_runs: int = 0  # for a run incident: failed runs since it opened, the first included

    def to_json(self) -> JsonObject:
        """The incident as written in the health record."""
        return {
            "id": self.id,
            "since": self.since,
            "notified": self.notified,
            "reminders": self.reminders,
            "failed_runs": self.failed_runs,
        }

    @classmethod
    def from_json(cls, doc: Fields) -> Incident:
        """An incident as written."""
        return cls(
            id=doc.text("id"),
            since=doc.text("since"),
            notified=doc.text("notified"),
            reminders=doc.integer("reminders", default=0),
            failed_runs=doc.integer("failed_runs", default=0),
        )


@dataclass
class Health:
    """``_runs/<job>/health.json``."""

    job: str
    state: str = OK
    failed_runs: int = 0  # in a row, the last one included; 0 while ok
    failing_since: str | None = None  # the first failed run of the streak
    incident: Incident | None = None
    last_success: str | None = None
    last_error: str | None = None
    stale: Incident | None = None
    outbox: list[OutboxNotice] = field(default_factory=list)  # notices not yet sent

    def body(self) -> bytes:
        """The record as stored: sorted keys, UTF-8."""
        return sorted_json(
            {
                VERSION: HEALTH_VERSION,
                "job": self.job,
                "state": self.state,
                "failed_runs": self.failed_runs,
                "failing_since": self.failing_since,
                "incident": None if self.incident is None else self.incident.to_json(),
                "last_success": self.last_success,
                "last_error": self.last_error,
                "stale": None if self.stale is None else self.stale.to_json(),
                "outbox": [_outbox_json(notice) for notice in self.outbox],
            }
        )

    @classmethod
    def parse(cls, body: bytes, where: str) -> Health:
        """A stored record; DataError naming ``where`` when it is not one."""
        try:
            doc = parse_object(body)
            doc.version(HEALTH_VERSION)
            incident, stale = doc.optional_nested("incident"), doc.optional_nested("stale")
            return cls(
                job=doc.text("job"),
                state=doc.text("state", default=OK),
                failed_runs=doc.integer("failed_runs", default=0),
                failing_since=doc.optional_text("failing_since"),
                incident=None if incident is None else Incident.from_json(incident),
                last_success=doc.optional_text("last_success"),
                last_error=doc.optional_text("last_error"),
                stale=None if stale is None else Incident.from_json(stale),
                outbox=[_outbox_notice(item) for item in doc.nested_list("outbox")],
            )
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"{where}: not a health record ({exc}); move it aside, the next run makes one"
            ) from None

    def summary(self) -> HealthSummary:
        """What the summary line, the run record and ``status --json`` say of it."""
        return {
            "health": self.state,
            "failed_runs": self.failed_runs,
            "failing_since": self.failing_since,
            "stale_since": self.stale.since if self.stale else None,
        }


@dataclass(frozen=True)
class Policy:
    """When incidents open and are reminded, and the time zone notices speak in."""

    alert_after: int = 1  # failed runs in a row before an incident opens
    remind_after: float = 24 * 3600.0  # seconds; 0: never
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Tokyo"))
    # The kind of every notice of the incidents of runs (a drill's: "drill"); None: the
    # opening is a "failure", its reminders "reminder" and its end "recovery".
    kind: str | None = None

    def kind_of(self, default: str) -> str:
        """The kind of an incident's notice that is ``default`` unless the policy says."""
        return self.kind or default

    def local(self, iso: str) -> str:
        """``2026-11-28 06:10`` in the schedule's zone."""
        return datetime.fromisoformat(iso).astimezone(self.timezone).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class RunFacts:
    """What the health needs of a finished run."""

    run_id: str
    started: datetime
    finished: datetime
    outcome: str
    exit_code: int
    success: bool
    error: str | None  # the first error the run logged


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} 分"
    hours, rest = divmod(minutes, 60)
    return f"{hours} 時間" + (f" {rest} 分" if rest else "")


def _until_recovered(policy: Policy) -> str:
    if policy.remind_after <= 0:
        return "復旧するまで、この件の通知はこれだけです。"
    return f"復旧するまで、この件の通知は {_duration(policy.remind_after)}ごとの催促だけです。"


def _notice(notice_id: str, subject: str, text: str, severity: str, kind: str) -> OutboxNotice:
    return {"id": notice_id, "subject": subject, "text": text, "severity": severity, "kind": kind}


def _outbox_json(notice: OutboxNotice) -> JsonObject:
    return {
        "id": notice["id"],
        "subject": notice["subject"],
        "text": notice["text"],
        "severity": notice["severity"],
        "kind": notice["kind"],
    }


def _outbox_notice(doc: Fields) -> OutboxNotice:
    """An outbox notice as stored; one stored without a severity is ``info``, one without
    a kind is known by its id (``stored_kind``)."""
    return _notice(
        doc.text("id"),
        doc.text("subject"),
        doc.text("text"),
        doc.optional_text("severity") or "info",
        doc.optional_text("kind") or stored_kind(doc.doc),
    )


def stored_kind(item: Mapping[str, object]) -> str:
    """The kind of an outbox notice as stored; one stored without it is known by its id."""
    kind = item.get("kind")
    if isinstance(kind, str) and kind:
        return kind
    notice_id = str(item["id"])
    if "/stale/" in notice_id:
        return "stale"
    if notice_id.endswith("/recovered"):
        return "recovery"
    return "reminder" if "/reminder-" in notice_id else "failure"


def _due(incident: Incident, now: datetime, policy: Policy) -> bool:
    if policy.remind_after <= 0:
        return False
    last = datetime.fromisoformat(incident.notified)
    return (now - last).total_seconds() >= policy.remind_after


def after_run(current: Health, run: RunFacts, policy: Policy) -> Health:
    """The health after ``run``, with the notices its transition sends in the outbox."""
    if run.success:
        return _after_success(current, run, policy)
    return _after_failure(current, run, policy)


def _after_success(current: Health, run: RunFacts, policy: Policy) -> Health:
    """Ok again; a recovery notice when an incident was open."""
    now, job = run.finished, current.job
    new = replace(
        current, state=OK, failed_runs=0, failing_since=None, last_success=now.isoformat()
    )
    new.incident = None
    if current.incident is not None:
        down = (now - datetime.fromisoformat(current.incident.since)).total_seconds()
        failed = current.failed_runs
        new.outbox = [
            *current.outbox,
            _notice(
                f"{job}/incident/{current.incident.id}/recovered",
                f"【復旧】ochinai {job}: 復旧しました",
                f"{job} は {policy.local(now.isoformat())} に復旧しました。\n"
                f"失敗した実行: {failed} 回、停止していた時間: {_duration(down)}"
                f"({policy.local(current.incident.since)} から)。\n"
                f"復旧した実行: {run.run_id}",
                "info",
                policy.kind_of("recovery"),
            ),
        ]
    return new


def _after_failure(current: Health, run: RunFacts, policy: Policy) -> Health:
    """One more failed run: an incident opened once ``alert_after`` runs in a row failed,
    then reminded."""
    now, job = run.finished, current.job
    failed = current.failed_runs + 1
    since = current.failing_since or run.started.isoformat()
    error = run.error or f"{run.outcome} (exit {run.exit_code})"
    new = replace(
        current,
        failed_runs=failed,
        failing_since=since,
        last_error=error,
        outbox=list(current.outbox),
    )
    what = f"{run.outcome}、終了コード {run.exit_code}"
    if current.incident is None:
        if failed < policy.alert_after:
            return new
        incident = Incident(run.run_id, since, now.isoformat(), failed_runs=failed)
        new.state, new.incident = FAILING, incident
        new.outbox.append(
            _notice(
                f"{job}/incident/{incident.id}/opened",
                f"【障害】ochinai {job}: {policy.local(since)} から失敗しています",
                f"{job} が {policy.local(since)} から失敗しています({failed} 回目、{what})。\n"
                f"エラー: {error}\n"
                f"実行: {run.run_id}\n{_until_recovered(policy)}",
                "error",
                policy.kind_of("failure"),
            )
        )
        return new
    incident = replace(current.incident, failed_runs=current.incident.failed_runs + 1)
    new.state, new.incident = FAILING, incident
    lasted = _duration((now - datetime.fromisoformat(incident.since)).total_seconds())
    _remind(
        new,
        incident,
        now,
        policy,
        f"{job}/incident",
        f"【継続中】ochinai {job}: {policy.local(incident.since)} から失敗が続いています",
        f"{job} は {policy.local(incident.since)} から失敗が続いています({lasted}、"
        f"{incident.failed_runs} 回)。\n最後のエラー: {error}\n"
        f"最後の実行: {run.run_id}({what})",
        policy.kind_of("reminder"),
    )
    return new


def _remind(
    new: Health,
    incident: Incident,
    now: datetime,
    policy: Policy,
    prefix: str,
    subject: str,
    text: str,
    kind: str,
) -> None:
    """A reminder of ``incident`` into ``new``'s outbox, once its last notice is old enough."""
    if not _due(incident, now, policy):
        return
    incident.reminders += 1
    incident.notified = now.isoformat()
    notice_id = f"{prefix}/{incident.id}/reminder-{incident.reminders}"
    new.outbox.append(_notice(notice_id, subject, text, "error", kind))


def after_status(
    current: Health,
    state: str,
    now: datetime,
    described: str,
    policy: Policy,
) -> Health:
    """The health after ``ochinai status`` judged the job ``state`` (fresh, stale, missing,
    pending, unreadable); ``described`` says what it knows (last run, outcome, age) for the
    notice."""
    job = current.job
    new = replace(current, outbox=list(current.outbox))
    bad = state in ("stale", "missing", "unreadable")
    if not bad:
        if current.stale is not None and state == "fresh":
            new.stale = None
            new.outbox.append(
                _notice(
                    f"{job}/stale/{current.stale.id}/recovered",
                    f"【復旧】ochinai {job}: 成功した実行が届きました",
                    f"{job} は再び期限内に成功しています({policy.local(now.isoformat())} 確認)。\n"
                    f"{policy.local(current.stale.since)} から成功が届いていませんでした。",
                    "info",
                    "stale",
                )
            )
        return new
    if current.stale is None:
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        new.stale = Incident(f"stale-{stamp}", now.isoformat(), now.isoformat())
        new.outbox.append(
            _notice(
                f"{job}/stale/{new.stale.id}/opened",
                f"【障害】ochinai {job}: 期限内に成功していません",
                f"{job} が期限内に成功していません({policy.local(now.isoformat())} 確認)。\n"
                f"{described}\n"
                "実行が始まらない(イメージ、Secret、停止中の CronJob)か、失敗しているかを"
                "確認してください(docs/ja/quickstart.md「何が知らせるか」)。",
                "error",
                "stale",
            )
        )
        return new
    stale = replace(current.stale)
    new.stale = stale
    _remind(
        new,
        stale,
        now,
        policy,
        f"{job}/stale",
        f"【継続中】ochinai {job}: まだ期限内に成功していません",
        f"{job} は {policy.local(stale.since)} から期限内に成功していません。\n{described}",
        "stale",
    )
    return new


# --- the record in the store -------------------------------------------------------------


def health_key(job: str) -> str:
    """``_runs/<job>/health.json``."""
    return f"{RECORD_PREFIX}/{job}/health.json"


def read_health(store: Store, job: str) -> Health:
    """The job's health as stored, or a new (ok) one."""
    key = health_key(job)
    try:
        return Health.parse(store.get(key).body, store.url(key))
    except ObjectNotFound:
        return Health(job)


def update_health(store: Store, job: str, change: Callable[[Health], Health]) -> Health:
    """Apply ``change`` to the stored health by compare-and-swap (``Store.update``)."""
    key = health_key(job)
    where = store.url(key)
    doc = store.update(
        key,
        lambda current: change(current or Health(job)),
        load=lambda obj: Health.parse(obj.body, where),
        dump=Health.body,
    )
    assert doc is not None  # change() always returns a record
    return doc.value


def send_outbox(store: Store, job: str, health: Health, notices: SendOnce) -> Health:
    """Send the outbox (each notice once, by its id) and take what went out of it.

    A notice that did not go out stays for the next run (a WARNING); nothing raises but
    a lost lock or a stop.
    """
    if not health.outbox:
        return health
    sent: set[str] = set()
    for item in health.outbox:
        severity, kind = item["severity"], item["kind"]
        notice = Notice(item["id"], item["subject"], item["text"], severity, kind=kind)
        try:
            outcome = notices.send(notice)
        except (LockLost, Terminated):
            raise
        except OchinaiError as exc:
            log.warning(
                "incident notice not delivered; the next run sends it: %s",
                exc,
                extra={"notice_key": notice.key},
            )
            continue
        if outcome in ("sent", "already_sent", "not_configured"):
            sent.add(item["id"])
    if not sent:
        return health
    return update_health(
        store, job, lambda h: replace(h, outbox=[n for n in h.outbox if n["id"] not in sent])
    )
