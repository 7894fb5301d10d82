"""S3 object store over boto3 whose every write is create-only or compare-and-swap: reads,
both conditions and the uploads that carry them share one error and body handling."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, Literal, NamedTuple, Protocol, TypeVar, cast
from urllib.parse import urlsplit

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from ochinai.runtime.cancel import Terminated, cancellation
from ochinai.runtime.egress import out_of_readers_reach
from ochinai.runtime.errors import (
    ConfigError,
    DataError,
    EndpointUnreachable,
    OchinaiError,
    TransientError,
    classify_boto,
)
from ochinai.runtime.errors import s3_error_code as _code
from ochinai.runtime.fence import Fence, carried, check_fence
from ochinai.runtime.multipart import MIN_PART, sweep_stale_uploads, upload_in_parts
from ochinai.runtime.probe import PROBE_PREFIX, verify_conditional_writes

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger("ochinai.storage")
T = TypeVar("T")

MiB = 1024 * 1024
_LOADER = botocore.loaders.create_loader()

Outcome = Literal["created", "replaced", "unchanged", "dry_run"]
Body = bytes | bytearray | memoryview | IO[bytes] | os.PathLike[str]


# An endpoint this process never reached is tried this often at most, each within the
# connect timeout: a wrong address or a server that drops packets ends the run in
# seconds, not after every retry of every request. One reached before is retried as usual.
FIRST_CONTACT_TRIES = 2
CONNECT_TIMEOUT = 5.0  # seconds: a connection on a working network takes milliseconds


def make_s3_client(
    *,
    connect_timeout: float | None = None,
    read_timeout: float = 60,
    max_attempts: int = 4,
    max_pool_connections: int = 10,
    endpoint_url: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> S3Client:
    """An S3 client configured by boto3's own env (AWS_ENDPOINT_URL, keys, AWS_REGION).

    ``max_attempts`` counts every attempt of a request, the first one included;
    ``connect_timeout`` is CONNECT_TIMEOUT unless given.
    ``access_key`` and ``secret_key``, when given, are its credentials instead of the
    environment's (another bucket's own keys).
    """
    env = os.environ
    endpoint = endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    config = Config(
        connect_timeout=CONNECT_TIMEOUT if connect_timeout is None else connect_timeout,
        read_timeout=read_timeout,
        # botocore's "max_attempts" counts retries only; ours counts every attempt.
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        # S3-compatible servers (MinIO, SeaweedFS) serve buckets as paths, not host names.
        s3={"addressing_style": "path"} if endpoint else {},
        # Presigned URLs default to SigV2 on some code paths; SigV4 is what servers expect.
        signature_version="s3v4",
        # botocore's default request checksums (CRC32 since 1.36: a header over HTTP, an
        # aws-chunked trailer over HTTPS) are accepted by SeaweedFS 4.48 and moto for
        # PutObject and multipart uploads, so request_checksum_calculation stays "when_supported".
    )
    # A session of its own (boto3's default one caches the credentials it first found and
    # is not thread-safe) sharing one loader, so that the S3 model is parsed once per process.
    session = botocore.session.get_session()
    session.register_component("data_loader", _LOADER)
    # botocore itself reads only AWS_DEFAULT_REGION.
    region = os.environ.get("AWS_REGION") or None
    client = session.create_client(
        "s3",
        region,
        endpoint_url=endpoint_url,
        config=config,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )
    host = _host(str(client.meta.endpoint_url))
    client.meta.events.register_first(
        "needs-retry.s3", functools.partial(_no_more_first_contact, reached_as=host)
    )
    return cast("S3Client", client)


def _host(url: str) -> str:
    """An endpoint as the sets below know it: its host and port, however it is spelled."""
    parts = urlsplit(url)
    return f"{(parts.hostname or '').lower()}:{parts.port or parts.scheme}"


def _no_more_first_contact(
    *,
    reached_as: str,
    attempts: int = 0,
    response: object = None,
    caught_exception: BaseException | None = None,
    **kwargs: Any,
) -> None:
    """botocore's retry hook for every attempt, before its own: any HTTP answer marks the
    client's endpoint reached; one never reached gets no more than FIRST_CONTACT_TRIES
    connection attempts (raising here ends the request's retries)."""
    if response is not None:
        _reached.add(reached_as)
        return
    if not isinstance(caught_exception, EndpointConnectionError | ConnectTimeoutError):
        return
    if attempts >= FIRST_CONTACT_TRIES and reached_as not in _reached:
        raise caught_exception


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD (or a listing) says about one object; ``key`` is relative to the store."""

    key: str
    etag: str
    size: int
    last_modified: datetime
    metadata: dict[str, str]
    # Object Lock retention as HEAD reports it (None from a listing, or when there is none)
    retain_until: datetime | None = field(default=None, kw_only=True)
    version_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Retention:
    """S3 Object Lock retention for a write: its mode and the moment it ends."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"]
    until: datetime


