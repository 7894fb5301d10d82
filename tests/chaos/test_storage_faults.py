"""Whole runs through a storage that fails: the truth told, nothing half-written.

Each job's S3 requests (its lock's included) go through the fault proxy
(tests/servers/faults.py) in front of SeaweedFS, which by a seeded schedule answers 500,
503 ``SlowDown``, resets the connection, holds the answer past the client's timeout,
or forwards a write and drops its answer (the write happened; the client saw an error).
``CHAOS_FAULT_RUNS`` runs a job (seeded by ``CHAOS_SEED``), each with its own faults: most
here and there, at a random rate (retries get past most of them); some an outage, every
request failing from a random one on (the run must give up, 75).
After each one:

- it ended 0 or 75, with one summary line that says so;
- the world's invariants hold (tests/chaos/worlds.py): nothing half-written, every
  object a completed run's, manifests whose files are there;
- a run that ended 0 tells the truth: the report ``created`` only what was not there,
  the backup's ``files_written`` and ``files_unchanged`` are what it found, the
  monitor's changes are the lines of its history and ``notified`` what it sent.

Before half the report's and the backup's runs their outputs are deleted, so that the run
writes them again through the faults. Then runs without faults bring the job to the end
a clean series reaches.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.chaos.conftest import Tally
from tests.chaos.runs import KILLS, SEED
from tests.chaos.test_kill import clean_series
from tests.chaos.worlds import JOBS, MonitorWorld, world
from tests.servers.faults import FaultProxy
from tests.servers.s3 import WeedMini

# Whole series of runs: CHAOS_KILLS=30 takes minutes a test, past the 120 s default.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

RUNS = int(os.environ.get("CHAOS_FAULT_RUNS", "1"))

FAULTS = ("500", "503", "reset", "hold", "drop_answer")
OUTAGE = ("500", "503", "reset", "drop_answer")
# The proxy holds an answer 1.5 s: past the client's read timeout.
FAULTY = {"OCHINAI_S3_TIMEOUT": "1s"}


@pytest.mark.parametrize("job", JOBS)
def test_runs_through_failing_storage_tell_the_truth_and_leave_nothing_half_written(
    weed: WeedMini, job: str, tally: Tally
) -> None:
    seed = f"{SEED}-{job}"
    reference, _, port = clean_series(weed, job, seed)
    rng = random.Random(f"{seed}-faults")
    problems: list[str] = []
    requests = 10  # how many S3 requests a run makes: as many as the last one made
    with world(weed, job, seed=seed, port=port, steps=KILLS) as w:
        for n in range(RUNS):
            if not isinstance(w, MonitorWorld) and rng.random() < 0.5:
                w.forget()  # the run writes its outputs again, through the faults
            before = w.bucket.objects()
            posts = len(w.hook.received) if isinstance(w, MonitorWorld) else 0
            with FaultProxy(weed.endpoint, seed=rng.randrange(2**32)) as proxy:
                if rng.random() < 0.3:  # an outage from a random request of the run on
                    proxy.chaos(1.0, OUTAGE, limit=10_000, after=rng.randrange(requests))
                else:  # faults here and there, most of them retried past
                    proxy.chaos(rng.choice((0.05, 0.2, 0.5)), FAULTS, limit=rng.randint(1, 12))
                run = w.bucket.run(job, AWS_ENDPOINT_URL=proxy.endpoint, **FAULTY)
            tally.add_faults(job, proxy.injected(), run.code)
            requests = len(proxy.log) or requests
            where = f"run {n + 1} ({proxy.injected()})"
            if run.code not in (0, 75):
                errors = [
                    f"{line['message']} {line.get('exc', '')[-1500:]}"
                    for line in run.lines
                    if line.get("severity") == "ERROR"
                ]
                problems.append(f"{where}: exit {run.code}: {errors[-2:]}")
            elif len(run.summaries) != 1 or run.summary.get("exit_code") != run.code:
                problems.append(f"{where}: exit {run.code}, summaries {run.summaries}")
            elif run.code == 0:
                if isinstance(w, MonitorWorld):
                    problems += [f"{where}: {p}" for p in w.claims(run, before, reference, posts)]
                else:
                    problems += [f"{where}: {p}" for p in w.claims(run, before, reference)]
            left = w.invariants(reference, final=False)
            problems += [f"after {where}: {p}" for p in left]
        _, end = w.complete()
        problems += [f"without faults: {p}" for p in end]
        problems += [f"at the end: {p}" for p in w.invariants(reference)]
        problems += w.differences(reference)
    tally.add(job, violations=len(problems))
    assert not problems, "\n".join(problems)
