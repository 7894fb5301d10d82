"""Tests of notify: real SMTP (aiosmtpd) and HTTP servers on loopback receive every notice."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ochinai.runtime.cancel import Terminated
from ochinai.runtime.errors import (
    EX_NOPERM,
    EX_TEMPFAIL,
    ConfigError,
    LockLost,
    PermanentError,
    TransientError,
)
from ochinai.runtime.fence import Fence
from ochinai.runtime.notify import (
    CLAIM_TIMEOUT,
    Attachment,
    Channel,
    DeliveryFailed,
    Notice,
    Notifier,
    SendOnce,
    SmtpChannel,
    WebhookChannel,
    message_id,
    notice_key,
    notifier_from_config,
)
from ochinai.runtime.storage import Store
from tests.servers.http import TOKEN, Hook
from tests.servers.smtp import PASSWORD, Cert, Inbox, StartSmtp, check_password, free_port

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def report_notice(key: str = "report/2026-11-28/report_ready") -> Notice:
    """Return a Japanese report notice with one binary attachment."""
    return Notice(
        key=key,
        subject="売上レポート 2026-11-28 <全店>",
        text="本日の売上は ¥1,234,567 です。\n詳細は添付をご覧ください & ご確認を。",
        attachments=(Attachment("report_20261128.xlsx", bytes(range(256)) * 8, XLSX),),
        link="https://example.com/out/report_20261128.xlsx?X-Amz-Signature=abc&x=1",
    )


def smtp_channel(port: int, **kwargs: Any) -> SmtpChannel:
    """Return an SmtpChannel to 127.0.0.1:port, plain and without login unless told."""
    settings: dict[str, Any] = {
        "tls": "none",
        "user": None,
        "password": None,
        "mail_from": "ochinai@example.com",
        "mail_to": ["sales@example.com", "経理 <keiri@example.com>"],
        "timeout": 5,
    }
    settings.update(kwargs)
    return SmtpChannel("127.0.0.1", port, **settings)


def assert_no_secret(text: str) -> None:
    """Fail if ``text`` shows any part of the webhook's path or the SMTP password."""
    assert "SeCrEtToKeN" not in text
    assert "services" not in text
    assert "T0AAAAAAA" not in text
    assert PASSWORD not in text


# --- SMTP tests -----------------------------------------------------------------


def test_mail_arrives_with_japanese_subject_body_and_attachment(start_smtp: StartSmtp) -> None:
    """The server receives From, To, the Japanese subject and body, and the exact attachment."""
    inbox, port = start_smtp()
    notice = report_notice()
    smtp_channel(port).send(notice)

    mail_from, rcpt_tos, _ = inbox.mails[0]
    assert mail_from == "ochinai@example.com"
    assert rcpt_tos == ["sales@example.com", "keiri@example.com"]
    msg = inbox.parsed()
    assert msg["From"] == "ochinai@example.com"
    assert msg["To"] == "sales@example.com, 経理 <keiri@example.com>"
    assert msg["Subject"] == "売上レポート 2026-11-28 <全店>"
    assert msg["X-Ochinai-Key"] == "report/2026-11-28/report_ready"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_body(("plain",))
    assert body is not None
    content = body.get_content()
    assert "本日の売上は ¥1,234,567 です。" in content
    assert notice.link is not None and notice.link in content
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "report_20261128.xlsx"
    assert attachment.get_content_type() == XLSX
    assert attachment.get_payload(decode=True) == bytes(range(256)) * 8
    # Every line stays 7-bit, so a relay without 8BITMIME passes it unchanged.
    assert inbox.mails[0][2].isascii()


def test_message_id_is_stable_per_key(start_smtp: StartSmtp) -> None:
    """Two sends of one key carry one Message-ID; another key gets another."""
    inbox, port = start_smtp()
    channel = smtp_channel(port)
    channel.send(report_notice("report/2026-11-28/report_ready"))
    channel.send(report_notice("report/2026-11-28/report_ready"))
    channel.send(report_notice("report/2026-11-29/report_ready"))

    ids = [inbox.parsed(i)["Message-ID"] for i in range(3)]
    assert ids[0] == ids[1] == message_id("report/2026-11-28/report_ready")
    assert ids[2] != ids[0]
    assert ids[0].endswith("@ochinai>") and len(ids[0]) == len("<@ochinai>") + 32


