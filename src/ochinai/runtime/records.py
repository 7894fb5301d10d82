"""Run records: ``_runs/<job>/<date>/<run_id>.json`` (create-only) and ``latest.json`` (CAS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from ochinai.runtime.errors import DataError
from ochinai.runtime.job import SUCCESS_OUTCOMES
from ochinai.runtime.jsonrecord import VERSION, Fields, JsonObject, parse_object, sorted_json
from ochinai.runtime.storage import ObjectNotFound, Store

RECORD_PREFIX = "_runs"
RUN_RECORD_VERSION = 1  # of a run record and of latest.json

# Why a run failed: its error's class and message (redacted).
RunError = TypedDict("RunError", {"class": str, "message": str})


class HealthSummary(TypedDict):
    """What a run record, the summary line and ``status --json`` say of the job's health."""

    health: str  # ok | failing
    failed_runs: int
    failing_since: str | None
    stale_since: str | None


@dataclass
class RunRecord:
    """``_runs/<job>/<date>/<run_id>.json``: one run of an action, as it ended.

    The optional fields are left out of the JSON while None, as they always were.
    """

    job: str  # the job's name; ``action`` says which of its actions ran
    action: str
    run_id: str
    pod: str | None
    k8s_job: str | None
    started: str  # UTC to the millisecond: 2026-11-28T06:10:00.123Z
    date: str  # the business date the run was about
    outcome: str
    exit_code: int
    finished: str
    duration_s: float
    counts: JsonObject  # the summary line's counts
    fence: int | None = None  # the term of the lock it worked under; None: it got no lock
    lock_released: bool | None = None  # None: it got no lock
    error: RunError | None = None
    health: HealthSummary | None = None  # None: the run changed nothing of it

    def to_json(self) -> JsonObject:
        """The record as written."""
        doc: JsonObject = {
            VERSION: RUN_RECORD_VERSION,
            "job": self.job,
            "action": self.action,
            "run_id": self.run_id,
            "pod": self.pod,
            "k8s_job": self.k8s_job,
            "started": self.started,
            "date": self.date,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "finished": self.finished,
            "duration_s": self.duration_s,
            "counts": self.counts,
        }
        if self.fence is not None:
            doc["fence"] = self.fence
        if self.lock_released is not None:
            doc["lock_released"] = self.lock_released
        if self.error is not None:
            doc["error"] = {"class": self.error["class"], "message": self.error["message"]}
        if self.health is not None:
            h = self.health
            doc["health"] = {
                "health": h["health"],
                "failed_runs": h["failed_runs"],
                "failing_since": h["failing_since"],
                "stale_since": h["stale_since"],
            }
        return doc

    @classmethod
    def from_json(cls, doc: Fields) -> RunRecord:
        """A record as written by any version (ValueError or TypeError naming what is wrong);
        one from before actions were recorded was of ``run``."""
        doc.version(RUN_RECORD_VERSION)
        error, health = doc.optional_nested("error"), doc.optional_nested("health")
        return cls(
            job=doc.text("job"),
            action=doc.text("action", default="run"),
            run_id=doc.text("run_id"),
            pod=doc.optional_text("pod"),
            k8s_job=doc.optional_text("k8s_job"),
            started=doc.text("started"),
            date=doc.text("date"),
            outcome=doc.text("outcome"),
            exit_code=doc.integer("exit_code"),
            finished=doc.text("finished"),
            duration_s=doc.number("duration_s"),
            counts=doc.json_object("counts"),
            fence=doc.optional_integer("fence"),
            lock_released=doc.optional_flag("lock_released"),
            error=None
            if error is None
            else {"class": error.text("class"), "message": error.text("message")},
            health=None if health is None else _health_summary(health),
        )


def _health_summary(doc: Fields) -> HealthSummary:
    return {
        "health": doc.text("health"),
        "failed_runs": doc.integer("failed_runs"),
        "failing_since": doc.optional_text("failing_since"),
        "stale_since": doc.optional_text("stale_since"),
    }


@dataclass(frozen=True)
class Latest:
    """``_runs/<job>/latest.json``: the job's last run, and its last success (None: none yet)."""

    job: str
    last_run: RunRecord
    last_success: RunRecord | None

    def after(self, record: RunRecord) -> Latest:
        """This record once ``record`` is the last run (and the last success if it is one)."""
        success = record if record.outcome in SUCCESS_OUTCOMES else self.last_success
        return Latest(self.job, record, success)

    def body(self) -> bytes:
        """The record as stored."""
        return sorted_json(
            {
                VERSION: RUN_RECORD_VERSION,
                "job": self.job,
                "last_run": self.last_run.to_json(),
                "last_success": None if self.last_success is None else self.last_success.to_json(),
            }
        )

    @classmethod
    def parse(cls, body: bytes, where: str) -> Latest:
        """A stored record; DataError naming ``where`` when it is not one."""
        try:
            doc = parse_object(body)
        except ValueError as exc:
            raise DataError(f"{where}: not valid JSON: {exc}") from exc
        except TypeError:
            raise DataError(f"{where}: expected a JSON object") from None
        try:
            doc.version(RUN_RECORD_VERSION)
            success = doc.optional_nested("last_success")
            return cls(
                job=doc.text("job"),
                last_run=RunRecord.from_json(doc.nested("last_run")),
                last_success=None if success is None else RunRecord.from_json(success),
            )
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"{where}: not a record of the job's last run ({exc}); move it aside, the "
                "job's next run writes a new one"
            ) from None


def latest_key(job: str) -> str:
    """``_runs/<job>/latest.json``."""
    return f"{RECORD_PREFIX}/{job}/latest.json"


def write_record(store: Store, job: str, record: RunRecord) -> None:
    """The run's own record under ``job`` (the record's name: ``backup.verify`` for an
    action), then ``latest.json``."""
    store.put(
        f"{RECORD_PREFIX}/{job}/{record.date}/{record.run_id}.json",
        sorted_json(record.to_json()),
        if_none_match=True,
        content_type="application/json",
    )
    update_latest(store, job, record)


def update_latest(store: Store, job: str, record: RunRecord) -> None:
    """Update ``_runs/<job>/latest.json``: the last run and the last success (Store.update)."""
    key = latest_key(job)
    store.update(
        key,
        lambda current: (current or Latest(job, record, None)).after(record),
        load=lambda obj: Latest.parse(obj.body, store.url(key)),
        dump=Latest.body,
    )


def read_latest(store: Store, job: str) -> Latest | None:
    """``_runs/<job>/latest.json``, or None when the job never ran."""
    key = latest_key(job)
    try:
        obj = store.get(key)
    except ObjectNotFound:
        return None
    return Latest.parse(obj.body, store.url(key))
