"""The lock under a paused holder and slow lock answers: one holder at a time, fenced writes.

Each job runs as a subprocess against SeaweedFS in its world (tests/chaos/worlds.py).

- **Paused past its lease**: a run A is stopped (SIGSTOP) at a random moment after it
  took the lock (seeded by ``CHAOS_SEED``), for longer than the lease; meanwhile a run
  B takes the expired lock and finishes; then A goes on (SIGCONT). No object may change
  after the SIGCONT under a term as old as B's (A's run record aside: a run records its
  end under its own term, after its lock, by design); A must not touch the lock record
  nor delete an object of the lock's; A ends 0 or 75, and 75 saying the lock was lost
  when it was at work (it held the lock at the pause, B found work left to do, and A
  went on with its work after the SIGCONT); B ends 0; one summary line each; the
  world's invariants hold. ``CHAOS_PAUSES`` pauses a job, then the job is run to a
  clean series' end.
- **Slow lock answers**: two overlapping runs, each through a fault proxy
  (tests/servers/faults.py) that holds the answers to some of its lock's requests (the
  S3 lock object's, or the Lease's on the fake Kubernetes API) past the lock client's
  timeout. From each run's log (debug level) its held interval is rebuilt: from
  "acquired lock" to the earliest of its last ``valid_until``, "releasing lock" and
  "lost lock". No two intervals may overlap; each run ends 0 or 75 with one summary;
  the world's invariants hold. ``CHAOS_SLOW_LOCK_RUNS`` pairs a job and lock kind (the
  report only, unless ``CHAOS_FULL``), then the job is run to its end.
- **A server that ignores If-Match**: the report through the proxy dropping If-Match
  from every PutObject (and signing the request again) ends 78, naming the server.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ochinai.runtime.fence import SCOPE, TERM, Fence
from tests.chaos.conftest import Tally
from tests.chaos.runs import KILLS, SEED, Bucket, Run, new_bucket
from tests.chaos.test_kill import clean_series, the_end
from tests.chaos.worlds import JOBS, FilesWorld, World, world
from tests.servers.faults import FaultProxy
from tests.servers.kube import FakeKube
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, WeedMini

# Whole series of runs: past the 120 s default.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

PAUSES = int(os.environ.get("CHAOS_PAUSES", "1"))
SLOW_RUNS = int(os.environ.get("CHAOS_SLOW_LOCK_RUNS", "1"))
DEBUG = {"OCHINAI_LOG_LEVEL": "debug", "PYTHONFAULTHANDLER": "1"}  # a crash shows where
LEASE = 3.0  # OCHINAI_LOCK_DURATION in every world (runs.new_bucket)
# How long a run may take here at most, whatever the machine's load: past it, it hangs.
HANG = 120.0


# --- a run read as it goes ---------------------------------------------------------------


class Watched:
    """A started run whose JSON lines are read as they come (a thread drains its pipe)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.started = time.monotonic()
        self.lines: list[dict[str, Any]] = []
        self.text: list[str] = []  # what was not a JSON line: a traceback, say
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            try:
                parsed = json.loads(line) if line.startswith("{") else None
            except ValueError:
                parsed = None
            with self._changed:
                if isinstance(parsed, dict):
                    self.lines.append(parsed)
                else:
                    self.text.append(line.rstrip())
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, prefix: str, timeout: float = HANG) -> dict[str, Any] | None:
        """The first line whose message starts with ``prefix``; None if the run ended first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = said(self.lines, prefix)
                if found or not self._reader.is_alive() or time.monotonic() > deadline:
                    return found[0] if found else None
                self._changed.wait(0.05)

    def finish(self, timeout: float = HANG) -> Run | None:
        """The run once it has ended; None when it did not end in ``timeout`` (killed)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return Output(code, list(self.lines), time.monotonic() - self.started, list(self.text))

    def kill(self) -> None:
        """Go on if stopped, then SIGKILL: nothing is left behind when a test fails."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@dataclass
class Output(Run):
    """A run, and what it printed that was not a JSON line."""

    text: list[str] = field(default_factory=list)


def said(lines: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [x for x in lines if str(x.get("message", "")).startswith(prefix)]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ending(name: str, run: Run | None) -> list[str]:
    """A run ended 0 or 75 with exactly one summary line that says so."""
    if run is None:
        return [f"{name} did not end within {HANG:g}s: it hangs"]
    if run.code not in (0, 75):
        errors = [str(x.get("message")) for x in run.lines if x.get("severity") == "ERROR"]
        text = run.text[-20:] if isinstance(run, Output) else []
        return ["\n    ".join([f"{name}: exit {run.code}: {run.summary}", *errors, *text])]
    if len(run.summaries) != 1:
        return [f"{name}: {len(run.summaries)} summary lines"]
    if run.summary.get("exit_code") != run.code:
        return [f"{name}: exit {run.code}, but the summary says {run.summary.get('exit_code')}"]
    return []


def term_of(run: Run | None) -> int | None:
    """The term the run's lock was acquired at (its "acquired lock" line), or None."""
    found = said(run.lines if run else [], "acquired lock ")
    return int(found[0]["fence"]) if found else None


