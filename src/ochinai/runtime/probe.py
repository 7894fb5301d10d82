"""The self-test: does this S3 server refuse a second create-only write? Proved, then cleaned up.

Some S3-compatible servers ignore If-None-Match, which turns every lock and every
create-only write into a lie, so the store proves the server enforces it before its
first write to a bucket. The probe tells its own object from a server that ignores
conditions by a write id in the object's metadata: a probe whose answer was lost and
that botocore sent again gets 412 for its own object, which is not a lie. It deletes
what it wrote only while it is what it wrote (If-Match), and sweeps probes that runs
killed mid-test left behind.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ochinai.runtime.errors import ConfigError, s3_error_code

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
    """Raise ConfigError unless the server refuses a second create-only put of one key."""
    probe, write_id = f"{PROBE_PREFIX}{uuid.uuid4().hex}", uuid.uuid4().hex
    key = full(probe)
    check()
    etag = _create(client, bucket, key, write_id)
    try:
        check()
        try:
            second = client.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*")
        except ClientError as exc:
            if s3_error_code(exc)[1] == 412:
                log.debug("conditional writes verified", extra={"key": probe})
                return
            raise
        etag = second["ETag"]  # the server overwrote it: what to delete now
        raise ConfigError(
            f"the S3 server at {client.meta.endpoint_url} ignores conditional writes "
            f"(If-None-Match): a second create-only put of {url(probe)} succeeded, so locks "
            "and create-only writes cannot be trusted; use a server that honours them"
        )
    finally:
        _delete(client, bucket, key, etag)
        _sweep(client, bucket, full(PROBE_PREFIX), now - STALE_PROBE)


def _create(client: S3Client, bucket: str, key: str, write_id: str) -> str:
    """The first put; its etag, also when the answer was lost and the retry got 412."""
    try:
        resp = client.put_object(
            Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*", Metadata={"write-id": write_id}
        )
        return str(resp["ETag"])
    except (BotoCoreError, ClientError):
        mine = _head_if_mine(client, bucket, key, write_id)
        if mine is None:
            raise
        return mine


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
    except (BotoCoreError, ClientError):
        log.warning("could not delete probe", extra={"key": key}, exc_info=True)


def _sweep(client: S3Client, bucket: str, prefix: str, older_than: datetime) -> None:
    """Delete probes older than ``older_than`` (each only while unchanged)."""
    try:
        listed: Any = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
        for obj in listed.get("Contents", []):
            if obj["LastModified"] < older_than:
                _delete(client, bucket, obj["Key"], obj["ETag"])
    except (BotoCoreError, ClientError) as exc:
        log.warning("could not list old probes under %s: %s", prefix, exc)
