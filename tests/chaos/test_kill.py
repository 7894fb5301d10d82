"""Kill a run anywhere, stop it anywhere, start eight at once: nothing half-written.

Each job runs as a subprocess against SeaweedFS, as the CronJob runs it, in its world
(tests/chaos/worlds.py): the report and the backup (CSV and SQLite sources) on
docker/sample_data.py's inputs, the monitor against the demo price API with a webhook.

- **SIGKILL anywhere**: a run is killed at ``CHAOS_KILLS`` random moments (seeded by
  ``CHAOS_SEED``), then the job is run to completion. After every kill and at the end
  the world's invariants hold (no object a completed run would not write, every object
  a completed run's bytes, JSON that parses, manifests whose files are there with their
  sha256, no multipart upload open, each change once in the monitor's history), and at
  the end the outputs are those of a series never killed, and the webhook got each
  change once.
- **SIGTERM anywhere**: the run ends 75, or 0 if its work was done, with one summary
  line saying so, and leaves the lock free: the next run gets it without waiting.
- **Eight at once**: exactly one run does the work, the others end ``skipped_locked``
  or ``unchanged`` (exit 0), and the outputs are a single run's.

``make test`` runs 1 kill and 1 stop a job; ``make chaos`` 30 (``CHAOS_KILLS``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.conftest import Tally
from tests.chaos.runs import KILLS, SEED, finished
from tests.chaos.worlds import JOBS, MonitorWorld, World, world
from tests.servers.kube import FakeKube
from tests.servers.s3 import WeedMini

# Whole series of runs: CHAOS_KILLS=30 takes minutes a test, past the 120 s default.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


_CLEAN: dict[tuple[str, str, int], tuple[dict[str, Any], float, int]] = {}


def clean_series(
    weed: WeedMini, job: str, seed: str, steps: int = KILLS
) -> tuple[dict[str, Any], float, int]:
    """(what a series never disturbed leaves, one run's time, the monitor API's port).

    Made once per job and catalogue: report and backup ignore ``seed`` and ``steps``.
    """
    if job != "monitor":
        seed, steps = "", 0
    if (job, seed, steps) not in _CLEAN:
        _CLEAN[job, seed, steps] = _clean_series(weed, job, seed, steps)
    return _CLEAN[job, seed, steps]


def _clean_series(
    weed: WeedMini, job: str, seed: str, steps: int
) -> tuple[dict[str, Any], float, int]:
    with world(weed, job, seed=seed, steps=steps) as clean:
        runs, problems = clean.complete()
        assert not problems, problems
        snapshot = clean.snapshot()
        assert not clean.invariants(snapshot), clean.invariants(snapshot)
        if isinstance(clean, MonitorWorld):
            assert snapshot["history"], "the clean series found no change"
            announced = {r["id"].removeprefix("monitor/")[:12] for r in snapshot["history"]}
            assert set(snapshot["notified"]) == announced
        else:
            assert snapshot["outputs"], "the clean run wrote nothing"
        seconds = sorted(r.seconds for r in runs)[len(runs) // 2]
        return snapshot, seconds, getattr(clean, "port", 0)


def the_end(w: World, reference: dict[str, Any], tally: Tally, **env: str) -> list[str]:
    """Run the job to completion: then the invariants and a clean series' outputs."""
    _, problems = w.complete(**env)
    problems += [f"after the last run: {p}" for p in w.invariants(reference)]
    return problems + w.differences(reference)


@pytest.mark.parametrize("job", JOBS)
def test_a_run_killed_anywhere_leaves_nothing_half_written(
    weed: WeedMini, job: str, tally: Tally
) -> None:
    seed = f"{SEED}-{job}"
    reference, seconds, port = clean_series(weed, job, seed)
    rng = random.Random(seed)
    problems: list[str] = []
    with world(weed, job, seed=seed, port=port, steps=KILLS) as killed:
        for n in range(KILLS):
            proc = killed.start()
            time.sleep(rng.uniform(0.05, seconds * 1.2))  # anywhere: start-up, work, the end
            running = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()  # type: ignore[union-attr]
            tally.add(job, kills=1, killed_running=int(running))
            left = killed.invariants(reference, final=False)
            problems += [f"after kill {n + 1}: {p}" for p in left]
        problems += the_end(killed, reference, tally)
    tally.add(job, violations=len(problems))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("job", JOBS)