# aiosmtpd warns about AUTH without TLS, which is exactly what these two tests set up.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_with_right_password_delivers(start_smtp: StartSmtp) -> None:
    """A server that requires AUTH takes the mail after a login with the right password."""
    inbox, port = start_smtp(
        authenticator=check_password, auth_require_tls=False, auth_required=True
    )
    smtp_channel(port, user="ochinai", password=PASSWORD).send(report_notice())
    assert len(inbox.mails) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_wrong_password_is_permanent(start_smtp: StartSmtp) -> None:
    """A refused login is permanent, names the server and never shows the password."""
    inbox, port = start_smtp(
        authenticator=check_password, auth_require_tls=False, auth_required=True
    )
    channel = smtp_channel(port, user="ochinai", password=PASSWORD + "x")
    with pytest.raises(PermanentError) as caught:
        channel.send(report_notice())
    assert f"smtp://127.0.0.1:{port}" in str(caught.value)
    assert "OCHINAI_SMTP_PASSWORD" in str(caught.value)
    assert_no_secret(str(caught.value))
    assert inbox.mails == []


def test_starttls_delivers_with_trusted_certificate(start_smtp: StartSmtp, cert: Cert) -> None:
    """STARTTLS with a trusted certificate upgrades, logs in and delivers."""
    inbox, port = start_smtp(
        tls_context=cert.server_context(),
        require_starttls=True,
        authenticator=check_password,
        auth_required=True,
    )
    channel = smtp_channel(
        port, tls="starttls", user="ochinai", password=PASSWORD, ssl_context=cert.client_context()
    )
    channel.send(report_notice())
    assert inbox.parsed()["Subject"] == "売上レポート 2026-11-28 <全店>"


def test_starttls_with_untrusted_certificate_is_permanent(
    start_smtp: StartSmtp, cert: Cert
) -> None:
    """The default context rejects a self-signed certificate and nothing is sent."""
    inbox, port = start_smtp(tls_context=cert.server_context(), require_starttls=True)
    with pytest.raises(PermanentError, match="certificate not trusted"):
        smtp_channel(port, tls="starttls").send(report_notice())
    assert inbox.mails == []


def test_implicit_tls_delivers(start_smtp: StartSmtp, cert: Cert) -> None:
    """tls="ssl" speaks TLS from the first byte (SMTPS) and delivers."""
    inbox, port = start_smtp(ssl_context=cert.server_context())
    smtp_channel(port, tls="ssl", ssl_context=cert.client_context()).send(report_notice())
    assert len(inbox.mails) == 1


def test_plain_mail_to_server_requiring_starttls_is_permanent(
    start_smtp: StartSmtp, cert: Cert
) -> None:
    """A server that insists on STARTTLS refuses tls="none" with 530, which is permanent."""
    inbox, port = start_smtp(tls_context=cert.server_context(), require_starttls=True)
    with pytest.raises(PermanentError, match="530"):
        smtp_channel(port).send(report_notice())
    assert inbox.mails == []


def test_recipient_refused_is_permanent(start_smtp: StartSmtp) -> None:
    """Every recipient refused with 550 is permanent and names the addresses."""
    _, port = start_smtp(Inbox(rcpt_reply="550 5.1.1 No such user"))
    with pytest.raises(PermanentError) as caught:
        smtp_channel(port).send(report_notice())
    message = str(caught.value)
    assert "sales@example.com" in message and "550 5.1.1 No such user" in message
    assert "OCHINAI_MAIL_TO" in message


def test_one_recipient_refused_is_reported_after_the_others_got_it(start_smtp: StartSmtp) -> None:
    """A partly refused mail reaches the others and still fails, naming the refused address."""
    inbox, port = start_smtp(Inbox(refuse={"keiri@example.com": "550 5.1.1 No such user"}))
    with pytest.raises(PermanentError) as caught:
        smtp_channel(port).send(report_notice())
    assert [rcpt for _, rcpt, _ in inbox.mails] == [["sales@example.com"]]
    assert "keiri@example.com (550 5.1.1 No such user)" in str(caught.value)
    assert "sales@example.com" not in str(caught.value)


