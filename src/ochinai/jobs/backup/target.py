"""Where the generations live: OCHINAI_BACKUP_TARGET, a bucket and keys apart from the
sources' (one leaked key loses one of them), and their S3 Object Lock."""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from ochinai.jobs.backup.settings import BackupSettings
from ochinai.runtime.job import Context
from ochinai.runtime.objectlock import check_enabled
from ochinai.runtime.storage import Retention, Store, make_s3_client

log = logging.getLogger("ochinai.jobs.backup")

SHARED = (
    "the backups share the sources' bucket and keys: one leaked key or one deleted bucket "
    "loses both; set OCHINAI_BACKUP_TARGET"
)

# One target store per run's context (its client, its own uploads), made on first use.
_stores: dict[int, tuple[Context[Any], Store]] = {}
_stores_lock = threading.Lock()


def target_store(ctx: Context[Any]) -> Store:
    """The store the generations are in: OCHINAI_BACKUP_TARGET with its own client and
    keys, fenced by the run's lock; without a target, the run's store.

    Every backup action reads and writes generations, manifests, read markers and
    retention through it; the sources are read from ``ctx.store``, and the run's
    records stay where the runtime writes them (the run's store).
    """
    s: BackupSettings = ctx.settings
    if s.target is None:
        return ctx.store
    with _stores_lock:
        found = _stores.get(id(ctx))
        if found is not None and found[0] is ctx:
            return found[1]
        client = make_s3_client(
            read_timeout=ctx.runtime.s3_timeout,
            endpoint_url=s.target_endpoint_url,
            access_key=s.target_access_key_id,
            secret_key=s.target_secret_access_key,
        )
        store = Store(
            client,
            s.target.bucket,
            s.target.prefix,
            run_id=ctx.run_id,
            guard=ctx.store.guard,
            fence=ctx.store.fence,
            dry_run=ctx.store.dry_run,
            multipart_threshold=ctx.store.multipart_threshold,
            part_size=ctx.store.part_size,
            stale_upload_age=ctx.store.stale_upload_age,
        )
        if len(_stores) > 16:  # contexts of runs that ended (tests make many)
            _stores.clear()
        _stores[id(ctx)] = (ctx, store)
        return store


def warn_if_shared(ctx: Context[Any]) -> None:
    """Without a target, say once (a WARNING) that one bucket and one key hold both."""
    if ctx.settings.target is None:
        log.warning(SHARED)


def check_object_lock(ctx: Context[Any]) -> None:
    """With OCHINAI_BACKUP_LOCK_DAYS, stop (78) unless the target bucket has Object Lock;
    a WARNING when the business date's lock would be over already (an old date)."""
    if not ctx.settings.lock_days:
        return
    check_enabled(target_store(ctx), "OCHINAI_BACKUP_LOCK_DAYS")
    if object_lock(ctx, ctx.business_date) is None:
        log.warning(
            "generation %s: its Object Lock would have ended on %s, before now; it is "
            "written without one",
            ctx.business_date.isoformat(),
            lock_until(ctx, ctx.business_date).isoformat(),
        )


def lock_until(ctx: Context[Any], day: date) -> datetime:
    """When the Object Lock of the generation of ``day`` ends: the start of the day
    OCHINAI_BACKUP_LOCK_DAYS after it, in the run's time zone."""
    end = day + timedelta(days=ctx.settings.lock_days)
    return datetime.combine(end, time(0), tzinfo=ctx.runtime.timezone)


def object_lock(ctx: Context[Any], day: date) -> Retention | None:
    """The Object Lock retention of the objects of the generation of ``day``; None when
    OCHINAI_BACKUP_LOCK_DAYS is 0, or when that retention is over already (an old
    business date: the server refuses a date in the past)."""
    s: BackupSettings = ctx.settings
    if not s.lock_days:
        return None
    until = lock_until(ctx, day)
    if until <= ctx.now():
        return None
    mode: Literal["GOVERNANCE", "COMPLIANCE"] = (
        "COMPLIANCE" if s.lock_mode == "compliance" else "GOVERNANCE"
    )
    return Retention(mode, until)
