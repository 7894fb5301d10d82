"""Where a run's HTTP may go: the addresses it connects to, checked as they are connected to.

A job that reads URLs someone else controls (an API's redirects, a page's links) must
not be led into the cluster: to a cloud's instance metadata (169.254.169.254, with the
node's credentials), the Kubernetes API, or a service beside it. So every connection of
a client with an ``Egress`` resolves the host itself, checks each address it got, and
connects to a checked address only: a name that resolves to a public address when first
looked up and to loopback later (DNS rebinding) is caught at the connection that would
reach loopback.

Addresses are of three kinds, by reach: ``public`` (globally routed), ``private``
(RFC 1918, unique local, carrier-grade NAT, documentation ranges) and ``internal``
(loopback, link-local, unspecified, multicast, reserved). The hosts the operator
configured may be of any kind (an on-premises API is private; a local test server is
loopback), and keep the kind they had when first connected to. Any other host may be of
no wider kind than the widest configured one: a public API's redirect can never reach a
private or internal address, a private API's never an internal one. Behind an HTTP proxy
(``HTTPS_PROXY``) the proxy makes the connections, and the check is the proxy's to make.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Collection
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3 import connection as urllib3_connection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import create_connection

from ochinai.runtime.errors import DataError

PUBLIC, PRIVATE, INTERNAL = 0, 1, 2
KIND_NAMES = {PUBLIC: "public", PRIVATE: "private", INTERNAL: "internal"}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(DataError):
    """A connection to an address this run may not reach (65): nothing was sent there."""


def kind_of(address: Address) -> int:
    """PUBLIC, PRIVATE or INTERNAL: how far into a network the address reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if (
        address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
    ):
        return INTERNAL
    return PUBLIC if address.is_global else PRIVATE


def describe(address: Address) -> str:
    """The address and what it is, for messages: ``169.254.169.254 (link-local)``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for name, yes in (
        ("loopback", address.is_loopback),
        ("link-local, where clouds serve instance metadata", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
    ):
        if yes:
            return f"{address} ({name})"
    return f"{address} ({KIND_NAMES[kind_of(address)]})"


_CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local", ".cluster.local", ".internal", ".local")


def out_of_readers_reach(host: str) -> str | None:
    """Why people outside the cluster cannot open a link to ``host`` (loopback, link-local
    or a cluster-internal name), or None when they may: a public or private address (an
    office network or VPN reaches those), a name with a domain."""
    name = host.strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        if name == "localhost" or name.endswith(".localhost"):
            return "loopback"
        if "." not in name or name.endswith(_CLUSTER_SUFFIXES):
            return "a name only the cluster resolves"
        return None
    return describe(address).partition(" ")[2].strip("()") if kind_of(address) == INTERNAL else None


def resolve(host: str, port: int) -> list[Address]:
    """The host's addresses, as the system resolver gives them (a literal is itself)."""
    found: list[Address] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


class Egress:
    """The addresses one client may connect to; thread-safe.

    ``configured``: the host names (or literal addresses) the operator gave. ``resolver``
    and ``connector`` default to this module's ``resolve`` and urllib3's
    ``create_connection``, looked up at each call: seams for tests (a resolver that
    changes its answer, a connector that records what it was asked to reach).
    """

    def __init__(
        self,
        configured: Collection[str],
        *,
        resolver: Callable[[str, int], list[Address]] | None = None,
        connector: Callable[..., socket.socket] | None = None,
    ) -> None:
        self.configured = {h.lower().strip("[]") for h in configured if h}
        self.resolver = resolver or (lambda host, port: resolve(host, port))
        self.connector = connector or (lambda *a, **k: create_connection(*a, **k))
        self._first: dict[str, int] = {}  # configured host -> its kind when first reached
        self._lock = threading.Lock()

    def reach(self) -> int:
        """The widest kind the configured hosts were seen to be (PUBLIC before any)."""
        with self._lock:
            return max(self._first.values(), default=PUBLIC)

    def check(self, host: str, port: int) -> list[Address]:
        """The addresses of ``host`` this client may connect to; EgressRefused if none."""
        name = host.lower().strip("[]")
        try:
            addresses = self.resolver(name, port)
        except socket.gaierror:
            raise  # urllib3 reports an unknown name as such
        if not addresses:
            raise socket.gaierror(f"{host}: no address")
        widest = max(kind_of(a) for a in addresses)
        with self._lock:
            if name in self.configured and name not in self._first:
                self._first[name] = widest  # the operator's own host: whatever it is
            allowed = self._first.get(name, max(self._first.values(), default=PUBLIC))
        ok = [a for a in addresses if kind_of(a) <= allowed]
        if ok:
            return ok
        refused = describe(addresses[0])
        if name in self.configured:
            why = (
                f"{host} now resolves to {refused}, though it was a "
                f"{KIND_NAMES[allowed]} address when this run first reached it"
            )
        else:
            why = (
                f"{host} resolves to {refused}, and no configured host is an address of "
                f"that kind; a {KIND_NAMES[allowed]} API's answers may not lead there"
            )
        raise EgressRefused(f"{why}; nothing was sent to it")

    def connect(self, host: str, port: int, timeout: Any, **options: Any) -> socket.socket:
        """A socket to a checked address of ``host`` (the first that answers)."""
        error: OSError | None = None
        for address in self.check(host, port):
            try:
                return self.connector((str(address), port), timeout, **options)
            except OSError as exc:
                error = exc
        assert error is not None
        raise error


def _connection_class(base: type, egress: Egress) -> type:
    class Checked(base):  # type: ignore[misc]
        """A connection whose socket goes to an address ``egress`` allows."""

        def _new_conn(self) -> socket.socket:
            try:
                return egress.connect(
                    self._dns_host,
                    self.port,
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except socket.gaierror as exc:
                raise urllib3.exceptions.NameResolutionError(self.host, self, exc) from exc
            except TimeoutError as exc:
                raise urllib3.exceptions.ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
                ) from exc
            except OSError as exc:
                raise urllib3.exceptions.NewConnectionError(
                    self, f"Failed to establish a new connection: {exc}"
                ) from exc

    return Checked


class EgressAdapter(HTTPAdapter):
    """requests' adapter whose every connection goes through ``egress``."""

    def __init__(self, egress: Egress) -> None:
        self.egress = egress
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http = type(
            "CheckedHTTPPool",
            (HTTPConnectionPool,),
            {"ConnectionCls": _connection_class(urllib3_connection.HTTPConnection, self.egress)},
        )
        https = type(
            "CheckedHTTPSPool",
            (HTTPSConnectionPool,),
            {"ConnectionCls": _connection_class(urllib3_connection.HTTPSConnection, self.egress)},
        )
        self.poolmanager.pool_classes_by_scheme = {"http": http, "https": https}


def session_for(egress: Egress) -> requests.Session:
    """A requests session whose connections ``egress`` checks."""
    session = requests.Session()
    adapter = EgressAdapter(egress)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
