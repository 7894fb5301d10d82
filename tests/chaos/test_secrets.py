"""No secret leaks: every job, through success and every failure class, grepped everywhere.

Every setting that can hold a secret gets a distinctive value: each one the registry
marks ``secret=True`` (found, not listed, so a new one is checked the day it is
declared), boto3's AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, and the credentials an
operator may put inside a URL (the monitor's URL with user:password@ and ?api_key=, an
S3 endpoint with user:password@, an OCHINAI_STORE with user:password@). Each value holds
a core of letters that every text form of it keeps (as is, repr'd, JSON-escaped,
URL-quoted) and some characters those forms change. After each run the test greps, for
the core and for the value in base64:

- the run's stdout and stderr;
- every object in the bucket: its key, its metadata, its body, gunzipped, unzipped
  (the workbook's XML) and, for Parquet, its metadata and its rows as text;
- every mail the SMTP server took (raw, each part decoded, attachments unzipped) and
  every webhook body;
- what a run left in its build directory (nothing), a restore's files, and
  ``ochinai status`` at the end.

One exception, by design: the report's link is an S3 presigned URL, and one made with
temporary credentials carries AWS_SESSION_TOKEN as X-Amz-Security-Token (AWS's format).
The link is meant for its recipients, and the token is no use without the secret key;
so in a notice, the token as that parameter of the link is allowed, nowhere else.
"""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import io
import json
import os
import re
import signal
import sqlite3
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from ochinai import cli
from ochinai.jobs.backup import job as backup_job
from ochinai.jobs.monitor import job as monitor_job
from ochinai.jobs.report import job as report_job
from ochinai.runtime.declare import settings_of
from ochinai.runtime.settings import RuntimeSettings, StatusSettings
from tests.chaos.conftest import Tally
from tests.harness import Result, run_command, run_job
from tests.servers import free_port
from tests.servers.http import Answer, Api, Hook, Page, api_on, hook_server
from tests.servers.smtp import Inbox, StartSmtp

