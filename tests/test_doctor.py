"""`ochinai doctor`: a deployment checked end to end, against real servers on loopback.

A SeaweedFS (one for the whole run), an aiosmtpd server, a local webhook and API, the fault
proxy for a server that ignores conditions, and the fake Kubernetes API for RBAC.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ochinai import cli, doctor
from ochinai.jobs.backup.crypto import key_id
from ochinai.runtime.storage import make_s3_client
from tests.conftest import Faulty, aws_env
from tests.harness import Result, run_command
from tests.servers import free_port
from tests.servers.http import TOKEN, Api, Hook, Page
from tests.servers.kube import FakeKube
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY, WeedMini
from tests.servers.smtp import PASSWORD, Cert, Inbox, StartSmtp, check_password

BACKUP_KEY = "k" * 20 + "-backup-key-0123456789"
K8S = Path(__file__).resolve().parent.parent / "k8s"


@dataclass
class Site:
    """A deployment on loopback: a store and a backup target on SeaweedFS, a mail server,
    a webhook and the monitor's API; ``env`` is what the pods would get."""

    weed: WeedMini
    bucket: str
    target: str
    inbox: Inbox
    hook: Hook
    api: Api
    env: dict[str, str] = field(default_factory=dict)

    def doctor(self, *args: str, **env: str) -> Result:
        return run_command(["doctor", *args], {**self.env, **env})

    def client(self) -> Any:
        return make_s3_client(endpoint_url=self.weed.endpoint, max_attempts=1)


def rows(result: Result) -> dict[str, dict[str, str]]:
    """The checks of a ``--json`` run, by name."""
    return {row["check"]: row for row in json.loads(result.out)["checks"]}


def row(result: Result, name: str) -> dict[str, str]:
    found = rows(result)
    assert name in found, f"no row {name!r}: {sorted(found)}"
    return found[name]


@pytest.fixture
def site(
    seaweedfs: WeedMini,
    start_smtp: StartSmtp,
    hook: Hook,
    api_server: Api,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Site]:
    aws_env(monkeypatch, ACCESS_KEY, SECRET_KEY)
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweedfs.endpoint)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    client = make_s3_client(endpoint_url=seaweedfs.endpoint, max_attempts=1)
    bucket, target = f"doctor-{uuid.uuid4().hex[:12]}", f"vault-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.create_bucket(Bucket=target)
    inbox, port = start_smtp(authenticator=check_password, auth_require_tls=False)
    api_server.pages["/v1/items"] = Page(b'{"items": []}')
    env = {
        "AWS_ENDPOINT_URL": seaweedfs.endpoint,
        "OCHINAI_STORE": f"s3://{bucket}/ochinai",
        "OCHINAI_LOCK": "s3",
        "OCHINAI_LOG_FORMAT": "json",
        "OCHINAI_SMTP_HOST": "127.0.0.1",
        "OCHINAI_SMTP_PORT": str(port),
        "OCHINAI_SMTP_TLS": "none",
        "OCHINAI_SMTP_USER": "ochinai",
        "OCHINAI_SMTP_PASSWORD": PASSWORD,
        "OCHINAI_MAIL_FROM": "ochinai@example.com",
        "OCHINAI_MAIL_TO": "ops@example.com",
        "OCHINAI_RECEIVER_OPS": hook.url,
        "OCHINAI_MONITOR_URL": api_server.url("/v1/items"),
        "OCHINAI_BACKUP_TARGET": f"s3://{target}/backups",
        "OCHINAI_BACKUP_KEY": BACKUP_KEY,
        "OCHINAI_PING_URL_REPORT": "https://hc-ping.example/0f3c9a55-report",
    }
    yield Site(seaweedfs, bucket, target, inbox, hook, api_server, env)


def test_a_sound_deployment_passes_with_nothing_sent_and_no_secret_shown(site: Site) -> None:
    """Every check passes (the missing lifecycle rules are warnings); nothing is mailed or
    posted, the table names each check, and no secret appears, the backup key by its id."""
    started = time.monotonic()
    result = site.doctor()
    took = time.monotonic() - started
    assert result.code == 0, result.out + result.err
    table = result.out
    for name in (
        "settings",
        "settings backup",
        "variables",
        "s3 endpoint",
        "s3 credentials",
        "s3 bucket",
        "s3 conditional writes",
        "lock",
        "smtp",
        "receiver ops",
        "monitor url",
        "backup target bucket",
        "backup key",
    ):
        assert any(line.startswith(f"{name} ") for line in table.splitlines()), name
    assert "FAIL" not in table and "warn" in table  # the two lifecycle rules
    assert "-> run `ochinai doctor --fix`" in table
    assert f"id {key_id(BACKUP_KEY)}" in table
    assert "login as ochinai accepted" in table and "no mail sent" in table
    assert site.inbox.mails == [] and site.hook.received == []
    for secret in (PASSWORD, SECRET_KEY, BACKUP_KEY, TOKEN.split("/")[-1], "0f3c9a55"):
        assert secret not in table + result.err
    assert site.client().list_objects_v2(Bucket=site.bucket).get("KeyCount", 0) == 0
    assert took < 8, f"the doctor took {took:.1f} s"

    checks = rows(site.doctor("--json"))
    assert {c["result"] for c in checks.values()} == {"ok", "warn"}
    assert checks["s3 lifecycle rule"]["result"] == "warn"


