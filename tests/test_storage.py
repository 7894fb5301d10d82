"""Contract tests of the S3 store, run against moto and a real SeaweedFS server."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.awsrequest import AWSResponse

from ochinai.runtime.errors import (
    ConfigError,
    EndpointUnreachable,
    LockLost,
    PermanentError,
    TransientError,
    exit_code_for,
)
from ochinai.runtime.fence import Fence
from ochinai.runtime.storage import (
    MiB,
    ObjectNotFound,
    PreconditionFailed,
    Store,
    make_s3_client,
)
from tests.conftest import S3Backend
from tests.servers import s3 as s3servers
from tests.servers.faults import FaultProxy

BIG = 11 * MiB  # three parts of 5 MiB, 5 MiB and 1 MiB
SMALL_PARTS = {"multipart_threshold": 5 * MiB, "part_size": 5 * MiB}


@dataclass
class FakeGuard:
    """A lock stand-in: a fencing token and a switch that loses the lock."""

    fence: Fence = field(default_factory=lambda: Fence("scope-of-the-test", 7))
    lost: bool = False

    def check_writable(self) -> None:
        if self.lost:
            raise LockLost("lock lost: renewal missed its deadline")


def count_calls(client: Any, *operations: str) -> list[str]:
    """Record every call of the given S3 operations made through ``client`` from now on."""
    seen: list[str] = []
    for op in operations:
        client.meta.events.register(
            f"before-call.s3.{op}", lambda model, **_: seen.append(model.name)
        )
    return seen


def answer_409(client: Any, key: str, times: int) -> list[str]:
    """Make the next ``times`` PutObject calls on ``key`` answer 409 ConditionalRequestConflict."""
    sent: list[str] = []

    def handler(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if not params["url_path"].endswith(f"/{key}"):
            return None
        sent.append(params["url_path"])
        if len(sent) > times:
            return None
        error = {"Code": "ConditionalRequestConflict", "Message": "conflicting write in progress"}
        parsed = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 409}}
        return AWSResponse(params["url"], 409, {}, None), parsed

    # A before-call answer replaces the request (before-send would still reach moto's stub).
    client.meta.events.register_first("before-call.s3.PutObject", handler)
    return sent


def big_file(tmp_path: Path, seed: bytes) -> Path:
    """An 11 MiB file whose bytes depend on ``seed``."""
    path = tmp_path / f"big-{seed.hex()}.bin"
    block = hashlib.sha256(seed).digest() * (MiB // 32)
    path.write_bytes(block * 11)
    return path


# --- create-only ----------------------------------------------------------------


def test_create_only_refuses_different_bytes(s3: S3Backend) -> None:
    """A second create-only put with other bytes raises PreconditionFailed; the first stays."""
    store = s3.store("jobs")
    first = store.put("out/report.xlsx", b"version 1", if_none_match=True)
    assert first.outcome == "created"

    with pytest.raises(PreconditionFailed) as caught:
        store.put("out/report.xlsx", b"version 2", if_none_match=True)

    assert caught.value.current_etag == first.etag
    assert caught.value.key == "out/report.xlsx"
    assert f"s3://{s3.bucket}/jobs/out/report.xlsx" in str(caught.value)
    assert store.get("out/report.xlsx").body == b"version 1"


def test_create_only_same_bytes_is_unchanged_without_writing(s3: S3Backend) -> None:
    """Putting the same bytes again says "unchanged" and sends no write at all."""
    store = s3.store()
    first = store.put("a.txt", b"same", if_none_match=True)
    before = store.head("a.txt")
    writes = count_calls(s3.client, "PutObject", "CreateMultipartUpload", "DeleteObject")

    again = store.put("a.txt", b"same", if_none_match=True)

    assert again.outcome == "unchanged"
    assert again.etag == first.etag
    assert writes == []
    after = store.head("a.txt")
    assert after is not None and before is not None
    assert (after.etag, after.last_modified) == (before.etag, before.last_modified)


def test_put_requires_exactly_one_condition(s3: S3Backend) -> None:
    """An unconditional put, or one with both conditions, is a programming error."""
    store = s3.store()
    with pytest.raises(TypeError, match="unconditional"):
        store.put("a", b"x")
    with pytest.raises(TypeError):
        store.put("a", b"x", if_none_match=True, if_match='"abc"')
    assert store.head("a") is None


# --- compare-and-swap -------------------------------------------------------------


def test_cas_replaces_with_current_etag(s3: S3Backend) -> None:
    """CAS with the current etag replaces the bytes and returns the new etag."""
    store = s3.store()
    first = store.put("state.json", b'{"n": 1}', if_none_match=True)

    second = store.put("state.json", b'{"n": 2}', if_match=first.etag)
    same = store.put("state.json", b'{"n": 2}', if_match=second.etag)

    assert second.outcome == "replaced"
    assert second.etag != first.etag
    assert same.outcome == "unchanged"
    got = store.get("state.json")
    assert (got.body, got.etag) == (b'{"n": 2}', second.etag)


def test_cas_with_stale_etag_is_refused(s3: S3Backend) -> None:
    """CAS with an etag someone else already replaced raises PreconditionFailed."""
    store = s3.store()
    first = store.put("state.json", b"1", if_none_match=True)
    second = store.put("state.json", b"2", if_match=first.etag)

    with pytest.raises(PreconditionFailed) as caught:
        store.put("state.json", b"3", if_match=first.etag)

    assert caught.value.current_etag == second.etag
    assert store.get("state.json").body == b"2"


def test_cas_on_missing_object_is_refused(s3: S3Backend) -> None:
    """CAS on an object that does not exist raises PreconditionFailed and creates nothing."""
    store = s3.store()
    with pytest.raises(PreconditionFailed) as caught:
        store.put("state.json", b"1", if_match='"0123456789abcdef0123456789abcdef"')
    assert caught.value.current_etag is None
    assert store.head("state.json") is None


def test_cas_loses_race_at_write_time(s3: S3Backend) -> None:
    """CAS whose object changes between its HEAD and its PutObject is refused by the server."""
    store = s3.store()
    first = store.put("state.json", b"1", if_none_match=True)
    other = s3.make_client(max_attempts=1)

    def interloper(**_: Any) -> None:
        s3.client.meta.events.unregister("before-call.s3.PutObject", interloper)
        other.put_object(Bucket=s3.bucket, Key="state.json", Body=b"theirs", IfMatch=first.etag)

    s3.client.meta.events.register("before-call.s3.PutObject", interloper)
    with pytest.raises(PreconditionFailed) as caught:
        store.put("state.json", b"mine", if_match=first.etag)

    assert store.get("state.json").body == b"theirs"
    assert caught.value.current_etag == store.get("state.json").etag


# --- reading ----------------------------------------------------------------------


def test_missing_object_get_raises_and_head_is_none(s3: S3Backend) -> None:
    """get of a missing key is a DataError (exit 65) naming the key; head returns None."""
    store = s3.store("pre")
    assert store.head("nope.csv") is None
    with pytest.raises(ObjectNotFound) as caught:
        store.get("nope.csv")
    assert f"s3://{s3.bucket}/pre/nope.csv" in str(caught.value)
    assert exit_code_for(caught.value) == 65
    with pytest.raises(ObjectNotFound), store.open_read("nope.csv"):
        pass


def test_open_read_streams_the_body(s3: S3Backend, tmp_path: Path) -> None:
    """open_read yields a binary stream that reads the bytes piece by piece and as text."""
    store = s3.store()
    store.put("sales.csv", "店舗,売上\n東京,100\n".encode(), if_none_match=True)
    with store.open_read("sales.csv") as raw:
        assert raw.read(6) == "店舗".encode()
        assert raw.read() == ",売上\n東京,100\n".encode()
    with store.open_read("sales.csv") as raw:
        assert list(io.TextIOWrapper(raw, encoding="utf-8")) == ["店舗,売上\n", "東京,100\n"]


def test_metadata_round_trip(s3: S3Backend) -> None:
    """Every write carries run-id, fence, sha256, its own write-id and the caller's metadata."""
    store = s3.store(run_id="run-42", guard=FakeGuard(fence=Fence("a-lock", 9)))
    body = b"hello metadata"
    result = store.put(
        "m.bin", body, if_none_match=True, content_type="text/plain", metadata={"Source": "x.csv"}
    )

    sha = hashlib.sha256(body).hexdigest()
    assert result.sha256 == sha and result.size == len(body)
    expected = {
        "run-id": "run-42",
        "fence": "9",
        "fence-scope": "a-lock",
        "sha256": sha,
        "source": "x.csv",
    }
    info = store.head("m.bin")
    assert info is not None and info.size == len(body)
    write_id = info.metadata.pop("write-id")
    assert info.metadata == expected and re.fullmatch(r"[0-9a-f]{32}", write_id)
    assert store.get("m.bin").metadata == {**expected, "write-id": write_id}