pytestmark = [
    pytest.mark.chaos,
    # The SMTP server asks for AUTH without TLS: what a relay on the pod network does.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

BUCKET = "ops"
SMTP_USER = "ochinai"
# Characters that repr, JSON and URL quoting change: a form that escapes them but keeps
# the core is still a leak.
TAIL = "+/=' \\\"%"
AWS_TAIL = "+/="  # the characters real AWS keys and tokens have
RECEIVER = "OCHINAI_RECEIVER_OPS"


def core_of(name: str) -> str:
    """The letters that identify the secret in any text form: Zq9<Name>SECRET7Xw."""
    return "Zq9" + "".join(part.title() for part in re.split(r"[^A-Za-z0-9]+", name)) + "SECRET7Xw"


def registry_secrets() -> list[str]:
    """The variables of every setting the registry marks secret, for every job and action."""
    classes = {RuntimeSettings, StatusSettings} | {
        job.settings_for(action) for job in cli.registry().values() for action in job.actions
    }
    return sorted({s.env for cls in classes for s in settings_of(cls) if s.secret})


def value_of(name: str) -> str:
    """The distinctive value of the setting ``name``."""
    return core_of(name) + TAIL


@dataclass(frozen=True)
class Secret:
    """Where a secret is set, its value, and what of it must never be seen."""

    name: str
    value: str
    variable: bool = True  # set as an OCHINAI_ variable of its own, not inside another

    @property
    def core(self) -> str:
        return core_of(self.name)

    def needles(self) -> list[bytes]:
        """The core in any text form, and the whole value in base64."""
        return [self.core.encode(), base64.b64encode(self.value.encode())]


@dataclass
class Login:
    """aiosmtpd authenticator: the SMTP user and password as set, unless told to refuse."""

    password: str = value_of("OCHINAI_SMTP_PASSWORD")
    refuse: bool = False

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        right = (SMTP_USER.encode(), self.password.encode())
        ok = isinstance(auth_data, LoginPassword) and auth_data == right and not self.refuse
        # handled=False: aiosmtpd answers 535 itself.
        return AuthResult(success=ok, handled=False)


@dataclass
class World:
    """A bucket, a webhook, an SMTP server (and for the monitor an API) with every secret set."""

    job: str
    s3: Any
    hook: Hook
    ntfy: Hook  # the receiver ``ops``: an Apprise service (ntfy) with a token
    inbox: Inbox
    smtp_port: int
    login: Login
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    secrets: dict[str, Secret] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    links_with_token: int = 0  # the exception taken out of notices before grepping
    _seen_objects: dict[str, str] = field(default_factory=dict)
    _seen_mails: int = 0
    _seen_posts: int = 0
    _seen_ntfy: int = 0

    def __post_init__(self) -> None:
        for name in registry_secrets():
            if name.endswith("<NAME>"):  # a family: one of it is set below
                continue
            self.secrets[name] = Secret(name, value_of(name))
        # A receiver whose URL holds an access token (ntfy's tk_...), the incidents' route.
        ops = f"ntfy://tk_{core_of(RECEIVER)}@127.0.0.1:{self.ntfy.port}/ochinai-ops"
        self.secrets[RECEIVER] = Secret(RECEIVER, ops)
        hook_token = core_of("OCHINAI_WEBHOOK_URL")
        url = f"http://127.0.0.1:{self.hook.port}/services/{hook_token}"
        self.secrets["OCHINAI_WEBHOOK_URL"] = Secret("OCHINAI_WEBHOOK_URL", url)
        for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            self.secrets[name] = Secret(name, core_of(name) + AWS_TAIL, variable=False)
            self.monkeypatch.setenv(name, self.secrets[name].value)
        for name in (
            "password in OCHINAI_MONITOR_URL",
            "api_key in OCHINAI_MONITOR_URL",
            "password in AWS_ENDPOINT_URL",
            "password in OCHINAI_STORE",
        ):
            self.secrets[name] = Secret(name, core_of(name), variable=False)
        # Each run's build directory goes here, to see what a run leaves behind.
        self.workdirs = self.tmp / "workdirs"
        self.workdirs.mkdir()
        self.monkeypatch.setattr(tempfile, "tempdir", str(self.workdirs))

    def value(self, name: str) -> str:
        return self.secrets[name].value

    def env(self, **extra: str) -> dict[str, str]:
        """Every secret setting set, the notifications on, then ``extra``."""
        env = {name: s.value for name, s in self.secrets.items() if s.variable}
        return {
            **env,
            "OCHINAI_STORE": f"s3://{BUCKET}",
            "OCHINAI_LOCK": "s3",
            "OCHINAI_RUN_ID": f"{self.job}-{len(self.runs) + 1}",
            "OCHINAI_NOTIFY_TIMEOUT": "5s",
            "OCHINAI_SMTP_HOST": "127.0.0.1",
            "OCHINAI_SMTP_PORT": str(self.smtp_port),
            "OCHINAI_SMTP_TLS": "none",
            "OCHINAI_SMTP_USER": SMTP_USER,
            "OCHINAI_MAIL_FROM": "ochinai@example.com",
            "OCHINAI_MAIL_TO": "ops@example.com",
            "OCHINAI_ROUTES": "failure:default,failure:ops,reminder:ops,recovery:ops,stale:ops",
            **extra,
        }

    # --- running ----------------------------------------------------------------------

    def run(self, label: str, *args: str, expect: int, **extra: str) -> Result:
        """Run the job with every secret set, check its exit code, grep all it touched."""
        label = f"{self.job} {label}"
        self.runs.append(label)
        result = run_job(self.job, *args, env=self.env(**extra))
        if result.code != expect:
            self.problems.append(
                f"{label}: exit {result.code}, expected {expect}: {result.out[-1500:]}"
            )
        self.grep_run(label, result)
        return result

    def grep_run(self, label: str, result: Result) -> None:
        self.grep(label, "stdout", result.out.encode())
        self.grep(label, "stderr", result.err.encode())
        self.grep_bucket(label)
        self.grep_notices(label)
        for path in sorted(self.workdirs.rglob("*")):
            if path.is_file():
                self.grep(label, f"left in the build directory: {path.name}", path.read_bytes())

    def status(self) -> None:
        """``ochinai status`` and ``--json`` over the records the runs left."""
        for args in (["status"], ["status", "--json"]):
            result = run_command(args, self.env())
            label = f"{self.job} {' '.join(args)}"
            if result.code not in (0, 1) or not result.out:
                self.problems.append(f"{label}: exit {result.code}: {result.out} {result.err}")
            self.grep(label, "stdout", result.out.encode())
            self.grep(label, "stderr", result.err.encode())

    # --- grepping -----------------------------------------------------------------------

    def grep(self, label: str, where: str, body: bytes, allowed: bytes = b"") -> None:
        """Record every secret ``body`` shows (``allowed`` taken out of it first)."""
        if allowed and allowed in body:
            self.links_with_token += 1
            body = body.replace(allowed, b"")
        for secret in self.secrets.values():
            if any(needle in body for needle in secret.needles()):
                self.leaks.append(f"{label}: {secret.name} in {where}")

    def grep_bucket(self, label: str) -> None:
        """Every object's key, metadata and body, in every form it decodes to."""
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET):
            for listed in page.get("Contents", []):
                key, etag = listed["Key"], listed["ETag"]
                if self._seen_objects.get(key) == etag:
                    continue
                self._seen_objects[key] = etag
                head = self.s3.head_object(Bucket=BUCKET, Key=key)
                self.grep(label, f"the key {key}", key.encode())
                self.grep(label, f"the metadata of {key}", json.dumps(head["Metadata"]).encode())
                body = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                for where, blob in decoded(key, body):
                    self.grep(label, where, blob)

    def grep_notices(self, label: str) -> None:
        """New mails (raw and decoded) and webhook bodies; the report's link may carry the token."""
        token = self.secrets["AWS_SESSION_TOKEN"].value
        link_token = f"X-Amz-Security-Token={quote(token, safe='')}".encode()
        for n, (_, _, raw) in enumerate(self.inbox.mails[self._seen_mails :], self._seen_mails):
            self.grep(label, f"mail {n}", raw)
            message = email.message_from_bytes(raw, policy=email.policy.default)
            for part in message.walk():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    for where, blob in decoded(f"mail {n} {part.get_content_type()}", payload):
                        self.grep(label, where, blob, allowed=link_token)
        self._seen_mails = len(self.inbox.mails)
        for n, (headers, body) in enumerate(
            self.hook.received[self._seen_posts :], self._seen_posts
        ):
            self.grep(label, f"webhook post {n} headers", json.dumps(headers).encode())
            self.grep(label, f"webhook post {n}", body, allowed=link_token)
            text = json.loads(body).get("text", "").encode()
            self.grep(label, f"webhook post {n} text", text, allowed=link_token)
        self._seen_posts = len(self.hook.received)
        for n, (headers, body) in enumerate(self.ntfy.received[self._seen_ntfy :], self._seen_ntfy):
            # The token goes to its own service, as the Authorization header: nowhere else.
            shown = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            self.grep(label, f"ntfy post {n} headers", json.dumps(shown).encode())
            self.grep(label, f"ntfy post {n}", body)
        self._seen_ntfy = len(self.ntfy.received)

    def finish(self, tally: Tally, bad_inputs: int = 0) -> None:
        """Count, then fail with every leak and problem found."""
        self.status()
        if not self.ntfy.received:
            self.problems.append(f"{self.job}: the receiver ops (ntfy) got no incident notice")
        tally.add(self.job, violations=len(self.leaks), bad_inputs=bad_inputs)
        found = [*self.leaks, *self.problems]
        assert not found, "\n".join(found)


