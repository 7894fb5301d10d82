"""Receivers and routes: each kind of notice to its people, on mail, webhook or Apprise.

The Apprise services are exercised against local servers that stand in for them and
check the payloads those services document: ntfy (its JSON publish API: topic, title,
message; an attachment as the body of a publish to the topic, named by ?filename=),
Microsoft Teams Workflows (an HTTPS POST of an Adaptive Card message to
/workflows/<id>/triggers/manual/paths/invoke with the signature in the query) and
Discord (a webhook POST of JSON with ``content`` or ``embeds``, or multipart with the
file).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ochinai.runtime import logs, routes
from ochinai.runtime.declare import load
from ochinai.runtime.errors import ConfigError
from ochinai.runtime.notify import (
    INCIDENT_KINDS,
    Attachment,
    DeliveryFailedTransient,
    Notice,
    SendOnce,
)
from ochinai.runtime.settings import RuntimeSettings
from ochinai.runtime.storage import Store
from tests.servers.http import TOKEN, Hook, hook_server
from tests.servers.smtp import Cert, StartSmtp

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
KINDS = [*INCIDENT_KINDS, "report", "changes", "drill"]  # the runtime's, then the jobs'

SIGNATURE = "SiGnAtUrE0123456789abcdef"  # a Teams Workflows URL's secret
DISCORD_TOKEN = "DiScOrDtOkEn0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apprise waits 5.5 s between two requests of one service: not here."""
    from apprise.plugins.base import NotifyBase

    monkeypatch.setattr(NotifyBase, "request_rate_per_sec", 0)


def settings(**env: str) -> RuntimeSettings:
    return load(RuntimeSettings, {"OCHINAI_STORE": "s3://ops", **env})


def notice(kind: str, key: str | None = None, **fields: Any) -> Notice:
    return Notice(
        key=key or f"report/2026-12-01/{kind}",
        subject=f"件名 {kind}",
        text=f"本文 {kind} ¥1,234",
        kind=kind,
        **fields,
    )


def workbook() -> Attachment:
    return Attachment("売上日報_20261201.xlsx", b"PK\x03\x04" + bytes(range(256)) * 4, XLSX)


@pytest.fixture
def tls_hook(cert: Cert) -> Iterator[Hook]:
    """A webhook over HTTPS with a self-signed certificate (a Teams Workflows stand-in)."""
    with hook_server(cert.server_context()) as served:
        yield served


@pytest.fixture
def second_hook() -> Iterator[Hook]:
    with hook_server() as served:
        yield served


def ntfy_url(hook: Hook, topic: str = "ochinai-ops") -> str:
    return f"ntfy://127.0.0.1:{hook.port}/{topic}"


def workflows_url(hook: Hook) -> str:
    return f"workflows://127.0.0.1:{hook.port}/wf0123456789/{SIGNATURE}/?verify=no"


@pytest.fixture
def discord(monkeypatch: pytest.MonkeyPatch, second_hook: Hook) -> Hook:
    """Discord's webhook API on loopback: Apprise's Discord posts there instead."""
    from apprise.plugins.discord import NotifyDiscord

    url = f"http://127.0.0.1:{second_hook.port}/api/webhooks"
    monkeypatch.setattr(NotifyDiscord, "notify_url", url)
    return second_hook


