"""Run metrics on a real Pushgateway, and the alert rules on promtool and a real Prometheus.

``.venv/bin/python -m tests.test_metrics`` writes k8s/monitoring/prometheusrule.yaml
again from k8s/monitoring/ochinai-rules.yaml (after a change to the rules).
"""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ochinai.runtime.declare import parse_duration
from ochinai.runtime.metrics import metric_counts, push_run
from ochinai.runtime.settings import parse_max_ages
from tests.servers import free_port
from tests.servers.http import Hook
from tests.servers.prom import PROMTOOL, Prometheus, Pushgateway, binary

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "k8s" / "monitoring"
RULES = MONITORING / "ochinai-rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
RULE_TESTS = ROOT / "tests" / "data" / "prom" / "ochinai-rules.test.yaml"

# The report's max age in the rules, and the one the end-to-end test gives it.
REPORT_MAX_AGE = "vector(93600)"
DEFAULT_MAX_AGE = "ochinai:default_max_age_seconds"
SHORT_MAX_AGE_S = 5

LAST_SUCCESS = "ochinai_last_success_timestamp_seconds"
LAST_RUN = "ochinai_last_run_timestamp_seconds"
EXIT_CODE = "ochinai_last_run_exit_code"
OUTCOME = "ochinai_last_run_outcome"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """prometheus_client's urllib takes the environment's proxies; these servers are local."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    """A Pushgateway of this test's own on loopback."""
    with Pushgateway(tmp_path / "pushgateway") as gateway:
        yield gateway


def push(gateway: str, **kwargs: Any) -> bool:
    """push_run with a report's success by default."""
    args: dict[str, Any] = {
        "job": "report",
        "shard": None,
        "outcome": "ok",
        "exit_code": 0,
        "started": datetime.now(UTC),
        "duration_s": 1.0,
        "counts": {},
        "success": True,
    }
    return push_run(gateway, **{**args, **kwargs})


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    """A sample's labels as Pushgateway.samples() keys them (instance="" added)."""
    return tuple(sorted({"instance": "", **labels}.items()))


REPORT = key(job="ochinai-report", shard="all")


def metrics_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The WARNING records of ochinai.metrics."""
    return [r for r in caplog.records if r.name == "ochinai.metrics" and r.levelno >= 30]


_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)


def record_text(record: logging.LogRecord) -> str:
    """What a log line of the record shows: the message and the extra fields."""
    extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    return f"{record.getMessage()} {extras}"


# --- push_run on the real Pushgateway -----------------------------------------------


def test_a_failure_keeps_the_last_success_and_replaces_the_rest(
    pushgateway: Pushgateway,
) -> None:
    """POST semantics: the failure's push leaves the success time, replaces the others whole."""
    first = datetime(2026, 5, 1, 6, 10, tzinfo=UTC)
    counts = {"rows": 120, "bad_rows": 3, "bytes": 2.5, "lock_released": True, "signal": "TERM"}
    assert push(pushgateway.url, started=first, duration_s=42.5, counts=counts)
    ended = first.timestamp() + 42.5
    assert pushgateway.samples(LAST_SUCCESS) == {REPORT: ended}
    assert pushgateway.samples(LAST_RUN) == {REPORT: ended}
    assert pushgateway.samples("ochinai_last_run_duration_seconds") == {REPORT: 42.5}
    assert pushgateway.samples(EXIT_CODE) == {REPORT: 0}
    assert pushgateway.samples(OUTCOME) == {key(job="ochinai-report", shard="all", outcome="ok"): 1}
    assert pushgateway.samples("ochinai_last_run_rows") == {REPORT: 120}
    assert pushgateway.samples("ochinai_last_run_bad_rows") == {REPORT: 3}
    assert pushgateway.samples("ochinai_last_run_bytes") == {REPORT: 2.5}
    names = set(pushgateway.families())
    assert not {"ochinai_last_run_lock_released", "ochinai_last_run_signal"} & names

    second = first + timedelta(days=1)
    assert push(
        pushgateway.url,
        started=second,
        duration_s=3.0,
        outcome="failed",
        exit_code=75,
        success=False,
        counts={"rows": 7},
    )
    assert pushgateway.samples(LAST_SUCCESS) == {REPORT: ended}, "the last success stays"
    assert pushgateway.samples(LAST_RUN) == {REPORT: second.timestamp() + 3.0}
    assert pushgateway.samples(EXIT_CODE) == {REPORT: 75}
    # The metric name is replaced whole: the old outcome's series is gone.
    assert pushgateway.samples(OUTCOME) == {
        key(job="ochinai-report", shard="all", outcome="failed"): 1
    }
    assert pushgateway.samples("ochinai_last_run_rows") == {REPORT: 7}
    # A count this run did not push keeps the last value pushed (documented).
    assert pushgateway.samples("ochinai_last_run_bad_rows") == {REPORT: 3}


