"""The demo price and stock API that `make run-local` and docker/compose.yaml watch.

A small shop's catalogue as JSON at ``/api/items``, in the shape `ochinai monitor` reads by
default (``{"items": [{"id", "name", "price", "stock", "url"}]}``), answered the way a
polite client must be ready for:

- every answer carries an ``ETag`` and ``Last-Modified``; a request whose
  ``If-None-Match`` names the current catalogue gets ``304 Not Modified``;
- the catalogue moves one step each time a client that already has it asks again: a
  price cut, an item sold out, one restocked, a new one (see STEPS); after the last step
  it stays as it is, so the answers are 304 from then on;
- the first such request is answered ``429 Too Many Requests`` with ``Retry-After: 1``,
  once, as a rate-limited API would.

Standard library only, so that it runs in the job image as it is:
``python docker/demo_api.py --port 8080`` (``--host 0.0.0.0`` in a container).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/api/items"
BASE_URL = "https://shop.example.jp/items/"

# id: (name, price as the shop writes it, stock)
CATALOGUE: dict[str, tuple[str, Any, Any]] = {
    "4901234567894": ("緑茶 500ml 24本", 2480, 120),
    "4901234567900": ("ほうじ茶 2L 6本", "1,380", 35),
    "4901234567917": ("有機コーヒー豆 1kg", "¥3,980", 8),
    "4901234567924": ("抹茶ラテ スティック 30本", 1980, "in stock"),
    "4901234567931": ("麦茶 ティーバッグ 54袋", 498, 0),
    "4901234567948": ("ルイボスティー 100袋", "2,750", 14),
}

# Each step: id -> (price, stock) changed, or None for an item that is added.
Steps = list[dict[str, tuple[Any, Any]]]
STEPS: Steps = [
    {
        "4901234567917": ("¥3,480", 8),  # price cut by 12.6%
        "4901234567900": ("1,380", 0),  # sold out
        "4901234567931": (498, 40),  # restocked
    },
    {
        "4901234567894": (2280, 120),  # price cut
        "4901234567955": (1680, 60),  # new
    },
]
NEW_ITEMS = {"4901234567955": "ジャスミン茶 500ml 24本"}


def catalogue_at(step: int, steps: Steps = STEPS) -> dict[str, Any]:
    """The answer's body after ``step`` of ``steps`` (0: the first catalogue)."""
    items = {key: [name, price, stock] for key, (name, price, stock) in CATALOGUE.items()}
    for changes in steps[:step]:
        for key, (price, stock) in changes.items():
            name = items[key][0] if key in items else NEW_ITEMS[key]
            items[key] = [name, price, stock]
    return {
        "items": [
            {"id": key, "name": name, "price": price, "stock": stock, "url": BASE_URL + key}
            for key, (name, price, stock) in sorted(items.items())
        ]
    }


class Shop:
    """The catalogue's state between requests; ``steps`` other than STEPS for tests."""

    def __init__(self, steps: Steps = STEPS) -> None:
        self.steps = len(steps)
        self.step = 0
        self.limited = False  # the one 429 was sent
        self.requests = 0
        self._lock = threading.Lock()
        self._bodies = [_encoded(catalogue_at(n, steps)) for n in range(len(steps) + 1)]

    def answer(self, if_none_match: str | None) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for a GET of the catalogue."""
        with self._lock:
            self.requests += 1
            known = _tags(if_none_match) if if_none_match is not None else set()
            # A client that has the current catalogue: the shop moves on (after one 429).
            if _etag(self._bodies[self.step]) in known and self.step < self.steps:
                if not self.limited:
                    self.limited = True
                    return 429, {"Retry-After": "1"}, b'{"error": "rate limited"}'
                self.step += 1
            body = self._bodies[self.step]
            headers = {"ETag": _etag(body), "Last-Modified": _modified(self.step)}
            if headers["ETag"] in known:
                return 304, headers, b""
            return 200, {**headers, "Content-Type": "application/json; charset=utf-8"}, body


def _encoded(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, indent=1).encode()


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def _modified(step: int) -> str:
    return formatdate(1_764_547_200 + step * 900, usegmt=True)  # 2025-12-01 00:00 UTC on


def make_server(
    host: str = "127.0.0.1", port: int = 0, quiet: bool = False, steps: Steps = STEPS
) -> ThreadingHTTPServer:
    """The server (not yet serving): ``server.serve_forever()``; its port in server_port.

    ``quiet``: no access log on stderr; ``steps``: the catalogue's moves (STEPS).
    """
    shop = Shop(steps)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                self._send(200, {"Content-Type": "text/plain"}, b"ok\n")
            elif self.path.split("?")[0] != PATH:
                self._send(404, {"Content-Type": "text/plain"}, b"not found\n")
            else:
                self._send(*shop.answer(self.headers.get("If-None-Match")))

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                super().log_message(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.shop = shop  # type: ignore[attr-defined]
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port)
    print(f"demo price API at http://{args.host}:{server.server_port}{PATH}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
