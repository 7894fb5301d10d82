"""The runtime's records in the store, read as earlier versions wrote them and written the
same but for the format version they now carry: run records, ``latest.json``,
``health.json`` and its outbox, send-once claims and delivery records, the S3 lock
record, and when status first ran."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from ochinai.runtime.errors import DataError
from ochinai.runtime.health import Health, Incident
from ochinai.runtime.jsonrecord import Fields, parse_object, sorted_json
from ochinai.runtime.lock import LockRecord, record_from_json, record_to_json
from ochinai.runtime.notify import Claim, SentRecord
from ochinai.runtime.records import Latest, RunRecord, read_latest
from ochinai.runtime.status import FIRST_SEEN, FirstSeen, first_seen, job_status
from ochinai.runtime.storage import Store

# --- samples, byte for byte as ochinai 0.2.0 wrote them (make run-local) ---------------

RUN_OK = b"""{
 "action": "run",
 "counts": {
  "bad_rows": 0,
  "notified": "already_sent",
  "report": "unchanged",
  "rows": 1344
 },
 "date": "2026-12-08",
 "duration_s": 2.232,
 "exit_code": 0,
 "fence": 1,
 "finished": "2026-12-07T16:57:17.932Z",
 "health": {
  "failed_runs": 0,
  "failing_since": null,
  "health": "ok",
  "stale_since": null
 },
 "job": "report",
 "k8s_job": null,
 "lock_released": true,
 "outcome": "unchanged",
 "pod": null,
 "run_id": "20261207T165715697Z-eb8f29",
 "started": "2026-12-07T16:57:15.699Z"
}"""

RUN_FAILED = b"""{
 "action": "run",
 "counts": {},
 "date": "2026-12-08",
 "duration_s": 1.9,
 "error": {
  "class": "DataError",
  "message": "s3://ochinai-local/in/missing.csv does not exist; upload the sales CSV first"
 },
 "exit_code": 65,
 "fence": 2,
 "finished": "2026-12-07T16:57:35.603Z",
 "health": {
  "failed_runs": 1,
  "failing_since": "2026-12-07T16:57:33.703467+00:00",
  "health": "failing",
  "stale_since": null
 },
 "job": "report",
 "k8s_job": "ochinai-report-29410210",
 "lock_released": true,
 "outcome": "data_error",
 "pod": "ochinai-report-29410210-x7k2p",
 "run_id": "20261207T165733699Z-5cae7c",
 "started": "2026-12-07T16:57:33.703Z"
}"""

# Another run held the lock: no fence, no release, no health.
RUN_SKIPPED = b"""{
 "action": "verify",
 "counts": {},
 "date": "2026-12-08",
 "duration_s": 30.012,
 "exit_code": 0,
 "finished": "2026-12-07T16:58:00.000Z",
 "job": "backup",
 "k8s_job": null,
 "outcome": "skipped_locked",
 "pod": null,
 "run_id": "20261207T165730000Z-0a0b0c",
 "started": "2026-12-07T16:57:30.000Z"
}"""

# The first versions: no action, no health, no lock_released.
RUN_FIRST_VERSION = b"""{
 "counts": {
  "rows": 3
 },
 "date": "2026-11-28",
 "duration_s": 0.52,
 "exit_code": 0,
 "fence": 0,
 "finished": "2026-11-27T21:10:01.000Z",
 "job": "report",
 "k8s_job": null,
 "outcome": "ok",
 "pod": "report-abc",
 "run_id": "20261127T211000000Z-000001",
 "started": "2026-11-27T21:10:00.480Z"
}"""


def latest_of(job: str, last_run: bytes, last_success: bytes | None) -> bytes:
    """``latest.json`` as ochinai 0.2.0 wrote it: the two records inside, sorted, indent 1."""
    doc = {
        "job": job,
        "last_run": json.loads(last_run),
        "last_success": None if last_success is None else json.loads(last_success),
    }
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=1).encode()


HEALTH_OK = b"""{
 "failed_runs": 0,
 "failing_since": null,
 "incident": null,
 "job": "report",
 "last_error": "report failed: s3://ochinai-local/in/missing.csv does not exist",
 "last_success": "2026-12-07T16:57:40.095219+00:00",
 "outbox": [],
 "stale": null,
 "state": "ok"
}"""

HEALTH_FAILING = """{
 "failed_runs": 1,
 "failing_since": "2026-12-07T16:57:33.703467+00:00",
 "incident": {
  "failed_runs": 1,
  "id": "20261207T165733699Z-5cae7c",
  "notified": "2026-12-07T16:57:35.603771+00:00",
  "reminders": 0,
  "since": "2026-12-07T16:57:33.703467+00:00"
 },
 "job": "report",
 "last_error": "report failed: s3://ochinai-local/in/missing.csv does not exist",
 "last_success": "2026-12-07T16:57:17.932054+00:00",
 "outbox": [
  {
   "id": "report/incident/20261207T165733699Z-5cae7c/opened",
   "kind": "failure",
   "severity": "error",
   "subject": "【障害】ochinai report: 2026-12-08 01:57 から失敗しています",
   "text": "report が 2026-12-08 01:57 から失敗しています(1 回目、data_error、終了コード 65)。"
  }
 ],
 "stale": {
  "failed_runs": 0,
  "id": "stale-20261207T165804Z",
  "notified": "2026-12-07T16:58:04.003660+00:00",
  "reminders": 2,
  "since": "2026-12-07T16:58:04.003660+00:00"
 },
 "state": "failing"
}""".encode()

# An outbox from before notices had a kind (and an incident from before it counted runs).
HEALTH_OLD_OUTBOX = b"""{
 "failed_runs": 3,
 "failing_since": "2026-11-28T06:10:00+00:00",
 "incident": {
  "id": "r1",
  "notified": "2026-11-29T06:10:00+00:00",
  "since": "2026-11-28T06:10:00+00:00"
 },
 "job": "report",
 "outbox": [
  {
   "id": "report/incident/r1/reminder-1",
   "subject": "s",
   "text": "t"
  }
 ],
 "state": "failing"
}"""

CLAIM = (
    b'{"notice": "report/incident/20261207T165733699Z-5cae7c/recovered", "channel": '
    b'"ops-mail", "run_id": "20261207T165738720Z-c94d5d", "claimed": '
    b'"2026-12-07T16:57:40.202155+00:00", "fence": 3}'
)
SENT = (
    b'{"notice": "report/incident/20261207T165733699Z-5cae7c/recovered", "channel": '
    b'"ops-mail", "run_id": "20261207T165738720Z-c94d5d"}'
)
LOCK = (
    b'{"acquired": "2026-12-07T16:56:51.834742+00:00", "duration_s": 60, "epoch": '
    b'"2a5c994786674abf936184474bf2fe6e", "expires": "2026-12-07T16:57:51.834742+00:00", '
    b'"fence": 0, "holder": "local/20261207T165651054Z-0420f0", "renewed": '
    b'"2026-12-07T16:56:51.834742+00:00"}'
)
FIRST_SEEN_BODY = b'{"first_seen": "2026-12-07T16:58:04.003660+00:00"}'


def versioned(body: bytes) -> dict[str, Any]:
    """The document ``body`` holds, with the format version this ochinai writes."""
    return {**json.loads(body), "version": 1}


# --- run records and latest.json --------------------------------------------------------


@pytest.mark.parametrize("sample", [RUN_OK, RUN_FAILED, RUN_SKIPPED])
def test_a_run_record_is_read_and_written_as_before_with_its_version(sample: bytes) -> None:
    record = RunRecord.from_json(parse_object(sample))
    assert sorted_json(record.to_json()) == sorted_json(versioned(sample))


def test_a_run_records_fields_are_typed() -> None:
    ok = RunRecord.from_json(parse_object(RUN_OK))
    assert (ok.job, ok.action, ok.outcome, ok.exit_code, ok.fence) == (
        "report",
        "run",
        "unchanged",
        0,
        1,
    )
    assert ok.lock_released is True and ok.error is None and ok.pod is None
    assert ok.counts == {
        "bad_rows": 0,
        "notified": "already_sent",
        "report": "unchanged",
        "rows": 1344,
    }
    assert ok.health is not None and ok.health["health"] == "ok"
    failed = RunRecord.from_json(parse_object(RUN_FAILED))
    assert failed.error is not None and failed.error["class"] == "DataError"
    assert failed.pod == "ochinai-report-29410210-x7k2p"
    skipped = RunRecord.from_json(parse_object(RUN_SKIPPED))
    assert (skipped.fence, skipped.lock_released, skipped.health) == (None, None, None)


def test_a_run_record_of_the_first_versions_is_of_the_run_action() -> None:
    record = RunRecord.from_json(parse_object(RUN_FIRST_VERSION))
    assert (record.action, record.health, record.lock_released) == ("run", None, None)
    assert record.to_json() == {**versioned(RUN_FIRST_VERSION), "action": "run"}


def test_the_written_layout_is_sorted_keys_one_a_line() -> None:
    record = RunRecord.from_json(parse_object(RUN_SKIPPED))
    assert sorted_json(record.to_json()).decode() == RUN_SKIPPED.decode().replace(
        ' "started": "2026-12-07T16:57:30.000Z"\n}',
        ' "started": "2026-12-07T16:57:30.000Z",\n "version": 1\n}',
    )


def test_counts_are_stored_as_json_reads_them_back() -> None:
    """What JSON has no form for is stored as its text, as it always was."""
    from ochinai.runtime.run import _counts

    counts = {"generation": date(2026, 12, 1), "where": Path("/tmp/x"), "pair": (1, 2)}
    assert _counts(counts) == {"generation": "2026-12-01", "where": "/tmp/x", "pair": [1, 2]}


def test_latest_is_read_and_written_as_before_with_its_version() -> None:
    sample = latest_of("report", RUN_FAILED, RUN_OK)
    latest = Latest.parse(sample, "s3://ops/_runs/report/latest.json")
    assert latest.last_run.outcome == "data_error"
    assert latest.last_success is not None and latest.last_success.finished.endswith("17.932Z")
    expected = versioned(sample)
    expected["last_run"]["version"] = expected["last_success"]["version"] = 1
    assert latest.body() == sorted_json(expected)


def test_latest_keeps_the_last_success_until_the_next_one() -> None:
    never = Latest.parse(latest_of("report", RUN_FAILED, None), "latest.json")
    assert never.last_success is None
    ok, failed = (RunRecord.from_json(parse_object(x)) for x in (RUN_OK, RUN_FAILED))
    assert never.after(ok).last_success == ok
    assert never.after(ok).after(failed) == Latest("report", failed, ok)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"job": "report", "last_success": null}', "'last_run' is missing"),
        (
            latest_of("report", RUN_OK, None).replace(b'"exit_code": 0', b'"exit_code": "0"'),
            "'exit_code' is str",
        ),
        (
            json.dumps({**versioned(latest_of("r", RUN_OK, None)), "version": 2}).encode(),
            "format version 2",
        ),
    ],
)
def test_a_broken_latest_is_a_data_error_naming_it(body: bytes, said: str) -> None:
    with pytest.raises(DataError) as caught:
        Latest.parse(body, "s3://ops/_runs/report/latest.json")
    assert str(caught.value).startswith("s3://ops/_runs/report/latest.json: ")
    assert said in str(caught.value)


def test_status_reads_the_latest_and_first_seen_that_earlier_versions_wrote(
    moto_ops: Any,
) -> None:
    store = Store(moto_ops, "ops")
    moto_ops.put_object(
        Bucket="ops", Key="_runs/report/latest.json", Body=latest_of("report", RUN_FAILED, RUN_OK)
    )
    moto_ops.put_object(Bucket="ops", Key=FIRST_SEEN, Body=FIRST_SEEN_BODY)
    now = datetime(2026, 12, 7, 18, 57, 17, 932000, tzinfo=UTC)
    status = job_status(store, "report", now, max_age=3 * 3600)
    assert (status.state, status.last_success, status.age_s) == (
        "fresh",
        "2026-12-07T16:57:17.932Z",
        7200.0,
    )
    assert (status.last_outcome, status.last_run) == ("data_error", "20261207T165733699Z-5cae7c")
    assert first_seen(store, now) == datetime(2026, 12, 7, 16, 58, 4, 3660, tzinfo=UTC)
    found = read_latest(store, "report")
    assert found is not None and found.job == "report"


def test_first_seen_is_written_as_before_with_its_version(moto_ops: Any) -> None:
    store = Store(moto_ops, "ops")
    now = datetime(2026, 12, 7, 16, 58, 4, 3660, tzinfo=UTC)
    assert first_seen(store, now) == now
    body = moto_ops.get_object(Bucket="ops", Key=FIRST_SEEN)["Body"].read()
    assert json.loads(body) == versioned(FIRST_SEEN_BODY)
    assert FirstSeen.parse(FIRST_SEEN_BODY, "x").first_seen == now
    with pytest.raises(DataError, match="x: not a record of when status first ran"):
        FirstSeen.parse(b'{"first_seen": 1}', "x")


# --- health.json --------------------------------------------------------------------------


@pytest.mark.parametrize("sample", [HEALTH_OK, HEALTH_FAILING])
def test_health_is_read_and_written_as_before_with_its_version(sample: bytes) -> None:
    health = Health.parse(sample, "s3://ops/_runs/report/health.json")
    assert health.body() == sorted_json(versioned(sample))


def test_healths_fields_are_typed() -> None:
    health = Health.parse(HEALTH_FAILING, "health.json")
    assert health.incident == Incident(
        "20261207T165733699Z-5cae7c",
        "2026-12-07T16:57:33.703467+00:00",
        "2026-12-07T16:57:35.603771+00:00",
        reminders=0,
        failed_runs=1,
    )
    assert health.stale is not None and health.stale.reminders == 2
    [notice] = health.outbox
    assert (notice["kind"], notice["severity"]) == ("failure", "error")
    assert health.summary() == {
        "health": "failing",
        "failed_runs": 1,
        "failing_since": "2026-12-07T16:57:33.703467+00:00",
        "stale_since": "2026-12-07T16:58:04.003660+00:00",
    }


def test_an_outbox_from_before_kinds_is_read_with_them() -> None:
    """A notice stored without a kind is known by its id, without a severity is info;
    written back, it says both."""
    health = Health.parse(HEALTH_OLD_OUTBOX, "health.json")
    assert health.outbox == [
        {
            "id": "report/incident/r1/reminder-1",
            "subject": "s",
            "text": "t",
            "severity": "info",
            "kind": "reminder",
        }
    ]
    assert health.incident is not None
    assert (health.incident.reminders, health.incident.failed_runs) == (0, 0)
    again = json.loads(health.body())
    assert again["outbox"][0]["kind"] == "reminder" and again["version"] == 1
    assert (again["last_error"], again["stale"]) == (None, None)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"{", "not a health record ("),
        (b'{"state": "ok"}', "'job' is missing"),
        (b'{"job": "r", "incident": {"id": "x"}}', "'since' is missing"),
        (b'{"job": "r", "outbox": [1]}', "'outbox' lists something that is not an object"),
        (b'{"job": "r", "version": 2}', "format version 2; this ochinai reads 1 to 1"),
    ],
)
def test_a_broken_health_record_is_a_data_error_naming_it(body: bytes, said: str) -> None:
    with pytest.raises(DataError) as caught:
        Health.parse(body, "s3://ops/_runs/r/health.json")
    message = str(caught.value)
    assert message.startswith("s3://ops/_runs/r/health.json: not a health record (")
    assert said in message and message.endswith("move it aside, the next run makes one")


# --- send-once: claims and delivery records ----------------------------------------------


def test_a_claim_is_read_and_written_as_before_with_its_version() -> None:
    claim = Claim.parse(CLAIM)
    assert claim == Claim(
        "report/incident/20261207T165733699Z-5cae7c/recovered",
        "ops-mail",
        "20261207T165738720Z-c94d5d",
        datetime(2026, 12, 7, 16, 57, 40, 202155, tzinfo=UTC),
        3,
    )
    assert claim.body() == CLAIM[:-1] + b', "version": 1}'
    unlocked = Claim.parse(CLAIM.replace(b'"fence": 3', b'"fence": null'))
    assert unlocked is not None and unlocked.fence is None


@pytest.mark.parametrize(
    "body",
    [b"nonsense", b"[]", b'{"run_id": "r-1"}', CLAIM[:-1] + b', "version": 2}'],
)
def test_anything_else_is_no_claim_ochinai_can_read(body: bytes) -> None:
    """Only its age can tell it from a live claim."""
    assert Claim.parse(body) is None


def test_a_delivery_record_is_read_and_written_as_before_with_its_version() -> None:
    sent = SentRecord.parse(SENT, "s3://ops/_sent/x/ops-mail.json")
    assert sent == SentRecord(
        "report/incident/20261207T165733699Z-5cae7c/recovered",
        "ops-mail",
        "20261207T165738720Z-c94d5d",
    )
    assert sent.body() == SENT[:-1] + b', "version": 1}'
    with pytest.raises(DataError, match="x: not a record of a sent notice"):
        SentRecord.parse(b'{"notice": "n"}', "x")


# --- the S3 lock record -----------------------------------------------------------------


def test_the_lock_record_is_read_and_written_as_before_with_its_version() -> None:
    record = record_from_json(LOCK, "s3://ops/_locks/ochinai-report.json")
    when = datetime(2026, 12, 7, 16, 56, 51, 834742, tzinfo=UTC)
    assert record == LockRecord(
        "local/20261207T165651054Z-0420f0", 60, when, when, 0, "2a5c994786674abf936184474bf2fe6e"
    )
    body = json.dumps(record_to_json(record), sort_keys=True).encode()
    assert body == LOCK.replace(
        b'"2026-12-07T16:56:51.834742+00:00"}', b'"2026-12-07T16:56:51.834742+00:00", "version": 1}'
    )


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (LOCK.replace(b'"fence": 0', b'"fence": "0"'), "'fence' is str, not an integer"),
        (LOCK[:-1] + b', "version": 2}', "format version 2"),
    ],
)
def test_a_broken_lock_record_is_a_data_error_naming_it(body: bytes, said: str) -> None:
    with pytest.raises(DataError) as caught:
        record_from_json(body, "s3://ops/_locks/ochinai-report.json")
    assert str(caught.value) == (
        f"s3://ops/_locks/ochinai-report.json: not a lock record ({said}"
        + ("; this ochinai reads 1 to 1" if "version" in said else "")
        + "); delete it if no run is active"
    )


# --- reading fields ---------------------------------------------------------------------


def test_fields_are_read_as_their_types_only() -> None:
    doc = Fields({"n": 1, "b": True, "f": 1.5, "s": "x", "none": None})
    assert (doc.integer("n"), doc.number("n"), doc.number("f"), doc.text("s")) == (1, 1, 1.5, "x")
    assert doc.optional_text("none") is None and doc.optional_text("absent") is None
    assert doc.integer("absent", default=0) == 0 and doc.nested_list("absent") == []
    assert doc.version(1) == 1, "a record without a version is version 1"
    for read in (lambda: doc.integer("b"), lambda: doc.number("b"), lambda: doc.text("n")):
        with pytest.raises(TypeError):
            read()
    with pytest.raises(ValueError, match="'absent' is missing"):
        doc.text("absent")