def test_shards_and_jobs_have_groups_of_their_own(pushgateway: Pushgateway) -> None:
    """Shards 0 and 1 of the backup, and the unsharded report, never overwrite each other."""
    started = datetime(2026, 5, 1, 7, 45, tzinfo=UTC)
    assert push(pushgateway.url, job="backup", shard=0, started=started, duration_s=10)
    assert push(
        pushgateway.url,
        job="backup",
        shard=1,
        started=started,
        duration_s=20,
        outcome="failed",
        exit_code=70,
        success=False,
    )
    assert push(pushgateway.url, started=started, duration_s=30)
    base = started.timestamp()
    assert pushgateway.samples(LAST_RUN) == {
        key(job="ochinai-backup", shard="0"): base + 10,
        key(job="ochinai-backup", shard="1"): base + 20,
        REPORT: base + 30,
    }
    assert pushgateway.samples(LAST_SUCCESS) == {
        key(job="ochinai-backup", shard="0"): base + 10,
        REPORT: base + 30,
    }
    assert pushgateway.samples(EXIT_CODE)[key(job="ochinai-backup", shard="1")] == 70


def test_host_and_port_without_a_scheme_and_a_naive_start(pushgateway: Pushgateway) -> None:
    """host:port is http; a naive datetime is UTC."""
    assert push(f"127.0.0.1:{pushgateway.port}", started=datetime(2026, 5, 1), duration_s=0)
    assert pushgateway.samples(LAST_RUN) == {REPORT: datetime(2026, 5, 1, tzinfo=UTC).timestamp()}


def test_a_gateway_under_a_path_prefix(tmp_path: Path) -> None:
    """The URL's path is kept: a Pushgateway behind a reverse proxy's prefix gets the push."""
    with Pushgateway(tmp_path, prefix="/pushgateway") as gateway:
        assert push(f"{gateway.url}/", duration_s=0, started=datetime(2026, 5, 1, tzinfo=UTC))
        assert gateway.samples(LAST_RUN) == {REPORT: datetime(2026, 5, 1, tzinfo=UTC).timestamp()}


def test_unreachable_gateway_returns_false_at_once_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refused: False, quickly, and one WARNING naming scheme://host:port only."""
    caplog.set_level(logging.DEBUG, logger="ochinai.metrics")
    port = free_port()
    begun = time.monotonic()
    assert not push(f"http://ochinai:Pa55word@127.0.0.1:{port}/prefix/", job="backup", shard=3)
    assert time.monotonic() - begun < 2
    (record,) = metrics_warnings(caplog)
    assert record.getMessage() == "metrics not pushed"
    assert record.__dict__["gateway"] == f"http://127.0.0.1:{port}"
    assert "ConnectionRefusedError" in record.__dict__["error"]
    text = record_text(record)
    for hidden in ("/prefix", "/metrics", "ochinai-backup", "Pa55word", "ochinai:"):
        assert hidden not in text


