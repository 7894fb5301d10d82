"""The real Prometheus and Pushgateway on loopback: Debian's packages, which .ci/run installs.

Each instance is this test's own: a free loopback port, its files in a temporary folder
(no persistence file, TSDB or configuration of the machine's), killed when its block
ends. A Prometheus or Pushgateway that the packages' install may have started as a
service is neither used nor touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port

PACKAGES = "prometheus prometheus-pushgateway"
# The binaries, as Debian's packages name them.
PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
PUSHGATEWAY = "prometheus-pushgateway"

START_TIMEOUT = 30.0
# urllib without the environment's proxies: these servers are on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def binary(name: str) -> str:
    """The path of ``name``. When it is missing the test is skipped saying how to install
    it, as the workbook's print check is; in CI (CI set, as .ci/run installs it) it fails."""
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
    if path is None:
        why = (
            f"{name} is not installed: apt-get install --no-install-recommends {PACKAGES} "
            "(.ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return path


def get(url: str, timeout: float = 5.0) -> bytes:
    """The body of a GET of ``url``; an HTTP error status raises."""
    with _OPENER.open(url, timeout=timeout) as answer:
        body: bytes = answer.read()
        return body


class Server:
    """One server process of this test's: started on a free loopback port, ready, killed."""

    name = ""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / f"{self.name}.log"
        self.prefix = ""  # a path every route is under (--web.route-prefix)

    def argv(self, listen: str) -> list[str]:
        """The command line that serves on ``listen`` (host:port)."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>, and the route prefix if it has one."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> Self:
        """Start the server and wait until /-/ready answers; three tries with other ports."""
        for _ in range(3):
            self.port = free_port()
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    self.argv(f"127.0.0.1:{self.port}"),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.folder,
                    start_new_session=True,  # a ^C to pytest is not sent to it
                )
            if self._ready():
                return self
            self.stop()  # it exited (the port was taken meanwhile?) or never got ready
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not start on loopback; its log ends:\n{tail}")

    def _ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                get(f"{self.url}/-/ready", timeout=1.0)
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Kill the server (it keeps nothing worth a graceful stop) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(10)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Pushgateway(Server):
    """A Pushgateway that keeps its groups in memory only, its routes under ``prefix``."""

    name = "pushgateway"

    def __init__(self, folder: Path, prefix: str = "") -> None:
        super().__init__(folder)
        self.prefix = prefix

    def argv(self, listen: str) -> list[str]:
        """No persistence file (Debian's default is one under /var/lib)."""
        return [
            binary(PUSHGATEWAY),
            f"--web.listen-address={listen}",
            f"--web.route-prefix={self.prefix or '/'}",
            "--persistence.file=",
            "--log.level=warn",
        ]

    def families(self) -> dict[str, Metric]:
        """What its /metrics shows now, parsed, by metric family name."""
        text = get(f"{self.url}/metrics").decode()
        return {family.name: family for family in text_string_to_metric_families(text)}

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The samples of the family ``name``: value by sorted label pairs (job, shard...)."""
        family = self.families().get(name)
        if family is None:
            return {}
        return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


class Prometheus(Server):
    """A Prometheus with the given configuration (a prometheus.yml mapping)."""

    name = "prometheus"

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        super().__init__(folder)
        self.config = folder / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def argv(self, listen: str) -> list[str]:
        """Its configuration and TSDB in its folder."""
        return [
            binary(PROMETHEUS),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address={listen}",
            "--log.level=warn",
        ]

    def api(self, path: str) -> Any:
        """``data`` of an HTTP API answer, such as /api/v1/alerts."""
        answer = json.loads(get(f"{self.url}{path}"))
        assert answer["status"] == "success", answer
        return answer["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """The active alerts, pending and firing, each with its labels and state."""
        alerts: list[dict[str, Any]] = self.api("/api/v1/alerts")["alerts"]
        return alerts
