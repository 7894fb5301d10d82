"""One HTTP client per run: timeouts, User-Agent, retries honouring Retry-After, pacing, a cap."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3

from ochinai import __version__
from ochinai.runtime.cancel import cancellation
from ochinai.runtime.egress import Egress, EgressRefused, session_for
from ochinai.runtime.errors import (
    DataError,
    OchinaiError,
    TransientError,
    classify_requests,
    http_status_error,
)
from ochinai.runtime.retry import RetryPolicy, parse_retry_after

log = logging.getLogger("ochinai.http")

USER_AGENT = f"ochinai/{__version__}"
DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds
DEFAULT_MAX_BYTES = 20 * 1000 * 1000
_CHUNK = 64 * 1024
_ERROR_BODY = 64 * 1024  # what is kept of a non-2xx answer: enough for its message
# Retried by default: a repeat has the same effect (RFC 9110 9.2.2). A POST is retried
# only when the caller says it may be.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})  # what a dry run may send
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
# Sent only to the origin they were meant for, whatever the caller marks besides.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``: what credentials are bound to, as browsers do."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def shown(url: str) -> str:
    """``url`` for a message: no userinfo, no query (either may hold a secret)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment=""))


@dataclass(frozen=True)
class HttpResponse:
    """An answer read whole (within the size cap)."""

    url: str
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    where: str  # how errors name the request (secrets already left out)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; a DataError naming the request when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise DataError(f"{self.where}: the answer is not valid JSON: {exc}") from None
        except RecursionError:  # the parser recurses once a level: [[[[... 100,000 deep
            raise DataError(f"{self.where}: the answer is JSON nested too deeply to read") from None


@dataclass
class HttpStats:
    """What the run's HTTP traffic cost, for a job's summary counts; shared by threads."""

    requests: int = 0
    retries: int = 0
    waited_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, requests: int = 0, retries: int = 0, waited_s: float = 0.0) -> None:
        """Count under the lock."""
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.waited_s = round(self.waited_s + waited_s, 3)


@dataclass
class _Hosts:
    """Per host: a lock (one request in flight) and when the last request started."""

    guard: threading.Lock = field(default_factory=threading.Lock)
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    last_start: dict[str, float] = field(default_factory=dict)

    def lock(self, host: str) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(host, threading.Lock())


