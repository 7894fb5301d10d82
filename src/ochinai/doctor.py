"""``ochinai doctor [JOB...]``: a deployment checked end to end, without doing any work.

Each check makes one try with short timeouts and is given up after ``CHECK_SECONDS``;
it says what it found and, when it fails, what to do. The checks:

- the settings of the runtime, of status and of each job and its actions parse, and no
  ``OCHINAI_`` variable is one that no setting reads (a typo names the nearest name);
- the S3 endpoint answers, takes the keys, has the bucket, keeps conditional writes
  (the store's own self-test) and has a lifecycle rule that aborts incomplete uploads
  (a warning; ``--fix`` adds one beside the rules already there);
- the Lease lock: the Kubernetes API answers and RBAC lets the service account get,
  update and create each job's Lease (a SelfSubjectAccessReview a verb);
- SMTP: connect, STARTTLS, login, quit, no mail; each webhook's origin answers; an
  Apprise receiver is not checked: ``--send-test`` sends one test notice to every
  receiver instead, through the jobs' own notifier;
- the monitor's API (or its pages, and their robots.txt as the job obeys it);
- the backup's target bucket (its own endpoint and keys), its key (by id) and Object Lock.

It lives beside the command line, not in the runtime, because it reads the jobs' own
code (the monitor's robots.txt rules, the backup's keys). No secret is printed: every
text goes through the log redactor, which knows each secret setting's value. The checks
come in the order of the table, each saying in full what it found and what to fix.

Exit codes: 0 every check passed, warnings allowed; 1 a check failed; 78 a setting does
not parse (the jobs would stop with 78 too); 64 a job named that is not registered.
"""

from __future__ import annotations

import difflib
import json
import os
import smtplib
import socket
import ssl
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ochinai.runtime import kube, logs, routes
from ochinai.runtime.bounded import NotInTime, within
from ochinai.runtime.declare import load, settings_of
from ochinai.runtime.errors import (
    EX_CONFIG,
    EX_OK,
    EX_USAGE,
    ConfigError,
    OchinaiError,
    PermanentError,
    s3_error_code,
)
from ochinai.runtime.http import USER_AGENT, HttpClient, shown
from ochinai.runtime.job import Job
from ochinai.runtime.notify import Channel, Notice, deliver
from ochinai.runtime.objectlock import check_enabled
from ochinai.runtime.retry import RetryPolicy
from ochinai.runtime.run import new_run_id
from ochinai.runtime.settings import CommonSettings, RuntimeSettings, StatusSettings
from ochinai.runtime.storage import Store, make_s3_client

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
EX_FAILED = 1  # a check failed (as `ochinai status` exits 1 for a stale job)
CHECK_SECONDS = 10.0  # the most one check may take, whatever its requests do
TIMEOUT = (3.0, 5.0)  # (connect, read) seconds of each request
# Variables the manifests give each CronJob from the Secret, one per CronJob
# (OCHINAI_PING_URL_REPORT...): every pod sees them all through `envFrom`.
PER_CRONJOB = ("OCHINAI_PING_URL_",)
RULE_ID = "ochinai-abort-incomplete-uploads"
SETTINGS = "settings"  # the rows whose failure is a setting that does not parse (78)
NOBODY = (  # what a deployment without receivers is told
    "no receiver is declared: a failure reaches nobody",
    "set OCHINAI_WEBHOOK_URL, OCHINAI_MAIL_TO or OCHINAI_RECEIVER_<NAME>",
)


@dataclass(frozen=True)
class Check:
    """One row: what was checked, the result, what was found, and what to do."""

    check: str
    result: str  # ok | warn | fail | skip
    detail: str
    fix: str = ""


class Problem(Exception):
    """A check that did not pass: what was found, what to do, and how bad it is."""

    def __init__(self, detail: str, fix: str = "", result: str = FAIL) -> None:
        super().__init__(detail)
        self.detail, self.fix, self.result = detail, fix, result


def checked(name: str, fn: Callable[[], str], seconds: float = CHECK_SECONDS) -> Check:
    """``fn()`` (what it found) as the row ``name``, given up after ``seconds``; every
    failure becomes the row, so that one check never stops the others."""
    try:
        return Check(name, OK, within(fn, seconds, name))
    except Problem as problem:
        return Check(name, problem.result, problem.detail, problem.fix)
    except NotInTime:
        return Check(
            name,
            FAIL,
            f"no answer within {seconds:g} s",
            "see that it is up and that this pod may reach it (DNS, proxy, NetworkPolicy)",
        )
    except OchinaiError as exc:
        return Check(name, FAIL, str(exc))
    except Exception as exc:  # a check's own failure is its row, never the command's
        return Check(name, FAIL, f"{type(exc).__name__}: {exc}")


def skipped(names: Iterable[str], why: str) -> list[Check]:
    return [Check(name, SKIP, f"not checked: {why}") for name in names]


# --- settings and variables ---------------------------------------------------------