def says_lost(lines: list[dict[str, Any]]) -> bool:
    """An ERROR line saying the lock was lost (the lock's own, or a fence's refusal)."""
    return any(
        x.get("severity") == "ERROR"
        and (
            str(x.get("message", "")).startswith("lost lock ")
            or "another run took the lock" in str(x.get("message", ""))
        )
        for x in lines
    )


# --- every object's etag and metadata --------------------------------------------------


@dataclass(frozen=True)
class Head:
    etag: str
    metadata: dict[str, str]


def heads(bucket: Bucket) -> dict[str, Head]:
    """Every object's etag and user metadata (HEAD of each listed key)."""
    found = {}
    pages = bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name)
    for page in pages:
        for item in page.get("Contents", []):
            key = item["Key"]
            with contextlib.suppress(bucket.client.exceptions.ClientError):
                head = bucket.client.head_object(Bucket=bucket.name, Key=key)
                found[key] = Head(head["ETag"], dict(head["Metadata"]))
    return found


def lock_scope(bucket: Bucket, job: str) -> str:
    """The ``fence-scope`` of the job's S3 lock, as its record's epoch makes it."""
    key = f"_locks/ochinai-{job}.json"
    body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    epoch = str(json.loads(body).get("epoch") or "")
    return Fence.of_lock(f"s3://{bucket.name}/{key}", epoch, 0).scope


def explain(w: World, reference: dict[str, Any]) -> None:
    """Print how each JSON output differs from a clean run's (shown with the failure)."""
    if not isinstance(w, FilesWorld):
        return
    for key, body in w.outputs().items():
        clean = reference["outputs"].get(key)
        if clean is None or body == clean or not key.endswith(".json"):
            continue
        try:
            mine, theirs = (
                json.dumps(json.loads(x), indent=1, sort_keys=True) for x in (body, clean)
            )
        except ValueError:
            continue  # the invariants say it does not parse
        diff = difflib.unified_diff(
            theirs.splitlines(), mine.splitlines(), "clean", key, lineterm=""
        )
        print("\n".join(diff))


# --- 1. paused past its lease -----------------------------------------------------------


# What a paused run could write differs by job; make test pauses the report (a workbook
# and a mail), make chaos every job.
PAUSED = [job for job in JOBS if os.environ.get("CHAOS_FULL") or job == "report"]


@pytest.mark.parametrize("job", PAUSED)
def test_a_run_paused_past_its_lease_writes_nothing_once_another_took_the_lock(
    weed: WeedMini, job: str, tally: Tally
) -> None:
    seed = f"{SEED}-{job}"
    reference, seconds, port = clean_series(weed, job, seed)
    rng = random.Random(f"{seed}-pause")
    problems: list[str] = []
    with world(weed, job, seed=seed, port=port, steps=KILLS) as paused:
        for n in range(PAUSES):
            found = pause_once(paused, job, rng.uniform(0, seconds * 0.4), tally)
            problems += [f"pause {n + 1}: {p}" for p in found]
            left = paused.invariants(reference, final=False)
            problems += [f"after pause {n + 1}: {p}" for p in left]
            if left:
                explain(paused, reference)
        end = the_end(paused, reference, tally)
        if end:
            explain(paused, reference)
        problems += end
    tally.add(job, violations=len(problems))
    assert not problems, "\n".join(problems)


