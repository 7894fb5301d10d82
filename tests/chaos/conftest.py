"""The chaos suite's tally: what was tried per job, and the invariant violations found.

Printed as a table at the end of the session (``make chaos`` and the quick subset in
``make test``), and written to ``tests/chaos/last-run.md`` for the record.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

COLUMNS = ("kills", "killed_running", "sigterms", "concurrent", "violations")


class Tally:
    """Counts per job, kept for the session."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
        self.started = time.monotonic()

    def add(self, job: str, **counts: int) -> None:
        for name, n in counts.items():
            self.counts[job][name] += n

    def table(self) -> str:
        lines = [
            "| job | " + " | ".join(COLUMNS) + " |",
            "|---|" + "---:|" * len(COLUMNS),
        ]
        for job in sorted(self.counts):
            row = self.counts[job]
            lines.append(f"| {job} | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
        lines.append("")
        lines.append(f"wall time: {time.monotonic() - self.started:.0f} s")
        return "\n".join(lines)


_TALLY = Tally()


@pytest.fixture
def tally() -> Tally:
    return _TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TALLY.counts:
        return
    terminalreporter.write_sep("-", "chaos: what was tried, and violations found")
    terminalreporter.write_line(_TALLY.table())
    (Path(__file__).parent / "last-run.md").write_text(_TALLY.table() + "\n", encoding="utf-8")