def test_an_http_error_is_logged_with_the_gateways_reason(
    pushgateway: Pushgateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The Pushgateway's 400 (a count whose name is a counter's in another group)."""
    caplog.set_level(logging.WARNING, logger="ochinai.metrics")
    import urllib.request

    other = urllib.request.Request(
        f"{pushgateway.url}/metrics/job/other",
        data=b"# TYPE ochinai_last_run_rows counter\nochinai_last_run_rows 1\n",
        method="POST",
    )
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(other, timeout=5).close()
    assert not push(pushgateway.url, counts={"rows": 5})
    (record,) = metrics_warnings(caplog)
    assert record.__dict__["gateway"] == pushgateway.url
    assert record.__dict__["error"].startswith("HTTP 400 Bad Request: pushed metrics are invalid")
    assert "/metrics/job" not in record_text(record)
    assert pushgateway.samples(LAST_RUN) == {}, "a refused push changes nothing"


def test_server_errors_timeouts_and_basic_auth(
    hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    """A 503 and a gateway that never answers: False, bounded by timeout; a user is Basic auth."""
    caplog.set_level(logging.WARNING, logger="ochinai.metrics")
    gateway = f"http://ochinai:s3cret%21@127.0.0.1:{hook.port}/pushgateway"
    hook.status, hook.body = 200, b""
    assert push(gateway)
    headers, body = hook.received[-1]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"ochinai:s3cret!").decode()
    assert b"ochinai_last_success_timestamp_seconds" in body

    hook.status, hook.body = 503, b"overloaded"
    assert not push(gateway)
    assert (
        metrics_warnings(caplog)[-1].__dict__["error"] == "HTTP 503 Service Unavailable: overloaded"
    )

    hook.block = threading.Event()
    begun = time.monotonic()
    assert not push(gateway, timeout=0.5)
    assert time.monotonic() - begun < 2
    hook.block.set()
    warnings = metrics_warnings(caplog)
    assert len(warnings) == 2
    assert (
        "timed out" in warnings[-1].__dict__["error"]
        or "NotInTime" in warnings[-1].__dict__["error"]
    )
    for record in warnings:
        assert record.__dict__["gateway"] == f"http://127.0.0.1:{hook.port}"
        assert "s3cret" not in record_text(record)
        assert "/pushgateway" not in record_text(record)


@pytest.mark.parametrize(
    "gateway", ["", "ftp://127.0.0.1:21", "http://", "http://127.0.0.1:port", "http://[::1"]
)
def test_a_gateway_that_is_no_url_returns_false(
    gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Never raises: one WARNING, and the gateway is not shown (it may hold anything)."""
    caplog.set_level(logging.WARNING, logger="ochinai.metrics")
    assert not push(gateway)
    (record,) = metrics_warnings(caplog)
    assert record.__dict__["gateway"] == "(not a URL)"


def test_which_counts_become_gauges() -> None:
    """Numbers (numpy's too) under valid names other than the fixed metrics'; no bool, no text."""
    counts = {
        "rows": 5,
        "bytes": 1.5,
        "files_written": np.int64(3),
        "ratio": np.float32(0.5),
        "lock_released": True,
        "verified": np.bool_(True),
        "signal": "TERM",
        "bad name": 1,
        "bad-name": 1,
        "exit_code": 9,
        "outcome": 1,
        "timestamp_seconds": 1,
        "duration_seconds": 1,
        "nothing": None,
    }
    assert metric_counts(counts) == {"rows": 5.0, "bytes": 1.5, "files_written": 3.0, "ratio": 0.5}


# --- the rules ------------------------------------------------------------------------


def load_rules() -> dict[str, Any]:
    """k8s/monitoring/ochinai-rules.yaml."""
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return rules


