"""Keys stay where they belong: the monitor against an API whose redirects an attacker sets.

A second loopback address (127.0.0.2) stands in for another host; a patched resolver
and connector stand in for public addresses and for the cloud's metadata address, so
that nothing here reaches beyond this machine and no connection to those is attempted.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from ochinai.runtime import egress
from ochinai.runtime.egress import INTERNAL, PRIVATE, PUBLIC, Egress, EgressRefused, kind_of
from ochinai.runtime.errors import exit_code_for
from ochinai.runtime.http import HttpClient
from tests.servers.http import Answer, Api, Hook, Page, api_on
from tests.test_monitor import Monitor, item, items_page

KEY = "sk-live-0123456789abcdef"
WITH_KEY = {"OCHINAI_MONITOR_API_KEY_HEADER": "X-API-Key", "OCHINAI_MONITOR_API_KEY": KEY}
PUBLIC_IP = "93.184.215.14"  # a global address; the patched connector never goes there


@pytest.fixture
def mon(moto_ops: Any, api_server: Api, hook: Hook) -> Monitor:
    """A bucket, a local API and a webhook (as in test_monitor.py)."""
    return Monitor(moto_ops, api_server, hook)


@pytest.fixture
def thief() -> Iterator[Api]:
    """Another host, which records every header it is sent."""
    with api_on("127.0.0.2") as api:
        api.pages["/steal"] = items_page(item("x", 1, 1))
        yield api


def redirect(to: str, status: int = 302) -> Answer:
    return Answer(status, b"", {"Location": to})


def errors(mon: Monitor) -> str:
    lines = [json.loads(line) for line in mon.buf.getvalue().splitlines()]
    return "\n".join(line["message"] for line in lines if line["severity"] == "ERROR")


def sent_key(api: Api) -> list[str | None]:
    return [hit.headers.get("X-API-Key") for hit in api.hits]


def test_a_redirect_to_another_host_is_refused_and_the_key_never_goes_there(
    mon: Monitor, thief: Api
) -> None:
    """302 to another host: 65 naming both URLs, nothing written, nothing sent there.
    Before, requests followed it with X-API-Key and the run ended 0."""
    mon.api.then("/items", redirect(thief.url("/steal")))
    assert mon.run(**WITH_KEY) == 65
    assert thief.hits == []
    said = errors(mon)
    assert mon.api.url("/items") in said and thief.url("/steal") in said
    assert "OCHINAI_MONITOR_ALLOW_HOSTS" in said and KEY not in said
    assert mon.keys("monitor/") == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_an_allowed_host_gets_the_request_without_the_key(
    mon: Monitor, thief: Api, status: int
) -> None:
    """OCHINAI_MONITOR_ALLOW_HOSTS lets the redirect through; the key stays behind."""
    mon.api.then("/items", redirect(thief.url("/steal"), status))
    assert mon.run(**WITH_KEY, OCHINAI_MONITOR_ALLOW_HOSTS="127.0.0.2") == 0
    assert sent_key(mon.api) == [KEY] and sent_key(thief) == [None]
    assert all("authorization" not in {k.lower() for k in h.headers} for h in thief.hits)
    assert list(mon.state()["items"]) == ["x"]


def test_a_redirect_within_the_origin_keeps_the_key(mon: Monitor) -> None:
    mon.api.then("/items", redirect("/v2/items", 301))
    mon.api.pages["/v2/items"] = items_page(item("a", 1, 1))
    assert mon.run(**WITH_KEY) == 0
    assert sent_key(mon.api) == [KEY, KEY]


def test_userinfo_in_the_url_does_not_follow_a_redirect(mon: Monitor, thief: Api) -> None:
    """Basic auth from the configured URL goes to its origin only."""
    mon.api.then("/items", redirect(thief.url("/steal")))
    url = mon.api.url("/items").replace("http://", "http://shop:s3cret-password@")
    assert mon.run(OCHINAI_MONITOR_URL=url, OCHINAI_MONITOR_ALLOW_HOSTS="127.0.0.2") == 0
    assert mon.api.hits[0].headers.get("Authorization", "").startswith("Basic ")
    assert "Authorization" not in thief.hits[0].headers


# --- the address actually connected to --------------------------------------------------


class Net:
    """A resolver and a connector standing in for DNS and the internet."""

    def __init__(self, names: dict[str, list[list[str]]], local_port: int) -> None:
        self.names = names  # host -> the answers it gives, in turn (the last one repeats)
        self.local_port = local_port
        self.connected: list[tuple[str, int]] = []

    def resolve(self, host: str, port: int) -> list[Any]:
        answers = self.names.get(host)
        if answers is None:
            return [ipaddress.ip_address(host)]  # a literal
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return [ipaddress.ip_address(a) for a in answer]

    def connect(self, address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        self.connected.append(address)
        # The "public" address is this machine's API server.
        return socket.create_connection(("127.0.0.1", self.local_port), *args)


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch, api_server: Api) -> Net:
    fake = Net({"shop.test": [[PUBLIC_IP]]}, api_server.port)
    monkeypatch.setattr(egress, "resolve", fake.resolve)
    monkeypatch.setattr(egress, "create_connection", fake.connect)
    return fake


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        ("http://127.0.0.1:6443/api/v1/namespaces/kube-system/secrets", "127.0.0.1"),
        ("http://10.96.0.1/api", "10.96.0.1"),
        ("http://[::1]:8080/", "::1"),
    ],
    ids=["kubernetes api on loopback", "cluster service (private)", "ipv6"],
)
def test_a_public_apis_redirect_never_reaches_an_internal_address(
    mon: Monitor, net: Net, target: str, refused: str
) -> None:
    """Even with the host allowed, a redirect from a public API to the metadata address,
    loopback or a private range is refused with 65 before any connection is made."""
    mon.api.then("/items", redirect(target))
    host = refused if ":" not in refused else f"[{refused}]"
    port = mon.api.port
    assert (
        mon.run(
            **WITH_KEY,
            OCHINAI_MONITOR_URL=f"http://shop.test:{port}/items",
            OCHINAI_MONITOR_ALLOW_HOSTS=host,
        )
        == 65
    )
    assert net.connected == [(PUBLIC_IP, port)]
    said = errors(mon)
    assert refused in said and "nothing was sent" in said
    assert mon.keys("monitor/") == []


def test_a_redirect_to_the_cloud_metadata_address_is_refused_before_connecting(
    net: Net, api_server: Api
) -> None:
    """The runtime's client alone (moto, which the monitor's tests keep their bucket in,
    answers 169.254.169.254 itself inside requests): allowed by name, refused by address."""
    api_server.then("/items", redirect("http://169.254.169.254/latest/meta-data/iam/"))
    client = HttpClient(sleep=lambda s: None).with_options(
        egress=Egress(["shop.test"]), allow_hosts=["169.254.169.254"]
    )
    with pytest.raises(EgressRefused) as caught:
        client.get(f"http://shop.test:{api_server.port}/items")
    assert exit_code_for(caught.value) == 65
    assert "169.254.169.254 (link-local, where clouds serve instance metadata)" in str(caught.value)
    assert net.connected == [(PUBLIC_IP, api_server.port)]


def test_a_name_that_resolves_to_loopback_the_second_time_is_refused(
    mon: Monitor, net: Net
) -> None:
    """DNS rebinding: shop.test is public for page 1, loopback for page 2 (a new
    connection): the address connected to is checked, so page 2 is refused."""
    net.names["shop.test"] = [[PUBLIC_IP], ["127.0.0.1"]]
    body = json.dumps({"items": [item("a", 1, 1)], "next": "/items?page=2"}).encode()
    mon.api.then("/items", Answer(200, body, {"Connection": "close"}))
    mon.api.pages["/items?page=2"] = items_page(item("b", 1, 1))
    assert mon.run(OCHINAI_MONITOR_URL=f"http://shop.test:{mon.api.port}/items") == 65
    assert [a for a, _ in net.connected] == [PUBLIC_IP]
    assert "now resolves to 127.0.0.1 (loopback)" in errors(mon)


def test_a_private_api_is_reached_but_not_its_redirect_into_loopback(
    mon: Monitor, net: Net
) -> None:
    """An on-premises API on a private address is the operator's own: reached. Its
    redirect to loopback is not, even when allowed."""
    net.names["erp.local"] = [["10.1.2.3"]]
    mon.api.then("/items", redirect("http://127.0.0.1:9/x"))
    url = f"http://erp.local:{mon.api.port}/items"
    assert mon.run(OCHINAI_MONITOR_URL=url, OCHINAI_MONITOR_ALLOW_HOSTS="127.0.0.1") == 65
    assert [a for a, _ in net.connected] == ["10.1.2.3"]
    mon.api.pages["/items"] = items_page(item("a", 1, 1))
    assert mon.run(OCHINAI_MONITOR_URL=url) == 0


def test_the_kinds_of_addresses() -> None:
    kinds = {
        a: kind_of(ipaddress.ip_address(a))
        for a in (
            "8.8.8.8",
            "10.0.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
            "127.0.0.1",
            "169.254.169.254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
        )
    }
    assert kinds == {
        "8.8.8.8": PUBLIC,
        "10.0.0.1": PRIVATE,
        "192.168.1.1": PRIVATE,
        "100.64.0.1": PRIVATE,
        "fd00::1": PRIVATE,
        "127.0.0.1": INTERNAL,
        "169.254.169.254": INTERNAL,
        "fe80::1": INTERNAL,
        "::ffff:169.254.169.254": INTERNAL,
        "0.0.0.0": INTERNAL,
        "224.0.0.1": INTERNAL,
    }
    with pytest.raises(EgressRefused):
        Egress(["shop.example"], resolver=lambda h, p: [ipaddress.ip_address("10.0.0.9")]).check(
            "elsewhere.example", 80
        )


# --- html mode ------------------------------------------------------------------------


def test_html_pages_and_robots_txt_that_redirect_elsewhere_are_refused(
    mon: Monitor, thief: Api, hook: Hook
) -> None:
    page = mon.api.url("/p/1")
    html = {"OCHINAI_MONITOR_MODE": "html", "OCHINAI_MONITOR_PAGES": page}
    mon.api.then("/robots.txt", redirect(thief.url("/robots.txt")))
    assert mon.run(**html, **WITH_KEY) == 65
    mon.api.pages["/robots.txt"] = Page(b"User-agent: *\nAllow: /\n", content_type="text/plain")
    mon.api.then("/p/1", redirect(thief.url("/steal")))
    assert mon.run(**html, **WITH_KEY) == 65
    assert thief.hits == []