def _parse(env: Mapping[str, str], classes: Iterable[type]) -> tuple[dict[type, Any], list[str]]:
    """Each settings class loaded from ``env``, and the errors, each said once."""
    loaded: dict[type, Any] = {}
    errors: list[str] = []
    for cls in classes:
        try:
            loaded[cls] = load(cls, env)
        except Exception as exc:  # ConfigError, or a parser's own: the row says which
            if str(exc) not in errors:
                errors.append(str(exc))
    return loaded, errors


def _settings_row(name: str, errors: list[str], what: str, hint: str) -> Check:
    if errors:
        return Check(name, FAIL, "; ".join(errors), hint)
    return Check(name, OK, f"{what} parse")


def classes_of(job: Job) -> list[type]:
    """The settings classes a job's actions read, each once (its own first)."""
    return list(dict.fromkeys([job.settings, *(job.settings_for(a) for a in job.actions)]))


def job_settings(env: Mapping[str, str], name: str, job: Job, hint: str) -> tuple[Check, Any]:
    """The row of a job's settings and its own settings (None when they do not parse).

    An action whose own required setting is given on its command line when it runs
    (``backup restore --to``) is loaded only when the environment has that setting."""
    later: list[str] = []
    classes = [job.settings]
    base = set(settings_of(job.settings))
    for action in job.actions:
        cls = job.settings_for(action)
        given = [s for s in settings_of(cls) if s.required and s.flag and s not in base]
        unset = [f"{action}'s {s.flag}" for s in given if not env.get(s.env)]
        later += unset
        if not unset and cls not in classes:
            classes.append(cls)
    found, errors = _parse(env, classes)
    check = _settings_row(f"{SETTINGS} {name}", errors, f"{name}'s settings", hint)
    if later and check.result == OK:
        check = Check(check.check, OK, f"{check.detail} ({', '.join(later)}: given when it runs)")
    return check, found.get(job.settings)


def known_variables(jobs: Mapping[str, Job]) -> tuple[set[str], tuple[str, ...]]:
    """The variables a setting reads, and the prefixes of the families of variables
    (``OCHINAI_RECEIVER_``, and the per-CronJob ``OCHINAI_PING_URL_``)."""
    classes = [RuntimeSettings, StatusSettings, *(c for j in jobs.values() for c in classes_of(j))]
    declared = [s for cls in classes for s in settings_of(cls)]
    names = {s.env for s in declared if s.family is None}
    families = [s.family for s in declared if s.family is not None]
    return names, tuple(dict.fromkeys([*families, *PER_CRONJOB]))


def nearest(name: str, names: Iterable[str], families: Sequence[str]) -> str:
    """The known variable most like ``name``; a family's member keeps ``name``'s last
    words (``OCHINAI_RECIEVER_OPS``: ``OCHINAI_RECEIVER_OPS``)."""
    words = name.split("_")
    members = [f + ("_".join(words[f.count("_") :]) or "<NAME>") for f in families]
    return max(
        sorted({*names, *members}), key=lambda c: difflib.SequenceMatcher(None, name, c).ratio()
    )


def unknown_variables(env: Mapping[str, str], jobs: Mapping[str, Job]) -> list[tuple[str, str]]:
    """Each OCHINAI_ variable of ``env`` that no setting reads, with the nearest known name."""
    names, families = known_variables(jobs)
    return [
        (name, nearest(name, names, families))
        for name in sorted(env)
        if name.startswith("OCHINAI_") and name not in names and not name.startswith(families)
    ]


def variables_checks(env: Mapping[str, str], jobs: Mapping[str, Job]) -> list[Check]:
    """One row when every OCHINAI_ variable is a setting's, else a row each that is not."""
    unknown = unknown_variables(env, jobs)
    if not unknown:
        return [Check("variables", OK, "every OCHINAI_ variable is one a setting reads")]
    return [
        Check(
            f"variable {name}",
            FAIL,
            "read by no setting",
            f"did you mean {known}? (`ochinai <command> --help` lists every variable)",
        )
        for name, known in unknown
    ]


