"""Run records: ``_runs/<job>/<date>/<run_id>.json`` (create-only) and ``latest.json`` (CAS)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from ochinai.runtime.errors import DataError, TransientError
from ochinai.runtime.job import SUCCESS_OUTCOMES
from ochinai.runtime.storage import ObjectNotFound, PreconditionFailed, Store

RECORD_PREFIX = "_runs"
LATEST_CAS_TRIES = 5


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
    """CAS-update ``_runs/<job>/latest.json``: the last run and the last success."""
    key = f"{RECORD_PREFIX}/{job}/latest.json"
    for _ in range(LATEST_CAS_TRIES):
        current = read_latest(store, job)
        previous = current[0] if current else {}
        success = record if record["outcome"] in SUCCESS_OUTCOMES else previous.get("last_success")
        body = json_bytes({"job": job, "last_run": record, "last_success": success})
        try:
            if current is None:
                store.put(key, body, if_none_match=True, content_type="application/json")
            else:
                store.put(key, body, if_match=current[1], content_type="application/json")
            return
        except PreconditionFailed:
            continue  # another run updated it between our read and write: read again
    raise TransientError(f"{store.url(key)}: lost the update race {LATEST_CAS_TRIES} times")


def read_latest(store: Store, job: str) -> tuple[dict[str, Any], str] | None:
    """``_runs/<job>/latest.json`` and its etag, or None when the job never ran."""
    key = f"{RECORD_PREFIX}/{job}/latest.json"
    try:
        obj = store.get(key)
    except ObjectNotFound:
        return None
    try:
        latest = json.loads(obj.body)
    except ValueError as exc:
        raise DataError(f"{store.url(key)}: not valid JSON: {exc}") from exc
    if not isinstance(latest, dict):
        raise DataError(f"{store.url(key)}: expected a JSON object")
    return latest, obj.etag


def json_bytes(value: Any) -> bytes:
    """A record as stored: sorted keys, one key a line, UTF-8."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1, default=str).encode()
