"""Links that open where the reader is: OCHINAI_LINK_ENDPOINT_URL, and a WARNING otherwise."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from ochinai.runtime.declare import load
from ochinai.runtime.egress import out_of_readers_reach
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.settings import RuntimeSettings
from ochinai.runtime.storage import Store
from tests.conftest import S3Backend


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("localhost", "loopback"),
        ("minio", "a name only the cluster resolves"),
        ("minio.storage.svc", "a name only the cluster resolves"),
        ("minio.storage.svc.cluster.local", "a name only the cluster resolves"),
        ("169.254.169.254", "link-local, where clouds serve instance metadata"),
        ("10.0.3.7", None),  # an office network or a VPN reaches private addresses
        ("s3.example.co.jp", None),
        ("203.0.113.9", None),
    ],
)
def test_which_hosts_readers_cannot_reach(host: str, why: str | None) -> None:
    assert out_of_readers_reach(host) == why


def test_a_link_is_signed_for_the_readers_address_and_still_opens(
    s3: S3Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed for OCHINAI_LINK_ENDPOINT_URL (here the same server by another name, as a
    proxy in front of it would be): the URL names that host and the server accepts it."""
    s3.client.put_object(Bucket=s3.bucket, Key="out/r.xlsx", Body=b"workbook")
    if s3.endpoint_url is None:  # moto: signing only; nothing to open
        public = "https://s3.example.co.jp"
        url = Store(s3.client, s3.bucket, link_endpoint_url=public).presign("out/r.xlsx", 60)
        assert urlsplit(url).netloc == "s3.example.co.jp"
        assert "X-Amz-Signature=" in url
        return
    port = urlsplit(s3.endpoint_url).port
    readers = f"http://localhost:{port}"  # another name of the same server
    with caplog.at_level(logging.WARNING, "ochinai.storage"):
        url = Store(s3.client, s3.bucket, link_endpoint_url=readers).presign("out/r.xlsx", 60)
    assert urlsplit(url).netloc == f"localhost:{port}"
    assert requests.get(url, timeout=10).content == b"workbook"
    # localhost is loopback: the WARNING names the host and the setting.
    [warning] = [r for r in caplog.records if "OCHINAI_LINK_ENDPOINT_URL" in r.getMessage()]
    assert "localhost" in warning.getMessage() and "loopback" in warning.getMessage()


def test_a_link_for_a_cluster_address_warns(
    moto_ops: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(moto_ops, "ops", link_endpoint_url="http://minio.storage.svc:9000")
    with caplog.at_level(logging.WARNING, "ochinai.storage"):
        url = store.presign("out/r.xlsx", 60)
    assert urlsplit(url).netloc == "minio.storage.svc:9000"
    assert any("a name only the cluster resolves" in r.getMessage() for r in caplog.records)
    caplog.clear()
    public = Store(moto_ops, "ops", link_endpoint_url="https://s3.example.co.jp")
    with caplog.at_level(logging.WARNING, "ochinai.storage"):
        public.presign("out/r.xlsx", 60)
    assert not caplog.records


@pytest.mark.parametrize("value", ["minio:9000", "ftp://x", "https://key:secret@s3.example.jp"])
def test_the_setting_is_an_http_address_without_keys(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(RuntimeSettings, {"OCHINAI_STORE": "s3://ops", "OCHINAI_LINK_ENDPOINT_URL": value})
    assert "OCHINAI_LINK_ENDPOINT_URL" in str(caught.value)
    assert "secret" not in str(caught.value)
