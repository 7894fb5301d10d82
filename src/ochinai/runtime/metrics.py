"""A run's metrics, pushed to a Prometheus Pushgateway when the run ends.

A CronJob's pod lives for one run, too briefly to be scraped, so each run pushes what
it did to a Pushgateway, which Prometheus scrapes (``honor_labels: true``) and the
alert rules in ``k8s/monitoring/`` read. Each run pushes to the group
``job="ochinai-<job>", shard="<index>"`` (``shard="all"`` for an unsharded run), so
the shards of a sharded backup never overwrite each other's metrics.

Metrics (gauges, base units, every one of the group's last push):

``ochinai_last_run_timestamp_seconds``
    when the last run ended (Unix time);
``ochinai_last_run_duration_seconds``
    how long it ran;
``ochinai_last_run_exit_code``
    its exit code (0 for a success, 75 transient, 64 to 78 as ``runtime/errors.py``);
``ochinai_last_run_outcome{outcome="..."}``
    1, for its outcome only (``ok``, ``unchanged``, ``failed``...);
``ochinai_last_run_<count>``
    each count of its summary line whose value is a number (``int``, ``float``, or
    any ``numbers.Real`` such as numpy's; never a ``bool``) and whose name is letters,
    digits and ``_`` and not one of the names above: ``rows``, ``bad_rows``,
    ``files_written``, ``bytes``, ``changes``...; other counts (text, flags) are left out;
``ochinai_last_success_timestamp_seconds``
    when the last successful run ended: pushed by successful runs only.

The Pushgateway adds ``push_time_seconds`` (and ``push_failure_time_seconds``) to
each group itself.
"""

from __future__ import annotations

import logging
import numbers
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

from ochinai.runtime.bounded import within

log = logging.getLogger("ochinai.metrics")