class HttpClient:
    """``requests`` with every call bounded in time, size and tries, and one error mapping.

    Each attempt: wait for the host's minimum interval, send with (connect, read)
    timeouts, read the body in a stream up to ``max_bytes``. The read timeout bounds
    the whole answer, not only each wait for a byte: a server that drips its answer
    a byte at a time is a timeout too, never a run that hangs. A transient answer (408,
    409, 425, 429, 5xx, a timeout, a reset) is retried by ``policy``: capped exponential
    backoff with full jitter, or the server's Retry-After (seconds or HTTP-date) when
    it is within the policy's cap; longer, and the call gives up at once (exit 75).
    ``with_options`` derives a client with other limits that shares the session, the
    per-host pacing and the counts.
    """

    def __init__(
        self,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        policy: RetryPolicy | None = None,
        min_interval: float = 0.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        user_agent: str = USER_AGENT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = cancellation.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        dry_run: bool = False,
    ) -> None:
        self.session = session or requests.Session()
        # Redirects to another origin: refused, but to these hosts, where the credential
        # headers are dropped (``with_options``); the setting named in the refusal.
        self.allow_hosts: frozenset[str] = frozenset()
        self.allow_setting = ""
        self.secret_headers: frozenset[str] = CREDENTIAL_HEADERS
        self.timeout = timeout
        self.policy = policy or RetryPolicy(base=0.5, cap=30.0, max_tries=4)
        self.min_interval = min_interval
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self.clock, self.sleep, self.now = clock, sleep, now
        self.dry_run = dry_run
        self.stats = HttpStats()
        self._hosts = _Hosts()

    def with_options(
        self,
        *,
        timeout: tuple[float, float] | None = None,
        policy: RetryPolicy | None = None,
        min_interval: float | None = None,
        max_bytes: int | None = None,
        egress: Egress | None = None,
        allow_hosts: Collection[str] | None = None,
        allow_setting: str | None = None,
        secret_headers: Collection[str] = (),
    ) -> HttpClient:
        """A client with other limits on the same pacing and counts.

        ``egress`` checks every address it connects to (a session of its own);
        ``allow_hosts`` are the other hosts a redirect may lead to (named in a refusal
        as ``allow_setting``), where ``secret_headers`` and the credential headers are
        not sent.
        """
        other = HttpClient.__new__(HttpClient)
        other.__dict__.update(self.__dict__)
        if egress is not None:
            other.session = session_for(egress)
        if allow_hosts is not None:
            other.allow_hosts = frozenset(h.lower() for h in allow_hosts)
        if allow_setting is not None:
            other.allow_setting = allow_setting
        other.secret_headers = self.secret_headers | {h.lower() for h in secret_headers}
        if timeout is not None:
            other.timeout = timeout
        if policy is not None:
            other.policy = policy
        if min_interval is not None:
            other.min_interval = min_interval
        if max_bytes is not None:
            other.max_bytes = max_bytes
        return other

    def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        where: str | None = None,
        accept: Collection[int] = (),
    ) -> HttpResponse:
        """``request("GET", url, ...)``."""
        return self.request("GET", url, headers=headers, where=where, accept=accept)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        where: str | None = None,
        retry: bool | None = None,
        allow_redirects: bool = True,
        accept: Collection[int] = (),
        any_status: bool = False,
    ) -> HttpResponse:
        """Send until a 2xx answer (or a status in ``accept``) comes back, within the policy.

        ``where`` names the target in errors and logs (default: method and URL; pass it
        when the URL itself is a secret). ``retry`` defaults to retrying idempotent
        methods only; ``retry=False`` makes one attempt. ``any_status`` returns whatever
        status came back. A dry run sends GET, HEAD and OPTIONS only: anything else is a
        job that forgot to check ``ctx.dry_run``, an error.
        """
        where = where or f"{method} {url}"
        if self.dry_run and method not in SAFE:
            raise OchinaiError(f"{where}: a dry run sends nothing but GET, HEAD and OPTIONS")
        sent = {"User-Agent": self.user_agent, **(headers or {})}

        def attempt() -> HttpResponse:
            response = self._once(method, url, sent, data, where, allow_redirects)
            status = response.status
            if any_status or 200 <= status < 300 or status in accept:
                return response
            wait = parse_retry_after(response.headers.get("Retry-After"), self.now())
            raise http_status_error(status, where, wait)

        if not (method in IDEMPOTENT if retry is None else retry):
            return attempt()
        policy = dataclasses.replace(self.policy, sleep=self._backoff_sleep, clock=self.clock)
        return policy.call(attempt, where)

    def _backoff_sleep(self, seconds: float) -> None:
        self.stats.add(retries=1)
        self._wait(seconds)

    def _wait(self, seconds: float) -> None:
        self.stats.add(waited_s=seconds)
        self.sleep(seconds)

    def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        data: bytes | None,
        where: str,
        allow_redirects: bool,
    ) -> HttpResponse:
        """One attempt: the request, and the redirects it answers with, followed here.

        A redirect within the origin (scheme, host and port) is followed as it is. One
        to another origin is refused (DataError, nothing sent there) unless its host is
        in ``allow_hosts``: then it is followed without the credential headers, which
        stay with the origin they were set for.
        """
        current, sent = url, dict(headers)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._hop(method, current, sent, data, where)
            location = response.headers.get("Location")
            if not allow_redirects or response.status not in REDIRECTS or not location:
                return response
            target = urljoin(current, location)
            sent = self._redirected(where, current, target, sent)
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, data = ("HEAD" if method == "HEAD" else "GET"), None
            current = target
        raise DataError(
            f"{where}: too many redirects (a redirect loop?); the answer cannot be read"
        )

    def _redirected(
        self, where: str, current: str, target: str, headers: dict[str, str]
    ) -> dict[str, str]:
        """The headers to follow a redirect from ``current`` to ``target`` with."""
        if origin(target) == origin(current):
            return headers
        scheme, host, _ = origin(target)
        if scheme not in ("http", "https"):
            raise DataError(f"{where}: redirected to {shown(target)}, which is not http(s)")
        if host not in self.allow_hosts:
            hint = (
                f"; if it is the API's own, list {host} in {self.allow_setting}"
                if self.allow_setting
                else ""
            )
            raise DataError(
                f"{where}: redirected from {shown(current)} to {shown(target)}, another origin; "
                f"not followed, so that no credential goes there{hint}"
            )
        kept = {k: v for k, v in headers.items() if k.lower() not in self.secret_headers}
        if len(kept) != len(headers):
            log.info(
                "following a redirect to %s without the credential headers",
                shown(target),
                extra={"dropped": sorted(k for k in headers if k not in kept)},
            )
        return kept

    def _hop(
        self, method: str, url: str, headers: Mapping[str, str], data: bytes | None, where: str
    ) -> HttpResponse:
        host = (urlsplit(url).hostname or "").lower()
        cancellation.check()  # no request once the run is asked to stop
        with self._hosts.lock(host):  # never two requests in flight to one host
            last = self._hosts.last_start.get(host)
            if last is not None and self.min_interval > 0:
                gap = last + self.min_interval - self.clock()
                if gap > 0:
                    log.debug("waiting %.2fs before the next request to %s", gap, host)
                    self._wait(gap)
            started = self._hosts.last_start[host] = self.clock()
            self.stats.add(requests=1)
            try:
                with self.session.request(
                    method,
                    url,
                    headers=dict(headers),
                    data=data,
                    timeout=self.timeout,
                    stream=True,
                    allow_redirects=False,
                ) as response:
                    body = self._read(response, where, method, started + self.timeout[1])
            except EgressRefused as exc:
                raise EgressRefused(f"{where}: {shown(url)}: {exc}") from None
            except requests.RequestException as exc:
                # ``from None``: requests' own messages carry the URL, tokens included.
                raise classify_requests(exc, where) from None
        status = response.status_code
        return HttpResponse(url, status, response.headers, body, where)

    def _read(self, response: requests.Response, where: str, method: str, deadline: float) -> bytes:
        """The body, streamed; past ``max_bytes`` a DataError, and the rest is never read.

        A failed answer's body is only its message: the first 64 KiB are kept and the
        size cap does not apply, so an error page never turns a 503 into bad input.
        """
        if method == "HEAD" or response.status_code in (204, 304):
            return b""
        if not 200 <= response.status_code < 300:
            return next(self._chunks(response, where, deadline, _ERROR_BODY), b"")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(where, f"{int(declared):,} bytes declared")
        chunks: list[bytes] = []
        size = 0
        for chunk in self._chunks(response, where, deadline, _CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large(where, f"more than {self.max_bytes:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _chunks(
        self, response: requests.Response, where: str, deadline: float, most: int
    ) -> Iterator[bytes]:
        """The body as it arrives, ``most`` bytes at a time at most, until ``deadline``.

        ``read1`` returns what one read of the socket gives (``iter_content`` waits until
        a whole chunk is there, however slowly it comes); urllib3's errors become
        requests' own, as ``iter_content`` would raise them.
        """
        while True:
            try:
                chunk = response.raw.read1(most, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError as exc:
                raise requests.ConnectionError(exc) from None
            except urllib3.exceptions.ProtocolError as exc:
                raise requests.exceptions.ChunkedEncodingError(exc) from None
            except urllib3.exceptions.DecodeError as exc:
                raise requests.exceptions.ContentDecodingError(exc) from None
            if not chunk:
                return
            yield chunk
            if self.clock() > deadline:
                raise TransientError(
                    f"{where}: timed out: the answer took more than {self.timeout[1]:g}s "
                    "to arrive whole"
                )

    def _too_large(self, where: str, seen: str) -> DataError:
        return DataError(
            f"{where}: the answer is too large ({seen}; the limit is {self.max_bytes:,} bytes)"
        )

    def close(self) -> None:
        """Close the session's connections."""
        self.session.close()
