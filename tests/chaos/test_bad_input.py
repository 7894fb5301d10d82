"""Bad input for every job: generated CSVs, hostile SQLite files, hostile API answers.

Each input starts from a valid sample (docker/sample_data.py's shapes) and is damaged:
encodings and undecodable bytes, CR-only and mixed line ends, truncated lines, stray
quotes, NULs, wrong field counts, a field of megabytes, separators and full-width
digits in numbers, impossible dates; SQLite files cut short, random, text, with a
wrong page size; API answers that are not JSON, nested 100,000 deep, 100 MB long, of
the wrong types, dripped a byte at a time, or redirected in a circle. Whatever the
input, each run (in this process, against moto) must:

- exit 0 (a damaged input the job legitimately reads) or 65 (bad data), 75 for the
  network, never 70 or anything else;
- on 65, say where: the input's s3:// key or the URL, and the line or item where one
  applies, in the ERROR line and the run record;
- on a failure, write nothing but its bookkeeping (``_runs/``, ``_locks/``, ``_probe/``),
  and for the backup a manifest that names the failed source and lists no file of it.

Hypothesis draws the damage (``CHAOS_EXAMPLES`` inputs a test, seeded by ``CHAOS_SEED``)
and shrinks a failing input to the smallest that still fails.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from ochinai.runtime.storage import make_s3_client
from tests.chaos.conftest import Tally
from tests.conftest import aws_env
from tests.harness import Result, run_job

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "docker"))
import sample_data  # noqa: E402

pytestmark = pytest.mark.chaos

DAY = date(2026, 11, 28)
EXAMPLES = int(os.environ.get("CHAOS_EXAMPLES", "8"))
SEED = int(os.environ.get("CHAOS_SEED", "20261202"))
BOOKKEEPING = ("_runs/", "_locks/", "_probe/")
SALES = "in/sales.csv"
SOURCE = "data/source/"
MB = 1 << 20

CHAOS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    # ``tally`` is function-scoped but hands out the session's one Tally: nothing to reset.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# --- a bucket a run, in one moto for the module ---------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """An in-process S3 (moto) for the module; each input gets a bucket of its own."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as patch:
        aws_env(patch, "testing", "testing")
        with mock_aws():
            yield make_s3_client(max_attempts=1)


_buckets = itertools.count(1)
_made: list[Bucket] = []


@dataclass
class Bucket:
    """One input's bucket: what was put there, and how to run a job on it."""

    client: Any
    name: str
    inputs: set[str] = field(default_factory=set)

    @classmethod
    def new(cls, client: Any) -> Bucket:
        """A new bucket; the last input's is dropped (moto holds every object in memory)."""
        while _made:
            _made.pop().drop()
        bucket = cls(client, f"bad-{next(_buckets)}")
        client.create_bucket(Bucket=bucket.name)
        _made.append(bucket)
        return bucket

    def drop(self) -> None:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            for item in page.get("Contents", []):
                self.client.delete_object(Bucket=self.name, Key=item["Key"])
        self.client.delete_bucket(Bucket=self.name)

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body)
        self.inputs.add(key)

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def objects(self) -> dict[str, bytes]:
        """Every object but the inputs and the bookkeeping, by key."""
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key in self.inputs or key.startswith(BOOKKEEPING):
                    continue
                found[key] = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return found

    def record(self, job: str, run_id: str) -> dict[str, Any]:
        key = f"_runs/{job}/{DAY.isoformat()}/{run_id}.json"
        body = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        record: dict[str, Any] = json.loads(body)
        return record

    def run(self, job: str, run_id: str, **env: str) -> Result:
        full = {
            "OCHINAI_STORE": f"s3://{self.name}",
            "OCHINAI_LOCK": "s3",
            "OCHINAI_RUN_ID": run_id,
            **env,
        }
        return run_job(job, "--date", DAY.isoformat(), env=full)


@dataclass
class Checked:
    """What one run of a job on one input did, and what was wrong with it."""

    code: int
    message: str  # the error the run record keeps ("" on success)
    problems: list[str]


