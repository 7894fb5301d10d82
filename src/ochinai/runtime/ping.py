"""Check-ins to an outside dead-man's switch (the Healthchecks.io pinging protocol).

A run says that it started (``<url>/start``), that it ended well (``<url>``), that it
failed (``<url>/fail``) or something worth keeping (``<url>/log``), each time with
``?rid=<uuid>`` so that the service pairs a start with its end and measures the run.
The service raises the alarm when no success arrives in time, which covers what no
notice of ours can: a run that never started, or was killed before it could say so.

The URL is a credential (the check's UUID, or a ping key, sits in its path): it is
never logged nor put in a message; a failed check-in names only ``scheme://host``.
A check-in is best effort: it never raises, it is bounded in time, and a failure is
a WARNING and a count (``failed``), never a reason for the run itself to fail.

The caller does not ping in a dry run: ``HttpClient(dry_run=True)`` refuses a POST,
so a dry run's check-ins would all fail (and be counted as failed).
"""

from __future__ import annotations

import logging
import threading
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ochinai.runtime.cancel import cancellation
from ochinai.runtime.errors import OchinaiError
from ochinai.runtime.http import HttpClient
from ochinai.runtime.retry import RetryPolicy

log = logging.getLogger("ochinai.ping")

# Healthchecks.io keeps the first 100 kB (100,000 bytes) of a ping's body.
BODY_LIMIT = 100_000
CUT_MARK = "…(cut)"
# The namespace of run ids turned into UUIDs (``rid``): fixed, so a run id always gives
# the same rid, and a start and its end pair up even when sent by two processes.
RID_NAMESPACE = uuid.UUID("4a2e4dd4-a689-46cb-ab1f-638ff299bfba")
# Under this many seconds before the pod is killed, a stopped run sends no check-in.
MIN_TIME_LEFT = 1.0
# Answers that are not retried: redirects (never followed) and any 4xx but 408 and 429.
# Anything else that is not 2xx (408, 429, 5xx) is retried by the client's policy.
_NOT_RETRIED = frozenset(s for s in range(300, 500) if s not in (408, 429))
_HINTS = {
    400: "the service refused the request",
    401: "not allowed; check OCHINAI_PING_URL",
    403: "not allowed; check OCHINAI_PING_URL",
    404: "no such check (deleted?); create it or fix OCHINAI_PING_URL",
    409: "the check's slug is not unique; use the check's UUID URL in OCHINAI_PING_URL",
}


def run_uuid(run_id: str) -> str:
    """The ``rid`` of a run: a UUID (which Healthchecks requires) derived from its id."""
    return str(uuid.uuid5(RID_NAMESPACE, run_id))


def cut_body(text: str, limit: int = BODY_LIMIT) -> bytes:
    """``text`` as UTF-8, at most ``limit`` bytes, ending with "…(cut)" when cut.

    The cut never splits a character: the body stays valid UTF-8.
    """
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data
    mark = CUT_MARK.encode()
    # Only the last character can be cut in two: "ignore" drops its leading bytes.
    kept = data[: max(0, limit - len(mark))].decode("utf-8", "ignore").encode()
    return (kept + mark)[:limit]


