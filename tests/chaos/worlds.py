"""Each job's world for the chaos tests: how to run it to its end, what must always hold.

A world is a bucket (and for the monitor, the demo price API and a webhook) in which a
job is run again and again. ``complete()`` runs it until its work is done, as the next
CronJob runs would; ``invariants()`` is what must hold at any moment, a killed run's
leftovers included; ``snapshot()`` is what a completed series leaves, compared between
a series never disturbed and one that was.

- report and backup: one run does the work. Every object is an input, bookkeeping, or
  an output with a completed run's bytes; every manifest lists files that are there
  with their sha256.
- monitor: the demo API's catalogue moves one step each time a client presents the
  current ETag (once answered 429 first), so a series is several runs. At the end the
  state is byte for byte the clean series', the history holds each change exactly once,
  and the webhook got each change exactly once after de-duplication by the notice's
  Idempotency-Key (a run killed between the POST and its record sends it again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

from ochinai.jobs.monitor.diff import KINDS
from tests.chaos.runs import INPUTS, ROOT, Bucket, Run, new_bucket
from tests.servers.http import Hook, HookHandler, HookServer, serving
from tests.servers.s3 import WeedMini

sys.path.insert(0, str(ROOT / "docker"))
import demo_api

JOBS = ("report", "backup", "monitor")
OUTPUTS = {"report": ("out/",), "backup": ("backup/",), "monitor": ("monitor/",)}
BOOKKEEPING = ("_runs/", "_locks/", "_sent/", "_probe")
STATE = "monitor/state.json"
HISTORY = re.compile(r"^monitor/history/dt=\d{4}-\d{2}-\d{2}/[A-Za-z0-9_-]+\.ndjson$")


def incident_problems(received: list[tuple[dict[str, str], bytes]]) -> list[str]:
    """One notice per incident transition: after de-duplication by Idempotency-Key, the
    incidents' notices alternate, opened then recovered, never two open at once."""
    found, open_id = [], None
    seen = set()
    for headers, _ in received:
        key = headers.get("Idempotency-Key", "")
        parts = key.split("/")
        if len(parts) != 4 or parts[1] != "incident" or key in seen:
            continue
        seen.add(key)
        incident, step = parts[2], parts[3]
        if step == "opened":
            if open_id is not None:
                found.append(f"incident {incident} opened while {open_id} was open")
            open_id = incident
        elif step == "recovered":
            if open_id != incident:
                found.append(f"incident {incident} recovered, but {open_id} was the open one")
            open_id = None
    return found


def json_problems(objects: dict[str, bytes]) -> list[str]:
    """Every JSON object parses, every NDJSON line too."""
    found = []
    for key, body in objects.items():
        try:
            if key.endswith(".json"):
                json.loads(body)
            elif key.endswith(".ndjson"):
                for line in body.splitlines():
                    json.loads(line)
        except ValueError:
            found.append(f"{key}: does not parse")
    return found