def check_run(
    bucket: Bucket,
    job: str,
    label: str,
    places: tuple[str, ...],
    allowed: tuple[int, ...] = (0, 65),
    written: Callable[[dict[str, bytes]], list[str]] | None = None,
    **env: str,
) -> Checked:
    """Run ``job`` once and check the invariants; ``places``: what a 65 must name."""
    before = bucket.objects()
    run_id = f"{job}-{next(_buckets)}"
    problems = []
    try:
        result = bucket.run(job, run_id, **env)
        summary = result.summary
    except Exception as exc:  # a stdout line that is not JSON, or not one summary line
        return Checked(-1, "", [f"{label}: not JSON lines with one summary line: {exc!r}"])
    code = result.code
    if code not in allowed:
        problems.append(f"{label}: exit {code} ({summary.get('outcome')}), not one of {allowed}")
    message = ""
    if code != 0:
        message = str(bucket.record(job, run_id).get("error", {}).get("message", ""))
        errors = [line["message"] for line in result.lines if line.get("severity") == "ERROR"]
        for place in places:
            if place not in message:
                problems.append(f"{label}: exit {code}, the error does not name {place}: {message}")
            if not any(place in line for line in errors):
                problems.append(f"{label}: exit {code}, no ERROR line names {place}")
        after = bucket.objects()
        extra = [key for key in after if before.get(key) != after[key]]
        left = written(after) if written is not None else extra
        problems += [f"{label}: exit {code} but wrote {key}" for key in left]
    return Checked(code, message, problems)


def count(tally: Tally, job: str, problems: list[str]) -> list[str]:
    """One input tried, and its problems, in the session's table."""
    tally.add(job, bad_inputs=1, violations=len(problems))
    return problems


# --- damaged CSVs ------------------------------------------------------------------------


def sample_rows() -> list[list[str]]:
    """Two days of the sample sales, with a memo column that holds Japanese text."""
    text = sample_data.sample_sales(DAY, days=2).decode()
    rows = [line.split(",") for line in text.splitlines()][:120]
    memos = ["セール", "", "渋谷店 限定", "a b", "ＤＭ不要"]
    rows[0].append("memo")
    for n, row in enumerate(rows[1:]):
        row.append(memos[n % len(memos)])
    return rows


ROWS = sample_rows()
ENCODINGS = ["utf-8", "utf-8-sig", "cp932", "utf-16", "utf-16-le", "latin-1", "euc-jp"]
NUMBERS = ["{:,}", '"{:,}"', "{:_}", "{}.00", " {} ", "¥{}", "+{}", "{}e0"]
DATES = ["2026-02-30", "2026-13-01", "2026-11-31", "0000-00-00", "2026/2/29", "2026-11-28T00"]


def _full_width(text: str) -> str:
    return text.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})


@dataclass
class Csv:
    """A damaged CSV: its bytes and what was done to it."""

    body: bytes
    damage: list[str]
    # Per job, the line a run must fail at: the one damage, when nothing else can fail first.
    fails_at: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return f"Csv({len(self.body):,} bytes, damage={self.damage})"