def secret_values(env: Mapping[str, str], jobs: Mapping[str, Job]) -> list[str]:
    """What the output must never show: every secret setting's value as set (parsed or
    not), the parts of receiver URLs that hold tokens, and the AWS secrets."""
    classes = [RuntimeSettings, *(c for j in jobs.values() for c in classes_of(j))]
    found = [env.get(s.env) or "" for cls in classes for s in settings_of(cls) if s.secret]
    families = (routes.PREFIX, *PER_CRONJOB)
    found += [value for name, value in env.items() if name.startswith(families)]
    for text in [env.get("OCHINAI_WEBHOOK_URL") or "", *found]:
        for url in text.split():
            found += routes.tokens(url)
    found += [os.environ.get(n) or "" for n in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    return [value for value in found if value]


# --- S3 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """A bucket to check and the settings that name its address, its keys and itself."""

    label: str  # "s3", "backup target"
    client: Any
    bucket: str
    prefix: str
    endpoint_setting: str  # the variable that gave the address; "" when none did (AWS)
    key_settings: str
    bucket_setting: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/" if self.prefix else f"s3://{self.bucket}/"

    @property
    def address(self) -> str:
        """Where the client goes, and why."""
        where = str(self.client.meta.endpoint_url)
        if self.endpoint_setting:
            return f"{where} ({self.endpoint_setting})"
        return f"{where} (AWS_ENDPOINT_URL is unset, so boto3 goes to AWS S3)"


def endpoint_variable() -> str:
    """The variable boto3 takes the store's S3 address from, or "" (AWS itself)."""
    return next((n for n in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if os.environ.get(n)), "")


def s3_client(
    endpoint_url: str | None = None, access_key: str | None = None, secret_key: str | None = None
) -> Any:
    """A client of one try a request, with short timeouts."""
    return make_s3_client(
        connect_timeout=TIMEOUT[0],
        read_timeout=TIMEOUT[1],
        max_attempts=1,
        endpoint_url=endpoint_url,
        access_key=access_key,
        secret_key=secret_key,
    )


def bucket_checks(b: Bucket, fix: bool) -> list[Check]:
    """Endpoint, credentials and bucket (one listing of at most one key), then the
    self-test of conditional writes and the lifecycle rule."""
    rows = reach(b)
    later = [f"{b.label} conditional writes", f"{b.label} lifecycle rule"]
    if rows[-1].result != OK:
        return rows + skipped(later, f"{b.url} cannot be read")
    rows.append(checked(later[0], lambda: conditional_writes(b)))
    rows.append(checked(later[1], lambda: lifecycle(b, fix)))
    return rows


def reach(b: Bucket) -> list[Check]:
    """Three rows from one ListObjectsV2: the endpoint answered, took the keys, has the bucket."""
    names = [f"{b.label} {what}" for what in ("endpoint", "credentials", "bucket")]
    endpoint, credentials, bucket = names
    answered = Check(endpoint, OK, f"{b.address} answered")
    try:
        within(
            lambda: b.client.list_objects_v2(Bucket=b.bucket, Prefix=b.prefix, MaxKeys=1),
            CHECK_SECONDS,
            endpoint,
        )
    except NoCredentialsError:
        return [
            Check(endpoint, SKIP, f"not checked: no credentials to sign a request to {b.address}"),
            Check(credentials, FAIL, "no S3 credentials found", f"set {b.key_settings}"),
            *skipped([bucket], "no credentials"),
        ]
    except (BotoCoreError, NotInTime) as exc:
        fix = (
            f"check {b.endpoint_setting}: is the S3 server up, at that address and port, and "
            "may this pod reach it (DNS, proxy, NetworkPolicy)?"
            if b.endpoint_setting
            else "set AWS_ENDPOINT_URL to your S3 server's address (MinIO, SeaweedFS...), or let "
            "this pod reach AWS"
        )
        return [
            Check(endpoint, FAIL, f"could not reach {b.address}: {exc}", fix),
            *skipped([credentials, bucket], "the endpoint did not answer"),
        ]
    except ClientError as exc:
        code, status = s3_error_code(exc)
        said = f"{code} ({status})"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            denied = f"{b.address} refused the keys: {said}"
            return [
                answered,
                Check(credentials, FAIL, denied, f"check {b.key_settings}"),
                *skipped([bucket], "the keys were refused"),
            ]
        refused = bucket_refused(b, code, status)
        if refused is not None:
            return [answered, Check(credentials, OK, "accepted"), Check(bucket, FAIL, *refused)]
        return [
            Check(endpoint, FAIL, f"{b.address} answered {said}", "see the S3 server's log"),
            *skipped([credentials, bucket], "the endpoint failed"),
        ]
    return [answered, Check(credentials, OK, "accepted"), Check(bucket, OK, f"{b.url} is there")]


def bucket_refused(b: Bucket, code: str, status: int) -> tuple[str, str] | None:
    """What an error with the keys taken says of the bucket, and what to do; None when
    it says nothing of the bucket."""
    said = f"{code} ({status})"
    if code == "NoSuchBucket":
        return f"{b.url}: no such bucket at {b.address}", f"create it, or fix {b.bucket_setting}"
    if code == "AccessDenied" or status == 403:
        return (
            f"{b.url}: these keys may not list it ({said})",
            f"grant s3:ListBucket on it to the identity of {b.key_settings}",
        )
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed") or status == 301:
        return f"{b.url}: in another region ({said})", "set AWS_REGION"
    return None


def conditional_writes(b: Bucket) -> str:
    """The store's self-test on this bucket (probe.py): a probe written and deleted."""
    try:
        Store(b.client, b.bucket, b.prefix).verify_conditional_writes()
    except ConfigError as exc:
        raise Problem(str(exc)) from None
    except PermanentError as exc:
        raise Problem(
            str(exc),
            f"the identity of {b.key_settings} needs s3:PutObject, s3:GetObject and "
            f"s3:DeleteObject on {b.url}_probe/*",
        ) from None
    return "create-only writes, compare-and-swap and conditional deletes each refused when stale"


def covers(rule: Mapping[str, Any], prefix: str) -> bool:
    """An enabled rule that aborts incomplete uploads under every key beginning with ``prefix``."""
    if rule.get("Status") != "Enabled" or "AbortIncompleteMultipartUpload" not in rule:
        return False
    if "Filter" in rule:
        found = rule["Filter"] or {}
        if set(found) - {"Prefix"}:  # tags or sizes: not every upload
            return False
        return prefix.startswith(str(found.get("Prefix", "")))
    return prefix.startswith(str(rule.get("Prefix", "")))


def lifecycle_rules(b: Bucket) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules ([] when it has none); a warning when they cannot be read."""
    try:
        answer = b.client.get_bucket_lifecycle_configuration(Bucket=b.bucket)
    except ClientError as exc:
        code, status = s3_error_code(exc)
        if code == "NoSuchLifecycleConfiguration":
            return []
        if code == "AccessDenied" or status == 403:
            raise Problem(
                f"{b.url}: these keys may not read the lifecycle rules ({code})",
                "see with the bucket's owner that a rule of docs/operating.md "
                "'Storage guarantees' is there",
                WARN,
            ) from None
        if code in ("NotImplemented", "MethodNotAllowed") or status == 501:
            raise Problem(
                f"this S3 server keeps no lifecycle rules ({code})",
                "nothing to do: each run's sweep aborts the uploads dead runs left",
                WARN,
            ) from None
        raise
    return list(answer.get("Rules", []))


def lifecycle(b: Bucket, fix: bool) -> str:
    """The AbortIncompleteMultipartUpload rule over the prefix; ``fix`` adds one, keeping
    every rule there (a lifecycle configuration is written whole)."""
    prefix = f"{b.prefix}/" if b.prefix else ""
    rules = lifecycle_rules(b)
    found = next((r for r in rules if covers(r, prefix)), None)
    if found is not None:
        days = found["AbortIncompleteMultipartUpload"].get("DaysAfterInitiation")
        return f"rule {found.get('ID', '(no id)')!r} aborts incomplete uploads after {days} d"
    missing = f"no enabled AbortIncompleteMultipartUpload rule covers {b.url}"
    if not fix:
        raise Problem(
            f"{missing}: the uploads of killed runs wait for the next run's sweep",
            "run `ochinai doctor --fix`, or add the rule of docs/operating.md 'Storage guarantees'",
            WARN,
        )
    ids = {r.get("ID") for r in rules}
    rule_id = next(i for i in (RULE_ID, *(f"{RULE_ID}-{n}" for n in range(2, 99))) if i not in ids)
    rule = {
        "ID": rule_id,
        "Status": "Enabled",
        "Filter": {"Prefix": prefix},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }
    try:
        b.client.put_bucket_lifecycle_configuration(
            Bucket=b.bucket, LifecycleConfiguration={"Rules": [*rules, rule]}
        )
    except ClientError as exc:
        raise Problem(
            f"{missing}, and it could not be added: {s3_error_code(exc)[0]}",
            f"add the rule of docs/operating.md 'Storage guarantees' with keys that may "
            f"(s3:PutLifecycleConfiguration on {b.bucket})",
            WARN,
        ) from None
    if not any(covers(r, prefix) for r in lifecycle_rules(b)):
        raise Problem(f"{missing}: the server took the rule but does not list it", "", WARN)
    return f"added rule {rule_id!r} (abort after 1 d), kept the {len(rules)} rules there"


# --- the Lease lock -----------------------------------------------------------------------


def lease_names(job: Job, settings: Any) -> list[str]:
    """The Leases a job's runs hold: one, or one a shard of an Indexed Job."""
    shards = getattr(settings, "shards", 1) if settings is not None else 1
    return [job.lock_name] if shards <= 1 else [f"{job.lock_name}-{i}" for i in range(shards)]


def lock_checks(
    runtime: RuntimeSettings, jobs: Mapping[str, Job], own: Mapping[str, Any]
) -> list[Check]:
    """The lock OCHINAI_LOCK gives: with the Lease, a row a job that takes it."""
    kind = runtime.lock
    if kind == "auto":
        kind = "lease" if kube.in_cluster() else "s3"
    if kind == "none":
        return [
            Check(
                "lock",
                WARN,
                "OCHINAI_LOCK=none: nothing keeps two runs of a job apart",
                "set OCHINAI_LOCK=lease in a cluster, s3 elsewhere",
            )
        ]
    if kind == "s3":
        where = " outside a cluster" if runtime.lock == "auto" else ""
        return [
            Check(
                "lock",
                OK,
                f"OCHINAI_LOCK={runtime.lock}{where}: the object _locks/ochinai-<job>.json in "
                "the store, whose conditional writes are checked above",
            )
        ]
    try:
        api, kubeconfig_namespace = kube.coordination_api()
    except ConfigError as exc:
        return [Check("lock", FAIL, str(exc))]
    namespace = kube.pod_namespace(runtime.namespace, kubeconfig_namespace)
    from kubernetes import client

    configuration = api.api_client.configuration
    configuration.retries = False  # one try a request
    authorization = client.AuthorizationV1Api(client.ApiClient(configuration))
    locking = [name for name, job in jobs.items() if any(a.lock for a in job.actions.values())]
    host = str(configuration.host)
    return [
        checked(
            f"lease {name}",
            partial(
                lease_rights, authorization, host, namespace, lease_names(jobs[name], own.get(name))
            ),
        )
        for name in locking
    ]


def lease_rights(api: Any, host: str, namespace: str, leases: list[str]) -> str:
    """Whether RBAC lets this identity create leases and get and update ``leases``."""
    asked = [("create", None), *((verb, name) for name in leases for verb in ("get", "update"))]
    refused = [
        verb + (f" {name}" if name else "")
        for verb, name in asked
        if not may(api, host, namespace, verb, name)
    ]
    if refused:
        raise Problem(
            f"the service account may not {', '.join(refused)} (leases.coordination.k8s.io in "
            f"namespace {namespace})",
            f"grant get and update on {', '.join(leases)} and create on leases in the Role of "
            "k8s/10-rbac.yaml (docs/operating.md 'The lock'), bound to the jobs' service account",
        )
    return f"may get and update {', '.join(leases)} and create leases in {namespace} ({host})"


def may(api: Any, host: str, namespace: str, verb: str, name: str | None) -> bool:
    """One SelfSubjectAccessReview: may this identity do ``verb`` on the Lease ``name``?"""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    attributes = client.V1ResourceAttributes(
        namespace=namespace, verb=verb, group="coordination.k8s.io", resource="leases", name=name
    )
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
    )
    try:
        answer = api.create_self_subject_access_review(review, _request_timeout=TIMEOUT)
    except ApiException as exc:
        fix = "the API token is missing or invalid" if exc.status == 401 else "see the API's log"
        raise Problem(
            f"the Kubernetes API at {host} answered {exc.status} {exc.reason}", fix
        ) from None
    except (HTTPError, OSError) as exc:
        raise Problem(
            f"the Kubernetes API at {host} does not answer: {reason(exc)}",
            "run in a pod of the cluster, or set KUBECONFIG; OCHINAI_LOCK=s3 needs no API",
        ) from None
    return bool(answer.status.allowed)


