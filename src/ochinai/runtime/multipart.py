"""Uploads in parts that carry the write's condition, and the sweep of uploads left behind.

An upload started but never completed or aborted (a run killed mid-upload, or a
CreateMultipartUpload whose answer was lost, so that the client never learnt its id)
keeps its parts, and the bill, until someone aborts it. Each run aborts, under its
job's prefixes, the uploads that are provably dead: those under keys its own lock
covers (the lock is this run's, so another upload there belongs to a run that died or
lost the lock), and those begun before any live run can have begun (no run outlives
its Job's activeDeadlineSeconds). An upload of another shard of an Indexed Job, which
holds another lock, is left alone while it may be alive. The bucket lifecycle rule
``AbortIncompleteMultipartUpload`` (docs/operating.md "Storage guarantees") is the backstop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger("ochinai.storage")

MIN_PART = 5 * 1024 * 1024  # S3's smallest part, except for the last one
MAX_PARTS = 10_000


def upload_in_parts(
    client: S3Client,
    common: dict[str, Any],
    stream: IO[bytes],
    size: int,
    part_size: int,
    extra: dict[str, Any],
    cond: dict[str, Any],
    *,
    check: Callable[[], None],
    landed: Callable[[], str | None],
    started: Callable[[str], None],
) -> str:
    """Upload ``stream`` in parts, one in memory at a time; return the object's etag.

    ``cond`` goes with the completion: that is when the object appears. ``check`` runs
    before each request (the lock, a stop signal). When the completion fails but
    ``landed()`` finds the object this write made (its answer was lost), that is a
    success; otherwise the upload is aborted and the error goes on.
    """
    part_size = max(part_size, -(-size // MAX_PARTS))  # at most 10,000 parts
    check()
    mpu = client.create_multipart_upload(**common, **extra)
    upload = {**common, "UploadId": mpu["UploadId"]}
    started(mpu["UploadId"])
    try:
        parts: list[Any] = []
        while chunk := stream.read(part_size):
            check()
            number = len(parts) + 1
            etag = client.upload_part(**upload, PartNumber=number, Body=chunk)["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        check()
        done = client.complete_multipart_upload(**upload, MultipartUpload={"Parts": parts}, **cond)
    except (BotoCoreError, ClientError):
        made = landed()
        if made is not None:
            return made
        _abort(client, upload)
        raise
    except BaseException:
        _abort(client, upload)
        raise
    return str(done["ETag"])


def _abort(client: S3Client, upload: dict[str, Any]) -> None:
    try:
        client.abort_multipart_upload(**upload)
    except (BotoCoreError, ClientError) as exc:
        log.warning(
            "could not abort a multipart upload (%s); the next run or a bucket lifecycle "
            "rule removes it",
            exc,
            extra={"key": upload["Key"], "upload_id": upload["UploadId"]},
        )


def sweep_stale_uploads(
    client: S3Client,
    bucket: str,
    prefix: str,
    older_than: datetime,
    keep: set[str],
    check: Callable[[], None],
    owned: Callable[[str], bool] | None = None,
) -> int:
    """Abort the in-progress uploads under ``prefix`` begun before ``older_than``, and
    those whose key ``owned`` says is this run's to write; never those in ``keep``; a count.

    A failure to list or abort is logged and left: it is housekeeping, not the run's work.
    """
    aborted = 0
    try:
        paginator = client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if upload["UploadId"] in keep:
                    continue
                mine = owned is not None and owned(upload["Key"])
                if not mine and upload["Initiated"] >= older_than:
                    continue
                check()
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
    except (BotoCoreError, ClientError) as exc:
        log.warning("could not sweep old multipart uploads under %s: %s", prefix, exc)
    if aborted:
        log.info(
            "aborted %d multipart uploads that earlier runs left under %s",
            aborted,
            prefix,
            extra={"aborted_uploads": aborted},
        )
    return aborted