PREFIX = "ochinai_"
# Each count becomes ochinai_last_run_<name>: the name must make a valid metric name.
_COUNT_NAME = re.compile(r"[A-Za-z0-9_]+")
# Counts that would take the name of a metric every push has.
_RESERVED_COUNTS = frozenset({"timestamp_seconds", "duration_seconds", "exit_code", "outcome"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_ERROR_BODY_LIMIT = 300

Handler = Callable[..., Callable[[], None]]


class _Gateway:
    """The gateway URL split into what is pushed to, what is logged and its credentials."""

    def __init__(self, gateway: str) -> None:
        text = gateway.strip()
        if not _SCHEME.match(text):  # host:port, as prometheus_client also takes it
            text = f"http://{text}"
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host")
        port = parts.port or (443 if scheme == "https" else 80)  # ValueError if not a port
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.origin = f"{scheme}://{host}:{port}"
        # The path stays (a gateway behind a path prefix); userinfo, query and fragment go.
        self.url = f"{self.origin}{parts.path.rstrip('/')}"
        self.credentials = (
            (unquote(parts.username), unquote(parts.password or ""))
            if parts.username is not None
            else None
        )

    def handler(self) -> Handler:
        """prometheus_client's handler: HTTP, with Basic auth when the URL had a user."""
        if self.credentials is None:
            return default_handler
        username, password = self.credentials

        def with_auth(
            url: str,
            method: str,
            timeout: float | None,
            headers: list[tuple[str, str]],
            data: bytes,
        ) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, username, password)

        return with_auth


def metric_counts(counts: Mapping[str, object]) -> dict[str, float]:
    """The counts that become ``ochinai_last_run_<name>`` gauges, by name."""
    return {
        name: float(value)
        for name, value in counts.items()
        if isinstance(name, str)
        and _COUNT_NAME.fullmatch(name)
        and name not in _RESERVED_COUNTS
        and isinstance(value, numbers.Real)
        and not isinstance(value, bool)
    }


def build_registry(
    *,
    outcome: str,
    exit_code: int,
    ended: datetime,
    duration_s: float,
    counts: Mapping[str, object],
    success: bool,
) -> CollectorRegistry:
    """A fresh registry holding one run's metrics, as ``push_run`` pushes them."""
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(f"{PREFIX}{name}", doc, registry=registry).set(value)

    gauge("last_run_timestamp_seconds", "When the last run ended, in Unix time.", ended.timestamp())
    gauge("last_run_duration_seconds", "How long the last run ran.", duration_s)
    gauge("last_run_exit_code", "The last run's exit code; 0 for a success.", exit_code)
    Gauge(
        f"{PREFIX}last_run_outcome",
        "1 for the last run's outcome; no series for any other outcome.",
        ["outcome"],
        registry=registry,
    ).labels(outcome=outcome).set(1)
    for name, value in sorted(metric_counts(counts).items()):
        gauge(f"last_run_{name}", f"The last run's count {name}.", value)
    if success:
        gauge(
            "last_success_timestamp_seconds",
            "When the last successful run ended, in Unix time.",
            ended.timestamp(),
        )
    return registry


def push_run(
    gateway: str,
    *,
    job: str,
    shard: int | None,
    outcome: str,
    exit_code: int,
    started: datetime,
    duration_s: float,
    counts: Mapping[str, object],
    success: bool,
    timeout: float = 5.0,
) -> bool:
    """Push one run's metrics to the Pushgateway at ``gateway``; whether it took them.

    ``gateway`` is ``http(s)://host:port`` (a path prefix kept, a ``user:password@``
    sent as Basic auth) or ``host:port`` (http). The group is ``job="ochinai-<job>"``
    and ``shard="<shard>"``, or ``shard="all"`` when ``shard`` is None. ``started``
    is when the run started (a naive datetime is read as UTC); the run ended
    ``duration_s`` later, and that end is the time of ``ochinai_last_run_timestamp_seconds``
    and, when ``success``, of ``ochinai_last_success_timestamp_seconds`` (as
    ``ochinai status`` judges a success by when it finished).

    The push is a POST (``pushadd_to_gateway``): it replaces, within the group, only
    the metrics of the names it pushes, each name whole. So a failed run, which
    pushes no ``ochinai_last_success_timestamp_seconds``, leaves the last success that
    an earlier run pushed as it was, and the alert on a stale success keeps counting
    from it; while ``ochinai_last_run_outcome`` is replaced whole, so the previous
    outcome's series is gone and only the current outcome is 1. (A PUT would replace
    the whole group and lose the last success at the first failure.) A count gauge
    that a run does not push keeps the value of the last run that did.

    The whole push, connection and answer, is given ``timeout`` seconds. Any failure
    (refused, unknown host, an HTTP error such as the Pushgateway's 400 for
    inconsistent metrics, no answer in time) logs one WARNING ``metrics not pushed``
    naming the gateway by its scheme://host:port only, and returns False: metrics
    never fail a run. Never raises (a BaseException such as StopNow passes).
    """
    try:
        target = _Gateway(gateway)
    except ValueError:
        error = "the gateway is not an http(s) URL with a host and a port"
        log.warning("metrics not pushed", extra={"gateway": "(not a URL)", "error": error})
        return False
    try:
        begun = started if started.tzinfo else started.replace(tzinfo=UTC)
        registry = build_registry(
            outcome=outcome,
            exit_code=exit_code,
            ended=begun + timedelta(seconds=duration_s),
            duration_s=duration_s,
            counts=counts,
            success=success,
        )
        _push(target, registry, job, shard, timeout)
    except Exception as exc:  # metrics never fail a run
        log.warning("metrics not pushed", extra={"gateway": target.origin, "error": _describe(exc)})
        return False
    return True


def _push(
    target: _Gateway, registry: CollectorRegistry, job: str, shard: int | None, timeout: float
) -> None:
    """POST ``registry`` to the group of ``job`` and ``shard``, given up after ``timeout``."""
    grouping = {"shard": "all" if shard is None else str(shard)}
    handler = target.handler()
    within(
        lambda: pushadd_to_gateway(
            target.url,
            job=f"ochinai-{job}",
            registry=registry,
            grouping_key=grouping,
            timeout=timeout,
            handler=handler,
        ),
        timeout,
        "metrics push",
    )


def _describe(exc: BaseException) -> str:
    """The error without the URL, whose path names the group: urllib's errors never show it."""
    if isinstance(exc, HTTPError):  # the Pushgateway's answer says why (400: inconsistent)
        try:
            body = " ".join(exc.read(_ERROR_BODY_LIMIT).decode("utf-8", "replace").split())
        except Exception:
            body = ""
        return f"HTTP {exc.code} {exc.reason}" + (f": {body}" if body else "")
    if isinstance(exc, URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason  # the socket's error (refused, unknown host, timed out)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
