"""The lock's behavioural suite on both backends: a Lease via the fake API, and S3."""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ochinai.runtime import logs
from ochinai.runtime.declare import load
from ochinai.runtime.errors import LockLost
from ochinai.runtime.job import Action, Context, Job, Summary
from ochinai.runtime.kube import LeaseBackend, coordination_api
from ochinai.runtime.lock import LeaderLock, LockBackend, LockTiming, S3LockBackend
from ochinai.runtime.run import Runner
from ochinai.runtime.settings import RuntimeSettings
from ochinai.runtime.storage import Store, make_s3_client
from tests.harness import DemoSettings
from tests.servers import s3 as s3servers
from tests.servers.kube import FakeKube

TIMING = LockTiming(duration=2.0, renew_period=0.3, renew_deadline=1.2, poll=0.05)
NS = "jobs"


@dataclass
class LockSite:
    """Where a lock lives, as a picklable spec so another process can open it too."""

    spec: dict[str, str]

    def backend(self) -> LockBackend:
        return open_backend(self.spec)


def open_backend(spec: dict[str, str]) -> LockBackend:
    """Build a backend from a spec (in this process or a child)."""
    if spec["kind"] == "lease":
        api, _ = coordination_api(spec["kubeconfig"])
        return LeaseBackend(api, NS, "ochinai-demo")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        os.environ[name] = spec[name]
    client = make_s3_client(endpoint_url=spec["endpoint"] or None, max_attempts=2)
    return S3LockBackend(Store(client, spec["bucket"]), "_locks/ochinai-demo.json")


def lease_site(fake: FakeKube, tmp_path: Path) -> LockSite:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    return LockSite({"kind": "lease", "kubeconfig": str(kubeconfig)})