@st.composite
def damaged_csv(
    draw: st.DrawFn, kinds: tuple[str, ...] = (), most: int = 4, byte_damage: bool = True
) -> Csv:
    """The sample, damaged one to ``most`` times; text first, then bytes."""
    rows = [list(row) for row in ROWS]
    damage: list[str] = []
    done: list[tuple[str, int]] = []
    line = st.integers(1, len(rows) - 1)
    for kind in draw(st.lists(st.sampled_from(kinds or TEXT_DAMAGE), min_size=1, max_size=most)):
        at = draw(line)
        row = rows[at] = rows[at] or [""]  # a row may have lost every field already
        if kind == "truncate":
            cut = draw(st.integers(0, max(0, len(",".join(row)) - 1)))
            rows[at] = ",".join(row)[:cut].split(",")
        elif kind == "quote":
            column = draw(st.integers(0, len(row) - 1))
            where = draw(st.integers(0, len(row[column])))
            row[column] = row[column][:where] + '"' + row[column][where:]
            if where == 0:  # it opens a quoted value, and the sample has no quote to end it
                kind = "open quote"
        elif kind == "nul":
            column = draw(st.integers(0, len(row) - 1))
            row[column] += "\x00"
        elif kind == "fields":
            if draw(st.booleans()):
                row.extend(["x"] * draw(st.integers(1, 3)))
            else:
                del row[draw(st.integers(0, len(row) - 1))]
        elif kind == "huge":
            column = draw(st.integers(0, len(row) - 1))
            size = draw(st.integers(2 * MB, 10 * MB))
            row[column] = draw(st.sampled_from(["9", "あ", "x"])) * (size // 3)
        elif kind == "number" and len(row) > 4:
            column = draw(st.sampled_from([3, 4]))
            form = draw(st.sampled_from([*NUMBERS, "full-width"]))
            value = int(row[column]) if row[column].isdigit() else 1280
            row[column] = _full_width(str(value)) if form == "full-width" else form.format(value)
        elif kind == "date" and row:
            row[0] = draw(st.sampled_from(DATES))
        elif kind == "blank":
            rows.insert(at, draw(st.sampled_from([[""], [" "], ["", "", "", "", "", ""]])))
        elif kind == "header":
            rows[0] = draw(
                st.sampled_from(
                    [
                        rows[0][:-2] + rows[0][-1:],  # a column gone
                        [name.upper() for name in rows[0]],
                        rows[0] + ["date"],  # a name twice
                        ["\ufeff" + rows[0][0], *rows[0][1:]],  # a BOM inside the text
                    ]
                )
            )
        damage.append(f"{kind}@{at + 1}")
        done.append((kind, at + 1))
    ends = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    breaks = ["\n", "\r\n", "\r"]
    if ends == "mixed":
        pattern = draw(st.lists(st.sampled_from(breaks), min_size=1, max_size=5))
        sep = [pattern[n % len(pattern)] for n in range(len(rows))]
    else:
        sep = [ends] * len(rows)
    text = "".join(",".join(row) + end for row, end in zip(rows, sep, strict=True))
    encoding = draw(st.sampled_from(ENCODINGS))
    body = text.encode(encoding, "replace")
    damage.append(f"ends={ends!r}")
    damage.append(f"encoding={encoding}")
    for kind in draw(st.lists(st.sampled_from(["invalid", "cut"]), max_size=2 * byte_damage)):
        at = draw(st.integers(0, len(body)))
        if kind == "invalid":
            bad = draw(st.sampled_from([b"\xff", b"\x81", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]))
            body = body[:at] + bad + body[at:]
        else:
            body = body[:at]
        damage.append(f"{kind}@byte {at}")
    fails_at = {}
    if len(done) == 1 and len(damage) == 3 and encoding in ("utf-8", "utf-8-sig", "cp932"):
        [(kind, at)] = done
        fails_at = {
            "fields": {"report": at, "backup": at},
            "date": {"report": at},
            "open quote": {"report": at, "backup": at},
        }.get(kind, {})
    return Csv(body, damage, fails_at)


@st.composite
def long_csv_with_an_open_quote(draw: st.DrawFn) -> Csv:
    """The sample 80 times (about 360 KB, past the backup's 256 KiB parser block), one
    value opened with a quote that nothing ends: the rest of the file would be that value.
    Often early (the rest is larger than a block) and in the last column, the report's
    memo (the record keeps its field count, so nothing but the quote can fail it)."""
    rows = ROWS[:1] + ROWS[1:] * 80
    at = draw(st.integers(1, 100) | st.integers(1, len(rows) - 1))
    last = len(rows[at]) - 1
    column = draw(st.just(last) | st.integers(0, last))
    opened = [*rows[at][:column], '"' + rows[at][column], *rows[at][column + 1 :]]
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "cp932"]))
    lines = [*rows[:at], opened, *rows[at + 1 :]]
    body = "".join(",".join(row) + end for row in lines).encode(encoding)
    damage = [f"open quote@{at + 1}", f"ends={end!r}", f"encoding={encoding}"]
    return Csv(body, damage, {"report": at + 1, "backup": at + 1})


TEXT_DAMAGE = [
    "truncate",
    "quote",
    "nul",
    "fields",
    "huge",
    "number",
    "date",
    "blank",
    "header",
]
_LINE = re.compile(r"\bline (\d+)\b")


# What may fail a whole file without a line: the rest must say which line.
WHOLE_FILE = ("is empty", "has a header but no valid data rows", "is UTF-16", "no header")


def lines_named(message: str, body: bytes) -> list[str]:
    """Problems with the lines a failure names: one at least, each a line of the file."""
    if not message:
        return []
    named = [int(n) for n in _LINE.findall(message)]
    if not named and not any(whole in message for whole in WHOLE_FILE):
        return [f"the error names no line: {message[:300]}"]
    physical = len(re.split(rb"\r\n|\r|\n", body))
    return [f"names line {n}, the file has {physical}" for n in named if not 1 <= n <= physical]