def test_list_past_1000_keys(s3: S3Backend) -> None:
    """list pages past S3's 1,000 keys per page and returns keys relative to the prefix."""
    keys = [f"many/{i:05d}.txt" for i in range(1050)]
    client = s3.make_client(max_attempts=3, max_pool_connections=32)

    def put(key: str) -> None:
        client.put_object(Bucket=s3.bucket, Key=f"p/{key}", Body=b"x", IfNoneMatch="*")

    with ThreadPoolExecutor(32 if s3.name == "seaweedfs" else 1) as pool:
        list(pool.map(put, keys))
    client.put_object(Bucket=s3.bucket, Key="p/other/x.txt", Body=b"x", IfNoneMatch="*")
    client.put_object(Bucket=s3.bucket, Key="outside.txt", Body=b"x", IfNoneMatch="*")

    listed = list(s3.store("p").list("many/"))

    assert [o.key for o in listed] == keys
    assert all(o.size == 1 and o.metadata == {} for o in listed)
    assert len(list(s3.store("p").list())) == 1051


def test_presigned_url_is_fetchable_without_credentials(s3: S3Backend) -> None:
    """A presigned URL downloads the object with a plain HTTP GET."""
    store = s3.store("reports")
    store.put("r.xlsx", b"workbook bytes", if_none_match=True)

    url = store.presign("r.xlsx", 300)

    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.content == b"workbook bytes"
    with pytest.raises(ConfigError):
        store.presign("r.xlsx", 8 * 24 * 3600)


