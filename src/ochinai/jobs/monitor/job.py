"""The monitor's run: leftovers first, then fetch, diff, commit (state, outbox, history to
write), write the history and send, then take both out of the state in one write.

The commit never waits on the channels: a channel that fails leaves its notices in the
outbox for the next run, and the run ends with that channel's exit code after the
commit, so a change is never lost because a webhook or a mail server was down.
"""

from __future__ import annotations

import gc
import json
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import jmespath
from jmespath.exceptions import JMESPathError

from ochinai.jobs.monitor.diff import KINDS, Rules, diff
from ochinai.jobs.monitor.fetch import Fetched, conditional, fetch, validators_of
from ochinai.jobs.monitor.html import Robots, read_page
from ochinai.jobs.monitor.items import MISSING, Fields, Row, row_of
from ochinai.jobs.monitor.message import notice
from ochinai.jobs.monitor.settings import MonitorSettings
from ochinai.jobs.monitor.state import State, parse_state, read_state
from ochinai.jobs.monitor.urls import earlier_keys, page_keys, secret_values, url_key
from ochinai.jobs.monitor.values import StockWords
from ochinai.runtime.egress import Egress
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.http import HttpClient
from ochinai.runtime.job import Context, Summary
from ochinai.runtime.retry import RetryPolicy
from ochinai.runtime.storage import PreconditionFailed

MonitorContext = Context[MonitorSettings]