def failed_manifest_only(source: str) -> Callable[[dict[str, bytes]], list[str]]:
    """What a failed backup may write: the manifest, naming ``source`` failed, no file of it."""

    def check(after: dict[str, bytes]) -> list[str]:
        wrong = []
        for key, body in after.items():
            if not key.endswith("/manifest.json"):
                wrong.append(key)
                continue
            for entry in json.loads(body)["sources"]:
                if entry["name"] == source and (entry["status"] != "failed" or entry.get("files")):
                    wrong.append(f"{key} (it lists {source} as {entry['status']})")
        return wrong

    return check


# Per job: the key it reads, what it writes when it succeeds, what a failure may write.
CSV_JOBS = {
    "report": (SALES, "out/report_20261128.xlsx", None),
    "backup": (
        SOURCE + "sales.csv",
        "backup/20261128/manifest.json",
        failed_manifest_only("sales.csv"),
    ),
}


# One row with a wrong field count or an impossible date, and nothing else that can fail.
ONE_BAD_ROW = damaged_csv(kinds=("fields", "date"), most=1, byte_damage=False)


@pytest.mark.parametrize("job", sorted(CSV_JOBS))
@seed(SEED)
@CHAOS
@given(csv=st.one_of(damaged_csv(), ONE_BAD_ROW, long_csv_with_an_open_quote()))
def test_a_damaged_csv_is_read_or_refused_naming_its_line(
    s3: Any, tally: Tally, job: str, csv: Csv
) -> None:
    """A damaged CSV: 0 with the job's output, or 65 naming the file and the line."""
    key, output, written = CSV_JOBS[job]
    bucket = Bucket.new(s3)
    bucket.put(key, csv.body)
    label = f"{job} of {csv!r}"
    checked = check_run(bucket, job, label, (bucket.url(key),), written=written)
    problems = checked.problems
    problems += [f"{label}: {p}" for p in lines_named(checked.message, csv.body)]
    if checked.code == 0 and output not in bucket.objects():
        problems.append(f"{label}: exit 0 without {output}")
    must = csv.fails_at.get(job)
    if must is not None and _LINE.findall(checked.message)[:1] != [str(must)]:
        ended = f"ended {checked.code}: {checked.message}"
        problems.append(f"{label}: must fail at line {must}, {ended}")
    count(tally, job, problems)
    assert not problems, "\n".join(problems)


# --- hostile SQLite files ------------------------------------------------------------------


def shop_bytes(tmp: Path, wal: bool = False) -> bytes:
    """The sample shop database; in WAL mode with its last writes only in the -wal."""
    path = tmp / f"shop-{wal}.sqlite"
    sample_data.shop_database(path)
    if not wal:
        return path.read_bytes()
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("CREATE TABLE late (x)")
        db.execute("INSERT INTO late VALUES (1)")
        db.commit()
        main = path.read_bytes()  # what a copy of the file alone has, the -wal left behind
    return main


def with_page_size(body: bytes, size: int) -> bytes:
    """The header's page size (bytes 16-17, big-endian; 1 means 65536) set to ``size``."""
    return body[:16] + size.to_bytes(2, "big") + body[18:]