class Pinger:
    """Check-ins of one run to OCHINAI_PING_URL (Healthchecks.io's pinging protocol).

    ``url`` is the check's ping URL (``https://hc-ping.com/<uuid>`` or
    ``.../<ping-key>/<slug>``); None or empty: not configured, every method does
    nothing and returns True. Each method POSTs once the run is at that point and
    returns whether the service took it (a 2xx); it never raises. A failure (any
    non-2xx, a redirect, which is never followed, a timeout, a refused connection)
    is logged as a WARNING "check-in not delivered" naming only the URL's scheme and
    host, counted in ``failed`` and returned as False.

    Bounded: at most ``tries`` attempts, each with a (connect, read) timeout of
    ``timeout`` seconds, with backoff of at most 2 s between them; only transient
    answers (408, 429, 5xx, timeouts, resets) are retried. Once the run was asked to
    stop (``cancellation.time_left()`` is not None), the whole check-in fits in the
    time left before the pod is killed: a shorter timeout and fewer tries, or none at
    all (a warning, counted as failed) under a second.

    Call it outside the job's ``cancellation.armed()`` block: within it, a stopped
    run's check-in is refused by the client's own stop check (and counted as failed).
    """

    def __init__(
        self,
        url: str | None,
        run_id: str,
        http: HttpClient,
        *,
        timeout: float = 5.0,
        tries: int = 3,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be more than 0")
        if tries < 1:
            raise ValueError("tries must be at least 1")
        self._url = url or ""
        self.configured = bool(self._url)
        self.rid = run_uuid(run_id)
        self.failed = 0
        self.timeout = timeout
        self.tries = tries
        self._http = http
        self._lock = threading.Lock()
        try:
            parts = urlsplit(self._url)
            host = parts.hostname or ""
        except ValueError:  # a malformed URL ("http://[x"): still never echoed
            parts, host = urlsplit(""), ""
        self._valid = parts.scheme in ("http", "https") and bool(host)
        # Scheme and host only: the rest of the URL is the check's credential.
        self.where = f"check-in {parts.scheme}://{host}" if self._valid else "check-in"
        # What a message must never show: the URL and the parts of it that identify the
        # check; the longest first, so that a part never leaves the rest of a whole.
        secrets = {self._url, parts.path, parts.query, parts.path.strip("/")}
        secrets |= {seg for seg in parts.path.split("/") if len(seg) >= 6}
        secrets |= {v for _, v in parse_qsl(parts.query, keep_blank_values=True) if len(v) >= 6}
        self._secrets = sorted((s for s in secrets if len(s) > 1), key=len, reverse=True)

    # --- the four check-ins ----------------------------------------------------

    def start(self) -> bool:
        """The run started: POST ``<url>/start?rid=<rid>``, no body."""
        return self._ping("start", "/start", b"")

    def success(self, summary: str) -> bool:
        """The run ended well: POST ``<url>?rid=<rid>``, the summary line as the body."""
        return self._ping("success", "", cut_body(summary))

    def fail(self, errors: str) -> bool:
        """The run failed: POST ``<url>/fail?rid=<rid>``, the errors as the body."""
        return self._ping("fail", "/fail", cut_body(errors))

    def log(self, text: str) -> bool:
        """Something to keep, no change of state (a run skipped because another holds
        the lock): POST ``<url>/log?rid=<rid>``, ``text`` as the body."""
        return self._ping("log", "/log", cut_body(text))

    # --- how ---------------------------------------------------------------------

    def url_for(self, suffix: str) -> str:
        """The URL of a check-in: ``suffix`` after the path, any query kept, ``rid`` set."""
        parts = urlsplit(self._url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "rid"]
        query.append(("rid", self.rid))
        path = parts.path.rstrip("/") + suffix
        return urlunsplit(parts._replace(path=path, query=urlencode(query), fragment=""))

    def _ping(self, kind: str, suffix: str, body: bytes) -> bool:
        if not self.configured:
            return True
        try:
            why = self._send(kind, suffix, body)
        except Exception as exc:  # a check-in never fails the run
            why = str(exc) if isinstance(exc, OchinaiError) else f"{type(exc).__name__}: {exc}"
            why = why.removeprefix(f"{self.where}: ")
        if why is None:
            log.info("check-in delivered", extra={"ping": kind, "target": self.where, "ok": True})
            return True
        with self._lock:
            self.failed += 1
        error = f"{self.where}: {self._scrub(why)}"
        log.warning(
            "check-in not delivered",
            extra={"ping": kind, "target": self.where, "ok": False, "error": error},
        )
        return False

    def _send(self, kind: str, suffix: str, body: bytes) -> str | None:
        """Send one check-in; None once delivered, else why not (to be scrubbed)."""
        if not self._valid:
            return "OCHINAI_PING_URL is not an http(s) URL; copy the check's ping URL"
        timeout, tries, deadline = self.timeout, self.tries, None
        left = cancellation.time_left()
        if left is not None:  # stopped: the pod is killed in ``left`` seconds
            if left < MIN_TIME_LEFT:
                return (
                    f"skipped: the run was stopped and {left:.1f}s are left "
                    "before the pod is killed"
                )
            # An attempt takes up to connect + read timeouts: 2 * timeout.
            timeout = min(timeout, left / 2)
            tries = max(1, min(tries, int(left // (2 * timeout))))
            deadline = max(0.0, left - 2 * timeout)  # no attempt starts after this
        policy = RetryPolicy(
            base=0.5, cap=2.0, max_tries=tries, retry_after_cap=2.0, deadline=deadline
        )
        client = self._http.with_options(timeout=(timeout, timeout), policy=policy)
        response = client.request(
            "POST",
            self.url_for(suffix),
            headers={"Content-Type": "text/plain; charset=utf-8"},
            data=body,
            where=self.where,
            retry=True,  # the policy retries transient failures only
            allow_redirects=False,  # a redirect would lead the credential elsewhere
            accept=_NOT_RETRIED,
        )
        status = response.status
        if 200 <= status < 300:
            return None
        if 300 <= status < 400:
            hint = "a redirect, not followed; set OCHINAI_PING_URL to the check's own URL"
        else:
            hint = _HINTS.get(status, "")
        reply = " ".join(response.text[:200].split())
        detail = "; ".join(s for s in (hint, reply and f"the service said: {reply}") if s)
        return f"HTTP {status}" + (f" ({detail})" if detail else "")

    def _scrub(self, text: str) -> str:
        """``text`` without the URL or the parts of it that identify the check."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