def all_rules(rules: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rule of every group."""
    return [rule for group in rules["groups"] for rule in group["rules"]]


def limits(record: str, label: str) -> dict[str, float]:
    """The value of each constant ``vector(N)`` record of that name, by its label."""
    found = {}
    for rule in all_rules(load_rules()):
        if rule.get("record") == record and label in rule.get("labels", {}):
            assert rule["expr"].startswith("vector("), rule
            found[rule["labels"][label]] = float(rule["expr"].removeprefix("vector(")[:-1])
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """promtool with these arguments; its output in the assertion when it fails."""
    done = subprocess.run(
        [binary(PROMTOOL), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_promtool_checks_the_rules() -> None:
    """Valid rules, with no lint (duplicate rules) either."""
    done = promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_of_the_rules() -> None:
    """tests/data/prom/ochinai-rules.test.yaml: each alert fires when it should, not before."""
    done = promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in done.stdout


def test_the_prometheusrule_holds_the_same_groups() -> None:
    """The Operator's resource and the plain rules file say the same."""
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["namespace"] == "ochinai"
    assert resource["spec"]["groups"] == load_rules()["groups"], (
        "run .venv/bin/python -m tests.test_metrics to write prometheusrule.yaml again"
    )


def test_every_alert_says_how_bad_what_and_where_its_runbook_is() -> None:
    """severity, summary, description, and its runbook: docs/operating.md's section of its name."""
    alerts = [rule for rule in all_rules(load_rules()) if "alert" in rule]
    assert {rule["alert"] for rule in alerts} == {
        "OchinaiJobStale",
        "OchinaiJobFailing",
        "OchinaiMetricsMissing",
        "OchinaiKubeJobFailed",
        "OchinaiCronJobNoSuccess",
        "OchinaiCronJobRunNotSucceeded",
    }
    for rule in alerts:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, rule["alert"]
        assert annotations["runbook"] == f"docs/operating.md#runbook-{rule['alert'].lower()}"


def cronjobs() -> dict[str, dict[str, Any]]:
    """The CronJobs that k8s/ applies, by name."""
    found = {}
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CronJob":
                found[doc["metadata"]["name"]] = doc
    return found


def test_the_limits_match_the_deployment() -> None:
    """Max ages as ochinai status's (k8s/20-config.yaml): the default, and each job listed
    or whose own differs; the CronJobs that are no job's run, by CronJob; deadlines as the
    Jobs'. A job with the defaults needs no line (the promtool tests: a job not listed)."""
    from ochinai.jobs import JOBS

    config = next(
        doc
        for doc in yaml.safe_load_all((ROOT / "k8s" / "20-config.yaml").read_text())
        if doc and doc.get("kind") == "ConfigMap"
    )["data"]
    status_default = parse_duration(config["OCHINAI_STATUS_MAX_AGE"])
    status_ages = parse_max_ages(config.get("OCHINAI_STATUS_MAX_AGES", ""))
    (default,) = [r["expr"] for r in all_rules(load_rules()) if r.get("record") == DEFAULT_MAX_AGE]
    assert default == f"vector({status_default:g})"
    listed = limits("ochinai:listed_max_age_seconds", "job")
    assert set(listed) <= {f"ochinai-{name}" for name in JOBS}, "a job that is not registered"
    for name in JOBS:
        mine = listed.get(f"ochinai-{name}", status_default)
        assert mine == status_ages.get(name, status_default), f"{name}: list it, as status does"

    found = cronjobs()
    runs = {f"ochinai-{name}" for name in JOBS}
    others = limits("ochinai:listed_cronjob_max_age_seconds", "cronjob")
    assert set(others) == set(found) - runs, "every CronJob but a job's run, and no other"
    for name, seconds in others.items():  # ochinai-backup-drill: backup.drill
        command, *rest = found[name]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]
        if command in JOBS:
            assert seconds == status_ages[f"{command}.{rest[0]}"], name
    deadlines = limits("ochinai:listed_cronjob_active_deadline_seconds", "cronjob")
    # The monitor's is left out on purpose (see the rules file); others not listed come
    # from kube-state-metrics.
    assert set(deadlines) <= set(found) - {"ochinai-monitor"}
    for name, seconds in deadlines.items():
        assert found[name]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == seconds