def run(ctx: MonitorContext) -> Summary:
    """One watch of the API; changes are committed with the state, then announced once.

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
    s = ctx.settings
    if s.mode == "api" and not s.url:
        raise ConfigError(
            "OCHINAI_MONITOR_URL is not set; give the API's first page, "
            "e.g. https://shop.example/api/items"
        )
    if s.mode == "html" and not s.pages:
        raise ConfigError("OCHINAI_MONITOR_PAGES is not set; give the product pages' URLs")
    fields = Fields.compile(
        StockWords.of(s.in_stock, s.out_of_stock),
        items=s.items,
        key=s.key,
        name=s.name,
        price=s.price,
        stock=s.stock,
        link=s.link,
    )
    try:
        next_expression = jmespath.compile(s.next)
    except JMESPathError as exc:
        raise ConfigError(f"OCHINAI_MONITOR_NEXT={s.next!r} is not a JMESPath: {exc}") from None
    http = ctx.http.with_options(
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
        # only, or to OCHINAI_MONITOR_ALLOW_HOSTS without the key (README, "What the
        # monitor will and will not fetch").
        egress=Egress([urlsplit(u).hostname or "" for u in ([s.url] if s.url else []) + s.pages]),
        allow_hosts=s.allow_hosts,
        allow_setting="OCHINAI_MONITOR_ALLOW_HOSTS",
        secret_headers=[s.api_key_header] if s.api_key_header else [],
    )
    headers = {s.api_key_header: s.api_key} if s.api_key_header and s.api_key else {}
    # The URLs are kept (state, history, notices) by their keys: no credentials in them.
    secrets = secret_values(s, ctx.runtime)
    if s.mode == "html":
        keys = page_keys(s.pages, secrets)
    else:
        assert s.url is not None
        keys = {s.url: url_key(s.url, secrets)}
    earlier = earlier_keys(keys)
    targets = {url_key(k, secrets) if _is_url(k) else k: v for k, v in s.targets.items()}
    key = f"{s.state_prefix.strip('/')}/state.json"
    first = s.url if s.mode == "api" and s.url else s.pages[0]
    source = urlsplit(first).hostname or first
    counts: dict[str, Any] = {kind: 0 for kind in KINDS}

    # Uploads that killed runs left open there: the monitor's lock covers its prefix.
    ctx.store.sweep_uploads(f"{s.state_prefix.strip('/')}/", owned=lambda key: True)
    state = read_state(ctx.store, key)
    # What an earlier run committed but did not write or send (it was killed, or failed).
    state, recorded, delivered, failed = settle(ctx, key, state, source, deliver=True)
    if s.mode == "html":
        known = renamed(state, earlier)
        fetched, validators = fetch_pages(ctx, http, known, headers, fields.words, keys)
    else:
        assert s.url is not None
        url = keys[s.url]
        fetched = fetch(
            http,
            s.url,
            fields,
            next_expression,
            validators=renamed(state, earlier).validators.get(url, {}),
            headers=headers,
            page_limit=s.page_limit,
        )
        validators = {url: fetched.validators}
    changes: list[dict[str, Any]] = []
    if fetched.items is not None:
        rules = Rules(s.gone_after, s.price_threshold_pct, s.price_below, targets)
        state, changes = commit(ctx, key, state, fetched.items, validators, rules, earlier)
        # A channel that failed just now is not tried again this run: the outbox keeps it.
        state, now_recorded, now_delivered, now_failed = settle(
            ctx, key, state, source, deliver=failed is None
        )
        recorded += now_recorded
        delivered += now_delivered
        failed = failed or now_failed
    for change in changes:
        counts[change["kind"]] += 1
    stats = http.stats
    counts.update(
        requests=stats.requests,
        not_modified=fetched.not_modified,
        retries=stats.retries,
        waited_s=stats.waited_s,
        items=len(fetched.items) if fetched.items is not None else len(state.items or {}),
        pages=fetched.pages,
        notified=delivered,
        history_recorded=recorded,
        outbox_pending=len(state.outbox),
    )
    if failed is not None:
        # Committed, written and counted; the notices wait in the outbox for the next run.
        ctx.log.info("committed; notices not delivered stay in the outbox", extra=counts)
        raise failed
    # Writing what an earlier run left is work done: not "unchanged".
    return Summary("ok" if changes or delivered or recorded else "unchanged", counts)


def fetch_pages(
    ctx: MonitorContext,
    http: HttpClient,
    state: State,
    headers: dict[str, str],
    words: StockWords,
    keys: dict[str, str],
) -> tuple[Fetched, dict[str, dict[str, str]]]:
    """HTML mode: each page (robots.txt permitting), conditionally; a 304 keeps its item.

    An item is kept by its page's key (``urls.url_key``), which is its link too.
    """
    s = ctx.settings
    robots = Robots(http)
    selectors = {"price": s.price_selector or "", "stock": s.stock_selector or ""}
    found: dict[str, Row] = {}
    validators: dict[str, dict[str, str]] = {}
    not_modified = 0
    for page in s.pages:
        robots.check(page)
        key = keys[page]
        saved = state.validators.get(key, {})
        answer = http.get(page, headers=conditional(headers, saved), accept=(304,))
        previous = (state.items or {}).get(key)
        if answer.status == 304 and previous is not None:
            not_modified += 1
            found[key] = previous[:MISSING]
            validators[key] = saved
            continue
        found[key] = row_of(read_page(key, answer.body, words, selectors))
        validators[key] = validators_of(answer)
    everything_unchanged = not_modified == len(s.pages)
    items = None if everything_unchanged else found
    fetched = Fetched(items, {}, pages=len(s.pages), not_modified=not_modified)
    return fetched, validators


def commit(
    ctx: MonitorContext,
    key: str,
    state: State,
    items: dict[str, Row],
    validators: dict[str, dict[str, str]],
    rules: Rules,
    earlier: dict[str, str | None],
) -> tuple[State, list[dict[str, Any]]]:
    """Write the new items, validators, outbox and history to write by compare-and-swap
    (``Store.update``); another run's state read meanwhile is diffed again, never
    overwritten with a state built from an older one."""
    found: list[list[dict[str, Any]]] = [[]]

    def build(stored: State | None) -> State | None:
        current = stored or State()
        found[0] = []
        # Kept by an earlier version under other keys: written under their keys now.
        moved = renamed(current, earlier)
        new_items, changes = diff(moved.items, items, rules, current.generation + 1)
        # This run's URLs only: those no longer watched, and the keys of earlier versions
        # (renamed when read, or dropped), are left out.
        same = new_items == moved.items and validators == moved.validators
        if same and moved is current and not changes:
            return None
        found[0] = changes
        # Without a channel there is nobody to announce to: the history keeps the changes.
        outbox = current.outbox + changes if ctx.notifier.configured_for("changes") else []
        unrecorded = current.unrecorded + ([history_entry(ctx, changes)] if changes else [])
        return State(new_items, dict(validators), outbox, unrecorded, current.generation + 1)

    doc = ctx.store.update(
        key, build, load=lambda obj: parse_state(obj, ctx.store.url(key)), dump=State.body
    )
    if doc is None or (doc.outcome == "unchanged" and not found[0]):
        ctx.log.info("the items are as they were; the state is not written")
        return (state if doc is None else _with_etag(doc.value, doc.etag)), []
    return _with_etag(doc.value, doc.etag), found[0]


def _with_etag(state: State, etag: str) -> State:
    return replace(state, etag=etag)


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def renamed(state: State, earlier: dict[str, str | None]) -> State:
    """``state`` with the items and validators an earlier version kept under another key
    (``urls.earlier_keys``) under their key now; those of an unknown one dropped.

    A key there already keeps its own values: they are newer.
    """
    if not earlier:
        return state

    def moved(found: dict[str, Any]) -> dict[str, Any]:
        if not any(k in earlier for k in found):
            return found
        out: dict[str, Any] = {}
        for k, v in found.items():
            new = earlier.get(k, k)
            if new is not None and (new == k or new not in found):
                out[new] = v
        return out

    items = None if state.items is None else moved(state.items)
    return replace(state, items=items, validators=moved(state.validators))


def history_entry(ctx: MonitorContext, changes: list[dict[str, Any]]) -> dict[str, str]:
    """This run's changes as the NDJSON object to write under history/dt=<business date>/."""
    prefix = ctx.settings.state_prefix.strip("/")
    at = ctx.now().isoformat(timespec="seconds")
    lines = [
        json.dumps({"run_id": ctx.run_id, "time": at, **c}, ensure_ascii=False, sort_keys=True)
        for c in changes
    ]
    return {
        "key": f"{prefix}/history/dt={ctx.business_date.isoformat()}/{ctx.run_id}.ndjson",
        "body": "\n".join(lines) + "\n",
    }