@dataclass(frozen=True)
class StoredObject(ObjectInfo):
    """An object read whole."""

    body: bytes


@dataclass(frozen=True)
class Document(Generic[T]):
    """A document as ``Store.update`` left it: its value, etag and what the update did."""

    value: T
    etag: str
    outcome: Outcome


@dataclass(frozen=True)
class PutResult:
    """What a put did; ``etag`` is the object's etag afterwards ("" for a dry run)."""

    key: str
    outcome: Outcome
    etag: str
    sha256: str
    size: int


class PreconditionFailed(TransientError):
    """412: the object exists (create-only) or changed since it was read (CAS)."""

    def __init__(self, message: str, *, key: str, current_etag: str | None) -> None:
        super().__init__(message)
        self.key = key
        self.current_etag = current_etag


class ObjectNotFound(DataError):
    """The object to read does not exist."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class WriteGuard(Protocol):
    """What the store needs of the lock a run holds (``lock.HeldLock``): its fence, and a
    last check before each write."""

    @property
    def fence(self) -> Fence | None: ...

    def check_writable(self) -> None:
        """Raise LockLost when the run's lock is gone."""


class _Collision(Exception):
    """A conditional write collided with another (409) or lost a create race (412): the
    next try reads the object again and decides."""


class _Body(NamedTuple):
    stream: IO[bytes]
    start: int
    size: int
    sha256: str


@contextlib.contextmanager
def _open_body(body: Body) -> Iterator[_Body]:
    """Hash the body by streaming it once, then hand it over positioned at its start."""
    if isinstance(body, str):
        raise TypeError("put() body must be bytes, a binary file or a path object, not str")
    with contextlib.ExitStack() as stack:
        if isinstance(body, bytes | bytearray | memoryview):
            stream: IO[bytes] = io.BytesIO(body)
        elif isinstance(body, os.PathLike):
            stream = stack.enter_context(open(body, "rb"))
        else:
            stream = body
        if not stream.seekable():
            raise TypeError("put() needs a seekable file: it is read twice (hash, then upload)")
        start, digest, size = stream.tell(), hashlib.sha256(), 0
        while chunk := stream.read(MiB):
            digest.update(chunk)
            size += len(chunk)
        stream.seek(start)
        yield _Body(stream, start, size, digest.hexdigest())


class _ClassifiedReader(io.RawIOBase):
    """A raw stream over a GetObject body that turns botocore failures into our errors."""

    def __init__(self, body: Any, what: str) -> None:
        self._body, self._what = body, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with _classified(self._what):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


# The endpoints this process has connected to. A connection that then fails is a blip,
# retried as any TransientError; one to an endpoint never reached is a wrong address or
# a server that is down (EndpointUnreachable): said once, and not tried again for long.
_reached: set[str] = set()
# Endpoints found unreachable (never reached, tried and given up): the records a failed
# run still writes at its end fail at once instead of waiting on the same address again.
_unreachable: dict[str, EndpointUnreachable] = {}