# --- notices --------------------------------------------------------------------------------


def smtp(settings: CommonSettings, mailers: list[str]) -> str:
    """Connect, STARTTLS (or TLS from the start), log in, quit: no mail is sent."""
    host, tls, user = settings.smtp_host or "", settings.smtp_tls, settings.smtp_user
    port = settings.smtp_port or {"starttls": 587, "ssl": 465}.get(tls, 25)
    where = f"smtp://{host}:{port}"
    context = ssl.create_default_context()
    done = [f"{where} answered"]
    try:
        conn = (
            smtplib.SMTP_SSL(host, port, timeout=TIMEOUT[1], context=context)
            if tls == "ssl"
            else smtplib.SMTP(host, port, timeout=TIMEOUT[1])
        )
        try:
            conn.ehlo()
            if tls == "starttls":
                offered(where, "STARTTLS", partial(conn.starttls, context=context))
                conn.ehlo()
                done.append("STARTTLS")
            if user:
                offered(where, "AUTH", partial(conn.login, user, settings.smtp_password or ""))
                done.append(f"login as {user} accepted")
        finally:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                conn.close()
    except (OSError, smtplib.SMTPException) as exc:
        raise smtp_problem(exc, where, user) from None
    mail = f" (the receivers that mail: {', '.join(mailers)})" if mailers else ""
    return "; ".join(done) + f"; no mail sent{mail}"


