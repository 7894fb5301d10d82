"""The history: one NDJSON object a run under ``history/dt=<business date>/``, a line a
change; committed in the state first (``Pending``), then written create-only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import TypedDict

from ochinai.jobs.monitor.changes import Change, ChangeJSON
from ochinai.runtime.storage import PreconditionFailed, Store

# The lines' format. They say none (a line without "version" is version 1); a later one
# would add "version" to each line, so that readers of the history can tell.
VERSION = 1


class Line(ChangeJSON):
    """A line of a history object: the change, the run that found it and when."""

    run_id: str
    time: str


class PendingJSON(TypedDict):
    """A history object not written yet, as the state keeps it."""

    key: str
    body: str


@dataclass(frozen=True, slots=True)
class Pending:
    """A history object committed with its changes in the state, to write: its key and
    its NDJSON text."""

    key: str
    body: str

    @classmethod
    def of(cls, prefix: str, day: date, run_id: str, at: str, changes: list[Change]) -> Pending:
        """This run's changes (found ``at``, an ISO time) as its history object."""
        lines = [
            json.dumps(line(c, run_id, at), ensure_ascii=False, sort_keys=True) for c in changes
        ]
        return cls(
            f"{prefix}/history/dt={day.isoformat()}/{run_id}.ndjson", "\n".join(lines) + "\n"
        )

    def to_json(self) -> PendingJSON:
        """As the state keeps it."""
        return {"key": self.key, "body": self.body}

    @classmethod
    def from_json(cls, doc: object) -> Pending:
        """As the state keeps it; TypeError when it is not."""
        key = doc.get("key") if isinstance(doc, dict) else None
        body = doc.get("body") if isinstance(doc, dict) else None
        if not (isinstance(key, str) and isinstance(body, str)):
            raise TypeError("an unrecorded history entry is not {key, body}")
        return cls(key, body)

    def write(self, store: Store) -> bool:
        """Write it create-only: False when it is there already (the run that committed it
        wrote it, then stopped before taking it out of the state)."""
        try:
            store.put(
                self.key,
                self.body.encode(),
                if_none_match=True,
                content_type="application/x-ndjson",
            )
        except PreconditionFailed:
            return False
        return True


def line(change: Change, run_id: str, at: str) -> Line:
    """The history line of a change."""
    return {"run_id": run_id, "time": at, **change.to_json()}