# --- multipart --------------------------------------------------------------------


def test_multipart_create_only_and_cas(s3: S3Backend, tmp_path: Path) -> None:
    """Bodies over the threshold go up in parts, create-only and CAS, and read back intact."""
    store = s3.store(**SMALL_PARTS)
    v1, v2 = big_file(tmp_path, b"v1"), big_file(tmp_path, b"v2")
    parts = count_calls(s3.client, "UploadPart")

    created = store.put("big.bin", v1, if_none_match=True)
    assert created.outcome == "created" and created.size == BIG
    assert parts == ["UploadPart"] * 3
    assert store.put("big.bin", v1, if_none_match=True).outcome == "unchanged"
    with pytest.raises(PreconditionFailed):
        store.put("big.bin", v2, if_none_match=True)

    with v2.open("rb") as f:
        replaced = store.put("big.bin", f, if_match=created.etag)

    assert replaced.outcome == "replaced"
    assert store.get("big.bin").body == v2.read_bytes()
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


def test_multipart_create_only_race_is_refused_and_aborted(s3: S3Backend, tmp_path: Path) -> None:
    """An object created while our parts upload makes completion fail and the upload abort."""
    store = s3.store(**SMALL_PARTS)
    other = s3.make_client(max_attempts=1)

    def interloper(**_: Any) -> None:
        other.put_object(Bucket=s3.bucket, Key="big.bin", Body=b"theirs", IfNoneMatch="*")

    s3.client.meta.events.register("before-call.s3.CompleteMultipartUpload", interloper)
    with pytest.raises(PreconditionFailed):
        store.put("big.bin", big_file(tmp_path, b"mine"), if_none_match=True)

    assert store.get("big.bin").body == b"theirs"
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


@pytest.mark.seaweedfs_only(reason="moto ignores If-Match on CompleteMultipartUpload")
def test_multipart_stale_if_match_is_refused_and_aborted(s3: S3Backend, tmp_path: Path) -> None:
    """A multipart CAS whose object changes during the upload is refused and aborted."""
    store = s3.store(**SMALL_PARTS)
    first = store.put("big.bin", b"v1", if_none_match=True)
    other = s3.make_client(max_attempts=1)

    def interloper(**_: Any) -> None:
        other.put_object(Bucket=s3.bucket, Key="big.bin", Body=b"theirs", IfMatch=first.etag)

    s3.client.meta.events.register("before-call.s3.CompleteMultipartUpload", interloper)
    with pytest.raises(PreconditionFailed) as caught:
        store.put("big.bin", big_file(tmp_path, b"mine"), if_match=first.etag)

    assert store.get("big.bin").body == b"theirs"
    assert caught.value.current_etag == store.get("big.bin").etag
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