OFFERS = {  # what to do when the server does not offer it
    "STARTTLS": "set OCHINAI_SMTP_TLS=ssl (port 465) or none, as the server speaks",
    "AUTH": "unset OCHINAI_SMTP_USER, or set OCHINAI_SMTP_TLS=starttls (servers offer AUTH "
    "once TLS is on)",
}


def offered(where: str, what: str, call: Callable[[], object]) -> None:
    """``call()``; a server that does not offer ``what`` (OFFERS) is a Problem saying so."""
    try:
        call()
    except smtplib.SMTPNotSupportedError:
        raise Problem(f"{where} offers no {what}", OFFERS[what]) from None


def smtp_problem(exc: OSError | smtplib.SMTPException, where: str, user: str | None) -> Problem:
    """What an SMTP failure says, and what to do."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        fix = "check OCHINAI_SMTP_USER and OCHINAI_SMTP_PASSWORD"
        return Problem(f"{where}: login as {user} refused ({exc.smtp_code})", fix)
    if isinstance(exc, ssl.SSLCertVerificationError):
        fix = "OCHINAI_SMTP_HOST must be a name the server's certificate lists"
        return Problem(f"{where}: TLS certificate not trusted ({exc.verify_message})", fix)
    if isinstance(exc, ssl.SSLError):
        fix = "check OCHINAI_SMTP_TLS: ssl for port 465, starttls for 587"
        return Problem(f"{where}: TLS failed ({exc.reason})", fix)
    if isinstance(exc, smtplib.SMTPResponseException):
        return Problem(f"{where} answered {exc.smtp_code}", "see the mail server's log")
    return Problem(
        f"{where}: {reason(exc)}",
        "check OCHINAI_SMTP_HOST and OCHINAI_SMTP_PORT (default 587 for starttls, 465 for ssl, "
        "25 for none), and that this pod may reach it",
    )


def reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words, from the error or the ones it wraps."""
    seen: list[BaseException] = [exc]
    for error in seen:  # grows as it goes, by the errors each one wraps
        if isinstance(error, socket.gaierror):
            return "the name does not resolve"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused: nothing listens there"
        if isinstance(error, TimeoutError):
            return f"no answer within {TIMEOUT[1]:g} s"
        inner = [error.__cause__, error.__context__, getattr(error, "reason", None), *error.args]
        wrapped = [e for e in inner if isinstance(e, BaseException) and e not in seen]
        seen += wrapped[: max(0, 20 - len(seen))]
    return f"connection failed: {type(exc).__name__}"