def test_greylisted_recipient_is_transient(start_smtp: StartSmtp) -> None:
    """Recipients refused with 451 (greylisting) are worth another try."""
    _, port = start_smtp(Inbox(rcpt_reply="451 4.7.1 Greylisted, try again later"))
    with pytest.raises(TransientError, match="451"):
        smtp_channel(port).send(report_notice())


def test_data_answered_451_is_transient(start_smtp: StartSmtp) -> None:
    """A 451 answer to the message itself is transient and names the server."""
    _, port = start_smtp(Inbox(data_reply="451 4.3.0 Local error, try later"))
    with pytest.raises(TransientError) as caught:
        smtp_channel(port).send(report_notice())
    assert f"smtp://127.0.0.1:{port}" in str(caught.value)
    assert caught.value.exit_code == EX_TEMPFAIL


def test_data_answered_554_is_permanent(start_smtp: StartSmtp) -> None:
    """A 5xx answer to the message itself is permanent."""
    _, port = start_smtp(Inbox(data_reply="554 5.6.0 Message rejected as spam"))
    with pytest.raises(PermanentError, match="554"):
        smtp_channel(port).send(report_notice())


def test_smtp_connection_refused_is_transient() -> None:
    """A closed port is transient and names smtp://host:port."""
    port = free_port()
    with pytest.raises(TransientError, match=rf"smtp://127\.0\.0\.1:{port}: connection failed"):
        smtp_channel(port, user="ochinai", password=PASSWORD).send(report_notice())


@pytest.mark.parametrize(
    ("mail_from", "mail_to", "setting"),
    [("", ["a@example.com"], "OCHINAI_MAIL_FROM"), ("b@example.com", [], "OCHINAI_MAIL_TO")],
)
def test_smtp_requires_sender_and_recipient(
    mail_from: str, mail_to: list[str], setting: str
) -> None:
    """A missing sender or recipient list is a ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=setting):
        smtp_channel(25, mail_from=mail_from, mail_to=mail_to)


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"mail_to": ["sales team"]}, "OCHINAI_MAIL_TO: 'sales team' is not a mail address"),
        ({"mail_from": "ochinai"}, "OCHINAI_MAIL_FROM: 'ochinai' is not a mail address"),
        ({"user": "ochinai", "password": "パスワード"}, "OCHINAI_SMTP_PASSWORD"),
        ({"tls": "tls"}, "OCHINAI_SMTP_TLS"),
    ],
)
def test_smtp_rejects_settings_it_cannot_use(settings: dict[str, Any], setting: str) -> None:
    """Addresses without a domain, a non-ASCII password or an unknown TLS mode fail at start."""
    with pytest.raises(ConfigError, match=setting) as caught:
        smtp_channel(25, **settings)
    assert "パスワード" not in str(caught.value)


# --- webhook tests ----------------------------------------------------------------


def test_webhook_posts_slack_json_with_idempotency_key(hook: Hook) -> None:
    """The hook receives Slack mrkdwn text, JSON content type and the notice key."""
    WebhookChannel(hook.url).send(report_notice())

    ((headers, body),) = hook.received
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "report/2026-11-28/report_ready"
    assert headers["User-Agent"].startswith("ochinai/")
    text = json.loads(body)["text"]
    assert text.splitlines() == [
        "*売上レポート 2026-11-28 &lt;全店&gt;*",
        "本日の売上は ¥1,234,567 です。",
        "詳細は添付をご覧ください &amp; ご確認を。",
        "Attachments (not sent by webhook): report_20261128.xlsx",
        "https://example.com/out/report_20261128.xlsx?X-Amz-Signature=abc&x=1",
    ]


def test_webhook_500_is_transient(hook: Hook) -> None:
    """A 5xx answer is transient and names only the hook's scheme and host."""
    hook.status = 500
    with pytest.raises(TransientError) as caught:
        WebhookChannel(hook.url).send(report_notice())
    assert str(caught.value).startswith("webhook http://127.0.0.1: HTTP 500")
    assert_no_secret(str(caught.value))


def test_webhook_429_carries_retry_after(hook: Hook) -> None:
    """A 429 with Retry-After: 7 is transient with retry_after 7."""
    hook.status, hook.headers = 429, {"Retry-After": "7"}
    with pytest.raises(TransientError) as caught:
        WebhookChannel(hook.url).send(report_notice())
    assert caught.value.retry_after == 7
    assert_no_secret(str(caught.value))