# --- settings: typos are 78 before any work ------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"OCHINAI_ROUTES": "report:sales"}, ["OCHINAI_ROUTES", "sales", "OCHINAI_RECEIVER_SALES"]),
        ({"OCHINAI_ROUTES": "Report:ops"}, ["OCHINAI_ROUTES", "not a kind"]),
        ({"OCHINAI_ROUTES": "report=ops"}, ["KIND:RECEIVER"]),
        ({"OCHINAI_RECEIVER_OPS": f"bogus://{TOKEN}"}, ["OCHINAI_RECEIVER_OPS", "bogus://"]),
        ({"OCHINAI_RECEIVER_OPS": "ops@example.com"}, ["OCHINAI_RECEIVER_OPS", "without a scheme"]),
        ({"OCHINAI_RECEIVER_OPS": "mailto:"}, ["OCHINAI_RECEIVER_OPS", "without an address"]),
        ({"OCHINAI_RECEIVER_OPS": "mailto:o@example.com,ops"}, ["OCHINAI_RECEIVER_OPS", "2"]),
        ({"OCHINAI_RECEIVER_OPS": f"https://[fe80::1/{TOKEN}"}, ["OCHINAI_RECEIVER_OPS", "URL"]),
        ({"OCHINAI_RECEIVER_OPS": f"https://hooks.slack.com:abc/{TOKEN}"}, ["not a URL"]),
        ({"OCHINAI_RECEIVER_OP-S": "mailto:o@example.com"}, ["OCHINAI_RECEIVER_OP-S"]),
        (
            {"OCHINAI_RECEIVER_DEFAULT": "https://hooks.slack.com/x", "OCHINAI_MAIL_TO": "a@b.jp"},
            ["OCHINAI_RECEIVER_DEFAULT", "OCHINAI_MAIL_TO"],
        ),
        ({"OCHINAI_RECEIVER_SALES": "mailto:s@example.com"}, ["OCHINAI_SMTP_HOST"]),
    ],
)
def test_a_typo_in_routes_or_receivers_is_78_naming_the_setting(
    env: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(OCHINAI_SMTP_HOST="", **env) if "SMTP" in str(names) else settings(**env)
    message = str(caught.value)
    assert caught.value.exit_code == 78
    for name in names:
        assert name in message, message
    assert TOKEN not in message and "o@example.com" not in message


def test_the_old_single_channel_settings_still_work() -> None:
    old = settings(
        OCHINAI_WEBHOOK_URL=f"https://hooks.example.com/services/{TOKEN}",
        OCHINAI_SMTP_HOST="mail.example.com",
        OCHINAI_MAIL_FROM="ochinai@example.com",
        OCHINAI_MAIL_TO="sales@example.com",
    )
    notifier = routes.build(old)
    for kind in KINDS:  # every kind to both, under the names their records have had
        assert [c.name for c in notifier.channels_for(kind)] == ["webhook", "smtp"]
    assert not routes.build(settings()).configured


def test_every_kind_goes_where_its_route_says(
    start_smtp: StartSmtp, hook: Hook, second_hook: Hook, tls_hook: Hook
) -> None:
    inbox, port = start_smtp()
    routed = settings(
        OCHINAI_SMTP_HOST="127.0.0.1",
        OCHINAI_SMTP_PORT=str(port),
        OCHINAI_SMTP_TLS="none",
        OCHINAI_MAIL_FROM="ochinai@example.com",
        OCHINAI_RECEIVER_SALES="mailto:uriage@example.com,bucho@example.com",
        OCHINAI_RECEIVER_OPS=f"{hook.url} {ntfy_url(second_hook)}",
        OCHINAI_RECEIVER_TEAM=workflows_url(tls_hook),
        OCHINAI_WEBHOOK_URL=f"http://127.0.0.1:{hook.port}/default/{TOKEN}",
        OCHINAI_ROUTES="report:sales,changes:sales,changes:team,failure:ops,reminder:ops,"
        "recovery:ops,recovery:team,stale:ops,drill:none",
    )
    notifier = routes.build(routed)
    expected = {
        "report": ["sales-mail"],
        "changes": ["sales-mail", "team-workflow"],
        "failure": ["ops-webhook", "ops-ntfy"],
        "reminder": ["ops-webhook", "ops-ntfy"],
        "recovery": ["ops-webhook", "ops-ntfy", "team-workflow"],
        "stale": ["ops-webhook", "ops-ntfy"],
        "drill": [],
    }
    for kind in KINDS:
        assert [c.name for c in notifier.channels_for(kind)] == expected[kind], kind
        if expected[kind]:
            notifier.send(notice(kind))
    # Mail: one per kind routed to sales, to both addresses.
    assert [m[1] for m in inbox.mails] == [["uriage@example.com", "bucho@example.com"]] * 2
    # The Slack-compatible webhook: one POST per ops kind, to the receiver's URL.
    assert [p for p in hook.paths] == [f"POST /services/{TOKEN}"] * 4
    assert json.loads(hook.received[0][1])["text"].startswith("*件名 failure*")
    # ntfy: its JSON publish API (POST / with topic, title, message), per ops kind.
    published = [json.loads(body) for _, body in second_hook.received]
    assert [(p["topic"], p["title"]) for p in published] == [
        ("ochinai-ops", f"件名 {kind}") for kind in ("failure", "reminder", "recovery", "stale")
    ]
    assert "本文 failure ¥1,234" in published[0]["message"]
    assert "通知 ID: report/2026-12-01/failure" in published[0]["message"]
    # Teams Workflows: an Adaptive Card message, to the workflow's trigger, signed.
    assert len(tls_hook.received) == 2
    path = tls_hook.paths[0]
    assert path.startswith("POST /workflows/wf0123456789/triggers/manual/paths/invoke?")
    assert f"sig={SIGNATURE}" in path
    cards = [json.loads(body) for _, body in tls_hook.received]
    assert {card["type"] for card in cards} == {"message"}
    attached = [card["attachments"][0] for card in cards]
    assert {a["contentType"] for a in attached} == {"application/vnd.microsoft.card.adaptive"}
    assert {a["content"]["type"] for a in attached} == {"AdaptiveCard"}
    titles = [json.dumps(a["content"], ensure_ascii=False) for a in attached]
    assert ["件名 recovery" in titles[0], "件名 changes" in titles[1]] == [True, True]


def test_the_workbook_goes_as_a_file_where_the_service_takes_one(
    discord: Hook, tls_hook: Hook, hook: Hook
) -> None:
    routed = settings(
        OCHINAI_RECEIVER_SALES=f"discord://123456789/{DISCORD_TOKEN} {ntfy_url(hook, 'sales')}",
        OCHINAI_RECEIVER_TEAM=workflows_url(tls_hook),
        OCHINAI_ROUTES="report:sales,report:team",
    )
    report = notice(
        "report", attachments=(workbook(),), link="https://files.example.com/r.xlsx?sig=1"
    )
    routes.build(routed).send(report)
    # Discord: the text as JSON, then the file in the webhook's multipart form.
    assert discord.paths == [f"POST /api/webhooks/123456789/{DISCORD_TOKEN}"] * 2
    text = json.dumps(json.loads(discord.received[0][1]), ensure_ascii=False)
    assert "件名 report" in text and "通知 ID: report/2026-12-01/report" in text
    headers, body = discord.received[1]
    kind = next(v for k, v in headers.items() if k.lower() == "content-type")
    assert kind.startswith("multipart/form-data; boundary=")
    assert b'name="file' in body and workbook().content in body  # the file, byte for byte
    assert "売上日報_20261201.xlsx".encode() in body or b"filename*=" in body
    # ntfy: the file as the body of a publish to the topic, its name in X-Filename.
    assert [p.split("?")[0] for p in hook.paths] == ["POST /sales"]
    assert hook.received[0][1] == workbook().content
    query = parse_qs(urlsplit(hook.paths[0].split(" ", 1)[1]).query)
    assert query["filename"] == ["売上日報_20261201.xlsx"]  # ntfy: X-Filename, or ?filename=
    # Teams Workflows takes no file: the text names it and carries the link instead
    # (as Markdown, which the card's TextBlock reads: Apprise escapes . _ - = there).
    card = json.loads(tls_hook.received[0][1])["attachments"][0]["content"]
    [body] = [b["text"] for b in card["body"] if b.get("id") == "body"]
    text = body.replace("\\", "")
    assert "売上日報_20261201.xlsx" in text and "https://files.example.com/r.xlsx?sig=1" in text


def test_a_receiver_that_fails_is_sent_again_alone_with_the_same_id(
    moto_ops: Any, hook: Hook, second_hook: Hook
) -> None:
    routed = settings(
        OCHINAI_RECEIVER_SALES=hook.url,
        OCHINAI_RECEIVER_OPS=ntfy_url(second_hook),
        OCHINAI_ROUTES="failure:sales,failure:ops",
    )
    store = Store(moto_ops, "ops")
    second_hook.status, second_hook.body = 500, b'{"code":50001,"error":"down"}'
    failure = notice("failure", key="report/incident/r1/opened")
    first = SendOnce(store, routes.build(routed), run_id="r1", dry_run=False, job="report")
    with pytest.raises(DeliveryFailedTransient) as caught:
        first.send(failure)
    assert caught.value.exit_code == 75
    assert "OCHINAI_RECEIVER_OPS (ntfy)" in str(caught.value)
    assert [d.channel for d in caught.value.deliveries if d.ok] == ["sales-webhook"]
    assert first.pending(failure.key, "failure") == ["ops-ntfy"]
    second_hook.status = 200
    second = SendOnce(store, routes.build(routed), run_id="r2", dry_run=False, job="report")
    assert second.send(failure) == "sent"
    assert len(hook.received) == 1  # sales got it once
    assert len(second_hook.received) == 2  # ops: the failed try, then the one that went
    bodies = [json.loads(b)["message"] for _, b in second_hook.received]
    assert all("通知 ID: report/incident/r1/opened" in b for b in bodies)
    assert second.send(failure) == "already_sent"


def test_receiver_tokens_never_reach_a_log_line(
    moto_ops: Any, discord: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    buf = io.StringIO()
    routed = settings(
        OCHINAI_RECEIVER_OPS=f"discord://123456789/{DISCORD_TOKEN}",
        OCHINAI_ROUTES="failure:ops",
    )
    from ochinai.runtime.declare import secrets

    logs.configure(fmt="json", stream=buf, secrets=secrets(routed))
    logging.getLogger("apprise").setLevel(logging.DEBUG)
    discord.status, discord.body = 401, f'{{"message": "bad token {DISCORD_TOKEN}"}}'.encode()
    once = SendOnce(Store(moto_ops, "ops"), routes.build(routed), run_id="r", dry_run=False)
    with pytest.raises(DeliveryFailedTransient) as caught:
        once.send(notice("failure"))
    assert DISCORD_TOKEN not in str(caught.value)
    logging.getLogger("ochinai").warning("failed: %s", caught.value)
    assert buf.getvalue() and DISCORD_TOKEN not in buf.getvalue()
    assert "123456789" not in str(caught.value)


def test_dry_run_keeps_the_routes() -> None:
    routed = settings(
        OCHINAI_RECEIVER_OPS="ntfy://127.0.0.1:9/topic",
        OCHINAI_WEBHOOK_URL=f"https://hooks.example.com/services/{TOKEN}",
        OCHINAI_ROUTES="failure:ops",
    )
    dry = routes.build(routed).dry()
    assert [c.name for c in dry.channels_for("failure")] == ["ops-ntfy"]
    assert [c.name for c in dry.channels_for("report")] == ["webhook"]
    dry.send(notice("failure"))  # logs, sends nothing (port 9 would refuse)


# --- the kinds of the incidents' notices ------------------------------------------------


def test_incident_notices_carry_their_kind() -> None:
    from datetime import timedelta

    from ochinai.runtime.health import Health, Policy, after_run, after_status, stored_kind
    from tests.test_health import T0, facts

    for policy, kinds in (
        (Policy(), ["failure", "reminder", "recovery"]),
        (Policy(kind="drill"), ["drill", "drill", "drill"]),  # the restore drill's
    ):
        health = after_run(Health("backup"), facts(1), policy)
        health = after_run(health, facts(2, at=T0 + timedelta(hours=25)), policy)
        health = after_run(health, facts(3, ok=True, at=T0 + timedelta(hours=26)), policy)
        assert [n["kind"] for n in health.outbox] == kinds
    stale = after_status(Health("report"), "stale", T0, "最後の実行: なし", Policy())
    stale = after_status(stale, "fresh", T0 + timedelta(hours=1), "", Policy())
    assert [n["kind"] for n in stale.outbox] == ["stale", "stale"]
    # An outbox written before notices had kinds: known by the ids.
    old = [
        {"id": "report/incident/r1/opened"},
        {"id": "report/incident/r1/reminder-2"},
        {"id": "report/incident/r1/recovered"},
        {"id": "report/stale/stale-20261201T000000Z/opened"},
    ]
    assert [stored_kind(n) for n in old] == ["failure", "reminder", "recovery", "stale"]


def test_the_kinds_are_the_runtimes_and_those_the_jobs_declare(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ochinai.cli import every_kind, main, registry
    from ochinai.jobs.backup import JOB

    assert JOB.actions["drill"].notices == "drill"
    assert [*INCIDENT_KINDS, *every_kind(registry())] == KINDS
    env = {"OCHINAI_STORE": "s3://ops", "OCHINAI_LOG_FORMAT": "json"}
    for command in (["report"], ["status"]):
        code = main(command, {**env, "OCHINAI_ROUTES": "reports:default"})
        assert code == 78
        said = capsys.readouterr()
        assert "OCHINAI_ROUTES" in said.out + said.err and "'reports'" in said.out + said.err
        assert "report, changes" in said.out + said.err


def test_only_the_secret_parts_of_a_receiver_are_masked() -> None:
    """The token, not the words around it: a topic, a path or a bucket named ochinai
    stays readable in every log line."""
    logs.redactor.clear()
    logs.redactor.add(*routes.tokens("ntfys://tk_abcdefghij@ntfy.example.com/ochinai"))
    logs.redactor.add(*routes.tokens(f"https://hooks.slack.com/services/{TOKEN}"))
    logs.redactor.add(*routes.tokens(workflows_url(Hook(443)).replace("?verify=no", "")))
    line = logs.redactor.redact(
        "s3://ochinai/in/sales.csv, tk_abcdefghij, services, workflows, SeCrEtToKeN0123456789, "
        f"{SIGNATURE}"
    )
    assert line == "s3://ochinai/in/sales.csv, ***, services, workflows, ***, ***"
