"""Generations ``backup/YYYYMMDD/``: which are complete, and retention, which deletes the
ones its policy lets go, manifest first, never one being read or under Object Lock."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from ochinai.jobs.backup.manifest import MANIFEST, read_manifest
from ochinai.jobs.backup.settings import BackupSettings, Policy
from ochinai.jobs.backup.target import target_store
from ochinai.runtime.errors import ExternalError, LockLost
from ochinai.runtime.job import Context, Summary
from ochinai.runtime.objectlock import keeps_versions, purge_versions
from ochinai.runtime.storage import PreconditionFailed, Store

log = logging.getLogger("ochinai.jobs.backup")

SHARDS = "shards/"  # in a generation's prefix: each shard's manifest, <index>.json
INCOMPLETE_AFTER = timedelta(days=2)
# Under the prefix: the read markers, a folder a generation. Not eight digits, so never
# taken for a generation.
READING = "_reading/"
READ_GRACE = timedelta(hours=1)  # a read marker younger than this protects its generation
_DAY = re.compile(r"^[0-9]{8}$")


def day_of(name: str) -> date:
    """The date of a generation named YYYYMMDD."""
    return date(int(name[:4]), int(name[4:6]), int(name[6:8]))


@dataclass
class Generation:
    """One generation as a listing shows it."""

    name: str  # YYYYMMDD
    keys: list[str] = field(default_factory=list)  # relative to the store
    etags: dict[str, str] = field(default_factory=dict)  # by key, as listed
    size: int = 0
    complete: bool = False
    failed: bool | None = None  # a source failed in it; None: its manifest was not read

    @property
    def day(self) -> date:
        return day_of(self.name)


def generations(store: Store, prefix: str) -> list[Generation]:
    """Every generation under ``prefix``, newest first.

    A generation is complete only when its manifest is there: it is written last,
    create-only (a new version later the same day only by compare-and-swap), and it
    lists every file.
    """
    found: dict[str, Generation] = {}
    for info in store.list(prefix):
        name, _, rest = info.key[len(prefix) :].partition("/")
        if not _DAY.match(name) or not rest:
            continue
        generation = found.setdefault(name, Generation(name))
        generation.keys.append(info.key)
        generation.etags[info.key] = info.etag
        generation.size += info.size
        if rest == MANIFEST:
            generation.complete = True
    return sorted(found.values(), key=lambda g: g.name, reverse=True)


def reading_key(prefix: str, generation: str, run_id: str) -> str:
    """The read marker of run ``run_id`` reading ``generation``.

    ``verify``, ``restore`` and ``drill`` read without the job's lock: they write this
    marker before reading and delete it when done. Retention leaves a generation alone
    while it has a marker younger than READ_GRACE (by its Last-Modified) and deletes
    older ones, so that a reader that died does not keep a generation forever.
    """
    return f"{prefix}{READING}{generation}/{run_id}.json"


# --- the policy ------------------------------------------------------------------------

NEWEST_GOOD = "newest without failed sources"


def _week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


# Each calendar rule: its Policy field, and the unit a day falls in, as its reason names
# it (a daily reason names none: the generation's name is its day).
_CALENDAR: tuple[tuple[str, Callable[[date], str]], ...] = (
    ("daily", date.isoformat),
    ("weekly", _week),
    ("monthly", lambda day: f"{day.year}-{day.month:02d}"),
    ("yearly", lambda day: str(day.year)),
)


def keep_reasons(every: Sequence[Generation], policy: Policy, today: date) -> dict[str, list[str]]:
    """Why each generation is kept, by name; an empty list: retention deletes it.

    Pure: decided from the names, ``complete`` and ``failed`` alone. Only complete
    generations count for a rule, as restic's ``forget`` counts snapshots:

    - ``last N``: the newest ``policy.last`` complete generations (``--keep-last``);
    - ``daily``, ``weekly 2026-W47`` (ISO week), ``monthly 2026-10``, ``yearly 2026``:
      for the last N units that have a complete generation, the newest one of each
      (``--keep-daily`` ...); units without one are not counted;
    - ``oldest monthly 2026-10`` (and the others): when a rule still has units left
      after the oldest complete generation, that one is kept too (restic 0.16 and later:
      "if there are not enough snapshots ..., the oldest snapshot is kept additionally");
    - ``newest without failed sources``: the newest complete generation whose ``failed``
      is False; the complete ones newer than it must have been read (``failed`` not
      None), else ValueError.

    An incomplete generation is kept (``incomplete, cleared once older than 2 days``)
    while its day is no more than two days before ``today``. Read markers are not seen
    here: retention checks them right before a deletion.
    """
    reasons: dict[str, list[str]] = {g.name: [] for g in every}
    complete = sorted((g for g in every if g.complete), key=lambda g: g.name, reverse=True)
    for generation in complete[: policy.last]:
        reasons[generation.name].append(f"last {policy.last}")
    for rule, unit_of in _CALENDAR:
        left: int = getattr(policy, rule)
        previous: str | None = None
        for index, generation in enumerate(complete):
            if left <= 0:
                break
            unit = unit_of(generation.day)
            reason = rule if rule == "daily" else f"{rule} {unit}"
            if unit != previous:
                previous = unit
            elif index == len(complete) - 1:
                reason = f"oldest {reason}"
            else:
                continue
            reasons[generation.name].append(reason)
            left -= 1
    for generation in complete:
        if generation.failed is None:
            raise ValueError(f"generation {generation.name}: its manifest was not read")
        if not generation.failed:
            reasons[generation.name].append(NEWEST_GOOD)
            break
    for generation in every:
        if not generation.complete and generation.day >= today - INCOMPLETE_AFTER:
            reasons[generation.name].append(
                f"incomplete, cleared once older than {INCOMPLETE_AFTER.days} days"
            )
    return reasons


def read_failed(store: Store, prefix: str, every: Sequence[Generation]) -> None:
    """Set ``failed`` on the complete generations, newest first, up to the newest one
    without a failed source: what ``keep_reasons`` needs. A manifest gone since the
    listing counts as failed (it cannot be the newest good one)."""
    for generation in every:
        if not generation.complete:
            continue
        found = read_manifest(store, f"{prefix}{generation.name}/{MANIFEST}")
        generation.failed = found is None or bool(found.manifest.totals.failed)
        if not generation.failed:
            return


def being_read(store: Store, prefix: str, now: datetime) -> dict[str, list[str]]:
    """The runs reading each generation now (markers younger than READ_GRACE), by name."""
    base = prefix + READING
    found: dict[str, list[str]] = {}
    for info in store.list(base):
        name, _, run = info.key[len(base) :].partition("/")
        if now - info.last_modified < READ_GRACE:
            found.setdefault(name, []).append(run.removesuffix(".json"))
    return found


# --- applying it ----------------------------------------------------------------------


@dataclass
class RetentionOutcome:
    """What one application of retention did (or, in a dry run, would do)."""

    generations: int = 0  # listed
    kept: int = 0
    deleted: list[str] = field(default_factory=list)  # names, newest first
    left_being_read: list[str] = field(default_factory=list)
    left_changed: list[str] = field(default_factory=list)
    left_locked: dict[str, str] = field(default_factory=dict)  # name: "locked until <date>"
    left_versions: list[str] = field(default_factory=list)  # deleted, versions refused
    counts: dict[str, int] = field(
        default_factory=lambda: {
            "deleted_generations": 0,
            "deleted_files": 0,
            "deleted_bytes": 0,
            "kept_locked": 0,
        }
    )


def run_retention(ctx: Context[BackupSettings]) -> RetentionOutcome:
    """Apply the settings' retention to the target at the run's date and clock."""
    s = ctx.settings
    return apply_retention(
        target_store(ctx),
        s.prefix,
        s.policy,
        ctx.business_date,
        ctx.now(),
        versions=True if s.lock_days > 0 else None,  # None: the bucket says, if it must
        zone=ctx.runtime.timezone,
    )


def apply_retention(
    store: Store,
    prefix: str,
    policy: Policy | int,
    today: date,
    now: datetime,
    *,
    versions: bool | None = False,
    zone: tzinfo = UTC,
) -> RetentionOutcome:
    """Delete what retention lets go; which generations it deleted and which it left.

    ``policy``: the rules (``keep_reasons``); an int N keeps the newest N complete
    generations and no calendar unit. ``now`` is the run's clock: a generation with a
    read marker younger than ``READ_GRACE`` is left for a later run, and older markers
    are deleted; one with an object still under Object Lock retention is kept (dates
    said in ``zone``). ``versions``: the bucket keeps versions (Object Lock), so a
    deleted generation's versions are removed too; None: ask the bucket, once, before
    the first deletion. In a dry run (the store's) nothing is deleted: each delete is
    logged.
    """
    if isinstance(policy, int):
        policy = Policy(last=policy)
    every = generations(store, prefix)
    read_failed(store, prefix, every)
    reasons = keep_reasons(every, policy, today)
    done = RetentionOutcome(generations=len(every), kept=sum(bool(r) for r in reasons.values()))
    for generation in every:
        if reasons[generation.name] or _left_alone(store, prefix, generation, now, zone, done):
            continue
        deleted = _delete_generation(store, prefix, generation, done)
        if deleted is None:
            continue
        if versions is None:
            versions = keeps_versions(store)
        if versions:
            # With Object Lock a deletion only puts delete markers on top: the versions
            # go by id, so that the generation's bytes go too.
            _, refused = purge_versions(store, f"{prefix}{generation.name}/", deleted)
            if refused:
                done.left_versions.append(generation.name)
        _count_deleted(store, generation, deleted, done)
    _clear_stale_markers(store, prefix, now)
    return done


def _left_alone(
    store: Store,
    prefix: str,
    generation: Generation,
    now: datetime,
    zone: tzinfo,
    done: RetentionOutcome,
) -> bool:
    """Whether a generation retention lets go stays all the same: it is being read (left
    for the next run), or an object of it is under Object Lock retention as the server
    says, whatever the settings say now (kept, ``locked until <date>``)."""
    readers = _readers(store, prefix, generation.name, now)
    if readers:
        log.info(
            "generation %s is being read (%s); left for the next run",
            generation.name,
            ", ".join(readers),
            extra={"generation": generation.name, "readers": readers},
        )
        done.left_being_read.append(generation.name)
        return True
    until = locked_until(store, generation, now)
    if until is None:
        return False
    reason = lock_reason(until, zone)
    log.info(
        "generation %s is under Object Lock, %s; kept",
        generation.name,
        reason,
        extra={"generation": generation.name, "locked_until": until.isoformat()},
    )
    done.left_locked[generation.name] = reason
    done.kept += 1
    done.counts["kept_locked"] += 1
    return True


def _delete_generation(
    store: Store, prefix: str, generation: Generation, done: RetentionOutcome
) -> list[str] | None:
    """Delete the generation's objects; the keys deleted, or None when one changed.

    The manifest first, so that a generation half deleted is incomplete, never
    "complete"; then the shard manifests, then the files. Each delete only while the
    object is as listed (If-Match) and no later term of the lock wrote it: one that
    changed stops this generation's deletion, left for the next run.
    """
    base = f"{prefix}{generation.name}/"
    ordered = sorted(
        generation.keys,
        key=lambda k: (k != base + MANIFEST, not k.startswith(base + SHARDS), k),
    )
    try:
        for key in ordered:
            store.delete(key, if_match=generation.etags[key])
    except PreconditionFailed as exc:
        log.warning(
            "generation %s changed while retention deleted it; left for the next run: %s",
            generation.name,
            exc,
            extra={"generation": generation.name},
        )
        done.left_changed.append(generation.name)
        return None
    return ordered


def _count_deleted(
    store: Store, generation: Generation, deleted: list[str], done: RetentionOutcome
) -> None:
    """A deleted generation in the outcome and the log (``would delete`` in a dry run)."""
    done.deleted.append(generation.name)
    done.counts["deleted_generations"] += 1
    done.counts["deleted_files"] += len(deleted)
    done.counts["deleted_bytes"] += generation.size
    log.info(
        "%s %s generation %s: %d files, %d bytes",
        "would delete" if store.dry_run else "deleted",
        "complete" if generation.complete else "incomplete",
        generation.name,
        len(deleted),
        generation.size,
        extra={
            "generation": generation.name,
            "files": len(deleted),
            "bytes": generation.size,
            "outcome": "dry_run" if store.dry_run else "deleted",
        },
    )


def locked_until(store: Store, generation: Generation, now: datetime) -> datetime | None:
    """The latest end of Object Lock retention among the generation's objects, if one
    is after ``now`` (HEAD of each: the lock is what the server holds, not a setting)."""
    latest: datetime | None = None
    for key in generation.keys:
        info = store.head(key)
        until = info.retain_until if info is not None else None
        if until is not None and until > now and (latest is None or until > latest):
            latest = until
    return latest


def lock_reason(until: datetime, zone: tzinfo) -> str:
    """``locked until 2027-01-05``: the date in ``zone`` (a lock that ends at midnight
    there is said by that day)."""
    return f"locked until {until.astimezone(zone).date().isoformat()}"


def forget(ctx: Context[BackupSettings]) -> Summary:
    """Apply retention now (``ochinai backup forget``), under the job's lock; with
    ``--dry-run`` read and say what would be deleted, and delete nothing."""
    done = run_retention(ctx)
    verb = "would_delete" if ctx.dry_run else "deleted"
    counts: dict[str, Any] = {
        "generations": done.generations,
        "kept": done.kept,
        **{k.replace("deleted", verb): v for k, v in done.counts.items()},
        verb: done.deleted,
        "left_being_read": done.left_being_read,
        "left_changed": done.left_changed,
        "locked": done.left_locked,
    }
    log.info(
        "%s %d of %d generations%s",
        "would delete" if ctx.dry_run else "deleted",
        len(done.deleted),
        done.generations,
        f": {', '.join(done.deleted)}" if done.deleted else "",
        extra={verb: done.deleted},
    )
    return Summary("ok" if done.deleted else "unchanged", counts)


def _readers(store: Store, prefix: str, name: str, now: datetime) -> list[str]:
    """The runs reading generation ``name`` now: their markers younger than READ_GRACE.

    Listed right before the generation's deletion, to leave a reader that came just
    before as little time as can be; one that comes later finds the manifest changed
    or gone and says so (exit 75), instead of a data error.
    """
    base = f"{prefix}{READING}{name}/"
    return [
        info.key[len(base) :].removesuffix(".json")
        for info in store.list(base)
        if now - info.last_modified < READ_GRACE
    ]


def _clear_stale_markers(store: Store, prefix: str, now: datetime) -> None:
    """Delete the read markers older than READ_GRACE (left by readers that died), each
    only as listed; a failure is logged and the marker left for the next run."""
    for info in store.list(prefix + READING):
        if now - info.last_modified < READ_GRACE:
            continue
        try:
            store.delete(info.key, if_match=info.etag)
        except LockLost:
            raise
        except ExternalError as exc:  # PreconditionFailed too: its reader renewed or removed it
            log.warning(
                "stale read marker %s not deleted; left for the next run: %s",
                store.url(info.key),
                exc,
                extra={"key": info.key},
            )