def pause_once(w: World, job: str, delay: float, tally: Tally) -> list[str]:
    """A stopped ``delay`` after it took the lock, B run meanwhile, A let go on."""
    if isinstance(w, FilesWorld):
        w.forget()  # so that A has its outputs to write
    a = Watched(w.start(**DEBUG))
    try:
        if a.wait_for("acquired lock ") is None:
            return ending("A (it never took the lock)", a.finish())
        time.sleep(delay)
        a.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        b = w.bucket.run(job, OCHINAI_LOCK_WAIT="30s", **DEBUG)
        # Past the lease, whatever B took: A's lock has expired when it goes on.
        time.sleep(max(0.0, stopped + LEASE + 1 - time.monotonic()))
        # All A printed before the stop is read by now: B took a second at least.
        before = len(a.lines)
        snapshot = heads(w.bucket)
        a.proc.send_signal(signal.SIGCONT)
        run = a.finish()
    finally:
        a.kill()
    tally.add(job, pauses=1)
    problems = ending("A", run) + ending("B", b)
    if b.code == 0 and b.summary.get("outcome") not in ("ok", "unchanged"):
        problems.append(f"B did not do the work: {b.summary}")
    if run is None:
        return problems
    earlier, later = run.lines[:before], run.lines[before:]
    ended = said(earlier, "releasing lock ") + said(earlier, "lost lock ")
    working = not ended and not any(x.get("event") == "summary" for x in earlier)
    tally.add(job, paused_working=int(working))
    work = [x for x in later if not bookkeeping(x)]
    shown = [x.get("message") for x in work[:2]]  # shown with -s, and with a failure
    print(f"  A paused {delay:.2f}s after it took the lock, working={working}: exit {run.code}")
    print(f"    {run.summary.get('outcome')}, after the SIGCONT {shown}; B: exit {b.code}")
    if run.code == 75 and not says_lost(run.lines):
        problems.append("A ended 75 without saying the lock was lost")
    # Its work was not over when B had work to do (B "ok", not "unchanged"): then A, gone
    # on without the lock to do it, must end 75. (Lines of a write that landed before the
    # pause and was logged after it are a case of B "unchanged".)
    if working and run.code == 0 and work and b.summary.get("outcome") == "ok":
        problems.append(
            f"A, paused at work, went on without the lock, B did the work, and A ended 0 "
            f"({run.summary.get('outcome')}): {shown}"
        )
    problems += stale_writes(w.bucket, job, snapshot, run, b)
    if problems:  # shown with the failure: what each run said, and when A was stopped
        show("A", [*run.lines[:before], {"message": "--- SIGSTOP ... SIGCONT ---"}, *later])
        show("B", b.lines)
    return problems


def show(name: str, lines: list[dict[str, Any]]) -> None:
    print(f"{name}:")
    for x in lines:
        extra = {k: x[k] for k in ("fence", "valid_until", "key", "exit_code") if k in x}
        print(f"  {x.get('time', '')} {x.get('severity', '')} {x.get('message')} {extra or ''}")


RUNTIME = ("ochinai.lock", "ochinai.run", "ochinai.health", "ochinai.notify", "ochinai.ping")


def bookkeeping(line: dict[str, Any]) -> bool:
    """A line of a run's lock, record, health, notices or end, not of its work."""
    if line.get("logger") in RUNTIME or line.get("logger") == "ochinai.metrics":
        return True
    return line.get("logger") == "ochinai.storage" and str(line.get("key", "")).startswith(
        ("_locks/", "_runs/", "_sent/")
    )