@pytest.mark.parametrize(
    ("status", "body", "hint"),
    [
        (403, b"action_prohibited", "HTTP 403"),
        (404, b"no_service", "revoked"),
        (400, b"invalid_payload", "HTTP 400"),
        (301, b"", "HTTP 301"),
    ],
)
def test_webhook_client_errors_are_permanent(
    hook: Hook, status: int, body: bytes, hint: str
) -> None:
    """403, 404 (hook revoked), other 4xx and redirects are permanent, with the hook's reply."""
    hook.status, hook.body = status, body
    hook.headers = {"Location": hook.url + "/moved"} if status == 301 else {}
    with pytest.raises(PermanentError) as caught:
        WebhookChannel(hook.url).send(report_notice())
    assert hint in str(caught.value)
    assert body.decode() in str(caught.value)
    assert_no_secret(str(caught.value))
    assert len(hook.received) == 1


def test_webhook_connection_refused_is_transient() -> None:
    """A closed port is transient and the message hides the token."""
    url = f"http://127.0.0.1:{free_port()}/services/{TOKEN}"
    with pytest.raises(TransientError) as caught:
        WebhookChannel(url).send(report_notice())
    assert str(caught.value).startswith("webhook http://127.0.0.1: connection failed")
    assert_no_secret(str(caught.value))
    assert caught.value.__suppress_context__


def test_webhook_timeout_is_transient(hook: Hook) -> None:
    """A hook slower than the client timeout is transient and the message hides the token."""
    hook.block = threading.Event()
    with pytest.raises(TransientError, match="timed out") as caught:
        WebhookChannel(hook.url, timeout=0.2).send(report_notice())
    assert_no_secret(str(caught.value))


def test_webhook_rejects_non_http_url_without_echoing_it() -> None:
    """A malformed hook URL is a ConfigError that does not repeat the URL."""
    with pytest.raises(ConfigError) as caught:
        WebhookChannel(f"hooks.example.com/services/{TOKEN}")
    assert "OCHINAI_WEBHOOK_URL" in str(caught.value)
    assert_no_secret(str(caught.value))


def test_notifier_failing_webhook_does_not_stop_mail(
    hook: Hook, start_smtp: StartSmtp, caplog: pytest.LogCaptureFixture
) -> None:
    """With the hook failing, the mail still arrives and DeliveryFailed lists both channels."""
    inbox, port = start_smtp()
    hook.status = 503
    notifier = Notifier([WebhookChannel(hook.url), smtp_channel(port)])
    caplog.set_level(logging.INFO, logger="ochinai.notify")

    with pytest.raises(DeliveryFailed) as caught:
        notifier.send(report_notice())

    assert len(inbox.mails) == 1
    failure = caught.value
    assert isinstance(failure, TransientError) and failure.exit_code == EX_TEMPFAIL
    assert [(d.channel, d.ok) for d in failure.deliveries] == [("webhook", False), ("smtp", True)]
    assert failure.deliveries[0].error is not None and "HTTP 503" in failure.deliveries[0].error
    assert "report/2026-11-28/report_ready: 1 of 2 channels failed" in str(failure)
    records = [r for r in caplog.records if r.name == "ochinai.notify"]
    assert [(r.__dict__["channel"], r.__dict__["ok"], r.levelname) for r in records] == [
        ("webhook", False, "WARNING"),
        ("smtp", True, "INFO"),
    ]
    assert {r.__dict__["notice_key"] for r in records} == {"report/2026-11-28/report_ready"}
    assert_no_secret(caplog.text + str(failure) + repr(failure.deliveries))


def test_notifier_all_permanent_failures_raise_permanent(hook: Hook, start_smtp: StartSmtp) -> None:
    """When every failure needs a human, DeliveryFailed is permanent (exit 77)."""
    _, port = start_smtp(Inbox(rcpt_reply="550 No such user"))
    hook.status = 403
    notifier = Notifier([WebhookChannel(hook.url), smtp_channel(port)])
    with pytest.raises(DeliveryFailed) as caught:
        notifier.send(report_notice())
    assert isinstance(caught.value, PermanentError)
    assert caught.value.exit_code == EX_NOPERM
    assert [d.ok for d in caught.value.deliveries] == [False, False]