def decoded(name: str, body: bytes) -> Iterator[tuple[str, bytes]]:
    """``body`` and what it decodes to: gzip, zip members (xlsx), Parquet metadata and rows."""
    yield name, body
    if body[:2] == b"\x1f\x8b":
        yield from decoded(f"{name} (gunzipped)", gzip.decompress(body))
    elif body[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            for member in archive.namelist():
                yield from decoded(f"{name}:{member}", archive.read(member))
    elif body[:4] == b"PAR1":
        import pyarrow.parquet as pq

        meta = pq.read_metadata(io.BytesIO(body))
        yield f"{name} (Parquet metadata)", repr(meta.metadata).encode()
        yield f"{name} (Parquet schema)", str(meta.schema).encode()
        rows = pq.read_table(io.BytesIO(body)).to_pylist()
        yield f"{name} (Parquet rows)", repr(rows).encode()


@pytest.fixture
def ntfy() -> Iterator[Hook]:
    """A second webhook server: ntfy's publish API, for the receiver ``ops``."""
    with hook_server() as served:
        yield served


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    moto_ops: Any,
    hook: Hook,
    ntfy: Hook,
    start_smtp: StartSmtp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    """Everything set up for the job the test names by its parameter."""
    # S3 retries do not wait: a store that is down fails in milliseconds, after as many
    # tries as in production.
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0)
    login = Login()
    inbox, port = start_smtp(authenticator=login, auth_require_tls=False, auth_required=True)
    return World(request.param, moto_ops, hook, ntfy, inbox, port, login, tmp_path, monkeypatch)