def stale_writes(bucket: Bucket, job: str, snapshot: dict[str, Head], a: Run, b: Run) -> list[str]:
    """What A changed after the SIGCONT under a term as old as B's (or its own)."""
    newest = term_of(b) if term_of(b) is not None else term_of(a)
    if newest is None:
        return []
    # A took the lock anew after the SIGCONT (it was paused before taking it): its term
    # is then past B's, and its writes are a holder's.
    anew = any(int(x["fence"]) > newest for x in said(a.lines, "acquired lock "))
    record = f"/{a.summary.get('run_id') or a.lines[0].get('run_id')}.json"
    scope = lock_scope(bucket, job)
    now = heads(bucket)
    found = []
    for key in sorted(snapshot.keys() | now.keys()):
        was, is_ = snapshot.get(key), now.get(key)
        if was == is_:
            continue
        if key.startswith("_locks/"):
            if not anew:
                found.append(f"{key}: the lock record changed after the SIGCONT")
            continue
        if is_ is None:
            assert was is not None
            if was.metadata.get(SCOPE) == scope and not anew:
                found.append(f"{key} (fence {was.metadata.get(TERM)}) deleted after the SIGCONT")
            continue
        if is_.metadata.get(SCOPE) != scope or (key.startswith("_runs/") and key.endswith(record)):
            continue
        term = is_.metadata.get(TERM, "")
        if term.isdigit() and int(term) <= newest:
            found.append(
                f"{key} written after the SIGCONT under fence {term} (B's is {term_of(b)})"
            )
    return found


# --- 2. slow lock answers ---------------------------------------------------------------


FULL = bool(os.environ.get("CHAOS_FULL"))
# The lock is the runtime's, the same for every job: make test tries it with the report's
# runs on the S3 lock, make chaos (CHAOS_FULL) with every job's on both locks.
SLOW = [
    (job, lock)
    for job in JOBS
    for lock in ("s3", "lease")
    if FULL or (job == "report" and lock == "s3")
]
# The lock renews five times a second here (poll 0.05 s), so that renewals fall inside
# runs of a second; OCHINAI_LOCK_DURATION and RENEW_DEADLINE are the worlds' 3 s and 2 s.
SLOW_TIMING = {"OCHINAI_LOCK_RENEW_PERIOD": "0.2s"}


@pytest.mark.parametrize(("job", "lock"), SLOW)
def test_slow_lock_answers_never_let_two_runs_hold_the_lock_at_once(
    weed: WeedMini, job: str, lock: str, tally: Tally, tmp_path: Path
) -> None:
    seed = f"{SEED}-{job}"
    reference, seconds, port = clean_series(weed, job, seed)
    rng = random.Random(f"{seed}-{lock}-slow")
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        w = stack.enter_context(world(weed, job, seed=seed, port=port, steps=KILLS))
        direct: dict[str, str] = {}
        target, pattern = weed.endpoint, r"^_locks/"
        if lock == "lease":
            kube = stack.enter_context(FakeKube())
            config = kube.write_kubeconfig(tmp_path / "direct", namespace="ops")
            direct = {"OCHINAI_LOCK": "lease", "KUBECONFIG": str(config)}
            # The proxy takes a Lease request for an S3 one: its path after /apis/ for a key.
            target, pattern = kube.url, r"/leases\b"
        for n in range(SLOW_RUNS):
            if isinstance(w, FilesWorld) and rng.random() < 0.7:
                w.forget()  # the runs have outputs to write
            proxies, envs = [], []
            for who in ("a", "b"):
                proxy = stack.enter_context(FaultProxy(target, seed=rng.randrange(2**32)))
                for _ in range(rng.randint(1, 2)):  # a stretch or two of held answers
                    proxy.add(
                        "hold",
                        key=pattern,
                        skip=rng.randrange(8),
                        times=rng.randint(1, 5),
                        seconds=rng.uniform(1.2, 2.2),
                    )
                env = {**DEBUG, **SLOW_TIMING, "OCHINAI_LOCK_WAIT": "30s"}
                if lock == "lease":
                    config = kube.write_kubeconfig(tmp_path / f"via-{who}", namespace="ops")
                    settings = json.loads(config.read_text())
                    settings["clusters"][0]["cluster"]["server"] = proxy.endpoint
                    config.write_text(json.dumps(settings))
                    env.update(OCHINAI_LOCK="lease", KUBECONFIG=str(config))
                else:
                    env["AWS_ENDPOINT_URL"] = proxy.endpoint
                proxies.append(proxy)
                envs.append(env)
            found, runs = overlapping(w, envs, rng.uniform(0, seconds * 0.5))
            holds = sum(p.injected().get("hold", 0) for p in proxies)
            tally.add(job, slow_lock_runs=2, lock_holds=holds)
            problems += [f"pair {n + 1} ({holds} holds): {p}" for p in found]
            left = w.invariants(reference, final=False)
            problems += [f"after pair {n + 1}: {p}" for p in left]
            if found or left:  # shown with the failure
                for name, run in runs.items():
                    show(name, run.lines if run else [])
                explain(w, reference)
            for proxy in proxies:
                proxy.stop()
        end = the_end(w, reference, tally, **direct)
        if end:
            explain(w, reference)
        problems += end
    tally.add(job, violations=len(problems))
    assert not problems, "\n".join(problems)