def ask(method: str, url: str, headers: Mapping[str, str] | None = None) -> int:
    """The status of one request to ``url``, its body left unread; a failed connection
    is a Problem naming the origin only (a path or query may hold a token)."""
    try:
        with requests.request(
            method,
            url,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
            timeout=TIMEOUT,
            stream=True,
            allow_redirects=False,
        ) as answer:
            return int(answer.status_code)
    except requests.RequestException as exc:
        raise Problem(f"{origin(url)}: {reason(exc)}") from None


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, without what may hold a token (userinfo, path)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def origin_answers(url: str, setting: str) -> str:
    """A HEAD of the hook's origin: any HTTP answer is reachable; nothing reaches the hook."""
    try:
        status = ask("HEAD", f"{origin(url)}/")
    except Problem as problem:
        problem.fix = f"check the address in {setting}, and that this pod may reach it"
        raise
    return f"{origin(url)} answered (HTTP {status} to HEAD /); nothing was sent to the hook"


def receiver_checks(settings: CommonSettings) -> list[Check]:
    """A row per webhook and Apprise address (mail: the smtp row)."""
    rows: list[Check] = []
    if settings.webhook_url:
        url = settings.webhook_url
        rows.append(checked("webhook", lambda: origin_answers(url, "OCHINAI_WEBHOOK_URL")))
    for name, text in sorted(settings.receivers.items()):
        setting = routes.PREFIX + name.upper()
        urls = text.split()
        for n, url in enumerate(urls, 1):
            kind = routes.kind_of_url(url, setting)
            row = f"receiver {name}" + (f" {n}" if len(urls) > 1 else "")
            if kind == "webhook":
                rows.append(checked(row, partial(origin_answers, url, setting)))
            elif kind == "apprise":
                rows.append(
                    Check(
                        row,
                        SKIP,
                        f"{urlsplit(url).scheme}:// through Apprise: not checked without "
                        "--send-test",
                        "`ochinai doctor --send-test` sends it a test notice",
                    )
                )
    if not (rows or mailers(settings)):
        rows.append(Check("notices", WARN, *NOBODY))
    return rows


def mailers(settings: CommonSettings) -> list[str]:
    """The receivers that mail: the default one (OCHINAI_MAIL_TO) and mailto: receivers."""
    named = [
        name
        for name, text in sorted(settings.receivers.items())
        if any(urlsplit(u).scheme.lower() == "mailto" for u in text.split())
    ]
    return (["default"] if settings.mail_to and "default" not in named else []) + named


def send_test_notices(settings: CommonSettings) -> list[Check]:
    """One test notice to every receiver, through the jobs' notifier (routes are for kinds;
    a test is of none)."""
    http = HttpClient(timeout=TIMEOUT)
    notifier = routes.build(settings, http)
    day = datetime.now(UTC).date().isoformat()
    notice = Notice(
        key=f"doctor/{day}/{new_run_id()}",
        subject="【テスト】ochinai doctor",
        text="ochinai doctor --send-test が送ったテスト通知です。この通知先に届いています。"
        "対応は不要です。",
    )
    try:
        rows = [
            checked(f"test notice {name}", partial(send, found, notice))
            for name, found in notifier.receivers.items()
            if found
        ]
    finally:
        http.close()
    return rows or [Check("test notice", WARN, *NOBODY)]


def send(channels: list[Channel], notice: Notice) -> str:
    failed: list[str] = []
    for channel in channels:
        delivery, _ = deliver(channel, notice)
        if not delivery.ok:
            failed.append(f"{delivery.channel}: {delivery.error}")
    if failed:
        raise Problem("; ".join(failed), "fix the channel as its error says")
    return f"sent on {', '.join(c.name for c in channels)}: look for it there ({notice.key})"


# --- the jobs' own ------------------------------------------------------------------------


