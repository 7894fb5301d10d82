"""The chaos suite's tally: what was tried per job, and the invariant violations found.

Printed as a table at the end of the session (``make chaos`` and the quick subset in
``make test``), and written to ``tests/chaos/last-run.md`` for the record.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.s3 import WeedMini

COLUMNS = (
    "kills",
    "killed_running",
    "sigterms",
    "pauses",
    "paused_working",
    "concurrent",
    "slow_lock_runs",
    "lock_holds",
    "bad_inputs",
    "violations",
)


class Tally:
    """Counts per job, kept for the session."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
        self.faults: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.fault_exits: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.started = time.monotonic()

    def add(self, job: str, **counts: int) -> None:
        for name, n in counts.items():
            if name not in COLUMNS:
                raise KeyError(f"no column {name!r} in the chaos table")
            self.counts[job][name] += n

    def add_faults(self, job: str, injected: dict[str, int], exit_code: int) -> None:
        """Faults the storage proxy gave one run's requests, by kind, and how it ended."""
        for kind, n in injected.items():
            self.faults[job][kind] += n
        self.fault_exits[job][exit_code] += 1

    def table(self) -> str:
        head = (*COLUMNS[:-1], "faults", COLUMNS[-1])
        lines = [
            "| job | " + " | ".join(head) + " |",
            "|---|" + "---:|" * len(head),
        ]
        for job in sorted(set(self.counts) | set(self.faults)):
            row = self.counts[job]
            faults = self.faults.get(job, {})
            by_kind = ", ".join(f"{kind} {n}" for kind, n in sorted(faults.items())) or "0"
            cells = [str(row[c]) for c in COLUMNS[:-1]] + [by_kind, str(row["violations"])]
            lines.append(f"| {job} | " + " | ".join(cells) + " |")
        lines.append("")
        for job, exits in sorted(self.fault_exits.items()):
            ended = ", ".join(f"{n} ended {code}" for code, n in sorted(exits.items()))
            lines.append(f"{job} runs through storage faults: {ended}")
        lines.append(f"wall time: {time.monotonic() - self.started:.0f} s")
        return "\n".join(lines)


_TALLY = Tally()


@pytest.fixture
def tally() -> Tally:
    return _TALLY


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedMini]:
    """One SeaweedFS for the whole suite; each test empties the buckets it uses."""
    server = WeedMini(tmp_path_factory.mktemp("chaos-weed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TALLY.counts:
        return
    terminalreporter.write_sep("-", "chaos: what was tried, and violations found")
    terminalreporter.write_line(_TALLY.table())
    (Path(__file__).parent / "last-run.md").write_text(_TALLY.table() + "\n", encoding="utf-8")