@contextlib.contextmanager
def _classified(what: str, client: Any = None) -> Iterator[None]:
    """Every store request: stop first if asked to; botocore failures become our classes.

    ``client``, when the block sends requests with it, names its endpoint in the error
    when that endpoint cannot be reached (EndpointUnreachable).
    """
    cancellation.check()
    endpoint = None if client is None else str(client.meta.endpoint_url)
    host = None if endpoint is None else _host(endpoint)
    if host in _unreachable:  # the same words as the first time, not tried again
        first = _unreachable[host]
        raise EndpointUnreachable(f"{what}: {first.why}", endpoint=first.endpoint, why=first.why)
    connected = True
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        connected = not isinstance(exc, EndpointConnectionError | ConnectTimeoutError)
        if not connected and host is not None and host not in _reached:
            error = unreachable(exc, what, client)
            _unreachable[host] = error
            raise error from exc
        raise classify_boto(exc, what) from exc
    finally:
        if connected and host is not None:
            _reached.add(host)


def unreachable(exc: BaseException, what: str, client: Any) -> EndpointUnreachable:
    """The one error of an S3 endpoint that never answered: which endpoint (the client's,
    as it was used), why, after how many tries, and which variable to check."""
    endpoint = str(client.meta.endpoint_url)
    config = client.meta.config
    if isinstance(exc, ConnectTimeoutError):
        why = f"no connection within {config.connect_timeout:g}s"
    else:  # the operating system's words: Connection refused, Name or service not known
        cause: BaseException | None = exc
        while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
            cause = cause.__cause__ or cause.__context__
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)
    tries = min((config.retries or {}).get("total_max_attempts") or 1, FIRST_CONTACT_TRIES)
    after = f" after {tries} tries" if tries and tries > 1 else ""
    given = {
        name: os.environ[name].strip().rstrip("/")
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if os.environ.get(name, "").strip()
    }
    source = next((name for name, url in given.items() if url == endpoint.rstrip("/")), None)
    host = urlsplit(endpoint).hostname or ""
    if source is not None:
        named, advice = f" ({source})", f"check {source} and that the server is up"
    elif not given and host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        named = " (the default AWS endpoint: AWS_ENDPOINT_URL is not set)"
        advice = "set AWS_ENDPOINT_URL to your S3 server's address, such as http://minio:9000"
    else:
        named, advice = "", "check the setting that gives it and that the server is up"
    detail = f"cannot reach the S3 endpoint {endpoint}{named}{after}: {why}; {advice}"
    return EndpointUnreachable(f"{what}: {detail}", endpoint=endpoint, why=detail)


def _quoted(etag: str) -> str:
    """ETags travel quoted; accept them either way from callers."""
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


# (endpoint, bucket) pairs whose server was seen to keep every condition (probe.py).
_verified: set[tuple[str, str]] = set()
_verified_lock = threading.Lock()