def seaweedfs_site(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> LockSite:
    server: s3servers.WeedMini = request.getfixturevalue("seaweedfs")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3servers.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3servers.SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"lock-{uuid.uuid4().hex[:20]}"
    make_s3_client(endpoint_url=server.endpoint).create_bucket(Bucket=bucket)
    return LockSite(
        {
            "kind": "s3",
            "endpoint": server.endpoint,
            "bucket": bucket,
            "AWS_ACCESS_KEY_ID": s3servers.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": s3servers.SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }
    )


@pytest.fixture(params=["lease", "s3-moto", "s3-seaweedfs"])
def site(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LockSite]:
    """The same lock behaviour on a Lease (fake API over HTTP) and on S3 (moto and SeaweedFS)."""
    if request.param == "lease":
        yield lease_site(request.getfixturevalue("fake_kube"), tmp_path)
    elif request.param == "s3-seaweedfs":
        yield seaweedfs_site(request, monkeypatch)
    else:
        from moto import mock_aws

        request.getfixturevalue("aws_test_env")
        with mock_aws():
            make_s3_client().create_bucket(Bucket="locks")
            yield LockSite(
                {
                    "kind": "s3",
                    "endpoint": "",
                    "bucket": "locks",
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_REGION": "us-east-1",
                }
            )


@pytest.fixture(params=["lease", "s3-seaweedfs"])
def shared_site(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> LockSite:
    """A lock several processes can reach: the fake API, or a real SeaweedFS server."""
    if request.param == "lease":
        return lease_site(request.getfixturevalue("fake_kube"), tmp_path)
    return seaweedfs_site(request, monkeypatch)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition that a background thread or process will make true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_acquire_renew_release_and_reacquire(site: LockSite) -> None:
    """Acquire creates the record, renewal advances it, release clears it, next gets fence+1."""
    backend = site.backend()
    held = LeaderLock(backend, "pod-a/run-1", TIMING).acquire(wait=0)
    assert held is not None and held.held()
    first = backend.get()
    assert first is not None and first.record.holder == "pod-a/run-1"
    wait_for(lambda: backend.get().record.renewed > first.record.renewed)  # type: ignore[union-attr]
    held.release()
    released = backend.get()
    assert released is not None
    assert released.record.holder == "" and released.record.duration_s == 1
    again = LeaderLock(site.backend(), "pod-b/run-2", TIMING).acquire(wait=0)
    assert again is not None and again.term == first.record.transitions + 1
    again.release()


def test_live_holder_makes_a_challenger_give_up(site: LockSite) -> None:
    """While the holder renews, a challenger with wait 0 returns None and names the holder."""
    held = LeaderLock(site.backend(), "pod-a/run-1", TIMING).acquire(wait=0)
    assert held is not None
    challenger = LeaderLock(site.backend(), "pod-b/run-2", TIMING)
    assert challenger.acquire(wait=0) is None
    assert "pod-a/run-1" in challenger.describe_holder()
    held.release()


def test_skewed_holder_keeps_the_lock_while_it_renews(site: LockSite) -> None:
    """A holder whose clock is 10 minutes behind is never taken over while it renews."""
    slow_clock = lambda: datetime.now(UTC) - timedelta(minutes=10)  # noqa: E731
    held = LeaderLock(site.backend(), "slow/run-1", TIMING, wallclock=slow_clock).acquire(wait=0)
    assert held is not None
    challenger = LeaderLock(site.backend(), "true/run-2", TIMING)
    deadline = time.monotonic() + TIMING.duration * 2
    while time.monotonic() < deadline:
        assert challenger.acquire(wait=0) is None
    assert held.held()
    held.release()


def hold_loop(spec: dict[str, str], worker: int, seconds: float, out: str) -> None:
    """A contention worker: acquire, hold briefly, release, for ``seconds``; log intervals."""
    backend = open_backend(spec)
    end = time.monotonic() + seconds
    with open(out, "w", encoding="utf-8") as f:
        n = 0
        while time.monotonic() < end:
            n += 1
            held = LeaderLock(backend, f"w{worker}/{n}", TIMING).acquire(wait=1.0)
            if held is None:
                continue
            start = time.time()
            time.sleep(0.03)
            stop = time.time()
            held.release()
            f.write(
                json.dumps({"worker": worker, "start": start, "stop": stop, "fence": held.term})
                + "\n"
            )
            f.flush()
            time.sleep(0.05)  # let the others have a go


def test_six_processes_never_hold_at_once(shared_site: LockSite, tmp_path: Path) -> None:
    """Six processes contend for a few seconds: no two hold intervals overlap; all get a turn."""
    ctx = multiprocessing.get_context("spawn")
    outs = [str(tmp_path / f"w{i}.ndjson") for i in range(6)]
    procs = [
        ctx.Process(target=hold_loop, args=(shared_site.spec, i, 4.0, outs[i])) for i in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    holds = [json.loads(line) for out in outs for line in Path(out).read_text().splitlines()]
    holds.sort(key=lambda h: h["start"])
    assert {h["worker"] for h in holds} == set(range(6))
    for before, after in itertools.pairwise(holds):
        assert before["stop"] <= after["start"], (before, after)
        assert after["fence"] > before["fence"]


def hold_forever(spec: dict[str, str], ready: Any) -> None:
    """Acquire and keep renewing until killed."""
    held = LeaderLock(open_backend(spec), "doomed/run-1", TIMING).acquire(wait=0)
    assert held is not None
    ready.set()
    time.sleep(600)


def test_killed_holder_is_taken_over_after_the_duration(shared_site: LockSite) -> None:
    """A SIGKILLed holder's lock passes to another run only after the lease duration, fence+1."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=hold_forever, args=(shared_site.spec, ready))
    proc.start()
    try:
        assert ready.wait(30)
        backend = shared_site.backend()
        before = backend.get()
        assert before is not None and before.record.holder == "doomed/run-1"
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(10)
        started = time.monotonic()
        held = LeaderLock(backend, "rescuer/run-2", TIMING).acquire(wait=0)
        waited = time.monotonic() - started
    finally:
        proc.kill()
    assert held is not None
    assert held.term == before.record.transitions + 1
    assert waited >= TIMING.duration - TIMING.renew_period  # not before the lease could expire
    held.release()


# --- through the runner ------------------------------------------------------------------


def lease_env(fake: FakeKube, tmp_path: Path, **extra: str) -> dict[str, str]:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    return {
        "OCHINAI_STORE": "s3://ops",
        "OCHINAI_RUN_ID": "run-1",
        "OCHINAI_LOCK": "lease",
        "OCHINAI_NAMESPACE": NS,
        "OCHINAI_LOCK_DURATION": "2",
        "OCHINAI_LOCK_RENEW_PERIOD": "0.3",
        "OCHINAI_LOCK_RENEW_DEADLINE": "1.2",
        "KUBECONFIG": str(kubeconfig),
        **extra,
    }


def run(
    env: dict[str, str], fn: Callable[[Context[Any]], Summary], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[dict[str, Any]]]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    buf = io.StringIO()
    logs.configure(fmt="json", stream=buf)
    job = Job("demo", "a test job", DemoSettings, {"run": Action(fn, "the test's function")})
    code = Runner(job, load(RuntimeSettings, env), load(DemoSettings, env)).run()
    return code, [json.loads(line) for line in buf.getvalue().splitlines()]


def test_renewal_failure_refuses_the_next_write_and_exits_75(
    fake_kube: FakeKube, moto_ops: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500s past the renew deadline: held() turns false, the next write is refused, exit 75."""
    written: list[str] = []

    def job(ctx: Context[Any]) -> Summary:
        ctx.store.put("out/before.txt", b"1", if_none_match=True)
        written.append("before")
        fake_kube.fail_always(500)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ctx.store.put(f"out/{time.monotonic_ns()}.txt", b"x", if_none_match=True)
            written.append("during")
            time.sleep(0.05)
        raise AssertionError("the lock was never reported lost")

    code, lines = run(lease_env(fake_kube, tmp_path), job, monkeypatch)
    fake_kube.stop_failing()
    assert code == 75
    summary = lines[-1]
    assert summary["outcome"] == "transient_error"
    assert any(line["severity"] == "ERROR" and "lost lock" in line["message"] for line in lines)
    assert any("refusing to write" in line["message"] for line in lines)
    assert written[0] == "before"


def test_rbac_denial_on_create_exits_77_naming_verb_and_resource(
    fake_kube: FakeKube, moto_ops: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 403 on creating the Lease is permanent (77) and says which permission is missing."""
    fake_kube.deny("create")
    called: list[int] = []
    code, lines = run(
        lease_env(fake_kube, tmp_path), lambda ctx: called.append(1) or Summary(), monkeypatch
    )
    assert code == 77 and called == []
    assert any(
        "create leases.coordination.k8s.io in namespace jobs" in line["message"] for line in lines
    )


def test_busy_lease_exits_0_skipped_locked(
    fake_kube: FakeKube, moto_ops: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another live holder: the job is not called, outcome skipped_locked, exit 0."""
    env = lease_env(fake_kube, tmp_path)
    api, _ = coordination_api(env["KUBECONFIG"])
    other = LeaderLock(LeaseBackend(api, NS, "ochinai-demo"), "pod-z/run-0", TIMING)
    held = other.acquire(wait=0)
    assert held is not None
    called: list[int] = []
    try:
        code, lines = run(env, lambda ctx: called.append(1) or Summary(), monkeypatch)
    finally:
        held.release()
    assert code == 0 and called == []
    assert lines[-1]["outcome"] == "skipped_locked"
    [warning] = [line for line in lines if line["severity"] == "WARNING"]
    assert "pod-z/run-0" in warning["message"]


def test_fence_goes_into_every_written_object(
    fake_kube: FakeKube, moto_ops: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects written under the Lease carry its leaseTransitions as fence metadata."""
    env = lease_env(fake_kube, tmp_path)
    api, _ = coordination_api(env["KUBECONFIG"])
    first = LeaderLock(LeaseBackend(api, NS, "ochinai-demo"), "pod-z/run-0", TIMING).acquire(0)
    assert first is not None
    first.release()

    def job(ctx: Context[Any]) -> Summary:
        ctx.store.put("out/a.txt", b"a", if_none_match=True)
        return Summary()

    code, _ = run(env, job, monkeypatch)
    assert code == 0
    head = moto_ops.head_object(Bucket="ops", Key="out/a.txt")
    assert head["Metadata"]["fence"] == "1"
    lease = fake_kube.leases.get_lease(NS, "ochinai-demo")
    assert lease is not None and lease["spec"]["holderIdentity"] == ""


def test_lock_lost_error_is_transient() -> None:
    """LockLost ends a run as transient (75), so the CronJob retries it."""
    assert LockLost("x").exit_code == 75
