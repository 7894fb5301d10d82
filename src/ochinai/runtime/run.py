"""Run one action of a job: run id, lock, context, logs, run record, failure notice, exit code."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from ochinai.runtime import kube, logs, routes, storage
from ochinai.runtime.bounded import within
from ochinai.runtime.calendar import NO_CALENDAR, TODAY, BusinessDays
from ochinai.runtime.cancel import StopNow, Terminated, cancellation
from ochinai.runtime.declare import masked, parse_run_id
from ochinai.runtime.errors import (
    EX_OK,
    EndpointUnreachable,
    OchinaiError,
    exit_code_for,
    outcome_for,
)
from ochinai.runtime.fence import Fence
from ochinai.runtime.health import Health, Policy, RunFacts, after_run, send_outbox, update_health
from ochinai.runtime.http import HttpClient
from ochinai.runtime.job import SUCCESS_OUTCOMES, Context, Job, Summary
from ochinai.runtime.jsonrecord import JsonObject, json_value
from ochinai.runtime.lock import (
    HeldLock,
    LeaderLock,
    Lock,
    LockBackend,
    LockTiming,
    NoLock,
    S3LockBackend,
)
from ochinai.runtime.notify import Notifier, SendOnce
from ochinai.runtime.ping import Pinger
from ochinai.runtime.records import RunError, RunRecord, write_record
from ochinai.runtime.settings import CommonSettings, RuntimeSettings
from ochinai.runtime.storage import Store, make_s3_client
from ochinai.runtime.workdir import build_dir

log = logging.getLogger("ochinai.run")
T = TypeVar("T")
# Runs that say nothing of the job's health: another run held the lock, or the run was
# stopped by a signal (a node drain, a rollout: the Job runs it again).
NEUTRAL_OUTCOMES = frozenset({"skipped_locked", "terminated"})


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time: ``20261128T061000123Z-3f9a1c``."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    return f"{stamp}-{secrets.token_hex(3)}"


def run_id_from(*candidates: str | None) -> str:
    """The first candidate that is a valid run id (flag, then OCHINAI_RUN_ID), else a new one.

    Called before the settings parse, so that even a run whose settings are wrong
    logs every line with a run id.
    """
    for value in candidates:
        if value is not None:
            with suppress(ValueError):
                return parse_run_id(value)
    return new_run_id()


def business_date(settings: RuntimeSettings, now: datetime, job: object = None) -> date:
    """``--date``, else the day the job's settings say (``calendar.BusinessDays``), else
    today; a relative one (``yesterday``, ``-3d``, ``previous-business-day``) resolved on
    ``now``'s day in the schedule's time zone, by the job's calendar of closed days (none:
    every day is a business day)."""
    days = job if isinstance(job, BusinessDays) else None
    wanted = settings.date or (days.default_day() if days else TODAY)
    if isinstance(wanted, date):
        return wanted
    today = now.astimezone(settings.timezone).date()
    day = wanted.resolve(today, days.business_calendar() if days else NO_CALENDAR)
    if wanted != TODAY:
        log.info("business date %s: %s on %s (%s)", day, wanted, today, settings.timezone.key)
    return day


class _ErrorCollector(logging.Handler):
    """Remembers ERROR and worse records of the run, for the failure notice."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(logs.shorten(logs.redactor.redact(record.getMessage()), 2000))


# --- wiring: what the runtime builds for a run ------------------------------------


def make_store(
    settings: CommonSettings, run_id: str, guard: HeldLock | None = None, *, timeout: float = 0
) -> Store:
    """The deployment's store, fenced by ``guard`` when given; ``timeout`` (seconds) bounds
    each request's connect and read, else OCHINAI_S3_TIMEOUT the read."""
    runtime = settings if isinstance(settings, RuntimeSettings) else None
    client = (
        make_s3_client(
            connect_timeout=min(timeout, storage.CONNECT_TIMEOUT),
            read_timeout=timeout,
            max_attempts=3,
        )
        if timeout
        else make_s3_client(read_timeout=settings.s3_timeout)
    )
    return Store(
        client,
        settings.store.bucket,
        settings.store.prefix,
        run_id=run_id,
        guard=guard,
        multipart_threshold=runtime.multipart_threshold if runtime else 64 * 1024 * 1024,
        dry_run=runtime.dry_run if runtime else False,
        # No run outlives its Job's activeDeadlineSeconds (the server's clock, not ours,
        # says when an upload began: a minute more for skew).
        stale_upload_age=runtime.max_run_time + 60 if runtime else 3600.0,
        link_endpoint_url=settings.link_endpoint_url,
    )


