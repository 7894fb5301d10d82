"""The runtime under faults, through a fault-injecting proxy in front of a real S3 (SeaweedFS).

A write whose answer is lost (the server applied it, the client saw a reset or a
timeout and botocore sent it again) must be known as this run's own write; uploads
and probes left behind must be cleaned up; a lock renewal whose answer was lost must
not be taken for someone else's.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ochinai.runtime import probe
from ochinai.runtime.errors import ConfigError, exit_code_for
from ochinai.runtime.kube import LeaseBackend, coordination_api
from ochinai.runtime.lock import LeaderLock, LockTiming, S3LockBackend
from ochinai.runtime.storage import MiB
from tests.conftest import Faulty
from tests.servers.kube import FakeKube
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY

BIG = 11 * MiB  # three parts of 5 MiB, 5 MiB and 1 MiB
TIMING = LockTiming(duration=2.0, renew_period=0.3, renew_deadline=1.2, poll=0.05)


# --- ambiguous writes ------------------------------------------------------------------


def test_a_create_whose_answer_was_lost_is_created_not_unchanged(faulty: Faulty) -> None:
    """PutObject applied, answer dropped, botocore's retry refused (412): still 'created'."""
    store = faulty.store()
    store.verify_conditional_writes()
    faulty.proxy.add("drop_answer", "PutObject", key="report")
    result = store.put("out/report.xlsx", b"workbook", if_none_match=True)
    assert result.outcome == "created"
    assert faulty.tries("PutObject", "out/report.xlsx") == 2  # ours and botocore's resend
    body = faulty.direct.get_object(Bucket=faulty.bucket, Key="out/report.xlsx")["Body"]
    assert body.read() == b"workbook"


def test_a_cas_whose_answer_was_lost_is_replaced(faulty: Faulty) -> None:
    """A compare-and-swap applied but unanswered is this run's own: 'replaced', new etag."""
    store = faulty.store()
    first = store.put("state.json", b"1", if_none_match=True)
    faulty.proxy.add("drop_answer", "PutObject", key="state")
    second = store.put("state.json", b"2", if_match=first.etag)
    assert second.outcome == "replaced"
    head = faulty.direct.head_object(Bucket=faulty.bucket, Key="state.json")
    assert head["ETag"] == second.etag


def test_an_answer_held_past_the_timeout_is_known_as_our_write(faulty: Faulty) -> None:
    """The server took the write, the answer came after the client's read timeout."""
    store = faulty.store(read_timeout=0.5)
    store.verify_conditional_writes()
    faulty.proxy.add("hold", "PutObject", key="slow", seconds=1.5)
    assert store.put("slow.bin", b"x", if_none_match=True).outcome == "created"


