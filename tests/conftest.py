"""Shared test fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ochinai.runtime.storage import Store, make_s3_client
from tests.servers import s3 as s3servers
from tests.servers.faults import FaultProxy

# Fixtures of the servers (fake_kube, start_smtp, cert, hook, api_server) and demo_job.
pytest_plugins = ["tests.servers.kube", "tests.servers.smtp", "tests.servers.http", "tests.harness"]

# --- S3 ----------------------------------------------------------------------

_AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def aws_env(monkeypatch: pytest.MonkeyPatch, access_key: str, secret_key: str) -> None:
    """Point boto3 at nothing but the given keys, whatever the developer's shell has."""
    for name in _AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def aws_test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region for tests that build their own client."""
    aws_env(monkeypatch, "testing", "testing")


@pytest.fixture
def moto_ops(aws_test_env: None) -> Iterator[Any]:
    """An in-process S3 (moto) with the bucket ``ops``; yields a client."""
    from moto import mock_aws

    with mock_aws():
        client = make_s3_client(max_attempts=1)
        client.create_bucket(Bucket="ops")
        yield client


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3servers.WeedMini]:
    """One SeaweedFS `weed mini` for the whole session; fails (never skips) without `weed`."""
    server = s3servers.WeedMini(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class S3Backend:
    """A client and a fresh, empty bucket on one S3 implementation."""

    name: str
    client: Any
    bucket: str
    endpoint_url: str | None
    make_client: Callable[..., Any]

    def store(self, prefix: str = "", **options: Any) -> Store:
        """A store on this backend's bucket."""
        return Store(self.client, self.bucket, prefix, **options)


@pytest.fixture(params=["moto", "seaweedfs"])
def s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Backend]:
    """The same S3 contract on moto (in process) and on a real SeaweedFS server."""
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    only_real = request.node.get_closest_marker("seaweedfs_only")
    if request.param == "moto" and only_real is not None:
        pytest.skip(
            only_real.kwargs.get("reason", "moto ignores this; a real S3 server enforces it")
        )
    if request.param == "moto":
        from moto import mock_aws

        aws_env(monkeypatch, "testing", "testing")
        with mock_aws():
            client = make_s3_client(max_attempts=1)
            client.create_bucket(Bucket=bucket)
            yield S3Backend("moto", client, bucket, None, make_s3_client)
        return
    server: s3servers.WeedMini = request.getfixturevalue("seaweedfs")
    aws_env(monkeypatch, s3servers.ACCESS_KEY, s3servers.SECRET_KEY)

    def make(**options: Any) -> Any:
        return make_s3_client(endpoint_url=server.endpoint, **options)

    client = make(max_attempts=1)
    client.create_bucket(Bucket=bucket)
    yield S3Backend("seaweedfs", client, bucket, server.endpoint, make)


# --- logging -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test starts and ends with the logging state it found, and no bound run context."""
    import logging

    from ochinai.runtime import logs

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    ochinai_level = logging.getLogger("ochinai").level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("ochinai").setLevel(ochinai_level)
    logging.captureWarnings(False)
    logs.unbind(*logs.context())
    logs.redactor.clear()


# --- S3 behind a fault proxy ----------------------------------------------------


@dataclass
class Faulty:
    """A bucket on SeaweedFS reached through the proxy, and a direct client to check it."""

    proxy: FaultProxy
    bucket: str
    direct: Any

    def store(self, run_id: str = "run-1", read_timeout: float = 5, **options: Any) -> Store:
        """A store through the proxy whose client retries as in production (4 attempts)."""
        client = make_s3_client(
            endpoint_url=self.proxy.endpoint, read_timeout=read_timeout, max_attempts=4
        )
        return Store(client, self.bucket, run_id=run_id, **options)

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.direct.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in listed.get("Contents", [])]

    def uploads(self) -> list[Any]:
        uploads: list[Any] = self.direct.list_multipart_uploads(Bucket=self.bucket).get(
            "Uploads", []
        )
        return uploads

    def tries(self, op: str, key: str) -> int:
        return sum(1 for seen in self.proxy.log if seen.op == op and seen.key == key)


@pytest.fixture
def faulty(seaweedfs: s3servers.WeedMini, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faulty]:
    """A fresh bucket on the session's SeaweedFS and a fault proxy in front of it."""
    aws_env(monkeypatch, s3servers.ACCESS_KEY, s3servers.SECRET_KEY)
    direct = make_s3_client(endpoint_url=seaweedfs.endpoint, max_attempts=1)
    bucket = f"faults-{uuid.uuid4().hex[:16]}"
    direct.create_bucket(Bucket=bucket)
    with FaultProxy(seaweedfs.endpoint, seed=7) as proxy:
        yield Faulty(proxy, bucket, direct)