# --- end to end: a real Prometheus scraping the real Pushgateway -----------------------


def shortened_rules() -> dict[str, Any]:
    """The rules with the report's max age cut to SHORT_MAX_AGE_S seconds."""
    rules = load_rules()
    (report,) = [
        rule
        for rule in all_rules(rules)
        if rule.get("record") == "ochinai:listed_max_age_seconds"
        and rule.get("labels", {}).get("job") == "ochinai-report"
    ]
    assert report["expr"] == REPORT_MAX_AGE
    report["expr"] = f"vector({SHORT_MAX_AGE_S})"
    return rules


def stale_report(prometheus: Prometheus) -> list[dict[str, Any]]:
    """The OchinaiJobStale alerts of the report that are firing."""
    return [
        alert
        for alert in prometheus.alerts()
        if alert["labels"]["alertname"] == "OchinaiJobStale"
        and alert["labels"]["job"] == "ochinai-report"
        and alert["state"] == "firing"
    ]


def test_prometheus_fires_and_resolves_the_stale_alert(
    pushgateway: Pushgateway, tmp_path: Path
) -> None:
    """A success, no new one within the (shortened) max age: firing; a new success: resolved."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(shortened_rules(), sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{pushgateway.port}"]}],
            }
        ],
    }
    with Prometheus(tmp_path / "prometheus", config) as prometheus:
        pushed = time.time()
        assert push(pushgateway.url, started=datetime.fromtimestamp(pushed, UTC), duration_s=0)
        deadline = time.monotonic() + SHORT_MAX_AGE_S + 15
        while not (firing := stale_report(prometheus)):
            assert time.monotonic() < deadline, "OchinaiJobStale never fired"
            time.sleep(0.1)
        assert time.time() - pushed > SHORT_MAX_AGE_S, "fired before the max age"
        (alert,) = firing
        assert alert["labels"]["shard"] == "all"
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["runbook"] == "docs/operating.md#runbook-ochinaijobstale"

        again = time.time()
        assert push(pushgateway.url, started=datetime.fromtimestamp(again, UTC), duration_s=0)
        # Resolved within a scrape and an evaluation; it would fire again after the max age.
        while stale_report(prometheus):
            assert time.time() - again < SHORT_MAX_AGE_S, "OchinaiJobStale never resolved"
            time.sleep(0.1)


# --- prometheusrule.yaml from ochinai-rules.yaml ---------------------------------------

HEADER = """\
# Generated from ochinai-rules.yaml by `.venv/bin/python -m tests.test_metrics`: edit that
# file, then run this again (a test compares the two). For the Prometheus Operator; its
# Prometheus picks PrometheusRules by its ruleSelector (kube-prometheus-stack's wants the
# label release: <its release name>): add such labels to metadata here, they are kept.
"""
METADATA = {
    "name": "ochinai",
    "namespace": "ochinai",
    "labels": {"app.kubernetes.io/name": "ochinai", "app.kubernetes.io/component": "monitoring"},
}


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, multi-line strings (expressions) as literals."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _text)


def render_prometheusrule() -> str:
    """prometheusrule.yaml: the rules' groups, under the metadata it has now (or the default)."""
    metadata = METADATA
    if PROMETHEUS_RULE.exists():
        metadata = yaml.safe_load(PROMETHEUS_RULE.read_text()).get("metadata") or METADATA
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata,
        "spec": {"groups": load_rules()["groups"]},
    }
    # No wrapping: a long annotation stays on its line rather than breaking mid-template.
    body = yaml.dump(resource, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


if __name__ == "__main__":
    PROMETHEUS_RULE.write_text(render_prometheusrule())
    sys.stdout.write(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}\n")