def make_notifier(settings: CommonSettings, http: HttpClient) -> Notifier:
    """The receivers and routes the settings declare (routes.py); none is fine."""
    return routes.build(settings, http)


def make_lock(
    settings: RuntimeSettings, job: Job, identity: str, run_id: str
) -> LeaderLock | NoLock:
    """The lock OCHINAI_LOCK asks for; ``auto`` is a Lease in a cluster and S3 elsewhere."""
    kind = settings.lock
    if kind == "auto":
        kind = "lease" if kube.in_cluster() else "s3"
    if kind == "none":
        return NoLock()
    timing = LockTiming(
        duration=settings.lock_duration,
        renew_period=settings.lock_renew_period,
        renew_deadline=settings.lock_renew_deadline,
        poll=min(2.0, settings.lock_renew_period / 4),
    )
    # The pods of an Indexed Job work side by side, each on its share: a lock an index.
    index = settings.completion_index
    name = job.lock_name if index is None else f"{job.lock_name}-{index}"
    backend: LockBackend
    if kind == "lease":
        api, kubeconfig_namespace = kube.coordination_api()
        namespace = kube.pod_namespace(settings.namespace, kubeconfig_namespace)
        backend = kube.LeaseBackend(api, namespace, name)
    else:
        # A client of its own with short timeouts: a renewal must end before its deadline
        # (each call is also given up then, lock.py), and a hung one must not hold many.
        timeout = min(settings.s3_timeout, max(1.0, settings.lock_renew_deadline / 3))
        backend = S3LockBackend(
            make_store(settings, run_id, timeout=timeout), f"_locks/{name}.json"
        )
    return LeaderLock(backend, identity, timing, sleep=cancellation.sleep)


