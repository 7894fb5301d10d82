"""The monitor's run: what an earlier run left first, then fetch (by mode), diff and commit,
then write the history and send the notices the commit put in the state.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from ochinai.jobs.monitor.api import Api
from ochinai.jobs.monitor.changes import KINDS, Change
from ochinai.jobs.monitor.diff import Rules, diff
from ochinai.jobs.monitor.fetched import Fetched
from ochinai.jobs.monitor.history import Pending
from ochinai.jobs.monitor.items import Expression, Fields
from ochinai.jobs.monitor.message import notice
from ochinai.jobs.monitor.pages import Pages
from ochinai.jobs.monitor.settings import MonitorSettings
from ochinai.jobs.monitor.state import State, StateFile, renamed
from ochinai.jobs.monitor.urls import earlier_keys, page_keys, secret_values, url_key
from ochinai.jobs.monitor.values import StockWords
from ochinai.runtime.egress import Egress
from ochinai.runtime.http import HttpClient
from ochinai.runtime.job import Context, Summary
from ochinai.runtime.retry import RetryPolicy

MonitorContext = Context[MonitorSettings]


def run(ctx: MonitorContext) -> Summary:
    """One watch of the API or the pages; changes are committed with the state, then
    announced once.

    The commit never waits on the channels: a channel that fails leaves its notices in the
    outbox for the next run, and the run ends with that channel's exit code after the
    commit, so a change is never lost because a webhook or a mail server was down.

    The cyclic garbage collector is paused for the run: 100k items are a million objects
    that live until its end, and the collector would walk them again each time rows are
    made (it took 40% of reading them). Nothing here makes cycles worth collecting.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _run(ctx)
    finally:
        if paused:
            gc.enable()


def _run(ctx: MonitorContext) -> Summary:
    plan = _plan(ctx)
    http = _client(ctx.http, ctx.settings)
    prefix = ctx.settings.state_prefix.strip("/")
    file = StateFile(ctx.store, f"{prefix}/state.json")
    # Uploads that killed runs left open there: the monitor's lock covers its prefix.
    ctx.store.sweep_uploads(f"{prefix}/", owned=lambda key: True)
    state = file.read()
    # What an earlier run committed but did not write or send (it was killed, or failed).
    state, done = settle(ctx, file, state, plan.name, deliver=True)
    fetched = plan.source.fetch(http, renamed(state, plan.earlier))
    changes: list[Change] = []
    if fetched.items is not None:
        state, changes = commit(ctx, file, state, fetched, plan)
        # A channel that failed just now is not tried again this run: the outbox keeps it.
        state, now = settle(ctx, file, state, plan.name, deliver=done.failed is None)
        done = done.then(now)
    counts = _counts(changes, http, fetched, state, done)
    if done.failed is not None:
        # Committed, written and counted; the notices wait in the outbox for the next run.
        ctx.log.info("committed; notices not delivered stay in the outbox", extra=counts)
        raise done.failed
    # Writing what an earlier run left is work done: not "unchanged".
    return Summary("ok" if changes or done.delivered or done.recorded else "unchanged", counts)


@dataclass(frozen=True)
class _Plan:
    """What the settings ask of this run, compiled."""

    source: Api | Pages
    name: str  # the source as the notices name it: its first URL's host
    earlier: dict[str, str | None]  # urls.earlier_keys of the source's URLs
    rules: Rules


def _plan(ctx: MonitorContext) -> _Plan:
    """The run's source (by mode), keys and rules; ConfigError (78) for an expression that
    does not compile or two pages of one key."""
    s = ctx.settings
    fields = Fields.compile(
        StockWords.of(s.in_stock, s.out_of_stock),
        items=s.items,
        key=s.key,
        name=s.name,
        price=s.price,
        stock=s.stock,
        link=s.link,
    )
    next_page = Expression.compile("next", s.next)
    headers = {s.api_key_header: s.api_key} if s.api_key_header and s.api_key else {}
    # The URLs are kept (state, history, notices) by their keys: no credentials in them.
    secrets = secret_values(s, ctx.runtime)
    source: Api | Pages
    if s.mode == "html":
        selectors = {"price": s.price_selector or "", "stock": s.stock_selector or ""}
        source = Pages(page_keys(s.pages, secrets), fields.words, selectors, headers)
        first = s.pages[0]
    else:
        assert s.url is not None  # MonitorSettings.validate
        source = Api(s.url, url_key(s.url, secrets), fields, next_page, headers, s.page_limit)
        first = s.url
    targets = {url_key(k, secrets) if _is_url(k) else k: v for k, v in s.targets.items()}
    rules = Rules(s.gone_after, s.price_threshold_pct, s.price_below, targets)
    return _Plan(source, urlsplit(first).hostname or first, earlier_keys(source.keys), rules)


