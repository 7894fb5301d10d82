"""Run one job: run id, lock, logs, run record, failure notice and exit code."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import FrameType
from typing import Any, Protocol

from ochinai.runtime import logs
from ochinai.runtime.errors import (
    EX_OK,
    ConfigError,
    DataError,
    OchinaiError,
    TransientError,
    exit_code_for,
    outcome_for,
)
from ochinai.runtime.lock import make_lock
from ochinai.runtime.notify import Notice, Notifier, notice_key, notifier_from_config
from ochinai.runtime.storage import ObjectNotFound, PreconditionFailed, Store, make_s3_client
from ochinai.settings import Settings

log = logging.getLogger("ochinai.run")

SUCCESS_OUTCOMES = frozenset({"ok", "unchanged"})
RECORD_PREFIX = "_runs"
LATEST_CAS_TRIES = 5


@dataclass
class Summary:
    """What a job returns: ``ok`` or ``unchanged``, and the counts for the summary line."""

    outcome: str = "ok"
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Everything a job gets from the runtime; a job opens no lock and configures no logging."""

    job: str
    run_id: str
    business_date: date
    settings: Settings
    store: Store
    notifier: Notifier
    fence: int
    dry_run: bool
    log: logging.Logger


JobFunction = Callable[[Context], Summary]


class HeldLock(Protocol):
    """A lock this run holds (a context manager that releases); the store checks it."""

    def __enter__(self) -> HeldLock: ...

    def __exit__(self, *exc: object) -> None: ...

    @property
    def fence(self) -> int: ...

    def held(self) -> bool: ...

    def check_writable(self) -> None: ...

    def release(self) -> None: ...


class Lock(Protocol):
    """Acquires the job's lock; ``None`` means another live run holds it."""

    def acquire(self, wait: float) -> HeldLock | None: ...

    def describe_holder(self) -> str: ...


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time: ``20261128T061000123Z-3f9a1c``."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    return f"{stamp}-{secrets.token_hex(3)}"


def business_date(settings: Settings, now: datetime) -> date:
    """``--date``, else today in the schedule's time zone at the start of the run."""
    if settings.date is not None:
        return settings.date  # type: ignore[no-any-return]
    return now.astimezone(settings.timezone).date()


class Terminated(TransientError):
    """SIGTERM arrived (Kubernetes stops a pod this way before it kills it)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception so locks are released and the summary is logged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated("terminated by SIGTERM before the job finished")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _ErrorCollector(logging.Handler):
    """Remembers ERROR and worse records of the run, for the failure notice."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(logs.redactor.redact(record.getMessage()))


def make_store(settings: Settings, run_id: str, guard: HeldLock | None = None) -> Store:
    """The deployment's store, fenced by ``guard`` when given."""
    if settings.store is None:
        raise ConfigError("OCHINAI_STORE is not set; expected s3://BUCKET[/PREFIX]")
    client = make_s3_client(read_timeout=settings.s3_timeout)
    return Store(
        client,
        settings.store.bucket,
        settings.store.prefix,
        run_id=run_id,
        guard=guard,
        multipart_threshold=getattr(settings, "multipart_threshold", 64 * 1024 * 1024),
        dry_run=bool(getattr(settings, "dry_run", False)),
    )


def make_notifier(settings: Settings) -> Notifier:
    """Webhook and/or SMTP as configured; neither is fine."""
    return notifier_from_config(
        webhook_url=settings.webhook_url,
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        smtp_tls=settings.smtp_tls,
        smtp_user=settings.smtp_user,
        smtp_password=settings.smtp_password,
        mail_from=settings.mail_from,
        mail_to=settings.mail_to or [],
        timeout=settings.notify_timeout,
    )