def test_a_completion_whose_answer_was_lost_is_created(faulty: Faulty) -> None:
    """CompleteMultipartUpload applied, answer dropped: created, and no upload left open."""
    store = faulty.store(multipart_threshold=5 * MiB)
    store.verify_conditional_writes()
    faulty.proxy.add("drop_answer", "CompleteMultipartUpload")
    body = bytes(range(256)) * (BIG // 256)
    assert store.put("big.bin", body, if_none_match=True).outcome == "created"
    assert faulty.uploads() == []
    got = faulty.direct.get_object(Bucket=faulty.bucket, Key="big.bin")["Body"].read()
    assert got == body


def test_an_upload_started_unanswered_is_aborted_by_a_later_run(faulty: Faulty) -> None:
    """CreateMultipartUpload's answer lost leaves an upload nobody knows; the next run sweeps."""
    faulty.proxy.add("drop_answer", "CreateMultipartUpload")
    store = faulty.store(multipart_threshold=5 * MiB)
    store.verify_conditional_writes()
    assert store.put("out/a.bin", b"a" * BIG, if_none_match=True).outcome == "created"
    assert len(faulty.uploads()) == 1, "the first, unanswered upload dangles"
    later = faulty.store(run_id="run-2", multipart_threshold=5 * MiB, stale_upload_age=0)
    assert later.put("out/b.bin", b"b" * BIG, if_none_match=True).outcome == "created"
    assert faulty.uploads() == []


def test_a_young_upload_is_not_swept(faulty: Faulty) -> None:
    """An upload younger than the longest a run lives may be a live run's: left alone."""
    faulty.direct.create_multipart_upload(Bucket=faulty.bucket, Key="out/live.bin")
    store = faulty.store(multipart_threshold=5 * MiB, stale_upload_age=3600)
    assert store.put("out/c.bin", b"c" * BIG, if_none_match=True).outcome == "created"
    assert [u["Key"] for u in faulty.uploads()] == ["out/live.bin"]


def test_another_shards_live_upload_is_left_and_this_shards_own_is_swept(
    faulty: Faulty,
) -> None:
    """Two shards of an Indexed Job share the generation's prefix under different locks:
    an upload under the other shard's keys is left while it may be alive, however old
    compared with the lease (before, one older than the lease was aborted); an upload
    under this shard's own keys is a dead run's and is aborted at once."""
    theirs = faulty.direct.create_multipart_upload(Bucket=faulty.bucket, Key="g/b~1.parquet")
    mine = faulty.direct.create_multipart_upload(Bucket=faulty.bucket, Key="g/a~1.parquet")
    store = faulty.store(stale_upload_age=3 * 3600)
    aborted = store.sweep_uploads("g/", owned=lambda key: key.startswith("g/a~"))
    assert aborted == 1
    left = [(u["Key"], u["UploadId"]) for u in faulty.uploads()]
    assert left == [("g/b~1.parquet", theirs["UploadId"])]
    assert mine["UploadId"] not in {u for _, u in left}
    # Past the longest a run lives, nobody can own it: swept whatever its key.
    assert faulty.store(stale_upload_age=0).sweep_uploads("g/") == 1
    assert faulty.uploads() == []


# --- the self-test -----------------------------------------------------------------------


def test_a_probe_whose_answer_was_lost_verifies_and_cleans_up(faulty: Faulty) -> None:
    """The first probe put applied but unanswered is the probe's own: verified, none left."""
    faulty.proxy.add("drop_answer", "PutObject", key="_probe/")
    faulty.store().verify_conditional_writes()
    assert faulty.keys("_probe/") == []


def test_old_probes_left_by_killed_runs_are_swept(
    faulty: Faulty, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe object a killed run left behind goes with the next verification."""
    faulty.direct.put_object(Bucket=faulty.bucket, Key="_probe/left-by-a-kill", Body=b"1")
    monkeypatch.setattr(probe, "STALE_PROBE", timedelta(seconds=-60))  # "old" is now
    faulty.store().verify_conditional_writes()
    assert faulty.keys("_probe/") == []


def test_a_header_dropped_and_signed_again_is_a_server_that_ignores_it(faulty: Faulty) -> None:
    """SeaweedFS checks signatures: given the keys, the proxy signs again what it forwards
    without If-Match, and the self-test names the server that ignores it (78)."""
    faulty.proxy.credentials = (ACCESS_KEY, SECRET_KEY)
    faulty.proxy.add("drop_header", "PutObject", header="If-Match", times=10**6)
    with pytest.raises(ConfigError) as caught:
        faulty.store().put("report.xlsx", b"x", if_none_match=True)
    assert exit_code_for(caught.value) == 78
    server = f"the S3 server at {faulty.proxy.endpoint}"
    assert f"{server} ignores If-Match on PutObject (compare-and-swap)" in str(caught.value)
    assert faulty.keys() == []


@pytest.mark.parametrize("fault", ["500", "503", "reset"])
def test_reads_and_writes_get_past_a_failed_answer(faulty: Faulty, fault: str) -> None:
    """500, 503 SlowDown and a reset are retried by the client; the data is right."""
    store = faulty.store()
    faulty.proxy.add(fault, "PutObject", key="data")
    faulty.proxy.add(fault, "GetObject", key="data")
    store.put("data.bin", b"payload", if_none_match=True)
    assert store.get("data.bin").body == b"payload"
    assert faulty.proxy.injected() == {fault: 2}


# --- a lock renewal lost to itself -------------------------------------------------------


def test_an_s3_lock_renewal_whose_answer_was_lost_keeps_the_lock(faulty: Faulty) -> None:
    """The renewal's CAS applied but unanswered: the holder still holds, logs no loss."""
    backend = S3LockBackend(faulty.store(), "_locks/ochinai-demo.json")
    lock = LeaderLock(backend, "pod-a/run-1", TIMING)
    assert lock.try_acquire_or_renew()
    faulty.proxy.add("drop_answer", "PutObject", key="_locks/")
    assert lock.try_acquire_or_renew()
    current = backend.get()
    assert current is not None and current.record.holder == "pod-a/run-1"
    assert lock._observed == current


def test_a_lease_renewal_whose_answer_was_lost_keeps_the_lock(
    fake_kube: FakeKube, tmp_path: Path
) -> None:
    """urllib3 resends the unanswered PUT, which meets our own new resourceVersion (409)."""
    api, _ = coordination_api(str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig")))
    backend = LeaseBackend(api, "default", "ochinai-demo")
    lock = LeaderLock(backend, "pod-a/run-1", TIMING)
    assert lock.try_acquire_or_renew()
    fake_kube.drop_answers(1, verb="update")
    assert lock.try_acquire_or_renew()
    statuses = [r.status for r in fake_kube.requests if r.verb == "update"]
    assert statuses[-2:] == [200, 409], "the resent PUT met our own renewal"
    current = backend.get()
    assert current is not None and current.record.holder == "pod-a/run-1"


# --- the report job, through the proxy -------------------------------------------------


@pytest.mark.parametrize("op", ["PutObject", "CompleteMultipartUpload"])
def test_a_report_whose_upload_answer_was_lost_says_created(
    faulty: Faulty, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    """The workbook's write applied but unanswered: the summary says created, not unchanged."""
    from tests.harness import run_job

    data = (Path(__file__).parent / "data" / "sales_utf8.csv").read_bytes()
    faulty.direct.put_object(Bucket=faulty.bucket, Key="in/sales.csv", Body=data)
    faulty.proxy.add("drop_answer", op, key="^out/report_20261128.xlsx$")
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty.proxy.endpoint)
    env = {
        "OCHINAI_STORE": f"s3://{faulty.bucket}",
        "OCHINAI_LOCK": "s3",
        # Multipart for the completion case: the workbook is about 10 kB.
        "OCHINAI_MULTIPART_THRESHOLD": "5000" if op == "CompleteMultipartUpload" else "64MiB",
    }
    result = run_job("report", "--date", "2026-11-28", env=env)
    assert result.code == 0
    assert (result.summary["outcome"], result.summary["report"]) == ("ok", "created")
    assert faulty.proxy.injected() == {"drop_answer": 1}
    assert faulty.uploads() == []