def test_notifier_passes_on_longest_retry_after(hook: Hook) -> None:
    """A transient DeliveryFailed keeps the hook's Retry-After for the retry policy."""
    hook.status, hook.headers = 429, {"Retry-After": "7"}
    with pytest.raises(DeliveryFailed) as caught:
        Notifier([WebhookChannel(hook.url)]).send(report_notice())
    assert isinstance(caught.value, TransientError) and caught.value.retry_after == 7


def test_notifier_success_returns_deliveries(hook: Hook, start_smtp: StartSmtp) -> None:
    """When every channel takes the notice, send returns one ok Delivery per channel."""
    inbox, port = start_smtp()
    deliveries = Notifier([WebhookChannel(hook.url), smtp_channel(port)]).send(report_notice())
    assert [(d.channel, d.ok, d.error) for d in deliveries] == [
        ("webhook", True, None),
        ("smtp", True, None),
    ]
    assert len(hook.received) == 1 and len(inbox.mails) == 1


class BrokenChannel:
    """A channel with a bug: it raises something that is none of our error classes."""

    name = "broken"

    def send(self, notice: Notice) -> None:
        """Fail the way an unexpected bug would."""
        raise RuntimeError("boom")


def test_notifier_counts_unexpected_errors_as_transient(start_smtp: StartSmtp) -> None:
    """A channel raising an unknown error does not stop the next one and is retried later."""
    inbox, port = start_smtp()
    with pytest.raises(DeliveryFailed) as caught:
        Notifier([BrokenChannel(), smtp_channel(port)]).send(report_notice())
    assert isinstance(caught.value, TransientError)
    assert [(d.channel, d.ok, d.error) for d in caught.value.deliveries] == [
        ("broken", False, "RuntimeError('boom')"),
        ("smtp", True, None),
    ]
    assert len(inbox.mails) == 1


def test_notifier_without_channels_sends_nothing() -> None:
    """A Notifier with no channels is not configured and returns no deliveries."""
    notifier = Notifier([])
    assert not notifier.configured
    assert notifier.send(report_notice()) == []


def test_notifier_from_config_builds_configured_channels() -> None:
    """The factory builds the webhook and/or SMTP channel that has settings, and no other."""
    assert not notifier_from_config().configured
    both = notifier_from_config(
        webhook_url=f"https://hooks.example.com/services/{TOKEN}",
        smtp_host="mail.example.com",
        smtp_tls="ssl",
        mail_from="ochinai@example.com",
        mail_to=["sales@example.com"],
        timeout=3,
    )
    assert [c.name for c in both.channels] == ["webhook", "smtp"]
    smtp = both.channels[1]
    assert isinstance(smtp, SmtpChannel) and (smtp.port, smtp.timeout) == (465, 3)
    hook_only = notifier_from_config(webhook_url=f"https://hooks.example.com/services/{TOKEN}")
    assert [c.name for c in hook_only.channels] == ["webhook"]


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"mail_to": ["sales@example.com"]}, "OCHINAI_SMTP_HOST"),
        ({"smtp_host": "mail.example.com", "mail_to": ["a@example.com"]}, "OCHINAI_MAIL_FROM"),
        ({"smtp_host": "mail.example.com", "mail_from": "a@example.com"}, "OCHINAI_MAIL_TO"),
        ({"smtp_host": "m", "smtp_tls": "tls", "mail_from": "a", "mail_to": ["b"]}, "SMTP_TLS"),
    ],
)
def test_notifier_from_config_rejects_half_configured_mail(
    settings: dict[str, Any], setting: str
) -> None:
    """Half-configured mail is a ConfigError naming the missing or wrong setting."""
    with pytest.raises(ConfigError, match=setting):
        notifier_from_config(**settings)


def test_notice_key_joins_job_date_and_kind() -> None:
    """notice_key gives job/date/kind from a date or an ISO string."""
    assert notice_key("report", dt.date(2026, 11, 28), "report_ready") == (
        "report/2026-11-28/report_ready"
    )
    assert notice_key("monitor", "2026-11-28", "price_changed") == (
        "monitor/2026-11-28/price_changed"
    )


# --- send once ------------------------------------------------------------------------


