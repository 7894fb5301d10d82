"""Measure the monitor job: 100k items against a 100k-item state with 1% changed.

The job (`python -m ochinai monitor`, its state in a local SeaweedFS, the API a local
HTTP server) against the floor: a bare script that GETs the same body, `json.loads`
it and diffs it as a dict against the previous items. Each is its own process: wall
time around it, peak RSS of that process alone (see report_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from report_bench import OUT, ROOT, Run, job_env, measure  # noqa: E402

sys.path.insert(0, str(ROOT))  # for tests.servers
ITEMS = 100_000
CHANGED_EVERY = 100  # 1%
BUCKET = "monitor-bench"
TARGETS = {"wall_s": 2.0, "rss_mb": 300.0, "floor_ratio": 3.0}


def items(changed: bool) -> bytes:
    """The API's answer: ITEMS items; with ``changed``, every 100th price is 10 yen up."""
    rows = []
    for n in range(ITEMS):
        price = 1000 + n % 5000 + (10 if changed and n % CHANGED_EVERY == 0 else 0)
        rows.append(
            {
                "id": f"sku-{n:06d}",
                "name": f"商品 {n:06d}",
                "price": f"{price:,}",
                "stock": n % 7,
                "url": f"https://shop.example/p/{n:06d}",
            }
        )
    return json.dumps({"items": rows}, ensure_ascii=False).encode()


# --- children ------------------------------------------------------------------------------


def floor(url: str, previous: str) -> dict[str, Any]:
    """The least a monitor does: GET, json.loads, and a dict diff against the last items."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as answer:
        body = answer.read()
    before = json.loads(Path(previous).read_text(encoding="utf-8"))
    start = time.perf_counter()
    now = {i["id"]: (i["price"], i["stock"]) for i in json.loads(body)["items"]}
    changed = [k for k, v in now.items() if before.get(k) != list(v)]
    gone = [k for k in before if k not in now]
    loads_diff = time.perf_counter() - start
    return {"changed": len(changed), "gone": len(gone), "loads_diff_s": round(loads_diff, 3)}


def make_bucket(endpoint: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)


def child(mode: str, args: list[str]) -> None:
    start = time.perf_counter()
    result = {
        "floor": lambda: floor(args[0], args[1]),
        "bucket": lambda: make_bucket(args[0]),
    }[mode]()
    if result is not None:
        print(json.dumps({**result, "seconds": round(time.perf_counter() - start, 2)}))


# --- the parent: standard library only -----------------------------------------------------


def serve(pages: dict[str, bytes]) -> ThreadingHTTPServer:
    """The API on a free loopback port: each path its body, with an ETag."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = pages.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("ETag", f'"{self.path.strip("/")}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="measured runs of each variant")
    args = parser.parse_args(argv)
    from tests.servers.s3 import WeedMini

    OUT.mkdir(parents=True, exist_ok=True)
    before, after = items(changed=False), items(changed=True)
    previous = OUT / "monitor_previous_items.json"
    previous.write_text(
        json.dumps({i["id"]: [i["price"], i["stock"]] for i in json.loads(before)["items"]}),
        encoding="utf-8",
    )
    server = serve({"/items-a": before, "/items-b": after})
    api = f"http://127.0.0.1:{server.server_address[1]}"
    shutil.rmtree(OUT / "weed-monitor", ignore_errors=True)  # a fresh bucket every time
    weed = WeedMini(OUT / "weed-monitor")
    started = time.perf_counter()
    runs: list[Run] = []
    try:
        env = job_env(weed.start())
        env.update(OCHINAI_STORE=f"s3://{BUCKET}", OCHINAI_MONITOR_MIN_INTERVAL="0")
        py = [sys.executable, __file__, "--child"]
        subprocess.run([*py, "bucket", env["AWS_ENDPOINT_URL"]], env=env, check=True)
        job = [sys.executable, "-m", "ochinai", "monitor", "--url"]
        for n in range(args.rounds):
            # Each round: a baseline from /items-a (not timed), then /items-b, 1% changed.
            env["OCHINAI_MONITOR_PREFIX"] = f"round-{n}/"
            baseline = subprocess.run([*job, f"{api}/items-a"], env=env, capture_output=True)
            assert baseline.returncode == 0, baseline.stdout[-2000:]
            runs.append(measure("100k", "monitor job, 1% changed", [*job, f"{api}/items-b"], env))
            bare = [*py, "floor", f"{api}/items-b", str(previous)]
            runs.append(measure("100k", "floor", bare, env))
    finally:
        weed.stop()
        server.shutdown()
        shutil.rmtree(OUT / "weed-monitor", ignore_errors=True)
    report = render(runs, time.perf_counter() - started)
    (OUT / "monitor_bench.md").write_text(report, encoding="utf-8")
    print("\n" + report)
    return 0


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def render(runs: list[Run], seconds: float) -> str:
    job = [r for r in runs if r.variant.startswith("monitor")]
    base = [r for r in runs if r.variant == "floor"]
    wall, rss = median([r.wall for r in job]), max(r.rss_mb for r in job)
    floor_wall = median([r.wall for r in base])
    ratio = wall / floor_wall
    summary = json.loads(job[-1].last_line) if job[-1].last_line.startswith("{") else {}
    counts = {k: summary.get(k) for k in ("outcome", "items", "price_changed", "requests")}
    # Inside the processes: the run from its start to its summary (no imports), and
    # json.loads of the body plus the dict diff alone (no GET, no interpreter start).
    inside = median([float(json.loads(r.last_line).get("duration_s", "nan")) for r in job])
    bare = median([float(json.loads(r.last_line)["loads_diff_s"]) for r in base])
    lines = [
        f"Monitor benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}",
        "",
        "| variant | wall s (median) | peak RSS MB (max) | rounds | status |",
        "|---|---:|---:|---:|---|",
        f"| monitor job, 100k items, 1% changed | {wall:.2f} | {rss:.0f} | {len(job)} | "
        f"{', '.join(sorted({r.status for r in job}))} |",
        f"| floor: GET + json.loads + dict diff | {floor_wall:.2f} | "
        f"{max(r.rss_mb for r in base):.0f} | {len(base)} | "
        f"{', '.join(sorted({r.status for r in base}))} |",
        "",
        "Targets:",
        "",
        f"- {'PASS' if wall < TARGETS['wall_s'] else 'FAIL'}: wall time under 2 s ({wall:.2f} s)",
        f"- {'PASS' if rss < TARGETS['rss_mb'] else 'FAIL'}: peak RSS under 300 MB ({rss:.0f} MB)",
        f"- {'PASS' if ratio <= TARGETS['floor_ratio'] else 'FAIL'}: at most 3x the floor "
        f"({ratio:.2f}x)",
        "",
        f"Inside the processes: the run (summary `duration_s`, no imports) {inside:.2f} s; "
        f"`json.loads` of the body and the dict diff alone {bare:.2f} s ({inside / bare:.1f}x).",
        "",
        f"Job summary: `{json.dumps(counts, ensure_ascii=False)}`",
        "",
        f"Whole benchmark: {seconds:.0f} s",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