def storage_failures(w: World, **extra: str) -> None:
    """The runtime's failure classes every job shares, each with secrets in its way.

    78: credentials in OCHINAI_STORE (refused, and must not be echoed), a webhook URL
    that is no URL. 75: the S3 endpoint, with a password in it, down. 77: no such bucket.
    """
    store = f"s3://AKIAIOSFODNN7EXAMPLE:{w.value('password in OCHINAI_STORE')}@{BUCKET}"
    w.run("config: credentials in OCHINAI_STORE", expect=78, OCHINAI_STORE=store, **extra)
    not_a_url = "htps:/" + core_of("OCHINAI_WEBHOOK_URL")  # the same core: grepped as well
    w.run("config: a malformed webhook URL", expect=78, OCHINAI_WEBHOOK_URL=not_a_url, **extra)
    endpoint = f"http://key:{w.value('password in AWS_ENDPOINT_URL')}@127.0.0.1:{free_port()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        # The lock's tries end at its renew deadline: a short one, not to wait 45 s.
        quick = {"OCHINAI_LOCK_RENEW_DEADLINE": "0.2s", "OCHINAI_LOCK_RENEW_PERIOD": "0.1s"}
        w.run("transient: the S3 endpoint down", expect=75, **quick, **extra)
    w.run("permanent: no such bucket", expect=77, OCHINAI_STORE="s3://no-such-bucket", **extra)


# --- report ---------------------------------------------------------------------------

SALES = (
    "date,store,sku,sales,qty,氏名\n"
    "2026-11-26,001,000123,100,1,佐藤 花子\n"
    "2026-11-27,001,000123,200,1,鈴木 太郎\n"
    "2026-11-28,002,000456,300,2,佐藤 花子\n"
)
BAD_SALES = "date,store,sku,sales,qty,氏名\n2026-11-28,001,000123,one hundred,1,佐藤 花子\n"


@pytest.mark.parametrize("world", ["report"], indirect=True)
def test_report_leaks_no_secret(world: World, tally: Tally) -> None:
    """The report: mailed, linked, failing every way; no secret anywhere."""
    w = world
    put = lambda body: w.s3.put_object(Bucket=BUCKET, Key="in/sales.csv", Body=body.encode())  # noqa: E731
    put(SALES)
    masked = {"OCHINAI_REPORT_MASK_COLUMNS": "氏名", "OCHINAI_REPORT_DETAIL_MAX_ROWS": "1"}
    w.run("ok: mailed and posted", expect=0, OCHINAI_DATE="2026-11-28", **masked)
    if len(w.inbox.mails) != 1 or len(w.hook.received) != 1:
        w.problems.append("report ok: the report was not mailed and posted once each")
    if not w.links_with_token:  # the exception taken out of notices is still needed
        w.problems.append("report ok: no link carried the session token")
    w.run("ok: a rerun, unchanged", expect=0, OCHINAI_DATE="2026-11-28", **masked)
    w.run("ok: a dry run", "--dry-run", expect=0, OCHINAI_DATE="2026-11-24", **masked)
    put(BAD_SALES)
    w.run("data: a bad row", expect=65, OCHINAI_DATE="2026-11-28", **masked)
    put(SALES)
    storage_failures(w, OCHINAI_DATE="2026-11-28")
    # Each of these is a new report (another date), so there is a notice to send.
    w.hook.status, w.hook.body = 503, f"no hook at {w.value('OCHINAI_WEBHOOK_URL')}".encode()
    w.run(
        "transient: SMTP down, webhook 503",
        expect=75,
        OCHINAI_DATE="2026-11-27",
        OCHINAI_SMTP_PORT=str(free_port()),
    )
    w.hook.status, w.hook.body, w.login.refuse = 403, b"invalid_token", True
    w.run("permanent: SMTP login refused, webhook 403", expect=77, OCHINAI_DATE="2026-11-26")
    w.hook.status, w.hook.body, w.login.refuse = 200, b"ok", False

    # No input or setting makes the job itself fail unexpectedly (the chaos suite's bad
    # inputs end 65), so a bug is put in: the runtime's handling of one is what is
    # grepped, the traceback in the log, the record and the failure notice.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the workbook writer broke")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_job, "build", broken)
        w.run("unexpected: a bug in the job", expect=70, OCHINAI_DATE="2026-11-25")
    w.finish(tally, bad_inputs=1)