class FilesWorld:
    """report or backup: one run writes the outputs."""

    def __init__(self, weed: WeedMini, job: str, **settings: str) -> None:
        self.job = job
        self.bucket = new_bucket(weed, f"chaos-{job}", **settings)
        self.reference: dict[str, bytes] = {}

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        return self.bucket.start(self.job, **env)

    def complete(self, **env: str) -> tuple[list[Run], list[str]]:
        run = self.bucket.run(self.job, **env)
        ok = run.code == 0 and run.summary.get("outcome") in ("ok", "unchanged")
        return [run], [] if ok else [f"the run to completion: exit {run.code}, {run.summary}"]

    def forget(self) -> None:
        """Delete the outputs, so that the next run writes them again."""
        for key in self.outputs():
            self.bucket.client.delete_object(Bucket=self.bucket.name, Key=key)

    def outputs(self, objects: dict[str, bytes] | None = None) -> dict[str, bytes]:
        objects = self.bucket.objects() if objects is None else objects
        return {k: v for k, v in objects.items() if k.startswith(OUTPUTS[self.job])}

    def snapshot(self) -> dict[str, Any]:
        return {"outputs": self.outputs()}

    def invariants(self, reference: dict[str, Any], *, final: bool = True) -> list[str]:
        """What a killed or finished run must never leave (empty: none).

        Not ``final``: an upload left open by a run that failed may wait for the next.
        """
        objects = self.bucket.objects()
        found = json_problems(objects)
        outputs = reference["outputs"]
        for key, body in objects.items():
            if key in INPUTS or key.startswith(BOOKKEEPING):
                continue
            if key not in outputs:
                found.append(f"{key}: not an object a completed run writes")
            elif body != outputs[key]:
                found.append(f"{key}: other bytes than a completed run's")
        for key, body in objects.items():
            if key.endswith("manifest.json") and key.startswith("backup/"):
                with contextlib.suppress(ValueError):
                    found += manifest_problems(key, json.loads(body), objects)
        if final and self.bucket.uploads():
            found.append(f"multipart uploads left open: {len(self.bucket.uploads())}")
        return found

    def claims(self, run: Run, before: dict[str, bytes], reference: dict[str, Any]) -> list[str]:
        """What a run that ended 0 says it wrote, against what it found and left."""
        after = self.bucket.objects()
        s = run.summary
        if self.job == "report":
            found = []
            for key in reference["outputs"]:
                was, now = before.get(key), after.get(key)
                truth = "created" if was is None else "unchanged" if was == now else "replaced"
                if s.get("report") != truth:
                    found.append(f"the summary says report={s.get('report')}; it was {truth}")
            return found
        listed = [
            file["key"]
            for key, body in reference["outputs"].items()
            if key.endswith("manifest.json")
            for entry in json.loads(body)["sources"]
            for file in entry.get("files", [])
        ]
        written = sum(1 for key in listed if key not in before and key in after)
        kept = sum(1 for key in listed if key in before)
        said = (s.get("files_written"), s.get("files_unchanged"))
        if said != (written, kept):
            return [
                f"the summary says files_written, files_unchanged={said}; they were "
                f"{(written, kept)}"
            ]
        return []

    def differences(self, reference: dict[str, Any]) -> list[str]:
        mine = self.snapshot()["outputs"]
        theirs = reference["outputs"]
        if mine == theirs:
            return []
        other = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        return [f"the outputs differ from a clean run's: {other}"]

    def close(self) -> None:
        pass


def manifest_problems(key: str, manifest: dict[str, Any], objects: dict[str, bytes]) -> list[str]:
    found = []
    for entry in manifest["sources"]:
        for file in entry.get("files", []):
            there = objects.get(file["key"])
            if there is None:
                found.append(f"{key} lists {file['key']}, which is not there")
            elif hashlib.sha256(there).hexdigest() != file["sha256"]:
                found.append(f"{file['key']}: not the sha256 {key} says")
    return found


def catalogue_steps(count: int, seed: str) -> demo_api.Steps:
    """``count`` moves of the demo catalogue: each changes a price, most a stock too."""
    rng = random.Random(seed)
    keys = sorted(demo_api.CATALOGUE)
    steps: demo_api.Steps = []
    for n in range(count):
        priced, stocked = rng.sample(keys, 2)
        step = {priced: (1000 + 10 * n + rng.randrange(10), 5)}
        step[stocked] = (2000 + 10 * n, rng.choice([0, 0, 3, 12]))
        steps.append(step)
    return steps