@dataclass
class Runner:
    """Runs one action of a job with everything docs/architecture.md "Contracts" promises.

    The seams for tests are fields: the lock, the store, notifier and HTTP client
    factories, and the clocks.
    """

    job: Job
    runtime: RuntimeSettings
    settings: Any  # an instance of the action's settings class
    action: str = "run"
    run_id: str | None = None  # None: OCHINAI_RUN_ID, else a new id
    lock: Lock | None = None  # None: the one OCHINAI_LOCK asks for
    store_factory: Callable[[RuntimeSettings, str], Store] = make_store
    notifier_factory: Callable[[RuntimeSettings, HttpClient], Notifier] = make_notifier
    utcnow: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = cancellation.sleep
    # One unfenced store a run id, its S3 client shared by the lock, the job and the
    # record (a boto3 client takes a tenth of a second to make).
    _stores: dict[str, Store] = field(default_factory=dict, init=False, repr=False)
    _fence: Fence | None = field(default=None, init=False, repr=False)
    # The receivers, built once a run's HTTP client (Apprise's plugins take a while to
    # make): the job's notices and the incidents' go through the same.
    _notifiers: dict[int, Notifier] = field(default_factory=dict, init=False, repr=False)

    def _notifier(self, http: HttpClient) -> Notifier:
        if id(http) not in self._notifiers:
            self._notifiers = {id(http): self.notifier_factory(self.runtime, http)}
        return self._notifiers[id(http)]

    def _store(self, run_id: str) -> Store:
        if run_id not in self._stores:
            self._stores[run_id] = self.store_factory(self.runtime, run_id)
        return self._stores[run_id]

    @property
    def name(self) -> str:
        """The name the run's records and notices go under."""
        return self.job.record_name(self.action)

    def run(self) -> int:
        """Run the action once and return its exit code; never raises.

        SIGTERM and SIGINT are recorded from here to the summary line (cancel.py): a run
        stopped during its work ends 75 at the next check, one stopped after it 0, and
        either way the lock is released and the record and summary are written.
        """
        cancellation.reset()
        cancellation.grace = self.runtime.stop_grace
        cancellation.kill_after = self.runtime.termination_grace
        with cancellation.handling_signals():
            return self._run()

    def _run(self) -> int:
        started, t0 = self.utcnow(), self.monotonic()
        run_id = self.run_id or self.runtime.run_id or new_run_id(started)
        pod = self.runtime.pod_name or os.environ.get("HOSTNAME")
        ids = {"job": self.job.name, "action": self.action, "run_id": run_id}
        logs.bind(**ids, pod=pod, k8s_job=self.runtime.job_name)
        collector = _ErrorCollector()
        logging.getLogger().addHandler(collector)
        day = business_date(self.runtime, started, self.settings)
        http = HttpClient(
            clock=self.monotonic, sleep=self.sleep, now=self.utcnow, dry_run=self.runtime.dry_run
        )
        # Check-ins to an outside dead-man's switch (ping.py); none in a dry run.
        pinger = Pinger(None if self.runtime.dry_run else self.runtime.ping_url, run_id, http)
        lock = _LockUse()
        try:
            summary, exit_code, error = self._attempt(run_id, day, pod, http, pinger, lock)
        finally:
            logging.getLogger().removeHandler(collector)
        _note_signal(summary, exit_code)
        duration = round(self.monotonic() - t0, 3)
        record = RunRecord(
            job=self.job.name,
            action=self.action,
            run_id=run_id,
            pod=pod,
            k8s_job=self.runtime.job_name,
            started=_iso(started),
            date=day.isoformat(),
            outcome=summary.outcome,
            exit_code=exit_code,
            finished=_iso(self.utcnow()),
            duration_s=duration,
            counts=_counts(summary.counts),
            fence=lock.term,
            lock_released=lock.released,
            error=error,
        )
        self._finish(record, started, summary, collector.messages, http, pinger)
        http.close()
        logs.unbind(*ids, "pod", "k8s_job")
        return exit_code

    def _attempt(
        self,
        run_id: str,
        day: date,
        pod: str | None,
        http: HttpClient,
        pinger: Pinger,
        lock: _LockUse,
    ) -> tuple[Summary, int, RunError | None]:
        """The action under the run's lock: its summary, exit code and error (None when it
        succeeded); a failure or a stop is logged and never raised."""
        try:
            shown = {**masked(self.runtime), **masked(self.settings)}
            log.info("starting %s", self.name, extra={"settings": shown})
            pinger.start()
            return self._run_locked(run_id, day, pod, http, lock), EX_OK, None
        except (Terminated, StopNow) as caught:
            # Not an ERROR: a node drain or a rollout stops pods, and the Job retries.
            exc = (
                caught
                if isinstance(caught, Terminated)
                else Terminated(
                    f"{cancellation.signal_name}, interrupted after {cancellation.grace:g}s"
                )
            )
            exit_code = exit_code_for(exc)
            stopped: RunError = {"class": type(exc).__name__, "message": str(exc)}
            log.warning("%s stopped: %s", self.name, exc, extra={"exit_code": exit_code})
            return Summary(outcome_for(exc)), exit_code, stopped
        except BaseException as exc:
            exit_code = exit_code_for(exc)
            failed: RunError = {
                "class": type(exc).__name__,
                "message": logs.redactor.redact(str(exc)),
            }
            log.error("%s failed: %s", self.name, exc, exc_info=exc, extra={"exit_code": exit_code})
            return Summary(outcome=outcome_for(exc)), exit_code, failed

    def _finish(
        self,
        record: RunRecord,
        started: datetime,
        summary: Summary,
        errors: list[str],
        http: HttpClient,
        pinger: Pinger,
    ) -> None:
        """After the work: the health, the run record, the incident notices, the check-in,
        the metrics and the summary line, each one's failure counted, never raised."""
        run_id, exit_code, duration = record.run_id, record.exit_code, record.duration_s
        health = self._update_health(run_id, started, summary, exit_code, errors)
        if health is not None:
            record.health = health.summary()
            summary.counts = {
                **summary.counts,
                "health": health.state,
                "failed_runs": health.failed_runs,
            }
        written = self._write_record(record)
        _note_signal(summary, exit_code)  # a signal may have come while the record was written
        if health is not None and health.outbox:
            self._deliver_incident_notices(run_id, health, http, summary)
        self._check_in(pinger, run_id, summary, exit_code, duration, errors)
        self._push_metrics(started, summary, exit_code, duration)
        if cancellation.requested or record.lock_released is False or not written:
            # What a stopped (or failing) run could not do in time: the next run recovers.
            if record.lock_released is not None:
                summary.counts["lock_released"] = record.lock_released
            summary.counts["record_written"] = written
        log.log(
            logging.INFO if exit_code == EX_OK else logging.ERROR,
            "%s finished: %s",
            self.name,
            summary.outcome,
            extra={
                "event": "summary",
                "outcome": summary.outcome,
                "exit_code": exit_code,
                "duration_s": duration,
                **summary.counts,
            },
        )

    def _acquire(self, run_id: str, pod: str | None) -> HeldLock | None:
        """The run's lock; a dry run and a read-only action take none (and write none)."""
        if self.runtime.dry_run:
            log.info("dry run: no lock taken")
            return NoLock()
        if not self.job.actions[self.action].lock:
            return NoLock()
        lock = self.lock or make_lock(self.runtime, self.job, f"{pod or 'local'}/{run_id}", run_id)
        held = lock.acquire(wait=self.runtime.lock_wait)
        if held is None:
            log.warning("another run holds the lock: %s", lock.describe_holder())
        return held

    def _run_locked(
        self, run_id: str, day: date, pod: str | None, http: HttpClient, lock: _LockUse
    ) -> Summary:
        with cancellation.armed():
            held = self._acquire(run_id, pod)
        if held is None:
            return Summary(outcome="skipped_locked")
        # The release (the finally) is not armed: a stopped run frees its lock, in time.
        try:
            with build_dir(self.job.name, run_id) as workdir, cancellation.armed():
                lock.term = held.term
                return self._work(run_id, day, http, held, workdir)
        finally:
            lock.released = held.release(cancellation.time_left())
            # The record says the run's term, so that a later holder's is never replaced.
            self._fence = held.fence

    def _work(
        self, run_id: str, day: date, http: HttpClient, held: HeldLock, workdir: Path
    ) -> Summary:
        store = self._store(run_id).guarded(held)
        notifier = self._notifier(http)
        if self.runtime.dry_run:
            notifier = notifier.dry()
        ctx: Context[Any] = Context(
            job=self.job.name,
            action=self.action,
            run_id=run_id,
            business_date=day,
            settings=self.settings,
            runtime=self.runtime,
            store=store,
            notices=SendOnce(
                store, notifier, run_id=run_id, dry_run=self.runtime.dry_run, job=self.job.name
            ),
            http=http,
            fence=held.term,
            log=logging.getLogger(f"ochinai.jobs.{self.job.name}"),
            now=self.utcnow,
            sleep=self.sleep,
            workdir=workdir,
        )
        summary = self.job.actions[self.action].fn(ctx)
        # Once lost, the run ends 75, even when it found nothing left to write (another
        # run, which took the lock, did the work it then saw as "unchanged").
        held.check_writable()
        if summary.outcome not in SUCCESS_OUTCOMES:
            raise OchinaiError(f"job returned the unknown outcome {summary.outcome!r}")
        return summary

    def _write_record(self, record: RunRecord) -> bool:
        """The run's record (create-only) and ``latest.json`` (CAS), under the run's term;
        False when it could not be written (logged), or not in time after a stop."""
        if self.runtime.dry_run:
            return True
        try:
            store = self._store(record.run_id).fenced(self._fence)
            _in_time(lambda: write_record(store, self.name, record), "the run record")
        except Exception as exc:
            _not_saved("the run record", exc)
            return False
        return True

    def _update_health(
        self, run_id: str, started: datetime, summary: Summary, exit_code: int, errors: list[str]
    ) -> Health | None:
        """The job's health after this run (health.py); None when the run changes nothing
        (a dry run, ``skipped_locked``, a run stopped by a signal) or it could not be read."""
        if self.runtime.dry_run or summary.outcome in NEUTRAL_OUTCOMES:
            return None
        facts = RunFacts(
            run_id=run_id,
            started=started,
            finished=self.utcnow(),
            outcome=summary.outcome,
            exit_code=exit_code,
            success=exit_code == EX_OK,
            error=errors[0] if errors else None,
        )
        kind = self.job.actions[self.action].notices
        policy = Policy(
            self.runtime.alert_after, self.runtime.remind_after, self.runtime.timezone, kind
        )
        store = self._store(run_id).fenced(self._fence)
        try:
            return _in_time(
                lambda: update_health(store, self.name, lambda h: after_run(h, facts, policy)),
                "the health record",
            )
        except Exception as exc:
            _not_saved("the health record", exc)
            return None

    def _check_in(
        self,
        pinger: Pinger,
        run_id: str,
        summary: Summary,
        exit_code: int,
        duration: float,
        errors: list[str],
    ) -> None:
        """The run's last check-in: success with the summary, fail with the errors, log
        for a run that found the lock held; a failed one is counted, never fatal."""
        if not pinger.configured:
            return
        line = {
            "job": self.name,
            "run_id": run_id,
            "outcome": summary.outcome,
            "exit_code": exit_code,
            "duration_s": duration,
            **summary.counts,
        }
        text = json.dumps(line, ensure_ascii=False, default=str)
        if summary.outcome == "skipped_locked":
            pinger.log(text)
        elif exit_code == EX_OK:
            pinger.success(text)
        else:
            pinger.fail("\n".join([text, *errors]))
        if pinger.failed:
            summary.counts = {**summary.counts, "pings_failed": pinger.failed}

    def _push_metrics(
        self, started: datetime, summary: Summary, exit_code: int, duration: float
    ) -> None:
        """The run's metrics to the Pushgateway (metrics.py); a failure is a WARNING and a
        count. A dry run and a run that found the lock held push nothing."""
        gateway = self.runtime.pushgateway_url
        if not gateway or self.runtime.dry_run or summary.outcome == "skipped_locked":
            return
        from ochinai.runtime.metrics import push_run  # prometheus_client: 60 ms, only when asked

        left = cancellation.time_left()
        pushed = push_run(
            gateway,
            job=self.name,
            shard=self.runtime.completion_index,
            outcome=summary.outcome,
            exit_code=exit_code,
            started=started,
            duration_s=duration,
            counts=summary.counts,
            success=summary.outcome in SUCCESS_OUTCOMES,
            timeout=5.0 if left is None else max(0.1, min(5.0, left)),
        )
        if not pushed:
            summary.counts = {**summary.counts, "metrics_pushed": False}

    def _deliver_incident_notices(
        self, run_id: str, health: Health, http: HttpClient, summary: Summary
    ) -> None:
        """Send what the health's transition committed, once; what fails waits in the
        record's outbox for the next run (counted as ``notices_pending``)."""
        try:
            store = self._store(run_id).fenced(self._fence)
            notices = SendOnce(store, self._notifier(http), run_id=run_id, dry_run=False)
            left = _in_time(
                lambda: send_outbox(store, self.name, health, notices), "the incident notices"
            )
            pending = len(left.outbox)
        except Exception as exc:
            log.warning("incident notices not sent; the next run sends them: %s", exc)
            pending = len(health.outbox)
        if pending:
            summary.counts["notices_pending"] = pending


