"""The self-test: does this S3 server keep every condition the store relies on? Proved, then
cleaned up.

Some S3-compatible servers ignore If-None-Match or If-Match, which turns every lock,
every create-only write and every compare-and-swap into a lie, so the store proves,
before its first write to a bucket, that the server refuses a second create-only put,
a put with a stale If-Match and a delete with a stale If-Match. The probe tells its
own object from a server that ignores conditions by a write id in the object's
metadata: a probe whose answer was lost and that botocore sent again gets 412 for its
own object, which is not a lie. It deletes what it wrote only while it is what it
wrote (If-Match), and sweeps probes that runs killed mid-test left behind.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ochinai.runtime.errors import ConfigError, TransientError, s3_error_code

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger("ochinai.storage")

PROBE_PREFIX = "_probe/"
STALE_PROBE = timedelta(hours=1)


def verify_conditional_writes(
    client: S3Client,
    bucket: str,
    full: Callable[[str], str],
    url: Callable[[str], str],
    check: Callable[[], None],
    now: datetime,
) -> None:
    """Raise ConfigError unless the server refuses each write the store relies on refusing:
    a second create-only put, a put with a stale If-Match and a delete with one."""
    probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    key = full(probe)
    server = f"the S3 server at {client.meta.endpoint_url}"
    check()
    etag = first = _put_mine(client, bucket, key, b"1", IfNoneMatch="*")
    # Each request must get 412: (request, the condition, what it did instead, so what).
    lies: list[tuple[Callable[[], object], str, str, str]] = [
        (
            lambda: client.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*"),
            "If-None-Match (create-only writes)",
            "a second create-only put succeeded",
            "locks and create-only writes cannot be trusted",
        ),
        (
            lambda: client.put_object(Bucket=bucket, Key=key, Body=b"4", IfMatch=first),
            "If-Match on PutObject (compare-and-swap)",
            "a put with a stale etag replaced it",
            "two runs could both win one lock and overwrite each other's records",
        ),
        (
            lambda: client.delete_object(Bucket=bucket, Key=key, IfMatch=first),
            "If-Match on DeleteObject (conditional deletes)",
            "a delete with a stale etag removed it",
            "retention could delete what another run just wrote",
        ),
    ]
    try:
        check()
        etag = _put_mine(client, bucket, key, b"3", IfMatch=first)  # ``first`` is stale now
        for request, condition, seen, so in lies:
            check()
            if not _refused(request):
                etag = _etag(client, bucket, key)
                raise ConfigError(
                    f"{server} ignores {condition}: {seen} ({url(probe)}), so {so}; use a "
                    "server that honours conditional requests (AWS S3, MinIO, SeaweedFS)"
                )
        log.debug("conditional writes verified", extra={"key": probe})
    finally:
        if etag:
            _delete(client, bucket, key, etag)
        _sweep(client, bucket, full(PROBE_PREFIX), now - STALE_PROBE)


def _etag(client: S3Client, bucket: str, key: str) -> str:
    """The probe's etag now, or "" when it is gone (a delete the server did not refuse)."""
    try:
        return str(client.head_object(Bucket=bucket, Key=key)["ETag"])
    except ClientError:
        return ""


def _refused(request: Callable[[], object]) -> bool:
    """True when ``request`` gets 412 Precondition Failed; its other errors are raised."""
    try:
        request()
    except ClientError as exc:
        if s3_error_code(exc)[1] == 412:
            return True
        raise
    return False


def _put_mine(client: S3Client, bucket: str, key: str, body: bytes, **condition: Any) -> str:
    """A conditional put that must succeed; its etag, also when its answer was lost and
    botocore's resend got 412 (the object is ours, by its write id)."""
    write_id = uuid.uuid4().hex
    try:
        resp = client.put_object(
            Bucket=bucket, Key=key, Body=body, Metadata={"write-id": write_id}, **condition
        )
        return str(resp["ETag"])
    except (BotoCoreError, ClientError) as exc:
        mine = _head_if_mine(client, bucket, key, write_id)
        if mine is not None:
            return mine
        if isinstance(exc, ClientError) and s3_error_code(exc)[1] != 412:
            raise
        # Refused (412) after a lost answer, and the server could not say whether the
        # first attempt landed: nobody else writes a probe's random key, so this is the
        # network's doing, not a lying server's.
        raise TransientError(
            f"the self-test's probe s3://{bucket}/{key}: a conditional put's answer was "
            "lost and whether it landed cannot be told; retry the run"
        ) from exc


def _head_if_mine(client: S3Client, bucket: str, key: str, write_id: str) -> str | None:
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError):
        return None
    return str(head["ETag"]) if head["Metadata"].get("write-id") == write_id else None


def _delete(client: S3Client, bucket: str, key: str, etag: str) -> None:
    """Delete the probe while it is the one written; a failure only leaves it for a sweep."""
    try:
        client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
    except (BotoCoreError, ClientError) as exc:
        log.warning("could not delete probe: %s", exc, extra={"key": key})


def _sweep(client: S3Client, bucket: str, prefix: str, older_than: datetime) -> None:
    """Delete probes older than ``older_than`` (each only while unchanged)."""
    try:
        listed: Any = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        for obj in listed.get("Contents", []):
            if obj["LastModified"] < older_than:
                _delete(client, bucket, obj["Key"], obj["ETag"])
    except (BotoCoreError, ClientError) as exc:
        log.warning("could not list old probes under %s: %s", prefix, exc)