def test_a_run_stopped_anywhere_says_so_once_and_lets_the_next_one_in(
    weed: WeedMini, job: str, tally: Tally
) -> None:
    """SIGTERM, as Kubernetes stops a pod: one summary, 75 (or 0 if done), the lock freed."""
    seed = f"{SEED}-{job}"
    reference, seconds, port = clean_series(weed, job, seed)
    rng = random.Random(f"{seed}-term")
    problems: list[str] = []
    with world(weed, job, seed=seed, port=port, steps=KILLS) as stopped:
        for n in range(KILLS):
            proc = stopped.start()
            started = time.monotonic()
            time.sleep(rng.uniform(0.3, seconds * 1.2))
            proc.send_signal(signal.SIGTERM)
            run = finished(proc, started, timeout=60)
            tally.add(job, sigterms=1)
            if run.code not in (0, 75):
                problems.append(f"stop {n + 1}: exit {run.code}")
            elif len(run.summaries) != 1:
                problems.append(f"stop {n + 1}: {len(run.summaries)} summary lines")
            elif run.summary["exit_code"] != run.code:
                problems.append(f"stop {n + 1}: the summary says {run.summary['exit_code']}")
            left = stopped.invariants(reference, final=False)
            problems += [f"after stop {n + 1}: {p}" for p in left]
        # The lock was released: a run that does not wait for it gets it at once.
        problems += the_end(stopped, reference, tally, OCHINAI_LOCK_WAIT="0s")
    tally.add(job, violations=len(problems))
    assert not problems, "\n".join(problems)


# The Lease lock for every job in make chaos (CHAOS_FULL=1); for the report in make test.
CROWDS = [(job, "s3") for job in JOBS] + [
    (job, "lease") for job in JOBS if os.environ.get("CHAOS_FULL") or job == "report"
]


@pytest.mark.parametrize(("job", "lock"), CROWDS)
def test_eight_runs_at_once_do_the_work_once(
    weed: WeedMini, job: str, lock: str, tally: Tally, tmp_path: Path
) -> None:
    """With the S3 lock, and with the Lease lock against the fake Kubernetes API.

    The monitor's catalogue moves once, after a baseline run: one run finds the move.
    """
    seed = f"{SEED}-{job}-crowd"
    reference, _, port = clean_series(weed, job, seed, steps=1)
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        env = {"OCHINAI_LOCK_WAIT": "0s"}  # who does not get the lock stops at once
        if lock == "lease":
            kube = stack.enter_context(FakeKube())
            kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="ops")
            env.update(OCHINAI_LOCK="lease", KUBECONFIG=str(kubeconfig))
        crowd = stack.enter_context(world(weed, job, seed=seed, port=port, steps=1))
        if isinstance(crowd, MonitorWorld):
            crowd.bucket.run("monitor", **env)
        procs = [(crowd.start(**env), time.monotonic()) for _ in range(8)]
        results = [finished(proc, started).outcome for proc, started in procs]
        tally.add(job, concurrent=8)
        worked = [r for r in results if r == (0, "ok")]
        others = [r for r in results if r != (0, "ok")]
        if len(worked) != 1:
            problems.append(f"{len(worked)} runs did the work: {results}")
        if any(r not in ((0, "skipped_locked"), (0, "unchanged")) for r in others):
            problems.append(f"a run that did not work did not say so: {results}")
        if lock == "lease":
            lease = kube.leases.get_lease("ops", f"ochinai-{job}")
            holder = (lease or {}).get("spec", {}).get("holderIdentity")
            if lease is None or holder:
                problems.append(f"the Lease is not released: {lease}")
        elif not any(k.startswith("_locks/") for k in crowd.bucket.objects()):
            problems.append("no S3 lock object was written")
        problems += crowd.invariants(reference)
        problems += crowd.differences(reference)
    tally.add(job, violations=len(problems))
    assert not problems, "\n".join(problems)