@dataclass
class _LockUse:
    """What the run record says of the run's lock: the term the run worked under, and
    whether the lock was released (None: the run got no lock)."""

    term: int | None = None
    released: bool | None = None


def _counts(counts: Mapping[str, object]) -> JsonObject:
    """The summary's counts as the run record stores them (a date or a path as text)."""
    stored = json_value(counts)
    assert isinstance(stored, dict)
    return stored


def _in_time(fn: Callable[[], T], what: str) -> T:
    """``fn()``; after a stop, given up (NotInTime) when the pod's time would run out first."""
    left = cancellation.time_left()
    if left is None:
        return fn()
    return within(fn, left, what)


def _not_saved(what: str, exc: Exception) -> None:
    """A record the run could not write: an ERROR; a short WARNING when its S3 endpoint
    cannot be reached, which the run's own error has said in full (where, why, what to
    check)."""
    if isinstance(exc, EndpointUnreachable):
        log.warning("%s is not written: %s cannot be reached", what, exc.endpoint)
    else:
        log.error("could not write %s: %s", what, exc, exc_info=exc)


def _note_signal(summary: Summary, exit_code: int) -> None:
    """Name a stop signal that came during the run in its summary (once)."""
    if not cancellation.requested or "signal" in summary.counts:
        return
    summary.counts = {**summary.counts, "signal": cancellation.signal_name}
    if exit_code == EX_OK and summary.outcome in SUCCESS_OUTCOMES - {"terminated_after_work"}:
        # The work was done when the signal came: say so, and keep the success.
        summary.counts["job_outcome"] = summary.outcome
        summary.outcome = "terminated_after_work"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