# --- guard, dry run, delete -------------------------------------------------------


def test_lost_lock_refuses_the_write(s3: S3Backend, tmp_path: Path) -> None:
    """With the lock gone, put and delete raise LockLost and the bucket stays untouched."""
    guard = FakeGuard()
    store = s3.store(guard=guard, **SMALL_PARTS)
    kept = store.put("kept.txt", b"x", if_none_match=True)
    guard.lost = True

    with pytest.raises(LockLost):
        store.put("new.txt", b"y", if_none_match=True)
    with pytest.raises(LockLost):
        store.put("big.bin", big_file(tmp_path, b"big"), if_none_match=True)
    with pytest.raises(LockLost):
        store.delete("kept.txt", if_match=kept.etag)

    assert [o.key for o in store.list()] == ["kept.txt"]
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


def test_lock_lost_during_multipart_aborts_the_upload(s3: S3Backend, tmp_path: Path) -> None:
    """A lock lost between parts stops the upload, aborts it and writes no object."""
    guard = FakeGuard()
    store = s3.store(guard=guard, **SMALL_PARTS)
    store.verify_conditional_writes()

    def lose_lock(**_: Any) -> None:
        guard.lost = True

    s3.client.meta.events.register("after-call.s3.UploadPart", lose_lock)
    with pytest.raises(LockLost):
        store.put("big.bin", big_file(tmp_path, b"big"), if_none_match=True)

    assert store.head("big.bin") is None
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


def test_dry_run_writes_nothing(s3: S3Backend, caplog: pytest.LogCaptureFixture) -> None:
    """A dry run reports what it would write, writes and deletes nothing, not even a probe."""
    real = s3.store()
    kept = real.put("kept.txt", b"kept", if_none_match=True)
    dry = s3.store(dry_run=True)
    writes = count_calls(s3.client, "PutObject", "CreateMultipartUpload", "DeleteObject")

    with caplog.at_level(logging.INFO, logger="ochinai.storage"):
        result = dry.put("new.txt", b"new", if_none_match=True)
        dry.delete("kept.txt", if_match=kept.etag)

    assert result.outcome == "dry_run"
    assert dry.put("kept.txt", b"kept", if_none_match=True).outcome == "unchanged"
    assert writes == []
    assert [o.key for o in real.list()] == ["kept.txt"]
    assert any(
        r.message == f"would write s3://{s3.bucket}/new.txt" and getattr(r, "bytes", None) == 3
        for r in caplog.records
    )


def test_delete_honours_if_match(s3: S3Backend) -> None:
    """delete with a stale etag is refused and keeps the object; the current etag deletes it."""
    store = s3.store()
    first = store.put("lock.json", b"1", if_none_match=True)
    second = store.put("lock.json", b"2", if_match=first.etag)

    with pytest.raises(PreconditionFailed):
        store.delete("lock.json", if_match=first.etag)
    assert store.get("lock.json").body == b"2"

    store.delete("lock.json", if_match=second.etag)
    assert store.head("lock.json") is None
    with pytest.raises(PreconditionFailed):  # gone: not what the caller read
        store.delete("lock.json", if_match=second.etag)
    with pytest.raises(TypeError, match="unconditional deletes"):
        store.delete("lock.json", if_match="")


# --- 409 ConditionalRequestConflict ------------------------------------------------


def test_conflict_409_is_retried_after_reread(s3: S3Backend) -> None:
    """A 409 ConditionalRequestConflict makes the store re-read and write again.

    Three HEADs: before the write, after the 409 (did the write land after all?), and
    the re-read before the second write.
    """
    store = s3.store()
    store.verify_conditional_writes()
    sent = answer_409(s3.client, "state.json", times=1)
    heads = count_calls(s3.client, "HeadObject")

    result = store.put("state.json", b"1", if_none_match=True)

    assert result.outcome == "created"
    assert len(sent) == 2 and len(heads) == 3
    assert store.get("state.json").body == b"1"


def test_conflict_409_exhausted_is_transient(s3: S3Backend) -> None:
    """409 on every attempt gives up after conflict_retries with a TransientError (exit 75)."""
    store = s3.store(conflict_retries=2)
    store.verify_conditional_writes()
    sent = answer_409(s3.client, "state.json", times=99)

    with pytest.raises(TransientError) as caught:
        store.put("state.json", b"1", if_none_match=True)

    assert not isinstance(caught.value, PreconditionFailed)
    assert len(sent) == 3
    assert exit_code_for(caught.value) == 75
    assert f"s3://{s3.bucket}/state.json" in str(caught.value)