# --- monitor --------------------------------------------------------------------------


def items(price: int) -> Page:
    item = {
        "id": "a",
        "name": "商品 a",
        "price": price,
        "stock": 3,
        "url": "https://shop.example/a",
    }
    return Page(json.dumps({"items": [item]}).encode(), etag=f'"{price}"')


CAT = """<html><head><script type="application/ld+json">{"@type": "Product",
"name": "猫の爪とぎ", "offers": {"price": "%s", "priceCurrency": "JPY",
"availability": "https://schema.org/InStock"}}</script></head><body></body></html>"""


@pytest.mark.parametrize("world", ["monitor"], indirect=True)
def test_monitor_leaks_no_secret(world: World, api_server: Api, tally: Tally) -> None:
    """The monitor: a key in a header, a password and a token in its URL; no secret anywhere."""
    w, api = world, api_server
    path = f"/items?api_key={w.value('api_key in OCHINAI_MONITOR_URL')}"
    password = w.value("password in OCHINAI_MONITOR_URL")
    url = f"http://watcher:{password}@127.0.0.1:{api.port}{path}"
    fast = {
        "OCHINAI_MONITOR_URL": url,
        "OCHINAI_MONITOR_API_KEY_HEADER": "X-API-Key",
        "OCHINAI_MONITOR_MIN_INTERVAL": "0s",
        "OCHINAI_MONITOR_TRIES": "1",
        "OCHINAI_MONITOR_TIMEOUT": "5s",
    }
    api.pages[path] = items(1980)
    w.run("ok: the baseline", expect=0, **fast)
    api.pages[path] = items(1500)
    w.run("ok: a price change announced", expect=0, **fast)
    w.run("ok: not modified (304)", expect=0, **fast)
    if len(w.inbox.mails) != 1 or len(w.hook.received) != 1:
        w.problems.append("monitor ok: the change was not mailed and posted once each")
    key = w.value("OCHINAI_MONITOR_API_KEY")
    if not api.hits or api.hits[-1].headers.get("X-API-Key") != key:
        w.problems.append("monitor ok: the API did not get the key")
    # html mode: the page's URL, credentials and all, is what the item is known by.
    page = f"/cat?token={w.value('api_key in OCHINAI_MONITOR_URL')}"
    html = {**fast, "OCHINAI_MONITOR_MODE": "html", "OCHINAI_MONITOR_PREFIX": "monitor-html/"}
    html["OCHINAI_MONITOR_PAGES"] = url.replace(path, page)
    for price in ("1,980", "1,780"):
        api.pages[page] = Page((CAT % price).encode(), content_type="text/html")
        w.run(f"ok: html mode at {price}", expect=0, **html)
    if len(w.inbox.mails) != 2 or len(w.hook.received) != 2:
        w.problems.append("monitor html: the change was not mailed and posted once each")
    # A redirect to another host: refused, then allowed; the key never goes there.
    with api_on("127.0.0.2") as elsewhere:
        elsewhere.pages["/moved"] = items(1500)
        moved = Answer(302, b"", {"Location": elsewhere.url("/moved")})
        api.then(path, moved)
        w.run("data: a redirect to another host", expect=65, **fast)
        api.then(path, moved)
        allowed = {**fast, "OCHINAI_MONITOR_ALLOW_HOSTS": "127.0.0.2"}
        w.run("ok: a redirect to an allowed host", expect=0, **allowed)
        if len(elsewhere.hits) != 1:
            w.problems.append(f"monitor: the allowed host got {len(elsewhere.hits)} requests")
        for hit in elsewhere.hits:
            sent = json.dumps([hit.path, hit.headers]).encode()
            w.grep("a redirect to another host", f"the request {hit.path} sent there", sent)
    api.then(path, Answer(200, b'{"items": [{"id": "a", "price": '))
    w.run("data: invalid JSON", expect=65, **fast)
    storage_failures(w, **fast)
    ftp = url.replace("http://", "ftp://")
    w.run("config: a URL that is not http", expect=78, **{**fast, "OCHINAI_MONITOR_URL": ftp})
    # A Kubernetes Secret made with `echo key | base64` ends with a line break.
    w.run(
        "config: the API key with a line break",
        expect=78,
        **fast,
        OCHINAI_MONITOR_API_KEY=key + "\n",
    )
    api.then(path, Answer(503, f"overloaded, key {key}".encode()))
    w.run("transient: API 503", expect=75, **fast)
    api.then(path, Answer(401, f'{{"error": "bad key {key}", "url": "{url}"}}'.encode()))
    w.run("permanent: API 401", expect=77, **fast)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the diff broke")

    api.pages[path] = items(1200)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(monitor_job, "diff", broken)
        w.run("unexpected: a bug in the job", expect=70, **fast)

    # SIGTERM while the API takes its time, sent when the request arrives: the run is in
    # its signal handling then, never the test process outside it.
    answer_for = api.answer_for

    def slow(asked: str, headers: dict[str, str]) -> Answer:
        os.kill(os.getpid(), signal.SIGTERM)
        return Answer(200, items(1100).body, delay=3)

    api.answer_for = slow  # type: ignore[method-assign]
    stopped = w.run("stopped: SIGTERM during a request", expect=75, **fast, OCHINAI_STOP_GRACE="0s")
    if stopped.summary.get("outcome") != "terminated":
        w.problems.append(f"monitor stopped: {stopped.summary}")
    api.answer_for = answer_for  # type: ignore[method-assign]
    w.finish(tally, bad_inputs=1)


