"""Real servers on loopback for the tests: S3, a fake Kubernetes API, SMTP, HTTP."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """Return one loopback port nothing listens on (the kernel just handed it out)."""
    return free_ports(1)[0]