def test_only_the_named_jobs_own_checks_run_and_an_unknown_job_is_a_usage_error(
    site: Site,
) -> None:
    names = set(rows(site.doctor("--json", "report")))
    assert "settings report" in names and "s3 bucket" in names
    assert not {n for n in names if n.startswith(("monitor", "backup", "settings monitor"))}
    assert site.doctor("nosuchjob").code == 64


def test_a_closed_endpoint_fails_in_seconds_naming_the_address(
    site: Site, monkeypatch: Any
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    started = time.monotonic()
    result = site.doctor("--json", "report", AWS_ENDPOINT_URL=closed)
    assert time.monotonic() - started < 5
    assert result.code == 1
    endpoint = row(result, "s3 endpoint")
    assert endpoint["result"] == "fail"
    assert f"{closed} (AWS_ENDPOINT_URL)" in endpoint["detail"]
    assert "AWS_ENDPOINT_URL" in endpoint["fix"]
    assert row(result, "s3 bucket")["result"] == "skip"


def test_without_an_endpoint_it_says_boto3_goes_to_aws(site: Site, monkeypatch: Any) -> None:
    """AWS_ENDPOINT_URL unset: the address is AWS's, and the message says why. A proxy on a
    closed loopback port keeps the request on this machine."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    env = {k: v for k, v in site.env.items() if k != "AWS_ENDPOINT_URL"}
    result = run_command(["doctor", "--json", "report"], env)
    endpoint = row(result, "s3 endpoint")
    assert endpoint["result"] == "fail"
    assert "amazonaws.com" in endpoint["detail"]
    assert "AWS_ENDPOINT_URL is unset, so boto3 goes to AWS S3" in endpoint["detail"]
    assert "set AWS_ENDPOINT_URL" in endpoint["fix"]


def test_wrong_keys_are_named_and_not_shown(site: Site, monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    result = site.doctor("--json", "report")
    assert result.code == 1
    assert row(result, "s3 endpoint")["result"] == "ok"
    keys = row(result, "s3 credentials")
    assert keys["result"] == "fail" and "SignatureDoesNotMatch" in keys["detail"]
    assert keys["fix"] == "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    assert "not-the-secret-0123456789" not in result.out + result.err


def test_a_missing_bucket_names_ochinai_store(site: Site) -> None:
    result = site.doctor("--json", "report", OCHINAI_STORE="s3://no-such-bucket-here")
    assert result.code == 1
    bucket = row(result, "s3 bucket")
    assert (
        bucket["result"] == "fail"
        and "s3://no-such-bucket-here/: no such bucket" in bucket["detail"]
    )
    assert "OCHINAI_STORE" in bucket["fix"]
    assert row(result, "s3 conditional writes")["result"] == "skip"


def test_a_server_that_ignores_if_none_match_fails_the_self_test(
    faulty: Faulty, site: Site, monkeypatch: Any
) -> None:
    faulty.proxy.credentials = (ACCESS_KEY, SECRET_KEY)
    faulty.proxy.add("drop_header", "PutObject", header="If-None-Match", times=10**6)
    monkeypatch.setenv("AWS_ENDPOINT_URL", faulty.proxy.endpoint)
    result = site.doctor(
        "--json",
        "report",
        AWS_ENDPOINT_URL=faulty.proxy.endpoint,
        OCHINAI_STORE=f"s3://{faulty.bucket}",
    )
    assert result.code == 1
    writes = row(result, "s3 conditional writes")
    assert writes["result"] == "fail"
    assert f"the S3 server at {faulty.proxy.endpoint} ignores If-None-Match" in writes["detail"]
    assert "honours conditional requests" in writes["detail"]
    assert faulty.keys("_probe/") == []


def test_no_smtp_server_listening_names_the_host_and_port(site: Site) -> None:
    port = free_port()
    result = site.doctor("--json", "report", OCHINAI_SMTP_PORT=str(port))
    assert result.code == 1
    mail = row(result, "smtp")
    assert mail["result"] == "fail"
    assert f"smtp://127.0.0.1:{port}: connection refused" in mail["detail"]
    assert "OCHINAI_SMTP_HOST and OCHINAI_SMTP_PORT" in mail["fix"]


def test_a_refused_smtp_login_names_the_settings_not_the_password(
    site: Site, start_smtp: StartSmtp
) -> None:
    _, port = start_smtp(authenticator=check_password, auth_require_tls=False)
    result = site.doctor(
        "--json", "report", OCHINAI_SMTP_PORT=str(port), OCHINAI_SMTP_PASSWORD="wrong-Pa55word!"
    )
    mail = row(result, "smtp")
    assert mail["result"] == "fail" and "login as ochinai refused (535)" in mail["detail"]
    assert "OCHINAI_SMTP_PASSWORD" in mail["fix"]
    assert "wrong-Pa55word!" not in result.out + result.err


def test_a_misspelt_variable_names_the_nearest_setting(site: Site) -> None:
    result = site.doctor(
        "report",
        OCHINAI_REPORT_INPTU="in/sales.csv",
        OCHINAI_RECIEVER_OPS="https://hooks.slack.com/x",
    )
    assert result.code == 1
    lines = result.out.splitlines()
    (typo,) = [
        n for n, line in enumerate(lines) if line.startswith("variable OCHINAI_REPORT_INPTU")
    ]
    assert lines[typo].split()[2:] == ["FAIL", "read", "by", "no", "setting"]
    assert "-> did you mean OCHINAI_REPORT_INPUT?" in lines[typo + 1]
    assert "did you mean OCHINAI_RECEIVER_OPS?" in result.out


def test_a_setting_that_does_not_parse_is_78(site: Site) -> None:
    result = site.doctor("--json", "report", OCHINAI_REPORT_MAX_BAD_ROWS="many")
    assert result.code == 78
    bad = row(result, "settings report")
    assert bad["result"] == "fail" and "OCHINAI_REPORT_MAX_BAD_ROWS='many'" in bad["detail"]
    assert row(result, "s3 bucket")["result"] == "ok"  # the rest is still checked


def test_every_variable_the_manifests_give_the_pods_is_known() -> None:
    """The ConfigMap's keys, each container's env and the Secret's keys the manifests read
    (the per-CronJob OCHINAI_PING_URL_*) are all settings to the doctor."""
    names: set[str] = set()
    for path in [*K8S.glob("*.yaml"), *K8S.glob("examples/*.yaml")]:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            names |= set(_names(doc))
    assert {"OCHINAI_PING_URL_REPORT", "OCHINAI_PING_URL_BACKUP_DRILL"} <= names
    env = {name: "x" for name in names}
    assert doctor.unknown_variables(env, cli.registry()) == []


def _names(node: Any) -> Iterator[str]:
    """Every variable name a manifest sets or reads from the Secret."""
    if isinstance(node, dict):
        if node.get("kind") == "ConfigMap":
            yield from node["data"]
        for key, value in node.items():
            if key == "name" and isinstance(value, str) and value.startswith("OCHINAI_"):
                yield value
            if key == "secretKeyRef":
                yield value["key"]
            yield from _names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _names(item)


def test_the_lease_rbac_allowed_and_denied_over_http(
    site: Site, fake_kube: FakeKube, tmp_path: Path, monkeypatch: Any
) -> None:
    """OCHINAI_LOCK=lease: a SelfSubjectAccessReview a verb; a denied one names the verb,
    the Lease and the Role to fix."""
    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig")))
    env = {"OCHINAI_LOCK": "lease", "OCHINAI_NAMESPACE": "ochinai"}
    allowed = row(site.doctor("--json", "report", **env), "lease report")
    assert allowed["result"] == "ok", allowed
    assert "may get and update ochinai-report and create leases in ochinai" in allowed["detail"]
    asked = {(r["verb"], r.get("name")) for r in fake_kube.reviews}
    assert asked == {("create", None), ("get", "ochinai-report"), ("update", "ochinai-report")}
    assert all(r["namespace"] == "ochinai" for r in fake_kube.reviews)

    fake_kube.deny("update", "ochinai")
    result = site.doctor("--json", "report", **env)
    assert result.code == 1
    denied = row(result, "lease report")
    assert denied["result"] == "fail"
    assert "may not update ochinai-report" in denied["detail"]
    assert "k8s/10-rbac.yaml" in denied["fix"]


def test_the_leases_of_a_sharded_backup_are_each_asked_about(
    site: Site, fake_kube: FakeKube, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig")))
    result = site.doctor("--json", "backup", OCHINAI_LOCK="lease", OCHINAI_BACKUP_SHARDS="2")
    assert row(result, "lease backup")["result"] == "ok"
    names = {r.get("name") for r in fake_kube.reviews}
    assert names == {None, "ochinai-backup-0", "ochinai-backup-1"}


def test_fix_adds_the_lifecycle_rule_and_keeps_the_others(site: Site) -> None:
    """On SeaweedFS: --fix adds the rule over the store's prefix beside a rule already
    there; the next run finds it."""
    client = site.client()
    other = {
        "ID": "logs",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 3},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket=site.bucket, LifecycleConfiguration={"Rules": [other]}
    )
    fixed = row(site.doctor("--json", "report", "--fix"), "s3 lifecycle rule")
    assert (
        fixed["result"] == "ok"
        and "added rule 'ochinai-abort-incomplete-uploads'" in fixed["detail"]
    )
    rules = client.get_bucket_lifecycle_configuration(Bucket=site.bucket)["Rules"]
    assert {r["ID"] for r in rules} == {"logs", "ochinai-abort-incomplete-uploads"}
    ours = next(r for r in rules if r["ID"] == "ochinai-abort-incomplete-uploads")
    assert ours["Filter"] == {"Prefix": "ochinai/"}
    assert ours["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    again = row(site.doctor("--json", "report"), "s3 lifecycle rule")
    assert again["result"] == "ok" and "ochinai-abort-incomplete-uploads" in again["detail"]


def test_send_test_sends_one_notice_to_every_receiver(site: Site) -> None:
    result = site.doctor("--json", "report", "--send-test")
    assert result.code == 0, result.out
    assert row(result, "test notice ops")["result"] == "ok"
    assert row(result, "test notice default")["result"] == "ok"
    assert len(site.hook.received) == 1 and len(site.inbox.mails) == 1
    assert site.inbox.parsed()["Subject"] == "【テスト】ochinai doctor"


def test_an_apprise_receiver_is_not_checked_without_send_test(site: Site) -> None:
    result = site.doctor(
        "--json", "report", OCHINAI_RECEIVER_PHONE="ntfys://ntfy.example/ochinai-7Gq2xK"
    )
    phone = row(result, "receiver phone")
    assert phone["result"] == "skip"
    assert "not checked without --send-test" in phone["detail"]
    assert "7Gq2xK" not in result.out


def test_a_page_that_robots_txt_disallows_fails(site: Site) -> None:
    site.api.pages["/robots.txt"] = Page(
        b"User-agent: ochinai\nDisallow: /shop/\n", content_type="text/plain"
    )
    site.api.pages["/shop/a"] = Page(b"<html></html>", content_type="text/html")
    result = site.doctor(
        "--json",
        "monitor",
        OCHINAI_MONITOR_MODE="html",
        OCHINAI_MONITOR_PAGES=site.api.url("/shop/a"),
    )
    page = row(result, "monitor page 1")
    assert (
        page["result"] == "fail"
        and "robots.txt" in page["detail"]
        and "disallows" in page["detail"]
    )


def test_an_unreachable_hook_is_named_by_its_origin_only(site: Site) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = site.doctor("--json", "report", OCHINAI_RECEIVER_OPS=f"{closed}/services/{TOKEN}")
    hook = row(result, "receiver ops")
    assert hook["result"] == "fail"
    assert hook["detail"] == f"{closed}: connection refused: nothing listens there"
    assert "OCHINAI_RECEIVER_OPS" in hook["fix"]
    assert TOKEN.split("/")[-1] not in result.out + result.err


def test_an_api_server_that_does_not_answer_is_named(
    site: Site, tmp_path: Path, monkeypatch: Any
) -> None:
    with FakeKube() as gone:
        kubeconfig = gone.write_kubeconfig(tmp_path / "kubeconfig")
        url = gone.url
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    started = time.monotonic()
    lease = row(site.doctor("--json", "report", OCHINAI_LOCK="lease"), "lease report")
    assert time.monotonic() - started < 5
    assert lease["result"] == "fail"
    assert lease["detail"].startswith(f"the Kubernetes API at {url} does not answer")


def test_starttls_that_is_missing_or_untrusted_is_named(
    site: Site, start_smtp: StartSmtp, cert: Cert
) -> None:
    """A server without STARTTLS, and one whose certificate is not trusted."""
    plain = row(site.doctor("--json", "report", OCHINAI_SMTP_TLS="starttls"), "smtp")
    assert plain["result"] == "fail" and plain["detail"].endswith("offers no STARTTLS")
    assert "OCHINAI_SMTP_TLS=ssl" in plain["fix"]
    _, port = start_smtp(tls_context=cert.server_context(), require_starttls=True)
    env = {"OCHINAI_SMTP_TLS": "starttls", "OCHINAI_SMTP_PORT": str(port)}
    untrusted = row(site.doctor("--json", "report", **env), "smtp")
    assert untrusted["result"] == "fail" and "TLS certificate not trusted" in untrusted["detail"]
    assert "OCHINAI_SMTP_HOST" in untrusted["fix"]