# --- failures of the server or its settings ---------------------------------------


def test_missing_bucket_is_permanent(s3: S3Backend) -> None:
    """A bucket that does not exist is a PermanentError (exit 77) naming the bucket."""
    store = Store(s3.client, "no-such-bucket-here")
    for attempt in (
        lambda: store.put("a.txt", b"x", if_none_match=True),
        lambda: store.get("a.txt"),
        lambda: list(store.list()),
    ):
        with pytest.raises(PermanentError) as caught:
            attempt()
        assert "s3://no-such-bucket-here/" in str(caught.value)
        assert "NoSuchBucket" in str(caught.value)
        assert exit_code_for(caught.value) == 77


@pytest.mark.seaweedfs_only(reason="moto accepts any signature")
def test_wrong_secret_key_is_permanent(s3: S3Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong secret key is a PermanentError (exit 77), on reads and writes alike."""
    s3.store().put("a.txt", b"x", if_none_match=True)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = Store(s3.make_client(max_attempts=1), s3.bucket)

    for attempt in (
        lambda: store.head("a.txt"),
        lambda: store.get("a.txt"),
        lambda: store.put("b.txt", b"x", if_none_match=True),
    ):
        with pytest.raises(PermanentError) as caught:
            attempt()
        assert exit_code_for(caught.value) == 77
        assert f"s3://{s3.bucket}/" in str(caught.value)


def test_unreachable_endpoint_is_75_naming_the_endpoint(aws_test_env: None) -> None:
    """A closed port that never answered is EndpointUnreachable (exit 75, not retried by the
    run's loops) naming the object and the endpoint."""
    (port,) = s3servers.free_ports(1)
    client = make_s3_client(
        endpoint_url=f"http://127.0.0.1:{port}",
        connect_timeout=0.5,
        read_timeout=0.5,
        max_attempts=1,
    )
    store = Store(client, "bucket", "pre")

    with pytest.raises(EndpointUnreachable) as caught:
        store.get("a.txt")
    assert exit_code_for(caught.value) == 75 and not isinstance(caught.value, TransientError)
    assert "s3://bucket/pre/a.txt" in str(caught.value)
    assert f"cannot reach the S3 endpoint http://127.0.0.1:{port}" in str(caught.value)
    with pytest.raises(EndpointUnreachable):
        store.put("a.txt", b"x", if_none_match=True)


# --- self-test ----------------------------------------------------------------------


def test_self_test_passes_and_cleans_up(s3: S3Backend) -> None:
    """A server that honours If-None-Match passes the self-test and keeps no probe object."""
    store = s3.store("pre")
    store.verify_conditional_writes()
    assert s3.client.list_objects_v2(Bucket=s3.bucket).get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    ("op", "header", "guarantee"),
    [
        ("PutObject", "If-None-Match", "ignores If-None-Match (create-only writes)"),
        ("PutObject", "If-Match", "ignores If-Match on PutObject (compare-and-swap)"),
        ("DeleteObject", "If-Match", "ignores If-Match on DeleteObject (conditional deletes)"),
    ],
)
def test_self_test_refuses_a_server_ignoring_a_condition(
    aws_test_env: None, op: str, header: str, guarantee: str
) -> None:
    """A server that ignores any condition the store relies on stops the first write with a
    ConfigError (exit 78) naming the server and the missing guarantee."""
    from moto.server import ThreadedMotoServer

    moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto_server.start()
    host, port = moto_server.get_host_and_port()
    proxy = FaultProxy(f"http://{host}:{port}")
    proxy.add("drop_header", op, header=header, times=10**6)
    try:
        endpoint = proxy.start()
        client = make_s3_client(endpoint_url=endpoint, max_attempts=1)
        client.create_bucket(Bucket="lying-server")
        store = Store(client, "lying-server")

        with pytest.raises(ConfigError) as caught:
            store.put("report.xlsx", b"x", if_none_match=True)

        assert exit_code_for(caught.value) == 78
        assert f"the S3 server at {endpoint} {guarantee}" in str(caught.value)
        assert client.list_objects_v2(Bucket="lying-server").get("KeyCount", 0) == 0
        with pytest.raises(ConfigError):
            store.verify_conditional_writes()
    finally:
        proxy.stop()
        moto_server.stop()


# --- locations ----------------------------------------------------------------------


def test_put_accepts_bytes_file_and_path(s3: S3Backend, tmp_path: Path) -> None:
    """bytes, an open file (from its current position) and a path all upload their bytes."""
    store = s3.store()
    path = tmp_path / "in.bin"
    path.write_bytes(b"header|payload")
    with path.open("rb") as f:
        f.seek(len(b"header|"))
        assert store.put("from-file", f, if_none_match=True).size == len(b"payload")
    store.put("from-path", path, if_none_match=True)
    store.put("from-bytes", bytearray(b"abc"), if_none_match=True)

    assert store.get("from-file").body == b"payload"
    assert store.get("from-path").body == b"header|payload"
    assert store.get("from-bytes").body == b"abc"
    assert os.path.exists(path)


# --- fences: a later term's object is never replaced nor deleted ---------------------


def test_a_later_terms_object_is_never_replaced_nor_deleted(s3: S3Backend) -> None:
    """A run paused past its lease (term 4) wakes up after the next holder (term 5) wrote:
    its compare-and-swap, its read-modify-write and its delete are refused (LockLost, 75),
    and the object stays the later term's. A writer of another lock is not compared."""
    later = s3.store(guard=FakeGuard(fence=Fence("the-lock", 5)))
    stale = s3.store(guard=FakeGuard(fence=Fence("the-lock", 4)))
    other = s3.store(guard=FakeGuard(fence=Fence("another-lock", 1)))
    first = later.put("state.json", b'{"n": 1}', if_none_match=True)

    with pytest.raises(LockLost, match="fence 5 > 4"):
        stale.put("state.json", b'{"n": 0}', if_match=first.etag)
    with pytest.raises(LockLost):
        stale.update("state.json", lambda doc: b"{}", load=lambda o: o.body, dump=bytes)
    with pytest.raises(LockLost):
        stale.delete("state.json", if_match=first.etag)
    assert stale.get("state.json").body == b'{"n": 1}'
    assert exit_code_for(LockLost("x")) == 75

    replaced = other.put("state.json", b'{"n": 2}', if_match=first.etag)
    assert other.head("state.json").metadata["fence-scope"] == "another-lock"  # type: ignore[union-attr]
    other.delete("state.json", if_match=replaced.etag)


def test_a_writer_without_a_lock_keeps_the_fence_the_object_had(s3: S3Backend) -> None:
    """``ochinai status`` or a skipped run updating a record carries its fence forward, so
    that a stale holder is still refused afterwards."""
    later = s3.store(guard=FakeGuard(fence=Fence("the-lock", 5)))
    first = later.put("latest.json", b"1", if_none_match=True)
    s3.store().put("latest.json", b"2", if_match=first.etag)
    meta = s3.store().head("latest.json").metadata  # type: ignore[union-attr]
    assert (meta["fence"], meta["fence-scope"]) == ("5", "the-lock")
    stale = s3.store(guard=FakeGuard(fence=Fence("the-lock", 4)))
    with pytest.raises(LockLost):
        stale.update("latest.json", lambda doc: b"3", load=lambda o: o.body, dump=bytes)


def test_update_rebuilds_from_the_document_it_read_again(s3: S3Backend) -> None:
    """Another writer wins between the read and the write (412): the update reads the
    winner's document and builds again from it; what was built from the old read is never
    written (the old hand-written loops re-applied it)."""
    store = s3.store(guard=FakeGuard(fence=Fence("the-lock", 1)))
    store.put("counter.json", b"[]", if_none_match=True)
    seen: list[list[str]] = []

    def build(doc: list[str] | None) -> list[str]:
        assert doc is not None
        seen.append(doc)
        if len(seen) == 1:  # someone else appends first
            winner = store.get("counter.json")
            store.put("counter.json", b'["theirs"]', if_match=winner.etag)
        return [*doc, "ours"]

    done = store.update(
        "counter.json",
        build,
        load=lambda obj: json.loads(obj.body),
        dump=lambda doc: json.dumps(doc).encode(),
    )
    assert seen == [[], ["theirs"]]
    assert done is not None and done.value == ["theirs", "ours"] and done.outcome == "replaced"
    assert json.loads(store.get("counter.json").body) == ["theirs", "ours"]
    nothing = store.update("counter.json", lambda doc: None, load=lambda o: o.body, dump=bytes)
    assert nothing is not None and nothing.outcome == "unchanged"