class Store:
    """Objects under ``s3://bucket/prefix/``; every write is create-only or compare-and-swap."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        run_id: str = "",
        guard: WriteGuard | None = None,
        fence: Fence | None = None,
        multipart_threshold: int = 64 * MiB,
        part_size: int = 16 * MiB,
        conflict_retries: int = 3,
        dry_run: bool = False,
        stale_upload_age: float = 3600.0,
        link_endpoint_url: str | None = None,
    ) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes (S3's minimum)")
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.run_id = run_id
        self.guard = guard  # None: no lock (status, tests, a run's record after its release)
        # The term this store's writes are made under (the guard's, else a released lock's).
        self.fence = fence if fence is not None else (guard.fence if guard else None)
        self.multipart_threshold, self.part_size = multipart_threshold, part_size
        self.conflict_retries, self.dry_run = conflict_retries, dry_run
        # Multipart uploads older than this cannot belong to a live run: no run lives
        # longer than its Job's activeDeadlineSeconds (OCHINAI_MAX_RUN_TIME).
        self.stale_upload_age = stale_upload_age
        # Links (presign) are signed for this address: the one their readers reach.
        self.link_endpoint_url = link_endpoint_url
        self._swept: set[str] = set()
        self._own_uploads: set[str] = set()

    def guarded(self, guard: WriteGuard) -> Store:
        """The same store, its writes fenced by ``guard``, over the same S3 client."""
        return self._with(guard=guard, fence=guard.fence)

    def fenced(self, fence: Fence | None) -> Store:
        """The same store writing under ``fence`` without a lock to check: what a run
        writes after it released its lock (its record) still says its term."""
        return self._with(guard=None, fence=fence)

    def _with(self, guard: WriteGuard | None, fence: Fence | None) -> Store:
        return Store(
            self.client,
            self.bucket,
            self.prefix,
            run_id=self.run_id,
            guard=guard,
            fence=fence,
            multipart_threshold=self.multipart_threshold,
            part_size=self.part_size,
            conflict_retries=self.conflict_retries,
            dry_run=self.dry_run,
            stale_upload_age=self.stale_upload_age,
            link_endpoint_url=self.link_endpoint_url,
        )

    def check_writable(self) -> None:
        """Before a write: the run still holds its lock and was not asked to stop."""
        cancellation.check()
        if self.guard is not None:
            self.guard.check_writable()

    def _full(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"object key must be relative and non-empty, got {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        """``s3://bucket/prefix/key`` of a key relative to the store."""
        return f"s3://{self.bucket}/{self._full(key)}"

    # --- reading ------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        """The object's etag, size, time and metadata, or None when it does not exist.

        SeaweedFS answers HEAD in a missing bucket with a bare 404, so this returns
        None there too; the next get or put then fails with NoSuchBucket.
        """
        with _classified(self.url(key), self.client):
            try:
                resp = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            except ClientError as exc:
                code, status = _code(exc)
                if status == 404 and code != "NoSuchBucket":
                    return None
                raise
        meta = resp["Metadata"]
        return ObjectInfo(
            key,
            resp["ETag"],
            resp["ContentLength"],
            resp["LastModified"],
            meta,
            retain_until=resp.get("ObjectLockRetainUntilDate"),
            version_id=resp.get("VersionId"),
        )

    def get(self, key: str) -> StoredObject:
        """Read the whole object into memory; ObjectNotFound when missing."""
        resp = self._get_object(key)
        with contextlib.closing(resp["Body"]) as stream, _classified(self.url(key)):
            body = stream.read()
        etag, when, meta = resp["ETag"], resp["LastModified"], resp["Metadata"]
        return StoredObject(key, etag, len(body), when, meta, body)

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        """Stream the object as a buffered binary reader; ObjectNotFound when missing."""
        resp = self._get_object(key)
        with io.BufferedReader(_ClassifiedReader(resp["Body"], self.url(key)), MiB) as reader:
            yield reader

    def download(
        self, key: str, path: Path, arrived: Callable[[int], None] | None = None
    ) -> tuple[str, int]:
        """Stream the object into the file ``path``; its sha256 and size. ``arrived`` is
        told each chunk's size once the chunk is in the file (flushed, for readers that
        follow it); what it raises ends the download."""
        digest, size = hashlib.sha256(), 0
        with self.open_read(key) as body, open(path, "wb") as out:
            while chunk := body.read(MiB):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if arrived is not None:
                    out.flush()
                    arrived(len(chunk))
        return digest.hexdigest(), size

    def _get_object(self, key: str) -> Any:
        with _classified(self.url(key), self.client):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            except ClientError as exc:
                code, status = _code(exc)
                if code == "NoSuchKey" or (status == 404 and code != "NoSuchBucket"):
                    raise ObjectNotFound(f"{self.url(key)}: no such object", key=key) from exc
                raise

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose relative key starts with ``prefix``, in key order, page by page.

        Listings carry no user metadata: ``metadata`` is always empty here; ``head`` has it.
        """
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        with _classified(f"s3://{self.bucket}/{base}{prefix}", self.client):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for o in page.get("Contents", []):
                    key = o["Key"][len(base) :]
                    yield ObjectInfo(key, o["ETag"], o["Size"], o["LastModified"], {})

    def presign(self, key: str, expires: float) -> str:
        """A GET URL for the object that works without credentials for ``expires`` seconds.

        Signed for ``link_endpoint_url`` when set (OCHINAI_LINK_ENDPOINT_URL: the
        address readers reach, a proxy or the bucket's public name, which must pass
        the Host on), else for the endpoint the job uses; a WARNING when its host is one
        people outside the cluster cannot reach (loopback, a cluster-internal name).
        """
        if not 1 <= expires <= 7 * 24 * 3600:
            raise ConfigError(f"{self.url(key)}: a presigned URL must expire in 1 s to 7 days")
        client = self.client
        if self.link_endpoint_url:  # signing is local: the same keys, another address
            client = make_s3_client(endpoint_url=self.link_endpoint_url)
        with _classified(self.url(key)):
            url = client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._full(key)},
                ExpiresIn=int(expires),
            )
        host = urlsplit(url).hostname or ""
        why = out_of_readers_reach(host)
        if why is not None:
            log.warning(
                "the link to %s is signed for %s (%s): people outside the cluster cannot "
                "open it; set OCHINAI_LINK_ENDPOINT_URL to the address they reach",
                self.url(key),
                host,
                why,
                extra={"key": key, "link_host": host},
            )
        return url

    # --- writing ------------------------------------------------------------

    def put(
        self,
        key: str,
        body: Body,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        retain: Retention | None = None,
    ) -> PutResult:
        """Write create-only (``if_none_match=True``) or compare-and-swap (``if_match=etag``).

        The same bytes already there (by sha256 metadata) give "unchanged" and no write;
        PreconditionFailed when the object exists (create-only) or changed (CAS).
        ``retain`` puts the new object under S3 Object Lock retention (the bucket must
        have Object Lock; ``objectlock.check_enabled``).
        """
        if if_none_match == (if_match is not None) or if_match == "":
            raise TypeError(
                "put() needs exactly one of if_none_match=True (create-only) or "
                "if_match=etag (compare-and-swap); unconditional writes are not allowed"
            )
        with _open_body(body) as data:
            meta = {k.lower(): v for k, v in (metadata or {}).items()}
            meta |= {
                "run-id": self.run_id,
                "sha256": data.sha256,
                # Tells this write's object from any other: after a lost answer the
                # object may be ours though the retry was refused (412) or failed.
                "write-id": uuid.uuid4().hex,
            }
            for _ in range(self.conflict_retries + 1):
                try:
                    return self._put_once(key, data, if_match, content_type, meta, retain)
                except _Collision:
                    log.warning("conditional write collided, re-reading", extra={"key": key})
        raise TransientError(
            f"{self.url(key)}: conditional write collided with another writer "
            f"{self.conflict_retries + 1} times (409 ConditionalRequestConflict or a lost "
            "create race); retry the run"
        )

    def _put_once(
        self,
        key: str,
        data: _Body,
        if_match: str | None,
        content_type: str,
        meta: dict[str, str],
        retain: Retention | None,
    ) -> PutResult:
        done: Outcome = "created" if if_match is None else "replaced"
        current = self.head(key)
        if current is not None and current.metadata.get("write-id") == meta["write-id"]:
            return self._result(key, done, current.etag, data)  # an earlier try landed
        # The object's fence: a later term's object is never replaced; ours says our term.
        meta = {**meta, **carried(self.fence, current.metadata if current else None)}
        cond: dict[str, Any]
        if if_match is None:
            if current is not None and current.metadata.get("sha256") != data.sha256:
                raise PreconditionFailed(
                    f"{self.url(key)}: already exists with other content (etag "
                    f"{current.etag}); create-only writes never overwrite",
                    key=key,
                    current_etag=current.etag,
                )
            cond = {"IfNoneMatch": "*"}
        else:
            if current is None or current.etag != _quoted(if_match):
                raise self._changed(key, if_match, "changed since it was read")
            check_fence(self.fence, current.metadata, self.url(key))
            cond = {"IfMatch": _quoted(if_match)}
        if current is not None and current.metadata.get("sha256") == data.sha256:
            return self._result(key, "unchanged", current.etag, data)
        if self.dry_run:
            return self._result(key, "dry_run", "", data)
        self._ensure_verified()
        self.check_writable()
        with _classified(self.url(key), self.client):
            try:
                etag = self._upload(key, data, content_type, meta, cond, retain)
            except (BotoCoreError, ClientError) as exc:
                # botocore retries a write whose answer was lost; the retry is refused
                # (412) or fails, though the first attempt made the object: ours, by id.
                mine = self._landed(key, meta["write-id"])
                if mine is not None:
                    log.info("a write's answer was lost, but it landed", extra={"key": key})
                    return self._result(key, done, mine, data)
                if not isinstance(exc, ClientError):
                    raise
                code, status = _code(exc)
                if status == 409 or code == "ConditionalRequestConflict":
                    raise _Collision from exc
                if if_match is None and status == 412:
                    raise _Collision from exc  # lost a create race: the next HEAD decides
                if if_match is not None and (status == 412 or code == "NoSuchKey"):
                    raise self._changed(key, if_match, "another writer replaced it") from exc
                raise
        return self._result(key, done, etag, data)

    def _landed(self, key: str, write_id: str) -> str | None:
        """The etag of the object under ``key`` if this write (by its id) made it."""
        try:
            found = self.head(key)
        except Terminated:
            raise
        except OchinaiError:
            return None  # the server cannot say: the write's own error stands
        return found.etag if found and found.metadata.get("write-id") == write_id else None

    def _upload(
        self,
        key: str,
        data: _Body,
        content_type: str,
        meta: dict[str, str],
        cond: dict[str, Any],
        retain: Retention | None,
    ) -> str:
        common: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": meta}
        if retain is not None:  # PutObject and CreateMultipartUpload take the same two
            extra |= {"ObjectLockMode": retain.mode, "ObjectLockRetainUntilDate": retain.until}
        data.stream.seek(data.start)
        if data.size <= self.multipart_threshold:
            resp = self.client.put_object(**common, Body=data.stream, **extra, **cond)
            return resp["ETag"]
        self._sweep_uploads_under(key)
        return upload_in_parts(
            self.client,
            common,
            data.stream,
            data.size,
            self.part_size,
            extra,
            cond,
            check=self.check_writable,
            landed=lambda: self._landed(key, meta["write-id"]),
            started=self._own_uploads.add,
        )

    def _sweep_uploads_under(self, key: str) -> None:
        """Once per prefix and store: abort uploads there that no live run can own."""
        full = self._full(key)
        prefix = full.rpartition("/")[0] + "/" if "/" in full else ""
        if prefix in self._swept:
            return
        self._swept.add(prefix)
        sweep_stale_uploads(
            self.client,
            self.bucket,
            prefix,
            self._dead_before(),
            self._own_uploads,
            self.check_writable,
        )

    def sweep_uploads(self, prefix: str, owned: Callable[[str], bool] | None = None) -> int:
        """Abort the multipart uploads under ``prefix`` that are provably dead; a count.

        Dead: under a key ``owned`` says this run's lock covers (its holder is this run,
        so any other upload there is a dead or fenced run's), or begun before any live
        run can have begun (OCHINAI_MAX_RUN_TIME). Every run calls this for its job's
        prefixes, whether or not it writes, so that killed runs leave nothing for good.
        A dry run aborts nothing.
        """
        if self.dry_run:
            return 0
        base = f"{self.prefix}/" if self.prefix else ""
        cut = len(base)
        return sweep_stale_uploads(
            self.client,
            self.bucket,
            base + prefix,
            self._dead_before(),
            self._own_uploads,
            self.check_writable,
            owned=None if owned is None else (lambda full: owned(full[cut:])),
        )

    def _dead_before(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=self.stale_upload_age)

    def _changed(self, key: str, if_match: str, what: str) -> PreconditionFailed:
        now = self.head(key)
        return PreconditionFailed(
            f"{self.url(key)}: {what}: expected etag {if_match}, found "
            f"{now.etag if now else 'no object'}; re-read and try again",
            key=key,
            current_etag=now.etag if now else None,
        )

    def _result(self, key: str, outcome: Outcome, etag: str, data: _Body) -> PutResult:
        verb = "would write" if outcome == "dry_run" else outcome
        log.info(
            f"{verb} {self.url(key)}",
            extra={"key": key, "etag": etag, "outcome": outcome, "bytes": data.size},
        )
        return PutResult(key, outcome, etag, data.sha256, data.size)

    def delete(self, key: str, if_match: str) -> None:
        """Delete the object only while its etag is ``if_match`` and no later term of this
        run's lock wrote it: PreconditionFailed when it changed or is gone, LockLost when a
        later holder wrote it."""
        if not if_match:
            raise TypeError("delete() needs if_match=etag; unconditional deletes are not allowed")
        if self.dry_run:
            log.info(f"would delete {self.url(key)}", extra={"key": key, "outcome": "dry_run"})
            return
        current = self.head(key)
        if current is None or current.etag != _quoted(if_match):
            raise self._changed(key, if_match, "not deleted: changed since it was read")
        check_fence(self.fence, current.metadata, self.url(key))
        self._ensure_verified()
        self.check_writable()
        with _classified(self.url(key), self.client):
            try:
                self.client.delete_object(
                    Bucket=self.bucket, Key=self._full(key), IfMatch=_quoted(if_match)
                )
            except ClientError as exc:
                code, status = _code(exc)
                if status == 412 or code == "NoSuchKey":
                    raise self._changed(key, if_match, "not deleted") from exc
                raise
        log.info(f"deleted {self.url(key)}", extra={"key": key, "outcome": "deleted"})

    # --- read-modify-write ----------------------------------------------------

    def update(
        self,
        key: str,
        build: Callable[[T | None], T | None],
        *,
        load: Callable[[StoredObject], T],
        dump: Callable[[T], bytes],
        content_type: str = "application/json",
        tries: int = 5,
        retain: Retention | None = None,
    ) -> Document[T] | None:
        """Read, ``build`` the new document from the one read, write it by compare-and-swap.

        ``build(current)`` gets the stored document (None when there is none) and
        returns the new one, or None to leave it as it is. When another writer wins
        (412), the document is read again and built again from what was read: a
        document built from an old read is never written. A document written by a
        later term of this run's lock is never replaced (LockLost). Returns the
        document as stored and its etag (None: there is none and none was built);
        TransientError after ``tries`` lost races. ``retain``: as ``put``'s.
        """
        for _ in range(tries):
            try:
                found: StoredObject | None = self.get(key)
            except ObjectNotFound:
                found = None
            current = load(found) if found is not None else None
            if found is not None:
                check_fence(self.fence, found.metadata, self.url(key))
            new = build(current)
            if new is None:
                if found is None or current is None:
                    return None
                return Document(current, found.etag, "unchanged")
            body = dump(new)
            if found is not None and body == found.body:
                return Document(new, found.etag, "unchanged")
            try:
                cond: dict[str, Any] = (
                    {"if_none_match": True} if found is None else {"if_match": found.etag}
                )
                result = self.put(key, body, content_type=content_type, retain=retain, **cond)
            except PreconditionFailed:
                log.warning("another writer changed it first; reading it again", extra={"key": key})
                continue
            return Document(new, result.etag, result.outcome)
        raise TransientError(
            f"{self.url(key)}: another writer changed it {tries} times while this run "
            "updated it; retry the run"
        )

    # --- self-test ----------------------------------------------------------

    def _ensure_verified(self) -> None:
        cache_key = (str(self.client.meta.endpoint_url), self.bucket)
        with _verified_lock:
            if cache_key not in _verified:
                self.verify_conditional_writes()
                _verified.add(cache_key)

    def verify_conditional_writes(self) -> None:
        """Prove that the server keeps create-only writes, compare-and-swap and conditional
        deletes; ConfigError naming the server and the missing guarantee when it does not.

        The probe object is deleted afterwards (probe.py).
        """
        self.check_writable()
        with _classified(self.url(PROBE_PREFIX), self.client):
            verify_conditional_writes(
                self.client,
                self.bucket,
                self._full,
                self.url,
                self.check_writable,
                datetime.now(UTC),
            )