class Recorder:
    """A channel that keeps what it was given, and fails while ``failing`` is set.

    ``on_send``, when set, is called with each notice before it is taken or refused.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = False
        self.notices: list[Notice] = []
        self.on_send: Callable[[Notice], None] | None = None

    def send(self, notice: Notice) -> None:
        """Take the notice, or refuse it the way a flaky server would."""
        if self.on_send is not None:
            self.on_send(notice)
        if self.failing:
            raise TransientError(f"{self.name}: HTTP 503, will be retried")
        self.notices.append(notice)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Guard:
    """A run's lock as the store sees it: its term, and whether it was lost."""

    fence: Fence | None
    lost: bool = False

    def check_writable(self) -> None:
        """Refuse writes once the lock is lost."""
        if self.lost:
            raise LockLost("lock lost (test)")


def send_once(
    moto_ops: Any,
    *channels: Channel,
    dry_run: bool = False,
    run_id: str = "r-1",
    store: Store | None = None,
    clock: Clock | None = None,
) -> SendOnce:
    """Send-once over the moto bucket ``ops`` (or ``store``) with the given channels."""
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    store = store or Store(moto_ops, "ops")
    return SendOnce(store, Notifier(channels), run_id=run_id, dry_run=dry_run, **kwargs)


def sent_keys(moto_ops: Any) -> list[str]:
    listed = moto_ops.list_objects_v2(Bucket="ops", Prefix="_sent/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_notice_goes_out_once_per_channel_over_many_runs(moto_ops: Any) -> None:
    """The first send delivers and records per channel; later sends deliver nothing more."""
    hook, mail = Recorder("webhook"), Recorder("smtp")
    notice = report_notice("report/2026-11-28/report_ready-abc")
    assert send_once(moto_ops, hook, mail).send(notice) == "sent"
    assert send_once(moto_ops, hook, mail).send(notice) == "already_sent"
    assert (len(hook.notices), len(mail.notices)) == (1, 1)
    assert sent_keys(moto_ops) == [
        "_sent/report/2026-11-28/report_ready-abc/smtp.json",
        "_sent/report/2026-11-28/report_ready-abc/webhook.json",
    ]
    record = json.loads(
        moto_ops.get_object(Bucket="ops", Key=sent_keys(moto_ops)[0])["Body"].read()
    )
    assert record == {"notice": notice.key, "channel": "smtp", "run_id": "r-1", "version": 1}


def test_a_failed_channel_is_sent_again_and_only_it(moto_ops: Any) -> None:
    """One channel failing raises; the next run sends on that channel alone, with the same id."""
    hook, mail = Recorder("webhook"), Recorder("smtp")
    hook.failing = True
    notice = report_notice("monitor/2026-11-28/price-x")
    with pytest.raises(DeliveryFailed):
        send_once(moto_ops, hook, mail).send(notice)
    assert send_once(moto_ops, hook, mail).pending(notice.key, notice.kind) == ["webhook"]
    hook.failing = False
    assert send_once(moto_ops, hook, mail).send(notice) == "sent"
    assert [n.key for n in hook.notices] == [notice.key] and len(mail.notices) == 1


def test_send_once_without_channels_or_in_a_dry_run_sends_and_records_nothing(
    moto_ops: Any,
) -> None:
    """No channel: not_configured; a dry run: dry_run; neither records a delivery."""
    assert send_once(moto_ops).send(report_notice()) == "not_configured"
    channel = Recorder("webhook")
    assert send_once(moto_ops, channel, dry_run=True).send(report_notice()) == "dry_run"
    assert channel.notices == [] and sent_keys(moto_ops) == []


@pytest.mark.parametrize("bad", ["../x", "a//b", "/abs", "a/../b", "space id"])
def test_a_notice_id_must_be_a_safe_key(moto_ops: Any, bad: str) -> None:
    """An id that could leave _sent/ or make an odd key is refused before anything is sent."""
    channel = Recorder("webhook")
    with pytest.raises(ValueError, match="not a safe key"):
        send_once(moto_ops, channel).send(report_notice(bad))
    with pytest.raises(ValueError, match="not a safe key"):  # also when nothing would be sent
        send_once(moto_ops, channel, dry_run=True).send(report_notice(bad))
    assert channel.notices == []


def test_a_jobs_notice_ids_begin_with_its_name(moto_ops: Any) -> None:
    """Send-once of a job refuses an id outside the job's own namespace."""
    once = SendOnce(Store(moto_ops, "ops"), Notifier([]), run_id="r", dry_run=False, job="report")
    with pytest.raises(ValueError, match="does not begin with report/"):
        once.send(report_notice("monitor/2026-11-28/x"))


# --- send once: claims ------------------------------------------------------------------

NOTICE_ID = "report/2026-11-28/report_ready-abc"
CLAIM = f"_sent/{NOTICE_ID}/webhook.claim.json"
SECOND = dt.timedelta(seconds=1)


def test_two_senders_at_once_deliver_once(moto_ops: Any) -> None:
    """A second sender that passes pending() while the first is sending finds the first
    one's claim and skips the channel: the hook gets the notice once."""
    hook = Recorder("webhook")
    notice = report_notice(NOTICE_ID)
    first = send_once(moto_ops, hook, run_id="r-1")
    second = send_once(moto_ops, hook, run_id="r-2")
    outcomes: list[str] = []

    def second_sender_sends_too(_: Notice) -> None:
        if outcomes:
            return  # the second sender's own delivery, if it made one
        outcomes.append(
            "pending" if second.pending(notice.key, notice.kind) == ["webhook"] else "-"
        )
        outcomes.append(second.send(notice))

    hook.on_send = second_sender_sends_too
    assert first.send(notice) == "sent"
    assert outcomes == ["pending", "claimed"]
    assert [n.key for n in hook.notices] == [notice.key]
    # The claim is gone once the delivery is recorded.
    assert sent_keys(moto_ops) == [f"_sent/{NOTICE_ID}/webhook.json"]


def test_senders_at_once_split_the_channels_and_each_goes_out_once(moto_ops: Any) -> None:
    """Two channels, two senders at once: the second sends the mail the first had not
    claimed yet ("sent" though it skipped the hook); the first then finds the mail recorded."""
    hook, mail = Recorder("webhook"), Recorder("smtp")
    notice = report_notice(NOTICE_ID)
    first = send_once(moto_ops, hook, mail, run_id="r-1")
    second = send_once(moto_ops, hook, mail, run_id="r-2")
    outcomes: list[str] = []

    def second_sender_sends_too(_: Notice) -> None:
        if not outcomes:
            outcomes.append("started")  # once: the second sender may come back here
            outcomes.append(second.send(notice))

    hook.on_send = second_sender_sends_too
    assert first.send(notice) == "sent"
    assert outcomes == ["started", "sent"]
    assert (len(hook.notices), len(mail.notices)) == (1, 1)
    assert sent_keys(moto_ops) == [
        f"_sent/{NOTICE_ID}/smtp.json",
        f"_sent/{NOTICE_ID}/webhook.json",
    ]


@pytest.mark.parametrize("kind", ["webhook", "smtp"])
def test_a_send_not_recorded_is_repeated_once_after_the_bound_with_the_same_key(
    moto_ops: Any, start_smtp: StartSmtp, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The record of a send fails: within the bound its claim stops every other sender;
    past it, one sender sends again, with the same key and Message-ID, and records it."""
    clock = Clock()
    notice = report_notice(NOTICE_ID)
    channel: Channel
    if kind == "smtp":
        inbox, port = start_smtp()
        channel = smtp_channel(port)

        def keys() -> list[str]:
            return [str(inbox.parsed(i)["X-Ochinai-Key"]) for i in range(len(inbox.mails))]
    else:
        hook = channel = Recorder("webhook")

        def keys() -> list[str]:
            return [n.key for n in hook.notices]

    put = Store.put

    def record_fails(self: Store, key: str, *args: Any, **kwargs: Any) -> Any:
        if key == f"_sent/{NOTICE_ID}/{kind}.json":
            raise TransientError(f"{key}: injected")
        return put(self, key, *args, **kwargs)

    monkeypatch.setattr(Store, "put", record_fails)
    with pytest.raises(TransientError, match="injected"):
        send_once(moto_ops, channel, run_id="r-1", clock=clock).send(notice)
    monkeypatch.setattr(Store, "put", put)
    assert keys() == [notice.key]

    clock.now += CLAIM_TIMEOUT - SECOND
    within = send_once(moto_ops, channel, run_id="r-2", clock=clock)
    assert within.pending(notice.key, notice.kind) == [kind]
    assert within.send(notice) == "claimed"
    assert keys() == [notice.key]

    clock.now += 2 * SECOND
    assert send_once(moto_ops, channel, run_id="r-3", clock=clock).send(notice) == "sent"
    assert send_once(moto_ops, channel, run_id="r-4", clock=clock).send(notice) == "already_sent"
    assert keys() == [notice.key, notice.key]
    if kind == "smtp":
        ids = [inbox.parsed(i)["Message-ID"] for i in range(2)]
        assert ids == [message_id(notice.key)] * 2
    assert sent_keys(moto_ops) == [f"_sent/{NOTICE_ID}/{kind}.json"]


def test_a_claim_of_a_lower_term_of_the_same_lock_is_taken_over_at_once(moto_ops: Any) -> None:
    """A run stopped mid-send under term 3 leaves its claim: a run of another lock waits
    for it, and the run holding term 4 of the same lock takes it over at once."""
    clock = Clock()
    notice = report_notice(NOTICE_ID)
    hook = Recorder("webhook")

    def stopped(_: Notice) -> None:
        raise Terminated("SIGTERM")

    hook.on_send = stopped
    old = Store(moto_ops, "ops", fence=Fence("lock-a", 3))
    with pytest.raises(Terminated):
        send_once(moto_ops, hook, run_id="r-3", store=old, clock=clock).send(notice)
    hook.on_send = None
    claim = json.loads(moto_ops.get_object(Bucket="ops", Key=CLAIM)["Body"].read())
    assert claim == {
        "notice": notice.key,
        "channel": "webhook",
        "run_id": "r-3",
        "claimed": "2026-11-28T09:00:00+00:00",
        "fence": 3,
        "version": 1,
    }

    other_lock = Store(moto_ops, "ops", fence=Fence("lock-b", 9))
    waits = send_once(moto_ops, hook, run_id="r-b", store=other_lock, clock=clock)
    assert waits.send(notice) == "claimed"
    assert hook.notices == []

    new = Store(moto_ops, "ops", fence=Fence("lock-a", 4))
    assert send_once(moto_ops, hook, run_id="r-4", store=new, clock=clock).send(notice) == "sent"
    assert [n.key for n in hook.notices] == [notice.key]
    assert sent_keys(moto_ops) == [f"_sent/{NOTICE_ID}/webhook.json"]


def test_a_failed_send_deletes_its_claim_so_the_next_run_sends_at_once(moto_ops: Any) -> None:
    """The claim is there while the channel sends; the failure deletes it, and the next
    sender, at the same moment, sends at once."""
    clock = Clock()
    notice = report_notice(NOTICE_ID)
    hook = Recorder("webhook")
    hook.failing = True
    seen: list[list[str]] = []
    hook.on_send = lambda _: seen.append(sent_keys(moto_ops))
    with pytest.raises(DeliveryFailed) as caught:
        send_once(moto_ops, hook, run_id="r-1", clock=clock).send(notice)
    assert [(d.channel, d.ok) for d in caught.value.deliveries] == [("webhook", False)]
    assert seen == [[CLAIM]]
    assert sent_keys(moto_ops) == []

    hook.failing = False
    assert send_once(moto_ops, hook, run_id="r-2", clock=clock).send(notice) == "sent"
    assert [n.key for n in hook.notices] == [notice.key]


def test_a_run_that_lost_its_lock_after_claiming_sends_nothing(
    moto_ops: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is lost between the claim and the send: LockLost, nothing sent, and the
    claim stays for the next holder of the lock, who takes it over at once."""
    notice = report_notice(NOTICE_ID)
    hook = Recorder("webhook")
    guard = Guard(Fence("lock-a", 5))
    put = Store.put

    def claim_then_lose_the_lock(self: Store, key: str, *args: Any, **kwargs: Any) -> Any:
        result = put(self, key, *args, **kwargs)
        guard.lost = guard.lost or key == CLAIM
        return result

    monkeypatch.setattr(Store, "put", claim_then_lose_the_lock)
    lost = send_once(moto_ops, hook, store=Store(moto_ops, "ops").guarded(guard))
    with pytest.raises(LockLost):
        lost.send(notice)
    monkeypatch.setattr(Store, "put", put)
    assert hook.notices == [] and sent_keys(moto_ops) == [CLAIM]

    new = Store(moto_ops, "ops").guarded(Guard(Fence("lock-a", 6)))
    assert send_once(moto_ops, hook, run_id="r-6", store=new).send(notice) == "sent"
    assert len(hook.notices) == 1