def _client(http: HttpClient, s: MonitorSettings) -> HttpClient:
    """The run's HTTP client as the settings tune it."""
    return http.with_options(
        timeout=(s.timeout, s.timeout),
        policy=RetryPolicy(
            base=s.backoff_base,
            cap=s.backoff_cap,
            max_tries=s.tries,
            retry_after_cap=s.retry_after_cap,
        ),
        min_interval=s.min_interval,
        max_bytes=s.max_bytes,
        # Only the configured hosts' addresses and no wider; redirects within their origin
        # only, or to OCHINAI_MONITOR_ALLOW_HOSTS without the key (docs/jobs/monitor.md, "What the
        # monitor will and will not fetch").
        egress=Egress([urlsplit(u).hostname or "" for u in ([s.url] if s.url else []) + s.pages]),
        allow_hosts=s.allow_hosts,
        allow_setting="OCHINAI_MONITOR_ALLOW_HOSTS",
        secret_headers=[s.api_key_header] if s.api_key_header else [],
    )


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def commit(
    ctx: MonitorContext, file: StateFile, state: State, fetched: Fetched, plan: _Plan
) -> tuple[State, list[Change]]:
    """Write the new items, validators, outbox and history to write by compare-and-swap
    (``Store.update``); another run's state read meanwhile is diffed again, never
    overwritten with a state built from an older one."""
    assert fetched.items is not None
    items = fetched.items
    found: list[Change] = []

    def build(stored: State | None) -> State | None:
        current = stored or State()
        found.clear()
        # Kept by an earlier version under other keys: written under their keys now.
        moved = renamed(current, plan.earlier)
        new = diff(moved.items, items, plan.rules, current.generation + 1, moved.missing)
        # The validators of this run's URLs replace the state's: those no longer watched,
        # and the keys of earlier versions (renamed when read, or dropped), are left out.
        same = (new.items, new.missing, fetched.validators) == (
            moved.items,
            moved.missing,
            moved.validators,
        )
        if same and moved is current and not new.changes:
            return None
        found.extend(new.changes)
        # Without a channel there is nobody to announce to: the history keeps the changes.
        outbox = (*current.outbox, *new.changes) if ctx.notices.configured_for("changes") else ()
        unrecorded = current.unrecorded + ((_history(ctx, new.changes),) if new.changes else ())
        return State(
            new.items,
            new.missing,
            fetched.validators,
            outbox,
            unrecorded,
            current.generation + 1,
        )

    doc = file.update(build)
    if doc is None or (doc.outcome == "unchanged" and not found):
        ctx.log.info("the items are as they were; the state is not written")
        return (state if doc is None else replace(doc.value, etag=doc.etag)), []
    return replace(doc.value, etag=doc.etag), list(found)


def _history(ctx: MonitorContext, changes: list[Change]) -> Pending:
    """This run's changes as the history object to write under history/dt=<business date>/."""
    return Pending.of(
        ctx.settings.state_prefix.strip("/"),
        ctx.business_date,
        ctx.run_id,
        ctx.now().isoformat(timespec="seconds"),
        changes,
    )


@dataclass(frozen=True)
class Settled:
    """What settling the state did: history objects written, changes delivered, and the
    delivery's failure."""

    recorded: int = 0
    delivered: int = 0
    failed: Exception | None = None

    def then(self, later: Settled) -> Settled:
        """This and a later settling of the same run."""
        return Settled(
            self.recorded + later.recorded,
            self.delivered + later.delivered,
            self.failed or later.failed,
        )


def settle(
    ctx: MonitorContext, file: StateFile, state: State, source: str, *, deliver: bool
) -> tuple[State, Settled]:
    """Write the history objects, send the outbox (when ``deliver``), then take both out
    of the state in one compare-and-swap.

    History objects are written create-only; one there already was written by the run
    that committed it, which stopped before taking it out. A failed history write raises
    with the state as it was: the next run writes (and sends) it all. A failed send
    still takes the written history out and is returned, not raised: the outbox stays
    for the next run, and the caller commits its own changes before it raises it. A dry
    run sends nothing and writes no state. Without a channel configured the outbox is
    emptied (the history keeps the changes).
    """
    if state.etag is None or not (state.unrecorded or state.outbox):
        return state, Settled()
    for pending in state.unrecorded:
        if not pending.write(ctx.store):
            ctx.log.info("%s was written by an earlier run", ctx.store.url(pending.key))
    written = {p.key for p in state.unrecorded}
    sent: set[str] = set()
    delivered = 0
    failed: Exception | None = None
    if state.outbox and deliver:
        if not ctx.notices.configured_for("changes"):
            ctx.log.info(
                "no notification channel configured; %d changes only in the history",
                len(state.outbox),
            )
        batch = state.outbox
        try:
            outcome = ctx.notices.send(notice(batch, ctx.settings.max_notify, source))
        except Exception as exc:  # returned, once the written history is out of the state
            failed = exc
        else:
            # claimed: another live run is sending it; it stays until one records it.
            if outcome not in ("dry_run", "claimed"):
                sent = {c.id for c in batch}
                # already_sent: an earlier run sent it, then stopped before taking it out.
                delivered = len(batch) if outcome == "sent" else 0
    # A dry run's commit wrote no state, so there is no etag to swap on (nor a need).
    if (written or sent) and not ctx.dry_run:
        state = _take_out(file, state, written, sent)
    return state, Settled(len(written), delivered, failed)


def _take_out(file: StateFile, state: State, written: set[str], sent: set[str]) -> State:
    """The state without the written history objects and the sent changes (Store.update:
    taken out of the state as it is stored, whatever another run changed meanwhile)."""

    def build(current: State | None) -> State | None:
        if current is None:
            return None
        return replace(
            current,
            unrecorded=tuple(p for p in current.unrecorded if p.key not in written),
            outbox=tuple(c for c in current.outbox if c.id not in sent),
        )

    doc = file.update(build)
    return state if doc is None else replace(doc.value, etag=doc.etag)


def _counts(
    changes: list[Change], http: HttpClient, fetched: Fetched, state: State, done: Settled
) -> dict[str, Any]:
    """The summary's counts: the changes by kind, the requests, the items and the notices."""
    counts: dict[str, Any] = {kind: 0 for kind in KINDS}
    for change in changes:
        counts[change.kind] += 1
    stats = http.stats
    counts.update(
        requests=stats.requests,
        not_modified=fetched.not_modified,
        retries=stats.retries,
        waited_s=stats.waited_s,
        items=len(fetched.items) if fetched.items is not None else len(state.items or {}),
        pages=fetched.pages,
        notified=done.delivered,
        history_recorded=done.recorded,
        outbox_pending=len(state.outbox),
    )
    return counts
