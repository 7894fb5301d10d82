"""Run records: ``_runs/<job>/<date>/<run_id>.json`` (create-only) and ``latest.json`` (CAS)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from ochinai.runtime.errors import DataError
from ochinai.runtime.job import SUCCESS_OUTCOMES
from ochinai.runtime.storage import ObjectNotFound, Store

RECORD_PREFIX = "_runs"


def write_record(store: Store, job: str, day: date, run_id: str, record: dict[str, Any]) -> None:
    """The run's own record, then ``latest.json``."""
    store.put(
        f"{RECORD_PREFIX}/{job}/{day.isoformat()}/{run_id}.json",
        json_bytes(record),
        if_none_match=True,
        content_type="application/json",
    )
    update_latest(store, job, record)


def update_latest(store: Store, job: str, record: dict[str, Any]) -> None:
    """Update ``_runs/<job>/latest.json``: the last run and the last success (Store.update)."""
    key = f"{RECORD_PREFIX}/{job}/latest.json"

    def build(current: dict[str, Any] | None) -> dict[str, Any]:
        previous = current or {}
        success = record if record["outcome"] in SUCCESS_OUTCOMES else previous.get("last_success")
        return {"job": job, "last_run": record, "last_success": success}

    store.update(key, build, load=lambda obj: _latest(obj.body, store.url(key)), dump=json_bytes)


def read_latest(store: Store, job: str) -> tuple[dict[str, Any], str] | None:
    """``_runs/<job>/latest.json`` and its etag, or None when the job never ran."""
    key = f"{RECORD_PREFIX}/{job}/latest.json"
    try:
        obj = store.get(key)
    except ObjectNotFound:
        return None
    return _latest(obj.body, store.url(key)), obj.etag


def _latest(body: bytes, where: str) -> dict[str, Any]:
    try:
        latest = json.loads(body)
    except ValueError as exc:
        raise DataError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(latest, dict):
        raise DataError(f"{where}: expected a JSON object")
    return latest


def json_bytes(value: Any) -> bytes:
    """A record as stored: sorted keys, one key a line, UTF-8."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1, default=str).encode()