def hostile_databases(tmp: Path) -> dict[str, tuple[bytes, tuple[int, ...]]]:
    """Name: (the file's bytes, the exit codes allowed)."""
    shop = shop_bytes(tmp)
    rng = random.Random(SEED)
    refused = (65,)
    return {
        "empty": (b"", refused),
        "random bytes": (rng.randbytes(8192), refused),
        "text": ("これはデータベースではありません\nid,name\n1,x\n".encode(), refused),
        "csv named .db": (b"id,name\n1,x\n", refused),
        "header only": (shop[:100], refused),
        "cut in half": (shop[: len(shop) // 2], refused),
        "cut inside a page": (shop[: len(shop) // 2 + 1000], refused),
        "cut in the first page": (shop[:1500], refused),
        "page size 1000": (with_page_size(shop, 1000), refused),
        "page size 512": (with_page_size(shop, 512), refused),
        "page size 65536": (with_page_size(shop, 1), refused),
        "page size 0": (with_page_size(shop, 0), refused),
        "zeroed second page": (shop[:4096] + bytes(4096) + shop[8192:], refused),
        # A consistent database as of its last checkpoint: what the object holds is read.
        "wal without its -wal": (shop_bytes(tmp, wal=True), (0, 65)),
    }


def test_a_hostile_sqlite_file_is_refused_with_its_name(
    tmp_path: Path, s3: Any, tally: Tally
) -> None:
    """Each hostile database: 65 naming the source and writing none of its files."""
    problems: list[str] = []
    cases = hostile_databases(tmp_path).items()
    for (name, (body, allowed)), suffix in zip(cases, itertools.cycle(SQLITE), strict=False):
        bucket = Bucket.new(s3)
        key = f"{SOURCE}shop{suffix}"
        bucket.put(key, body)
        checked = check_run(
            bucket,
            "backup",
            f"backup of a {name} {suffix}",
            (bucket.url(key),),
            allowed,
            written=failed_manifest_only(f"shop{suffix}"),
        )
        problems += count(tally, "backup", checked.problems)
    assert not problems, "\n".join(problems)


SQLITE = (".sqlite", ".db", ".sqlite3")  # the names the backup takes for SQLite


# --- hostile API answers -------------------------------------------------------------------


def good_answer() -> dict[str, Any]:
    return {
        "items": [
            {
                "id": f"sku-{n}",
                "name": f"商品 {n}",
                "price": 980 + n,
                "stock": n % 3,
                "url": f"https://shop.example/p/{n}",
            }
            for n in range(5)
        ]
    }


@dataclass
class Hostile:
    """What the API answers at ``path``: a body, or a way to send one."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    send: Callable[[BaseHTTPRequestHandler], None] | None = None


class HostileHandler(BaseHTTPRequestHandler):
    """Answer each GET as the server's table says."""

    server: HostileServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        answer = self.server.answers.get(self.path.partition("?")[0])
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if answer is None:
                self.send_error(404)
            elif answer.send is not None:
                answer.send(self)
            else:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True
    answers: dict[str, Hostile]


@pytest.fixture(scope="module")
def api() -> Iterator[HostileServer]:
    """A local API for the module; each case adds its paths."""
    server = HostileServer(("127.0.0.1", 0), HostileHandler)
    server.answers = {"/good": Hostile(json.dumps(good_answer()).encode())}
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def url_of(server: HostileServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def huge(chunked: bool, size: int = 100 * 1000 * 1000) -> Callable[[BaseHTTPRequestHandler], None]:
    """100 MB of a JSON list, made as it is sent; declared or chunked."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        piece = b'{"id": "x", "price": 1, "stock": 1},' * 1800  # about 64 KiB
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(size))
        handler.end_headers()
        sent = 0
        while sent < size:
            data = piece[: size - sent]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            sent += len(data)
        if chunked:
            handler.wfile.write(b"0\r\n\r\n")

    return send


def drip(seconds: float) -> Callable[[BaseHTTPRequestHandler], None]:
    """A valid answer a byte every 0.1 s, for ``seconds`` at most (then the rest at once)."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        body = json.dumps(good_answer()).encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        until = time.monotonic() + seconds
        for n in range(len(body)):
            handler.wfile.write(body[n : n + 1])
            handler.wfile.flush()
            if time.monotonic() > until:
                handler.wfile.write(body[n + 1 :])
                return
            time.sleep(0.1)  # the drip is the point: the server's own thread

    return send


def cut_off(chunked: bool) -> Callable[[BaseHTTPRequestHandler], None]:
    """Half a good answer, then the connection closes."""

    def send(handler: BaseHTTPRequestHandler) -> None:
        body = json.dumps(good_answer()).encode()
        handler.send_response(200)
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        half = body[: len(body) // 2]
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(half), half) if chunked else half)
        handler.close_connection = True

    return send


def redirect(to: str) -> Hostile:
    return Hostile(status=302, headers={"Location": to})


def hostile_answers() -> dict[str, tuple[Hostile | dict[str, Hostile], tuple[int, ...]]]:
    """Name: (the answer at /case, or several paths; the exit codes allowed)."""
    nested = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    items_deep = b'{"items": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    return {
        "not JSON": (Hostile(b"<html>maintenance</html>"), (65,)),
        "cut short": (Hostile(json.dumps(good_answer()).encode()[:57]), (65,)),
        "not UTF-8": (Hostile(b'{"items": [{"id": "\xff\xfe", "price": 1}]}'), (65,)),
        "NUL bytes": (Hostile(b'{"items": []}\x00\x00'), (65,)),
        "nested 100k lists": (Hostile(nested), (65,)),
        "nested 100k objects": (Hostile(deep_object), (65,)),
        "items nested 100k": (Hostile(items_deep), (65,)),
        "100 MB declared": (Hostile(send=huge(chunked=False)), (65,)),
        "100 MB chunked": (Hostile(send=huge(chunked=True)), (65,)),
        "a slow drip": (Hostile(send=drip(4.0)), (75,)),
        "a redirect to itself": (redirect("/case"), (65,)),
        "a redirect loop": ({"/case": redirect("/other"), "/other": redirect("/case")}, (65,)),
        "a redirect to another host": (redirect("http://127.0.0.2:9/steal"), (65,)),
        "a redirect to the cloud's metadata": (redirect("http://169.254.169.254/latest/"), (65,)),
        "a redirect to https on another port": (redirect("https://127.0.0.1:1/case"), (65,)),
        "a redirect to a file": (redirect("file:///etc/passwd"), (65,)),
        "cut off": (Hostile(send=cut_off(chunked=False)), (75,)),
        "cut off, chunked": (Hostile(send=cut_off(chunked=True)), (75,)),
        "gzip that is not": (Hostile(b"{}" * 100, headers={"Content-Encoding": "gzip"}), (65,)),
        "a 500 body of garbage": (Hostile(b"\xff" * 1000, status=500), (75,)),
        "a 200 with no body": (Hostile(b""), (65,)),
    }


def baseline(bucket: Bucket, api: HostileServer) -> list[str]:
    """The state a good answer leaves: what a bad one must not change."""
    result = bucket.run("monitor", f"base-{next(_buckets)}", **monitor_env(url_of(api, "/good")))
    return [] if result.code == 0 else [f"the baseline run ended {result.code}"]


def monitor_env(url: str) -> dict[str, str]:
    return {
        "OCHINAI_MONITOR_URL": url,
        "OCHINAI_MONITOR_MIN_INTERVAL": "0s",
        "OCHINAI_MONITOR_TIMEOUT": "0.5s",
        "OCHINAI_MONITOR_TRIES": "1",
    }


def test_a_hostile_api_answer_ends_65_or_75_naming_the_url(
    s3: Any, api: HostileServer, tally: Tally
) -> None:
    """Each hostile answer: 65 (bad data) or 75 (the network), the URL named, nothing written."""
    bucket = Bucket.new(s3)  # a failed run leaves the state as it was for the next case
    problems = baseline(bucket, api)
    url = url_of(api, "/case")
    for name, (answer, allowed) in hostile_answers().items():
        api.answers.update(answer if isinstance(answer, dict) else {"/case": answer})
        checked = check_run(bucket, "monitor", name, (url,), allowed, **monitor_env(url))
        problems += count(tally, "monitor", checked.problems)
    assert not problems, "\n".join(problems)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)


# Any JSON value, NaN and Infinity included (Python's json reads them).
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    _containers,
    max_leaves=6,
)


@st.composite
def wrong_types(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A good answer with one to three values replaced by any JSON value."""
    answer: Any = good_answer()
    damage = []
    for _ in range(draw(st.integers(1, 3))):
        value = draw(JSON)
        where = draw(st.sampled_from(["items", "item", "id", "name", "price", "stock", "url"]))
        if where == "items":
            answer = {"items": value} if draw(st.booleans()) else value
        elif where == "item" and isinstance(answer, dict) and isinstance(answer.get("items"), list):
            if answer["items"]:
                answer["items"][draw(st.integers(0, len(answer["items"]) - 1))] = value
        elif isinstance(answer, dict) and isinstance(answer.get("items"), list):
            items = [i for i in answer["items"] if isinstance(i, dict)]
            if items:
                draw(st.sampled_from(items))[where] = value
        damage.append(f"{where}={value!r}"[:80])
    body = json.dumps(answer, allow_nan=True).encode()
    return body, damage


@seed(SEED)
@CHAOS
@given(answer=wrong_types())
def test_an_answer_of_the_wrong_types_is_read_or_refused_naming_the_url(
    s3: Any, api: HostileServer, tally: Tally, answer: tuple[bytes, list[str]]
) -> None:
    """Items not a list, a price that is an object, a null key...: 0, or 65 naming the URL."""
    body, damage = answer
    bucket = Bucket.new(s3)
    problems = baseline(bucket, api)
    path = f"/typed-{next(_buckets)}"
    api.answers[path] = Hostile(body)
    url = url_of(api, path)
    checked = check_run(bucket, "monitor", f"monitor on {damage}", (url,), **monitor_env(url))
    problems += checked.problems
    count(tally, "monitor", problems)
    assert not problems, "\n".join(problems)