class MonitorWorld:
    """The monitor against the demo price API (moving ``steps`` times) and a webhook.

    ``port``: the API's port, so that a second series has the same URL in its state.
    """

    def __init__(
        self, weed: WeedMini, steps: demo_api.Steps, port: int = 0, **settings: str
    ) -> None:
        self.job = "monitor"
        self.steps = len(steps)
        self.api: ThreadingHTTPServer = demo_api.make_server(port=port, quiet=True, steps=steps)
        self.port = self.api.server_address[1]
        self.hook_server = HookServer(("127.0.0.1", 0), HookHandler)
        self.hook: Hook = Hook(port=self.hook_server.server_address[1])
        self.hook_server.hook = self.hook
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(serving(self.hook_server))
        threading.Thread(target=self.api.serve_forever, args=(0.05,), daemon=True).start()
        self._stack.callback(self.api.server_close)
        self._stack.callback(self.api.shutdown)
        self.bucket = new_bucket(
            weed,
            "chaos-monitor",
            inputs=False,
            OCHINAI_MONITOR_URL=f"http://127.0.0.1:{self.port}{demo_api.PATH}",
            OCHINAI_WEBHOOK_URL=self.hook.url,
            OCHINAI_MONITOR_MIN_INTERVAL="0s",
            **settings,
        )

    @property
    def shop(self) -> Any:
        return self.api.shop  # type: ignore[attr-defined]

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        return self.bucket.start(self.job, **env)

    def complete(self, **env: str) -> tuple[list[Run], list[str]]:
        """Run until the catalogue has made its last move and a run finds nothing new."""
        runs: list[Run] = []
        for _ in range(self.steps + 4):
            run = self.bucket.run(self.job, **env)
            runs.append(run)
            if run.code != 0 or run.summary.get("outcome") not in ("ok", "unchanged"):
                return runs, [f"a run to completion: exit {run.code}, {run.summary}"]
            pending = run.summary.get("counts", {}).get("outbox_pending", 0)
            done = self.shop.step == self.steps and not pending
            if done and run.summary.get("outcome") == "unchanged":
                return runs, []
        return runs, [f"{len(runs)} runs did not bring the monitor to the catalogue's end"]

    def history(self, objects: dict[str, bytes]) -> list[dict[str, Any]]:
        """Every change in the history, without the run's id and time."""
        records = []
        for key in sorted(k for k in objects if k.startswith("monitor/history/")):
            for line in objects[key].splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    record.pop("run_id", None)
                    record.pop("time", None)
                    records.append(record)
        return sorted(records, key=lambda r: r["id"])

    def notified(self) -> Counter[str]:
        """The change ids the webhook got, once per notice after de-duplication by key."""
        ids: Counter[str] = Counter()
        seen = set()
        for headers, body in self.hook.received:
            key = headers.get("Idempotency-Key", "")
            if not key.startswith("monitor/changes/") or key in seen:
                continue
            seen.add(key)
            text = json.loads(body)["text"]
            listed = text.rsplit("変更 ID: ", 1)[1].split(", ")
            ids.update(i.strip() for i in listed)
        return ids

    def snapshot(self) -> dict[str, Any]:
        objects = self.bucket.objects()
        return {
            "state": objects.get(STATE),
            "history": self.history(objects),
            "notified": self.notified(),
        }

    def invariants(self, reference: dict[str, Any], *, final: bool = True) -> list[str]:
        objects = self.bucket.objects()
        found = json_problems(objects)
        for key in objects:
            if key.startswith(BOOKKEEPING) or key == STATE or HISTORY.match(key):
                continue
            found.append(f"{key}: not an object a monitor run writes")
        ids = Counter(r["id"] for r in self.history(objects))
        found += [f"the history holds {i} {n} times" for i, n in ids.items() if n > 1]
        known = {r["id"] for r in reference["history"]}
        found += [f"the history holds {i}, no change of the catalogue" for i in ids.keys() - known]
        return found + incident_problems(self.hook.received)

    def claims(
        self, run: Run, before: dict[str, bytes], reference: dict[str, Any], posts: int = 0
    ) -> list[str]:
        """The changes a run that ended 0 counts are its history; ``notified`` what it sent.

        ``posts``: how many webhook posts there were before the run.
        """
        s = run.summary
        after = self.bucket.objects()
        mine = [k for k in after if k.endswith(f"/{s.get('run_id')}.ndjson") and k not in before]
        lines = sum(len(after[k].splitlines()) for k in mine)
        counted = sum(int(s.get(kind, 0)) for kind in KINDS)
        found = []
        if counted != lines:
            found.append(f"the summary counts {counted} changes; its history holds {lines}")
        sent = 0
        for headers, body in self.hook.received[posts:]:
            if headers.get("Idempotency-Key", "").startswith("monitor/changes/"):
                sent += len(json.loads(body)["text"].rsplit("変更 ID: ", 1)[1].split(", "))
        if s.get("notified") != sent:
            found.append(f"the summary says notified={s.get('notified')}; it sent {sent}")
        return found

    def differences(self, reference: dict[str, Any]) -> list[str]:
        mine = self.snapshot()
        found = []
        if mine["state"] != reference["state"]:
            found.append("the state differs from a clean series'")
        if mine["history"] != reference["history"]:
            lost = {r["id"] for r in reference["history"]} - {r["id"] for r in mine["history"]}
            found.append(f"the history differs from a clean series' (lost: {sorted(lost)})")
        if mine["notified"] != reference["notified"]:
            found.append(
                f"the webhook got other changes than a clean series': "
                f"{dict(mine['notified'])} != {dict(reference['notified'])}"
            )
        twice = [i for i, n in mine["notified"].items() if n > 1]
        if twice:
            found.append(f"changes announced in two notices: {twice}")
        return found

    def close(self) -> None:
        self._stack.close()


World = FilesWorld | MonitorWorld


@contextlib.contextmanager
def world(
    weed: WeedMini, job: str, *, seed: str = "", port: int = 0, steps: int = 3, **settings: str
) -> Iterator[World]:
    """The job's world, emptied; the monitor's API moving ``steps`` times (``seed``)."""
    made: World
    if job == "monitor":
        made = MonitorWorld(weed, catalogue_steps(steps, seed), port=port, **settings)
    else:
        made = FilesWorld(weed, job, **settings)
    try:
        yield made
    finally:
        made.close()


__all__ = ["JOBS", "Bucket", "FilesWorld", "MonitorWorld", "World", "world"]