def monitor_checks(s: Any) -> list[Check]:
    """The API's first page (with its key), or each page and its robots.txt."""
    headers = {s.api_key_header: s.api_key} if s.api_key_header and s.api_key else {}
    if s.mode == "api":
        if not s.url:
            return [
                Check(
                    "monitor url",
                    FAIL,
                    "OCHINAI_MONITOR_URL is not set",
                    "give the API's first page, e.g. https://shop.example/api/items",
                )
            ]
        url = s.url
        return [checked("monitor url", lambda: answered(url, headers, "OCHINAI_MONITOR_URL"))]
    if not s.pages:
        return [
            Check(
                "monitor pages",
                FAIL,
                "OCHINAI_MONITOR_PAGES is not set",
                "give the product pages' URLs",
            )
        ]
    from ochinai.jobs.monitor.html import Robots

    robots = Robots(HttpClient(timeout=TIMEOUT, policy=RetryPolicy(base=0, cap=0, max_tries=1)))

    def page(url: str) -> str:
        robots.check(url)
        return "robots.txt allows it; " + answered(url, headers, "OCHINAI_MONITOR_PAGES")

    try:
        return [
            checked(f"monitor page {n}", partial(page, url)) for n, url in enumerate(s.pages, 1)
        ]
    finally:
        robots.http.close()


def answered(url: str, headers: Mapping[str, str], setting: str) -> str:
    """One GET as the job sends it; its status judged as the job would."""
    try:
        status = ask("GET", url, headers)
    except Problem as problem:
        problem.fix = f"check {setting}, and that this pod may reach it"
        raise
    said = f"{shown(url)} answered HTTP {status}"
    if status in (401, 403):
        raise Problem(said, "check OCHINAI_MONITOR_API_KEY and OCHINAI_MONITOR_API_KEY_HEADER")
    if status in (404, 410):
        raise Problem(said, f"check {setting}")
    if status == 429 or status >= 500:
        raise Problem(
            said, "the job waits out or retries this; if it lasts, ask the API's owner", WARN
        )
    if status >= 400:
        raise Problem(said, f"check {setting} and the API's documentation")
    return said


def backup_checks(s: Any, store: Bucket | None, readable: bool, fix: bool) -> list[Check]:
    """The target bucket (its own endpoint and keys), the key and Object Lock; ``store``
    holds the generations when there is no target (``readable``: it could be read)."""
    from ochinai.jobs.backup.target import SHARED

    rows: list[Check] = []
    target = store
    if s.target is None:
        rows.append(
            Check(
                "backup target",
                WARN,
                f"OCHINAI_BACKUP_TARGET is unset: {SHARED.rpartition('; ')[0]}",
                "set OCHINAI_BACKUP_TARGET (docs/jobs/backup.md 'A target of its own')",
            )
        )
    else:
        keyed = s.target_access_key_id is not None
        target = Bucket(
            "backup target",
            s3_client(
                s.target_endpoint_url,
                access_key=s.target_access_key_id,
                secret_key=s.target_secret_access_key,
            ),
            s.target.bucket,
            s.target.prefix,
            "OCHINAI_BACKUP_TARGET_ENDPOINT_URL" if s.target_endpoint_url else endpoint_variable(),
            "OCHINAI_BACKUP_TARGET_ACCESS_KEY_ID and OCHINAI_BACKUP_TARGET_SECRET_ACCESS_KEY"
            if keyed
            else "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            "OCHINAI_BACKUP_TARGET",
        )
        rows += bucket_checks(target, fix)
        readable = rows[2].result == OK
    rows.append(checked("backup key", partial(backup_key, s)))
    if s.lock_days:
        name = "backup object lock"
        if target is None or not readable:
            rows += skipped([name], "the bucket cannot be read")
        else:
            rows.append(checked(name, partial(object_lock, target)))
    return rows


def backup_key(s: Any) -> str:
    """The key's id (never the key): OCHINAI_BACKUP_KEY parses and pyarrow can use it."""
    from ochinai.jobs.backup import crypto

    ring = crypto.ring(s, writing=True)
    if ring is None:
        return "OCHINAI_BACKUP_KEY is unset: new generations are written unencrypted"
    return ring.described()


def object_lock(b: Bucket) -> str:
    check_enabled(Store(b.client, b.bucket, b.prefix), "OCHINAI_BACKUP_LOCK_DAYS")
    return f"s3://{b.bucket} has Object Lock"


# --- the command ----------------------------------------------------------------------------