@dataclass
class Runner:
    """Runs one job with everything DESIGN "Contracts" promises; seams for tests are fields."""

    job: str
    fn: JobFunction
    settings: Settings
    lock: Lock | None = None  # None: the one OCHINAI_LOCK asks for
    store_factory: Callable[[Settings, str, HeldLock | None], Store] = make_store
    notifier_factory: Callable[[Settings], Notifier] = make_notifier
    utcnow: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic

    def run(self) -> int:
        """Run the job once and return its exit code; never raises."""
        started = self.utcnow()
        t0 = self.monotonic()
        run_id = self.settings.run_id or new_run_id(started)
        pod = self.settings.pod_name or os.environ.get("HOSTNAME")
        logs.bind(job=self.job, run_id=run_id, pod=pod, k8s_job=self.settings.job_name)
        collector = _ErrorCollector()
        logging.getLogger().addHandler(collector)
        record: dict[str, Any] = {
            "job": self.job,
            "run_id": run_id,
            "pod": pod,
            "k8s_job": self.settings.job_name,
            "started": _iso(started),
        }
        summary = Summary(outcome="unexpected_error")
        exit_code = EX_OK
        day = business_date(self.settings, started)
        record["date"] = day.isoformat()
        try:
            log.info("starting %s", self.job, extra={"settings": self.settings.masked()})
            with _sigterm_raises():
                summary = self._run_locked(run_id, day, record)
        except BaseException as exc:
            exit_code = exit_code_for(exc)
            summary = Summary(outcome=outcome_for(exc))
            record["error"] = {
                "class": type(exc).__name__,
                "message": logs.redactor.redact(str(exc)),
            }
            log.error("%s failed: %s", self.job, exc, exc_info=exc, extra={"exit_code": exit_code})
            if isinstance(exc, KeyboardInterrupt):
                summary.outcome = "interrupted"
        finally:
            logging.getLogger().removeHandler(collector)
        duration = round(self.monotonic() - t0, 3)
        record.update(
            outcome=summary.outcome,
            exit_code=exit_code,
            finished=_iso(self.utcnow()),
            duration_s=duration,
            counts=summary.counts,
        )
        self._write_record(run_id, day, record)
        if collector.messages:
            self._notify_failure(day, run_id, summary.outcome, exit_code, collector.messages)
        log.log(
            logging.INFO if exit_code == EX_OK else logging.ERROR,
            "%s finished: %s",
            self.job,
            summary.outcome,
            extra={
                "event": "summary",
                "outcome": summary.outcome,
                "exit_code": exit_code,
                "duration_s": duration,
                **summary.counts,
            },
        )
        logs.unbind("job", "run_id", "pod", "k8s_job")
        return exit_code

    def _run_locked(self, run_id: str, day: date, record: dict[str, Any]) -> Summary:
        lock = self.lock or make_lock(
            self.settings,
            self.job,
            f"{record['pod'] or 'local'}/{run_id}",
            store=lambda: self.store_factory(self.settings, run_id, None),
        )
        held = lock.acquire(wait=self.settings.lock_wait)
        if held is None:
            log.warning("another run holds the lock: %s", lock.describe_holder())
            return Summary(outcome="skipped_locked")
        with held:
            record["fence"] = held.fence
            store = self.store_factory(self.settings, run_id, held)
            ctx = Context(
                job=self.job,
                run_id=run_id,
                business_date=day,
                settings=self.settings,
                store=store,
                notifier=self.notifier_factory(self.settings),
                fence=held.fence,
                dry_run=bool(self.settings.dry_run),
                log=logging.getLogger(f"ochinai.jobs.{self.job}"),
            )
            summary = self.fn(ctx)
        if summary.outcome not in SUCCESS_OUTCOMES:
            raise OchinaiError(f"job returned the unknown outcome {summary.outcome!r}")
        return summary

    def _write_record(self, run_id: str, day: date, record: dict[str, Any]) -> None:
        """The run's record (create-only) and ``latest.json`` (CAS); a failure is only logged."""
        if self.settings.dry_run:
            return
        try:
            store = self.store_factory(self.settings, run_id, None)
            body = _json_bytes(record)
            store.put(
                f"{RECORD_PREFIX}/{self.job}/{day.isoformat()}/{run_id}.json",
                body,
                if_none_match=True,
                content_type="application/json",
            )
            update_latest(store, self.job, record)
        except Exception as exc:
            log.error("could not write the run record: %s", exc, exc_info=exc)

    def _notify_failure(
        self, day: date, run_id: str, outcome: str, exit_code: int, messages: list[str]
    ) -> None:
        try:
            notifier = self.notifier_factory(self.settings)
            if not notifier.configured or self.settings.dry_run:
                return
            shown = "\n".join(f"- {m}" for m in messages[:5])
            more = f"\n(and {len(messages) - 5} more)" if len(messages) > 5 else ""
            notifier.send(
                Notice(
                    key=notice_key(self.job, day.isoformat(), f"error-{run_id}"),
                    subject=f"ochinai {self.job} {day.isoformat()}: {outcome} (exit {exit_code})",
                    text=f"run {run_id}\n{shown}{more}",
                    severity="error",
                )
            )
        except Exception as exc:
            log.error("could not send the failure notice: %s", exc, extra={"notify": "failed"})


def update_latest(store: Store, job: str, record: dict[str, Any]) -> None:
    """CAS-update ``_runs/<job>/latest.json``: the last run and the last success."""
    key = f"{RECORD_PREFIX}/{job}/latest.json"
    for _ in range(LATEST_CAS_TRIES):
        current = read_latest(store, job)
        previous = current[0] if current else {}
        success = record if record["outcome"] in SUCCESS_OUTCOMES else previous.get("last_success")
        body = _json_bytes({"job": job, "last_run": record, "last_success": success})
        try:
            if current is None:
                store.put(key, body, if_none_match=True, content_type="application/json")
            else:
                store.put(key, body, if_match=current[1], content_type="application/json")
            return
        except PreconditionFailed:
            continue  # another run updated it between our read and write: read again
    raise TransientError(f"{store.url(key)}: lost the update race {LATEST_CAS_TRIES} times")


def read_latest(store: Store, job: str) -> tuple[dict[str, Any], str] | None:
    """``_runs/<job>/latest.json`` and its etag, or None when the job never ran."""
    key = f"{RECORD_PREFIX}/{job}/latest.json"
    try:
        obj = store.get(key)
    except ObjectNotFound:
        return None
    try:
        latest = json.loads(obj.body)
    except ValueError as exc:
        raise DataError(f"{store.url(key)}: not valid JSON: {exc}") from exc
    if not isinstance(latest, dict):
        raise DataError(f"{store.url(key)}: expected a JSON object")
    return latest, obj.etag


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1, default=str).encode()


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
