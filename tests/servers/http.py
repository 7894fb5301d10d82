"""Local HTTP servers: a webhook that records POSTs, and an API that serves GETs as told."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TOKEN = "T0AAAAAAA/B0BBBBBBB/SeCrEtToKeN0123456789"


@dataclass
class Hook:
    """A local webhook: what it answers and what it received."""

    port: int
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    block: threading.Event | None = None
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # each request's method and path

    @property
    def url(self) -> str:
        """The hook's URL, with a Slack-like token in its path."""
        return f"http://127.0.0.1:{self.port}/services/{TOKEN}"


class HookHandler(BaseHTTPRequestHandler):
    """Record each POST and answer with the Hook's status, headers and body."""

    server: HookServer

    def do_POST(self) -> None:
        """Answer the POST, or hang until released when the hook is blocked."""
        hook = self.server.hook
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        hook.received.append((dict(self.headers.items()), body))
        hook.paths.append(f"{self.command} {self.path}")
        if hook.block is not None:
            hook.block.wait(10)
            return
        self.send_response(hook.status)
        for name, value in hook.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(hook.body)))
        self.end_headers()
        self.wfile.write(hook.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class HookServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that carries its Hook."""

    hook: Hook


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """Serve in a thread until the block ends, then stop and close the listening socket."""
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def hook_server(tls: ssl.SSLContext | None = None) -> Iterator[Hook]:
    """A webhook on a free loopback port (over HTTPS with ``tls``) while the block runs."""
    server = HookServer(("127.0.0.1", 0), HookHandler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.hook = Hook(port=server.server_address[1])
    with serving(server):
        yield server.hook
        if server.hook.block is not None:
            server.hook.block.set()


@pytest.fixture
def hook() -> Iterator[Hook]:
    """Serve a webhook on a free loopback port for one test."""
    with hook_server() as served:
        yield served


# --- an API that serves GETs as told ------------------------------------------------


@dataclass
class Answer:
    """One scripted answer: status, headers, body, and how slowly to send it."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    chunked: bool = False  # no Content-Length: the body goes in chunks
    drip: float = 0.0  # seconds between two bytes of the body
    cut_after: int | None = None  # bytes of the body sent before the connection closes


@dataclass
class Page:
    """What a path serves once its scripted answers are used up; conditional GET applies."""

    body: bytes
    etag: str | None = None
    last_modified: str | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class Hit:
    """One request as the server saw it."""

    start: float  # time.monotonic() when the request line arrived
    method: str
    path: str
    headers: dict[str, str]
    status: int


@dataclass
class Api:
    """The API's pages, the answers scripted before them, and every request it got."""

    port: int
    pages: dict[str, Page] = field(default_factory=dict)
    script: dict[str, list[Answer]] = field(default_factory=dict)
    host: str = "127.0.0.1"
    hits: list[Hit] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/") -> str:
        """The URL of ``path`` on this server."""
        return f"http://{self.host}:{self.port}{path}"

    def then(self, path: str, *answers: Answer) -> None:
        """Answer the next requests of ``path`` with ``answers``, in order, before its page."""
        self.script.setdefault(path, []).extend(answers)

    def answer_for(self, path: str, headers: dict[str, str]) -> Answer:
        with self._lock:
            queued = self.script.get(path)
            if queued:
                return queued.pop(0)
        page = self.pages.get(path)
        if page is None:
            return Answer(404, b'{"error": "not found"}')
        validators = {"ETag": page.etag, "Last-Modified": page.last_modified}
        sent = {k: v for k, v in validators.items() if v is not None}
        if (page.etag and headers.get("If-None-Match") == page.etag) or (
            page.last_modified and headers.get("If-Modified-Since") == page.last_modified
        ):
            return Answer(304, b"", sent)
        return Answer(200, page.body, {"Content-Type": page.content_type, **sent})


class ApiHandler(BaseHTTPRequestHandler):
    """Serve the Api's scripted answers and pages; record every request."""

    server: ApiServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Answer as the Api says, slowly or in chunks when told."""
        api = self.server.api
        start = time.monotonic()
        with api._lock:
            api.in_flight += 1
            api.most_in_flight = max(api.most_in_flight, api.in_flight)
        headers = dict(self.headers.items())
        answer = api.answer_for(self.path, headers)
        recorded = False
        try:
            if answer.delay:
                time.sleep(answer.delay)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if answer.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(answer.body)))
            # Recorded before the answer leaves: once the client has it, the record is there.
            recorded = self._record(start, headers, answer.status)
            self.end_headers()
            body = answer.body[: answer.cut_after]  # the declared length stays the whole's
            self.close_connection = answer.cut_after is not None
            if answer.drip:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(answer.drip)  # the slow server is the point
                return
            if not answer.chunked:
                self.wfile.write(body)
                return
            for i in range(0, len(body), 65536):
                piece = body[i : i + 65536]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            if answer.cut_after is None:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout or the size cap): that is the test
        finally:
            if not recorded:
                self._record(start, headers, answer.status)

    def _record(self, start: float, headers: dict[str, str], status: int) -> bool:
        api = self.server.api
        with api._lock:
            api.in_flight -= 1
            api.hits.append(Hit(start, "GET", self.path, headers, status))
        return True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet: ``Api.hits`` is the record."""


class ApiServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that carries its Api."""

    daemon_threads = True
    api: Api


@contextlib.contextmanager
def api_on(host: str = "127.0.0.1") -> Iterator[Api]:
    """Serve an Api on a free port of ``host`` (any of 127.0.0.0/8: another "host")."""
    server = ApiServer((host, 0), ApiHandler)
    server.api = Api(port=server.server_address[1], host=host)
    with serving(server):
        yield server.api


@pytest.fixture
def api_server() -> Iterator[Api]:
    """Serve an Api on a free loopback port for one test."""
    with api_on() as api:
        yield api
