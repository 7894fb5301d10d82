"""S3 Object Lock: whether a bucket has it, and removing the versions a deletion leaves.

A bucket with Object Lock is versioned: a DELETE without a version id only puts a
delete marker on top, the data stays as a noncurrent version, and the server refuses
to delete a version whose retention has not ended. ``purge_versions`` removes, by
version id, every version and delete marker under a prefix that the caller has just
deleted (its retention over); a version still under retention is left and counted.
Nothing here bypasses governance mode.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ochinai.runtime.errors import ConfigError, classify_boto, s3_error_code

if TYPE_CHECKING:
    from ochinai.runtime.storage import Store

log = logging.getLogger("ochinai.storage")

HOW_TO_ENABLE = (
    "create the bucket with Object Lock (aws s3api create-bucket --object-lock-enabled-for-bucket, "
    "mc mb --with-lock), or enable it on a versioned bucket (aws s3api "
    "put-object-lock-configuration)"
)


def check_enabled(store: Store, setting: str) -> None:
    """ConfigError (exit 78) naming ``setting`` unless the store's bucket has Object Lock."""
    where = f"s3://{store.bucket}"
    enabled: str | None = None
    try:
        answer = store.client.get_object_lock_configuration(Bucket=store.bucket)
        enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
    except ClientError as exc:
        code, status = s3_error_code(exc)
        if code == "ObjectLockConfigurationNotFoundError":
            pass
        elif code == "AccessDenied" or status == 403:
            raise ConfigError(
                f"{where}: {setting} is set, but these keys may not read the bucket's Object "
                "Lock configuration (s3:GetBucketObjectLockConfiguration); grant it to the "
                "backup identity"
            ) from exc
        elif code in {"NotImplemented", "MethodNotAllowed"} or status == 501:
            raise ConfigError(
                f"{where}: {setting} is set, but this S3 server has no Object Lock ({code}); "
                "unset it or use a server that has it"
            ) from exc
        else:
            raise classify_boto(exc, where) from exc
    except BotoCoreError as exc:
        raise classify_boto(exc, where) from exc
    if enabled != "Enabled":
        raise ConfigError(
            f"{where}: {setting} is set, but the bucket has no Object Lock, so nothing would "
            f"protect the backups from deletion; {HOW_TO_ENABLE}"
        )


def keeps_versions(store: Store) -> bool:
    """The store's bucket keeps versions (versioning on or suspended, as Object Lock has
    it), so a deletion leaves them; False when the keys may not ask (they need
    s3:GetBucketVersioning) or the server has no versioning."""
    try:
        answer = store.client.get_bucket_versioning(Bucket=store.bucket)
    except ClientError as exc:
        code, status = s3_error_code(exc)
        if code in {"AccessDenied", "NotImplemented"} or status in (403, 501):
            log.debug("bucket versioning unknown (%s): deletions leave no versions behind", code)
            return False
        raise classify_boto(exc, f"s3://{store.bucket}") from exc
    except BotoCoreError as exc:
        raise classify_boto(exc, f"s3://{store.bucket}") from exc
    return answer.get("Status") in ("Enabled", "Suspended")


def purge_versions(store: Store, prefix: str, keys: Collection[str]) -> tuple[int, int]:
    """Delete by version id every version and delete marker of ``keys`` (relative to the
    store, all under ``prefix``); how many were deleted and how many the server refused
    (retention not over). Only for keys just deleted under the run's lock, as listed: a
    key written under the prefix since is not touched."""
    if store.dry_run:
        return 0, 0
    full = store.url(prefix).removeprefix(f"s3://{store.bucket}/")
    wanted = {store.url(key).removeprefix(f"s3://{store.bucket}/") for key in keys}
    deleted = refused = 0
    paginator = store.client.get_paginator("list_object_versions")
    try:
        for page in paginator.paginate(Bucket=store.bucket, Prefix=full):
            for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
                key, version_id = version["Key"], version["VersionId"]
                if key not in wanted:
                    continue
                store.check_writable()
                try:
                    store.client.delete_object(Bucket=store.bucket, Key=key, VersionId=version_id)
                except ClientError as exc:
                    code, status = s3_error_code(exc)
                    if code != "AccessDenied" and status != 403:
                        raise
                    refused += 1
                    log.warning(
                        "s3://%s/%s version %s not removed: the server refuses (%s: its "
                        "retention is not over, or the keys lack s3:DeleteObjectVersion); the "
                        "bucket's lifecycle rule removes it once it may",
                        store.bucket,
                        key,
                        version_id,
                        code,
                        extra={"key": key, "version_id": version_id},
                    )
                    continue
                deleted += 1
    except (BotoCoreError, ClientError) as exc:
        raise classify_boto(exc, store.url(prefix)) from exc
    return deleted, refused