def settle(
    ctx: MonitorContext, key: str, state: State, source: str, *, deliver: bool
) -> tuple[State, int, int, Exception | None]:
    """Write the history objects, send the outbox (when ``deliver``), then take both out
    of the state in one compare-and-swap: (the state, history objects written, changes
    delivered, the delivery's failure).

    History objects are written create-only; one there already was written by the run
    that committed it, which stopped before taking it out. A failed history write raises
    with the state as it was: the next run writes (and sends) it all. A failed send
    still takes the written history out and is returned, not raised: the outbox stays
    for the next run, and the caller commits its own changes before it raises it. A dry
    run sends nothing and writes no state. Without a channel configured the outbox is
    emptied (the history keeps the changes).
    """
    if state.etag is None or not (state.unrecorded or state.outbox):
        return state, 0, 0, None
    for entry in state.unrecorded:
        try:
            ctx.store.put(
                entry["key"],
                entry["body"].encode(),
                if_none_match=True,
                content_type="application/x-ndjson",
            )
        except PreconditionFailed:
            ctx.log.info("%s was written by an earlier run", ctx.store.url(entry["key"]))
    written = {e["key"] for e in state.unrecorded}
    sent: set[str] = set()
    delivered = 0
    failed: Exception | None = None
    if state.outbox and deliver:
        if not ctx.notifier.configured_for("changes"):
            ctx.log.info(
                "no notification channel configured; %d changes only in the history",
                len(state.outbox),
            )
        batch = list(state.outbox)
        try:
            outcome = ctx.notices.send(notice(batch, ctx.settings.max_notify, source))
        except Exception as exc:  # returned, once the written history is out of the state
            failed = exc
        else:
            # claimed: another live run is sending it; it stays until one records it.
            if outcome not in ("dry_run", "claimed"):
                sent = {c["id"] for c in batch}
                # already_sent: an earlier run sent it, then stopped before taking it out.
                delivered = len(batch) if outcome == "sent" else 0
    # A dry run's commit wrote no state, so there is no etag to swap on (nor a need).
    if (written or sent) and not ctx.dry_run:
        state = _take_out(ctx, key, state, written, sent)
    return state, len(written), delivered, failed


def _take_out(
    ctx: MonitorContext, key: str, state: State, written: set[str], sent: set[str]
) -> State:
    """The state without the written history objects and the sent changes (Store.update:
    taken out of the state as it is stored, whatever another run changed meanwhile)."""

    def build(current: State | None) -> State | None:
        if current is None:
            return None
        return replace(
            current,
            unrecorded=[e for e in current.unrecorded if e["key"] not in written],
            outbox=[c for c in current.outbox if c["id"] not in sent],
        )

    doc = ctx.store.update(
        key, build, load=lambda obj: parse_state(obj, ctx.store.url(key)), dump=State.body
    )
    return state if doc is None else _with_etag(doc.value, doc.etag)