def overlapping(
    w: World, envs: list[dict[str, str]], delay: float
) -> tuple[list[str], dict[str, Run | None]]:
    """A started, B started ``delay`` after A took the lock: their intervals apart."""
    a = Watched(w.start(**envs[0]))
    b: Watched | None = None
    try:
        a.wait_for("acquired lock ")
        time.sleep(delay)
        b = Watched(w.start(**envs[1]))
        runs = {"A": a.finish(), "B": b.finish()}
    finally:
        a.kill()
        if b is not None:
            b.kill()
    problems = [p for name, run in runs.items() for p in ending(name, run)]
    held = {name: interval(run) for name, run in runs.items() if run is not None}
    for name, run in runs.items():  # shown with -s, and with a failure
        if run is not None:
            start, end = held[name]
            span = f"{start.time()}-{end.time()}" if start and end else "never held"
            lost = "lost" if said(run.lines, "lost lock ") else ""
            print(f"  {name}: exit {run.code} {run.summary.get('outcome')} held {span} {lost}")
    (sa, ea), (sb, eb) = held.get("A", (None, None)), held.get("B", (None, None))
    if sa and ea and sb and eb and sa < eb and sb < ea:
        problems.append(
            f"A held the lock {sa.time()}-{ea.time()} and B {sb.time()}-{eb.time()}: "
            "two holders at once"
        )
    return problems, runs


def interval(run: Run) -> tuple[datetime | None, datetime | None]:
    """When the run held the lock, by its log: (None, None) when it never took it.

    From "acquired lock" to the earliest of its last ``valid_until`` (acquired or
    renewed), "releasing lock" (it stops holding before the release is sent) and
    "lost lock".
    """
    acquired = said(run.lines, "acquired lock ")
    if not acquired:
        return None, None
    valid = [
        when(x["valid_until"])
        for x in acquired + said(run.lines, "renewed lock ")
        if x.get("valid_until")
    ]
    ends = valid[-1:] + [
        when(x["time"]) for x in said(run.lines, "releasing lock ") + said(run.lines, "lost lock ")
    ]
    start = when(acquired[0]["time"])
    return start, min(ends) if ends else None


# --- 3. a server that ignores If-Match ---------------------------------------------------


def test_a_server_that_ignores_if_match_stops_the_run_78_naming_it(weed: WeedMini) -> None:
    """A fresh process (the self-test's result is kept per endpoint and bucket in one)."""
    bucket = new_bucket(weed, "chaos-if-match")
    # SeaweedFS checks signatures: the proxy signs again what it forwards without If-Match.
    with FaultProxy(weed.endpoint, credentials=(ACCESS_KEY, SECRET_KEY)) as proxy:
        proxy.add("drop_header", "PutObject", header="If-Match", times=10_000)
        run = bucket.run("report", AWS_ENDPOINT_URL=proxy.endpoint)
    errors = [str(x.get("message")) for x in run.lines if x.get("severity") == "ERROR"]
    named = f"the S3 server at {proxy.endpoint} ignores If-Match"
    assert run.code == 78, (run.code, errors)
    assert any(named in e for e in errors), errors
    assert (len(run.summaries), run.summary.get("exit_code")) == (1, 78)
    assert not [k for k in bucket.objects() if k.startswith("out/")], "it wrote the report"