# --- backup ---------------------------------------------------------------------------

CUSTOMERS = "名前,電話\n山田,03-1234-5678\n佐藤,03-8765-4321\n"


def shop(path: Path) -> bytes:
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        db.execute("INSERT INTO users (email) VALUES ('a@example.jp'), ('b@example.jp')")
        db.commit()
    return path.read_bytes()


@pytest.mark.parametrize("world", ["backup"], indirect=True)
def test_backup_leaks_no_secret(world: World, tally: Tally) -> None:
    """The backup, verify, list and restore, and the failures; no secret anywhere."""
    w = world
    put = lambda key, body: w.s3.put_object(Bucket=BUCKET, Key=key, Body=body)  # noqa: E731
    put("data/source/customers.csv", CUSTOMERS.encode())
    put("data/source/shop.sqlite", shop(w.tmp / "shop.sqlite"))
    day = {
        "OCHINAI_DATE": "2026-12-01",
        "OCHINAI_BACKUP_MASK_COLUMNS": "customers.csv:電話,shop.sqlite:users.email",
    }
    w.run("ok: CSV and SQLite, masked", expect=0, **day)
    w.run("ok: a rerun, unchanged", expect=0, **day)
    w.run("ok: verify", "verify", expect=0, **day)
    w.run("ok: list", "list", expect=0, **day)
    restored = w.tmp / "restored"
    w.run("ok: restore", "restore", expect=0, OCHINAI_BACKUP_RESTORE_TO=str(restored), **day)
    for path in sorted(restored.rglob("*")):
        if path.is_file():
            w.grep("backup restore", f"restored {path.name}", path.read_bytes())
    if not (restored / "customers.csv").is_file():
        w.problems.append("backup restore: nothing restored")
    put("data/source/broken.csv", "名前,値\n".encode("cp932") + b"\x82\xff,2\n")
    put("data/source/broken.sqlite", b"SQLite format 3\x00" + b"\x00" * 200)
    w.run("data: an undecodable CSV and a broken database", expect=65, **day)
    for name in ("broken.csv", "broken.sqlite"):
        w.s3.delete_object(Bucket=BUCKET, Key=f"data/source/{name}")
    storage_failures(w, **day)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the Parquet writer broke")

    put("data/source/more.csv", CUSTOMERS.encode())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backup_job, "back_up", broken)
        w.run("unexpected: a bug in the job", expect=70, **day)
    w.finish(tally, bad_inputs=1)


def test_the_registry_marks_the_settings_that_hold_secrets() -> None:
    """Every setting known to hold a secret is marked so: read only from the environment,
    masked in the logs, and given a distinctive value above."""
    assert {
        "OCHINAI_WEBHOOK_URL",
        "OCHINAI_SMTP_PASSWORD",
        "OCHINAI_MONITOR_API_KEY",
        "OCHINAI_MASK_KEY",
    } <= set(registry_secrets())