def run(
    env: Mapping[str, str], jobs: Mapping[str, Job], names: Sequence[str], fix: bool, send: bool
) -> list[Check]:
    """Every check, in the order of the table; ``names`` limit the jobs' own, ``fix`` adds
    a missing lifecycle rule, ``send`` sends a test notice to every receiver."""
    logs.redactor.add(*secret_values(env, jobs))
    selected = {name: jobs[name] for name in (names or sorted(jobs))}
    loaded, errors = _parse(env, [RuntimeSettings, StatusSettings])
    runtime: RuntimeSettings | None = loaded.get(RuntimeSettings)
    common: CommonSettings | None = runtime or loaded.get(StatusSettings)
    rows, own = _settings_checks(env, jobs, selected, runtime, errors)
    store, s3_rows = _s3_checks(common, fix)
    rows += s3_rows
    if runtime is None:
        rows += skipped(["lock"], "the settings do not parse")
    else:
        rows += lock_checks(runtime, selected, own)
    if common is not None:
        if common.smtp_host:
            settings = common
            rows.append(checked("smtp", lambda: smtp(settings, mailers(settings))))
        rows += send_test_notices(common) if send else receiver_checks(common)
    if own.get("monitor") is not None:
        rows += monitor_checks(own["monitor"])
    if own.get("backup") is not None:
        readable = any(r.check == "s3 bucket" and r.result == OK for r in rows)
        rows += backup_checks(own["backup"], store, readable, fix)
    return [
        Check(r.check, r.result, logs.redactor.redact(r.detail), logs.redactor.redact(r.fix))
        for r in rows
    ]


def _settings_checks(
    env: Mapping[str, str],
    jobs: Mapping[str, Job],
    selected: Mapping[str, Job],
    runtime: RuntimeSettings | None,
    errors: list[str],
) -> tuple[list[Check], dict[str, Any]]:
    """The settings' rows (the runtime's and status's, each selected job's, the variables
    no setting reads), and each selected job's own settings (None: they do not parse)."""
    if runtime is not None:
        try:
            routes.check_kinds(runtime.routes, [k for j in jobs.values() for k in j.notices])
        except ConfigError as exc:
            errors.append(str(exc))
    hint = "fix the variables named (`ochinai <command> --help` gives each one's form)"
    rows = [_settings_row(SETTINGS, errors, "the runtime's and status's settings", hint)]
    own: dict[str, Any] = {}
    for name, job in selected.items():
        check, own[name] = job_settings(env, name, job, hint)
        rows.append(check)
    rows += variables_checks(env, jobs)
    return rows, own


def _s3_checks(common: CommonSettings | None, fix: bool) -> tuple[Bucket | None, list[Check]]:
    """The store's bucket and its rows: endpoint, credentials, bucket, conditional writes,
    lifecycle rule (each skipped when the settings do not parse)."""
    if common is None:
        names = ["s3 endpoint", "s3 credentials", "s3 bucket", "s3 conditional writes"]
        return None, skipped([*names, "s3 lifecycle rule"], "the settings do not parse")
    store = Bucket(
        "s3",
        s3_client(),
        common.store.bucket,
        common.store.prefix,
        endpoint_variable(),
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        "OCHINAI_STORE",
    )
    return store, bucket_checks(store, fix)


def exit_code(rows: list[Check]) -> int:
    """78 when a setting does not parse, else 1 when a check failed, else 0."""
    failed = [r for r in rows if r.result == FAIL]
    if any(r.check.split()[0] == SETTINGS for r in failed):
        return EX_CONFIG
    return EX_FAILED if failed else EX_OK


def render_table(rows: list[Check]) -> str:
    """A table for people: a row a check, what to do under each that did not pass."""
    shown = [(r.check, r.result.upper() if r.result == FAIL else r.result) for r in rows]
    width = [max(len(c[i]) for c in [("CHECK", "RESULT"), *shown]) for i in (0, 1)]
    lines = [f"{'CHECK':<{width[0]}}  {'RESULT':<{width[1]}}  DETAIL"]
    for (name, result), row in zip(shown, rows, strict=True):
        lines.append(f"{name:<{width[0]}}  {result:<{width[1]}}  {row.detail}")
        if row.fix:
            lines.append(f"{'':<{width[0]}}  {'':<{width[1]}}  -> {row.fix}")
    counts = {r: sum(1 for row in rows if row.result == r) for r in (OK, WARN, FAIL, SKIP)}
    lines.append(
        f"{len(rows)} checks: {counts[OK]} ok, {counts[WARN]} warning"
        f"{'' if counts[WARN] == 1 else 's'}, {counts[FAIL]} failed, {counts[SKIP]} not checked"
    )
    return "\n".join(lines) + "\n"


def render_json(rows: list[Check]) -> str:
    """One JSON document for machines."""
    code = exit_code(rows)
    document = {"ok": code == EX_OK, "exit_code": code, "checks": [asdict(r) for r in rows]}
    return json.dumps(document, ensure_ascii=False) + "\n"


def main(
    env: Mapping[str, str],
    jobs: Mapping[str, Job],
    names: Sequence[str],
    *,
    as_json: bool = False,
    fix: bool = False,
    send_test: bool = False,
) -> int:
    """``ochinai doctor``: print the table (or JSON) and return the exit code."""
    unknown = [name for name in names if name not in jobs]
    if unknown:
        print(
            f"ochinai doctor: no job {', '.join(unknown)}; the jobs are {', '.join(sorted(jobs))}",
            file=sys.stderr,
        )
        return EX_USAGE
    rows = run(env, jobs, names, fix, send_test)
    sys.stdout.write(render_json(rows) if as_json else render_table(rows))
    return exit_code(rows)
