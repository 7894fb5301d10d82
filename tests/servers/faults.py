"""A fault-injecting HTTP proxy for S3 servers: loopback only, seeded, bounded.

It forwards each request to the real server (SeaweedFS or moto) unless a rule says
otherwise. Rules name an S3 operation (``PutObject``, ``CreateMultipartUpload``, ...)
and optionally a key pattern, and do one of:

- ``500`` / ``503``: answer InternalError / SlowDown without forwarding;
- ``reset``: close the connection with a TCP reset, without forwarding;
- ``hold``: forward, then hold the answer for ``seconds`` (past the client's timeout);
- ``gate``: hold the request before forwarding until ``release()`` (a test sends a
  signal meanwhile; ``held`` is set while a request waits);
- ``drop_answer``: forward, so the server applies the write, then reset the
  connection instead of answering: the client sees an error for a write that happened;
- ``drop_header``: forward without the named request header (a server that ignores it);
  given ``credentials``, the request is signed again without it (SigV4), for a server
  that checks signatures (SeaweedFS; moto does not).

``chaos()`` adds a seeded random schedule on top, bounded in count. Every request is
recorded in ``log`` with the fault it got.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import io
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

FAULTS = ("500", "503", "reset", "hold", "gate", "drop_answer", "drop_header")
WRITES = ("PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload")


@dataclass
class Rule:
    """Give ``fault`` to matching requests: after ``skip`` of them, the next ``times``."""

    fault: str
    op: str | None = None  # an S3 operation name, None for any
    key: str | None = None  # a regex searched in the object key
    times: int = 1
    skip: int = 0
    seconds: float = 0.0  # for hold
    header: str = ""  # for drop_header
    seen: int = 0
    given: int = 0

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}")

    def take(self, op: str, key: str) -> bool:
        """Whether this request gets the fault (counts the match either way)."""
        if self.op is not None and self.op != op:
            return False
        if self.key is not None and not re.search(self.key, key):
            return False
        self.seen += 1
        if self.seen <= self.skip or self.given >= self.times:
            return False
        self.given += 1
        return True


@dataclass(frozen=True)
class Seen:
    """One request as the proxy saw it, and the fault it got (``""`` for none)."""

    op: str
    key: str
    fault: str


def s3_operation(method: str, path: str, query: str, headers: Any) -> tuple[str, str]:
    """(operation, key) of a path-style S3 request: ``PUT /bucket/a/b`` is PutObject of a/b."""
    parts = urllib.parse.unquote(path).lstrip("/").split("/", 1)
    key = parts[1] if len(parts) > 1 else ""
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    if not key:
        if method == "GET" and "uploads" in params:
            return "ListMultipartUploads", key
        return {"GET": "ListObjects", "PUT": "CreateBucket", "HEAD": "HeadBucket"}.get(
            method, f"{method}Bucket"
        ), key
    if method == "PUT":
        if "partNumber" in params:
            return "UploadPart", key
        return ("CopyObject" if headers.get("x-amz-copy-source") else "PutObject"), key
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload", key
        if "uploadId" in params:
            return "CompleteMultipartUpload", key
    if method == "DELETE":
        return ("AbortMultipartUpload" if "uploadId" in params else "DeleteObject"), key
    return {"GET": "GetObject", "HEAD": "HeadObject"}.get(method, method), key


@dataclass
class FaultProxy:
    """The proxy; ``start()`` returns its endpoint URL."""

    target: str
    seed: int = 0
    rules: list[Rule] = field(default_factory=list)
    log: list[Seen] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    endpoint: str = ""
    # (access key, secret key): what drop_header changed is signed again with them.
    credentials: tuple[str, str] | None = None
    _gate: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _chaos: tuple[float, tuple[str, ...], int, int] | None = None
    _rng: random.Random = field(init=False)
    _server: http.server.ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        parts = urllib.parse.urlsplit(self.target)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        if self._host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fault proxy forwards to loopback servers only")

    def add(self, fault: str, op: str | None = None, **options: Any) -> Rule:
        """Add a rule; the first matching rule with faults left decides a request."""
        rule = Rule(fault, op, **options)
        with self._lock:
            self.rules.append(rule)
        return rule

    def chaos(self, rate: float, faults: tuple[str, ...], limit: int, after: int = 0) -> None:
        """Give a seeded random ``rate`` of requests one of ``faults``, ``limit`` at most.

        ``after``: the first ``after`` requests pass (with rate 1: an outage from there).
        """
        self._chaos = (rate, faults, limit, after)

    def release(self) -> None:
        """Let gated requests go on (and every later one)."""
        self._gate.set()

    def injected(self) -> dict[str, int]:
        """How many requests got each fault."""
        counts: dict[str, int] = {}
        for seen in self.log:
            if seen.fault:
                counts[seen.fault] = counts.get(seen.fault, 0) + 1
        return counts

    def _decide(self, op: str, key: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.take(op, key):
                    return rule
            if self._chaos is not None and op not in ("CreateBucket", "ListMultipartUploads"):
                rate, faults, limit, after = self._chaos
                given = sum(1 for s in self.log if s.fault)
                if len(self.log) >= after and given < limit and self._rng.random() < rate:
                    return Rule(self._rng.choice(faults), seconds=1.5)
        return None

    # --- serving -----------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free loopback port in a daemon thread; return the proxy's URL."""
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # so that `Expect: 100-continue` is answered

            def handle_one(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: ``FaultProxy.log`` is the record."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.endpoint

    def stop(self) -> None:
        """Release what is held, stop serving and close the listening socket."""
        self._gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        path, _, query = req.path.partition("?")
        op, key = s3_operation(req.command, path, query, req.headers)
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else None
        rule = self._decide(op, key)
        fault = rule.fault if rule else ""
        with self._lock:
            self.log.append(Seen(op, key, fault))
        if fault in ("500", "503"):
            code, status = ("InternalError", 500) if fault == "500" else ("SlowDown", 503)
            self._answer(req, status, _error_xml(code), {"Content-Type": "application/xml"})
            return
        if fault == "reset":
            _reset(req)
            return
        if fault == "gate":
            self.held.set()
            self._gate.wait(60)
        drop = {"host", "connection"} if fault != "drop_header" else {"connection"}
        headers = {k: v for k, v in req.headers.items() if k.lower() not in drop}
        if fault == "drop_header" and rule is not None:
            headers = {k: v for k, v in headers.items() if k.lower() != rule.header.lower()}
        # Keep Host as the client sent it: SigV4 signs it.
        headers["Host"] = req.headers.get("Host", f"{self._host}:{self._port}")
        if fault == "drop_header" and self.credentials and req.headers.get("Authorization"):
            headers = _signed(req.command, req.path, headers, body, self.credentials)
        conn = http.client.HTTPConnection(self._host, self._port, timeout=30)
        try:
            conn.request(req.command, req.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if fault == "drop_answer":
            _reset(req)
            return
        if fault == "hold" and rule is not None:
            time.sleep(rule.seconds)
        skip = {"transfer-encoding", "connection", "server", "date", "content-length"}
        out = {name: value for name, value in resp.getheaders() if name.lower() not in skip}
        # HEAD answers carry the object's length but no body.
        out["Content-Length"] = resp.getheader("Content-Length") or str(len(data))
        # The client may have given up waiting (hold): the write happened all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer(req, resp.status, b"" if req.command == "HEAD" else data, out)

    @staticmethod
    def _answer(
        req: http.server.BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]
    ) -> None:
        req.send_response(status)
        for name, value in headers.items():
            req.send_header(name, value)
        if "Content-Length" not in headers:
            req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if data:
            req.wfile.write(data)


def _error_xml(code: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by the test proxy</Message></Error>"
    ).encode()


def _signed(
    method: str, path: str, headers: dict[str, str], body: bytes | None, keys: tuple[str, str]
) -> dict[str, str]:
    """``headers`` signed again (S3 SigV4, in the region the client signed for), as a
    client that never sent what the proxy dropped would have signed them."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    scope = re.search(r"Credential=[^/]+/\d+/([^/]+)/", headers.get("Authorization", ""))
    request = AWSRequest(
        method=method, url=f"http://{headers['Host']}{path}", headers=headers, data=body or b""
    )
    S3SigV4Auth(Credentials(*keys), "s3", scope.group(1) if scope else "us-east-1").add_auth(
        request
    )
    return dict(request.headers.items())


def _reset(req: http.server.BaseHTTPRequestHandler) -> None:
    """Close the client's connection with a TCP RST (SO_LINGER 0), answering nothing."""
    sock: socket.socket = req.connection
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    req.close_connection = True
    sock.close()
    req.wfile = io.BytesIO()  # the handler's own flush must not write to the closed socket
