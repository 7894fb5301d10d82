"""Notices: the webhook and SMTP channels, the notifier that routes them, and send-once, in
one file because the three share the Notice, the delivery and the error classes."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import hashlib
import json
import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal, Protocol, cast, get_args
from urllib.parse import urlsplit

from ochinai.runtime.cancel import Terminated
from ochinai.runtime.errors import (
    ConfigError,
    DataError,
    ExternalError,
    LockLost,
    OchinaiError,
    PermanentError,
    TransientError,
    http_status_error,
)
from ochinai.runtime.fence import Fence
from ochinai.runtime.http import HttpClient
from ochinai.runtime.jsonrecord import VERSION, parse_object
from ochinai.runtime.retry import parse_retry_after
from ochinai.runtime.storage import ObjectNotFound, PreconditionFailed, Store, StoredObject

log = logging.getLogger("ochinai.notify")

SmtpTls = Literal["starttls", "ssl", "none"]
_SMTP_DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
WEBHOOK_TIMEOUT = 10.0
SMTP_TIMEOUT = 30.0
SENT_PREFIX = "_sent"
SENT_VERSION = 1  # of a claim and of a delivery's record under _sent/
# A claim older than this no longer stops another run from sending: its sender stopped
# (crashed, or failed to record) after claiming; a send itself takes seconds, not minutes.
CLAIM_TIMEOUT = dt.timedelta(minutes=15)
JSON = "application/json"
# A notice id is part of object keys: letters, digits and . _ - in /-separated segments.
_NOTICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


@dataclass(frozen=True)
class Attachment:
    """A file sent with a notice by mail (a webhook only names it)."""

    filename: str
    content: bytes
    content_type: str


# What a notice is about; OCHINAI_ROUTES sends each kind to its receivers. These are
# the runtime's own (a job's incidents, and status's); jobs declare theirs (Job.notices).
INCIDENT_KINDS = ("failure", "reminder", "recovery", "stale")


@dataclass(frozen=True)
class Notice:
    """One notification; ``key`` identifies it, so a resend carries the same key."""

    key: str
    subject: str
    text: str
    severity: str = "info"
    attachments: tuple[Attachment, ...] = ()
    link: str | None = None
    kind: str = ""  # INCIDENT_KINDS or a job's (Job.notices); "": the default receiver's


def notice_key(job: str, date: dt.date | str, kind: str) -> str:
    """Return the idempotency key of a notice, e.g. ``report/2026-11-28/report_ready``."""
    day = date.isoformat() if isinstance(date, dt.date) else date
    return f"{job}/{day}/{kind}"


@dataclass(frozen=True)
class Delivery:
    """What happened to one notice on one channel; ``error`` never holds a secret."""

    channel: str
    ok: bool
    error: str | None


class Channel(Protocol):
    """Anything that delivers a notice or raises one of our error classes."""

    name: str

    def send(self, notice: Notice) -> None: ...


class DeliveryFailed(ExternalError):
    """At least one channel did not take the notice; ``deliveries`` lists every channel."""

    deliveries: Sequence[Delivery] = ()  # set by Notifier.send on each instance


class DeliveryFailedTransient(DeliveryFailed, TransientError):
    """A delivery failed in a way the next run may fix (network, 5xx, 429, SMTP 4xx)."""


class DeliveryFailedPermanent(DeliveryFailed, PermanentError):
    """Every failed delivery needs a human (revoked hook, bad password, refused address)."""


# Slack reads &, < and > as control characters in mrkdwn and asks for these three
# escapes only (https://api.slack.com/reference/surfaces/formatting#escaping).
_SLACK_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def webhook_text(notice: Notice) -> str:
    """Return the mrkdwn text of ``notice``: bold subject, text, attachment names, link."""
    lines = [f"*{notice.subject.translate(_SLACK_ESCAPES)}*", notice.text.translate(_SLACK_ESCAPES)]
    if notice.attachments:
        names = ", ".join(a.filename.translate(_SLACK_ESCAPES) for a in notice.attachments)
        lines.append(f"Attachments (not sent by webhook): {names}")
    if notice.link:
        lines.append(notice.link)
    return "\n".join(line for line in lines if line)


class WebhookChannel:
    """POST notices to a Slack-compatible incoming webhook; any non-2xx answer is an error."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = WEBHOOK_TIMEOUT,
        http: HttpClient | None = None,
        name: str = "webhook",
        setting: str = "OCHINAI_WEBHOOK_URL",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Never echo the URL: it is a secret even when malformed.
            raise ConfigError(f"{setting}: not an http(s) URL; copy the hook's full URL")
        self._url, self.name, self.setting = url, name, setting
        # Scheme and host only: Slack puts the hook's token in the path.
        self.where = f"webhook {parts.scheme}://{parts.hostname}"
        self._http = (http or HttpClient()).with_options(timeout=(timeout, timeout))

    def send(self, notice: Notice) -> None:
        """Deliver ``notice`` or raise TransientError / PermanentError naming only the host."""
        body = json.dumps({"text": webhook_text(notice)}, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": notice.key}
        # One attempt: Slack does not honour Idempotency-Key, so a retried POST could post
        # twice; the next run sends what did not go out. A redirect would turn the POST
        # into a GET elsewhere: it is reported instead of followed.
        response = self._http.request(
            "POST",
            self._url,
            headers=headers,
            data=body,
            where=self.where,
            retry=False,
            allow_redirects=False,
            any_status=True,
        )
        status, reply = response.status, " ".join(response.text[:200].split())
        if 200 <= status < 300:
            return
        for secret in urlsplit(self._url)[2:4]:  # an error page may echo path and query
            reply = reply.replace(secret, "***") if len(secret) > 1 else reply
        detail = f" ({reply})" if reply else ""
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self._http.now())
        err = http_status_error(status, self.where, retry_after)
        if isinstance(err, TransientError):
            raise TransientError(f"{err}{detail}", retry_after=retry_after)
        hint = "the hook was revoked; create a new one and set" if status == 404 else "check"
        raise PermanentError(f"{err}{detail}; {hint} {self.setting}")


def message_id(key: str) -> str:
    """Return the Message-ID of the notice with ``key``: the same key gives the same ID."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@ochinai>"


class SmtpChannel:
    """Mail notices with smtplib; every SMTP failure becomes TransientError or PermanentError.

    ``tls="none"`` with a ``user`` sends the password in clear text: allowed (a relay on
    the pod network may want it), but the operator's choice. ``ssl_context`` replaces
    the default verifying context, e.g. to trust a private CA.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: SmtpTls,
        user: str | None,
        password: str | None,
        mail_from: str,
        mail_to: list[str],
        timeout: float = SMTP_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "smtp",
        to_setting: str = "OCHINAI_MAIL_TO",
    ) -> None:
        self.name, self.to_setting = name, to_setting
        if not host:
            raise ConfigError("OCHINAI_SMTP_HOST: empty; set the mail server's host name")
        if tls not in get_args(SmtpTls):
            raise ConfigError(f"OCHINAI_SMTP_TLS: {tls!r} is not one of starttls, ssl, none")
        if not mail_from:
            raise ConfigError(f"OCHINAI_MAIL_FROM: empty; set the sender address for {host}")
        if not [to for to in mail_to if to]:
            raise ConfigError(f"{to_setting}: empty; set at least one recipient for {host}")
        if not f"{user}{password}".isascii():  # smtplib would fail at send time, in AUTH
            raise ConfigError("OCHINAI_SMTP_USER / OCHINAI_SMTP_PASSWORD: smtplib needs ASCII")
        self.host, self.port, self.tls, self.timeout = host, port, tls, timeout
        self.user, self._password, self._ssl_context = user, password, ssl_context
        self.mail_from, self.mail_to = mail_from, [to for to in mail_to if to]
        # Headers keep display names ("経理 <keiri@example.com>"); the envelope takes bare
        # addresses, or smtplib would ask the server for SMTPUTF8 because of the name.
        named = [("OCHINAI_MAIL_FROM", mail_from), *((to_setting, a) for a in self.mail_to)]
        self._envelope = [email.utils.parseaddr(given)[1] for _, given in named]
        for (setting, given), addr in zip(named, self._envelope, strict=True):
            if "@" not in addr:
                raise ConfigError(f"{setting}: {given!r} is not a mail address (name@domain)")
        self.where = f"smtp://{host}:{port}"

    def build_message(self, notice: Notice) -> EmailMessage:
        """Return the mail for ``notice``: UTF-8 text, attachments, a Message-ID from its key."""
        msg = EmailMessage()
        # A header must not hold a line break; a subject with one would raise here.
        msg["Subject"] = " ".join(notice.subject.splitlines())
        msg["From"] = self.mail_from
        msg["To"] = ", ".join(self.mail_to)
        msg["Date"] = email.utils.formatdate(usegmt=True)
        msg["Message-ID"] = message_id(notice.key)
        msg["X-Ochinai-Key"] = notice.key
        msg["X-Ochinai-Severity"] = notice.severity
        # RFC 3834 §5: tells vacation responders not to answer a machine.
        msg["Auto-Submitted"] = "auto-generated"
        body = notice.text + (f"\n\n{notice.link}" if notice.link else "") + "\n"
        # base64 keeps non-ASCII text 7-bit clean for relays without 8BITMIME.
        msg.set_content(body, charset="utf-8", cte=None if body.isascii() else "base64")
        for att in notice.attachments:
            main, _, sub = att.content_type.partition("/")
            if not (main and sub):
                main, sub = "application", "octet-stream"
            msg.add_attachment(att.content, main, sub, filename=att.filename)
        return msg

    def send(self, notice: Notice) -> None:
        """Deliver ``notice`` or raise TransientError / PermanentError naming smtp://host:port."""
        msg = self.build_message(notice)
        try:
            refused = self._deliver(msg)
        except OSError as exc:  # smtplib.SMTPException and ssl.SSLError are OSErrors
            raise self._classify(exc) from exc
        if refused:
            raise self._refused(refused, everyone=False)

    def _deliver(self, msg: EmailMessage) -> dict[str, tuple[int, bytes]]:
        context = self._ssl_context or ssl.create_default_context()
        client: smtplib.SMTP
        if self.tls == "ssl":
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.tls == "starttls":
                client.starttls(context=context)
            if self.user:
                client.login(self.user, self._password or "")
            return client.send_message(msg, self._envelope[0], self._envelope[1:])
        finally:
            # Once DATA got its 250 the mail is sent; a failing QUIT must not undo that.
            try:
                client.quit()
            except OSError:
                client.close()

    def _reply(self, code: int, text: bytes | str) -> str:
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        return f"{code} {' '.join(raw.split())[:200]}".strip()

    def _refused(self, refused: dict[str, tuple[int, bytes]], *, everyone: bool) -> OchinaiError:
        listed = ", ".join(f"{to} ({self._reply(*reply)})" for to, reply in refused.items())
        what = f"{self.where}: recipients refused: {listed}"
        what += "" if everyone else "; the other recipients got the mail"
        if any(400 <= code < 500 for code, _ in refused.values()):
            return TransientError(f"{what}; will be retried")
        return PermanentError(f"{what}; fix {self.to_setting}")

    def _classify(self, exc: OSError) -> OchinaiError:
        where = self.where
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return self._refused(exc.recipients, everyone=True)
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = self._reply(exc.smtp_code, exc.smtp_error)
            if not 500 <= exc.smtp_code < 600:  # 4xx, or -1 for an unreadable greeting
                return TransientError(f"{where}: server answered {reply}, will be retried")
            if isinstance(exc, smtplib.SMTPAuthenticationError):
                hint = "check OCHINAI_SMTP_USER and OCHINAI_SMTP_PASSWORD"
                return PermanentError(f"{where}: login refused ({reply}); {hint}")
            return PermanentError(f"{where}: server refused the mail ({reply})")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return TransientError(f"{where}: server closed the connection: {exc}")
        if isinstance(exc, smtplib.SMTPException):
            # STARTTLS or AUTH not offered, no common AUTH mechanism: settings, not luck.
            return PermanentError(f"{where}: {exc}; check OCHINAI_SMTP_TLS and OCHINAI_SMTP_USER")
        if isinstance(exc, ssl.SSLCertVerificationError):
            hint = "check that OCHINAI_SMTP_HOST is a name the certificate lists"
            return PermanentError(f"{where}: TLS certificate not trusted ({exc}); {hint}")
        if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
            return PermanentError(f"{where}: TLS failed ({exc.reason}); check OCHINAI_SMTP_TLS")
        if isinstance(exc, TimeoutError):
            return TransientError(f"{where}: timed out after {self.timeout:g} s")
        return TransientError(f"{where}: connection failed: {type(exc).__name__}: {exc}")


class DryRunChannel:
    """A channel of a dry run: says what it would send, and sends nothing."""

    def __init__(self, channel: Channel) -> None:
        self.name = channel.name

    def send(self, notice: Notice) -> None:
        """Log the notice instead of delivering it."""
        log.info(
            "dry run: would send %r",
            notice.subject,
            extra={"channel": self.name, "notice_key": notice.key, "kind": notice.kind},
        )


DEFAULT = "default"  # the receiver of every kind without a route
NOWHERE = "none"  # a route to it sends that kind nowhere


class Notifier:
    """Send each notice to the receivers its kind is routed to, on each of their channels;
    one failing channel never stops the others.

    ``channels`` are the default receiver's (OCHINAI_WEBHOOK_URL and OCHINAI_MAIL_TO);
    ``receivers`` the named ones, each a list of channels; ``routes`` sends a kind to
    receivers by name (``runtime/routes.py``). A kind without a route goes to the
    default receiver; a route to ``none`` sends that kind nowhere.
    """

    def __init__(
        self,
        channels: Sequence[Channel] = (),
        *,
        receivers: Mapping[str, Sequence[Channel]] | None = None,
        routes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.receivers = {
            DEFAULT: list(channels),
            **{k: list(v) for k, v in (receivers or {}).items()},
        }
        self.routes = {kind: list(names) for kind, names in (routes or {}).items()}

    @property
    def channels(self) -> list[Channel]:
        """Every receiver's channels, each once."""
        return list({id(c): c for names in self.receivers.values() for c in names}.values())

    @property
    def configured(self) -> bool:
        """Some receiver has a channel."""
        return bool(self.channels)

    def channels_for(self, kind: str) -> list[Channel]:
        """The channels a notice of ``kind`` goes to, each once."""
        names = self.routes.get(kind, [DEFAULT])
        found = [c for name in names for c in self.receivers.get(name, [])]
        return list({id(c): c for c in found}.values())

    def configured_for(self, kind: str) -> bool:
        """A notice of ``kind`` goes somewhere."""
        return bool(self.channels_for(kind))

    def dry(self) -> Notifier:
        """The same routes, each channel only logging what it would send (``--dry-run``)."""
        dry = {id(c): DryRunChannel(c) for c in self.channels}
        receivers = {name: [dry[id(c)] for c in found] for name, found in self.receivers.items()}
        default = receivers.pop(DEFAULT)
        return Notifier(default, receivers=receivers, routes=self.routes)

    def send(self, notice: Notice) -> list[Delivery]:
        """Try every channel of the notice's kind; raise DeliveryFailed (with
        ``deliveries``) if any failed."""
        deliveries: list[Delivery] = []
        errors: list[Exception] = []
        for channel in self.channels_for(notice.kind):
            delivery, error = deliver(channel, notice)
            deliveries.append(delivery)
            if error is not None:
                errors.append(error)
        if errors:
            raise delivery_failed(notice, deliveries, errors)
        return deliveries


def deliver(channel: Channel, notice: Notice) -> tuple[Delivery, Exception | None]:
    """Send ``notice`` on ``channel`` and log the outcome; return the delivery and its error.

    Only Terminated is raised: the run was asked to stop, which is no failure of a channel.
    """
    fields = {"channel": channel.name, "notice_key": notice.key, "kind": notice.kind}
    try:
        channel.send(notice)
    except Terminated:
        raise  # the run was asked to stop: no more channels, and no failure
    except Exception as exc:  # one channel failing must not stop the others
        error = str(exc) if isinstance(exc, OchinaiError) else repr(exc)
        # WARNING, not ERROR: ERROR lines are themselves notified, which would loop.
        log.warning("notice not delivered", extra={**fields, "ok": False, "error": error})
        return Delivery(channel.name, False, error), exc
    log.info("notice delivered", extra={**fields, "ok": True})
    return Delivery(channel.name, True, None), None


def delivery_failed(
    notice: Notice, deliveries: Sequence[Delivery], errors: Sequence[Exception]
) -> DeliveryFailed:
    """The DeliveryFailed for ``errors``: permanent when every one needs a human."""
    failed = [f"{d.channel}: {d.error}" for d in deliveries if not d.ok]
    message = f"notice {notice.key}: {len(failed)} of {len(deliveries)} channels failed: "
    failure: DeliveryFailed
    # Unknown errors count as transient, as exit code 70 is retried too.
    if all(isinstance(e, PermanentError | ConfigError) for e in errors):
        failure = DeliveryFailedPermanent(message + "; ".join(failed))
    else:
        waits = [e.retry_after for e in errors if isinstance(e, TransientError)]
        retry_after = max((w for w in waits if w is not None), default=None)
        failure = DeliveryFailedTransient(message + "; ".join(failed), retry_after=retry_after)
    failure.deliveries = list(deliveries)
    return failure


def notifier_from_config(
    *,
    webhook_url: str | None = None,
    smtp_host: str | None = None,
    smtp_port: int | None = None,
    smtp_tls: str = "starttls",
    smtp_user: str | None = None,
    smtp_password: str | None = None,
    mail_from: str | None = None,
    mail_to: Sequence[str] = (),
    timeout: float | None = None,
    http: HttpClient | None = None,
) -> Notifier:
    """Build a Notifier with a webhook and/or SMTP channel, whichever is configured.

    ``smtp_port`` defaults by ``smtp_tls`` (587, 465, 25); ``timeout`` to each channel's own;
    the webhook goes through ``http`` (the run's client) when given.
    """
    channels: list[Channel] = []
    if webhook_url:
        channels.append(WebhookChannel(webhook_url, timeout=timeout or WEBHOOK_TIMEOUT, http=http))
    recipients = [to for to in mail_to if to]
    if smtp_host:
        channels.append(
            SmtpChannel(
                smtp_host,
                smtp_port or _SMTP_DEFAULT_PORTS.get(smtp_tls, 25),
                tls=cast(SmtpTls, smtp_tls),
                user=smtp_user or None,
                password=smtp_password,
                mail_from=mail_from or "",
                mail_to=recipients,
                timeout=timeout or SMTP_TIMEOUT,
            )
        )
    elif mail_from or recipients:
        raise ConfigError("OCHINAI_SMTP_HOST: empty; mail needs it, or clear OCHINAI_MAIL_TO")
    return Notifier(channels)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(when: dt.datetime) -> dt.datetime:
    """A datetime with a zone: a naive one is taken as UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Claim:
    """``_sent/<notice id>/<channel>.claim.json``: a sender's claim on one delivery."""

    notice: str
    channel: str
    run_id: str
    claimed: dt.datetime
    fence: int | None  # the term of the claiming run's lock; None: it held none

    def body(self) -> bytes:
        """The claim as stored."""
        doc = {
            "notice": self.notice,
            "channel": self.channel,
            "run_id": self.run_id,
            "claimed": self.claimed.isoformat(),
            "fence": self.fence,
            VERSION: SENT_VERSION,
        }
        return json.dumps(doc).encode()

    @classmethod
    def parse(cls, body: bytes) -> Claim | None:
        """The claim stored in ``body``; None for anything else, which only its age can
        tell from a live claim (a newer version's, an object that is no claim)."""
        try:
            doc = parse_object(body)
            doc.version(SENT_VERSION)
            return cls(
                notice=doc.text("notice"),
                channel=doc.text("channel"),
                run_id=doc.text("run_id"),
                claimed=dt.datetime.fromisoformat(doc.text("claimed")),
                fence=doc.optional_integer("fence"),
            )
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class SentRecord:
    """``_sent/<notice id>/<channel>.json``: the notice went out on the channel. Send-once
    asks only whether it exists; its body says which run sent it."""

    notice: str
    channel: str
    run_id: str

    def body(self) -> bytes:
        """The record as stored."""
        doc = {"notice": self.notice, "channel": self.channel, "run_id": self.run_id}
        return json.dumps({**doc, VERSION: SENT_VERSION}).encode()

    @classmethod
    def parse(cls, body: bytes, where: str) -> SentRecord:
        """A stored record; DataError naming ``where`` when it is not one."""
        try:
            doc = parse_object(body)
            doc.version(SENT_VERSION)
            return cls(doc.text("notice"), doc.text("channel"), doc.text("run_id"))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{where}: not a record of a sent notice ({exc})") from None


class SendOnce:
    """Each notice sent at most once per claim, and at least once overall, per channel.

    For each channel still without a delivery record, a sender first claims the notice
    create-only as ``_sent/<notice id>/<channel>.claim.json`` (its run id, when, and its
    lock's term); only the sender that wrote the claim sends. A success is then recorded
    create-only as ``_sent/<notice id>/<channel>.json`` and the claim deleted; a failure
    deletes the claim, so that the next run retries at once. A later run sends only on
    the channels without that record, and skips a channel whose claim is live: the run
    that holds it is sending (``send`` returns ``claimed`` when it skipped every one).

    A claim is taken over (compare-and-swap) once it is older than ``claim_timeout``
    (``CLAIM_TIMEOUT``), or when it was written under a lower term of the lock this run
    holds: its run lost the lock and sends no more. So each claim sends once, but a
    crash between a send and its record, a claim older than the bound, or one whose run
    lost the lock leads to one resend, with the same id: the receiver can drop it by
    the webhook's ``Idempotency-Key`` header or the mail's ``Message-ID``.
    """

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        *,
        run_id: str,
        dry_run: bool,
        job: str | None = None,
        claim_timeout: dt.timedelta = CLAIM_TIMEOUT,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.store, self.notifier = store, notifier
        self.run_id, self.dry_run, self.job = run_id, dry_run, job
        self.claim_timeout, self.clock = claim_timeout, clock

    def _check(self, notice_id: str) -> None:
        """An id is a safe key under ``_sent/``, and begins with the job's name."""
        if not _NOTICE_ID.match(notice_id) or ".." in notice_id or len(notice_id) > 512:
            raise ValueError(f"notice id {notice_id!r} is not a safe key")
        if self.job is not None and not notice_id.startswith(f"{self.job}/"):
            raise ValueError(f"notice id {notice_id!r} does not begin with {self.job}/")

    def _key(self, notice_id: str, channel: str) -> str:
        return f"{SENT_PREFIX}/{notice_id}/{channel}.json"

    def _claim_key(self, notice_id: str, channel: str) -> str:
        return f"{SENT_PREFIX}/{notice_id}/{channel}.claim.json"

    def configured_for(self, kind: str) -> bool:
        """Whether a notice of ``kind`` goes anywhere (a receiver routed, not ``none``)."""
        return self.notifier.configured_for(kind)

    def pending(self, notice_id: str, kind: str) -> list[str]:
        """The channels of ``kind``'s receivers that have not yet delivered the notice
        with this id."""
        self._check(notice_id)
        names = [channel.name for channel in self.notifier.channels_for(kind)]
        return [n for n in names if self.store.head(self._key(notice_id, n)) is None]

    def send(self, notice: Notice) -> str:
        """Claim each pending channel, deliver on the ones claimed and record each success.

        Returns ``sent`` (on at least one channel; others may have been skipped for a
        live claim), ``already_sent``, ``claimed`` (every pending channel is being sent
        by another run that claimed it), ``not_configured`` or ``dry_run``; raises
        DeliveryFailed when a channel failed, after recording the ones that did not.
        """
        self._check(notice.key)
        if not self.notifier.configured_for(notice.kind):
            return "not_configured"
        if self.dry_run or self.store.dry_run:
            return "dry_run"
        pending = self.pending(notice.key, notice.kind)
        if not pending:
            return "already_sent"
        deliveries: list[Delivery] = []
        errors: list[Exception] = []
        sent = skipped = 0
        for channel in [c for c in self.notifier.channels_for(notice.kind) if c.name in pending]:
            claim_key = self._claim_key(notice.key, channel.name)
            claim = self._claim(notice.key, channel.name)
            if claim is None:
                skipped += 1
                continue
            if self.store.head(self._key(notice.key, channel.name)) is not None:
                # Recorded since pending() looked, by a run whose claim was deleted or taken over.
                self._release(claim_key, claim, "the delivery is recorded")
                continue
            if self.store.guard is not None:
                self.store.guard.check_writable()  # a run that lost its lock sends nothing
            delivery, error = deliver(channel, notice)
            deliveries.append(delivery)
            if error is not None:
                errors.append(error)
                self._release(claim_key, claim, "the send failed; the next run retries")
                continue
            # A failing record leaves the claim: no resend before it is older than the bound.
            self._record(notice.key, channel.name)
            self._release(claim_key, claim, "the delivery is recorded")
            sent += 1
        if errors:
            raise delivery_failed(notice, deliveries, errors)
        if sent:
            return "sent"
        return "claimed" if skipped else "already_sent"

    def _claim_body(self, notice_id: str, channel: str) -> bytes:
        fence = self.store.fence
        claimed = _aware(self.clock())
        term = fence.term if fence is not None else None
        return Claim(notice_id, channel, self.run_id, claimed, term).body()

    def _claim(self, notice_id: str, channel: str) -> str | None:
        """Claim the channel's delivery of the notice: the claim's etag, or None when
        another sender holds a live claim (or took over a stale one first)."""
        key = self._claim_key(notice_id, channel)
        fields = {"channel": channel, "notice_key": notice_id}
        for _ in range(2):  # twice: the claim in the way may be deleted before it is read
            body = self._claim_body(notice_id, channel)
            try:
                put = self.store.put(key, body, if_none_match=True, content_type=JSON)
            except PreconditionFailed:
                pass
            else:
                return put.etag
            try:
                found = self.store.get(key)
            except ObjectNotFound:
                continue  # its sender failed and deleted it: claim it afresh
            theirs = Claim.parse(found.body)
            if theirs is not None and theirs.run_id == self.run_id:
                return found.etag  # this run's own claim, from an earlier attempt
            stale = self._stale(found, theirs)
            by = {**fields, "claimed_by": theirs.run_id if theirs else "unknown"}
            if stale is None:
                log.info("notice claimed by another run; not sent on this channel", extra=by)
                return None
            log.warning(f"taking over a stale claim: {stale}", extra=by)
            try:
                put = self.store.put(key, body, if_match=found.etag, content_type=JSON)
            except PreconditionFailed:
                log.info("another run took over the stale claim first; not sent", extra=by)
                return None
            return put.etag
        log.info("notice claimed by another run; not sent on this channel", extra=fields)
        return None

    def _stale(self, found: StoredObject, claim: Claim | None) -> str | None:
        """Why the claim ``found`` no longer stops a send, or None while it is live."""
        mine, theirs = self.store.fence, Fence.of_object(found.metadata)
        if theirs and mine and theirs.scope == mine.scope and theirs.term < mine.term:
            return f"written under term {theirs.term} of this run's lock, now at {mine.term}"
        claimed = claim.claimed if claim is not None else found.last_modified
        age = _aware(self.clock()) - _aware(claimed)
        if age > self.claim_timeout:
            return f"claimed {age.total_seconds():.0f}s ago, over the bound of {self.claim_timeout}"
        return None

    def _release(self, key: str, etag: str, why: str) -> None:
        """Delete this run's claim; a claim that changed or is gone is left, with a warning."""
        if not etag:
            return
        try:
            self.store.delete(key, if_match=etag)
        except LockLost:
            raise
        except (TransientError, ObjectNotFound) as exc:  # PreconditionFailed is transient
            log.warning(f"claim not deleted ({why}): {exc}", extra={"key": key})

    def _record(self, notice_id: str, channel: str) -> None:
        body = SentRecord(notice_id, channel, self.run_id).body()
        # PreconditionFailed: another run recorded the same delivery first.
        with contextlib.suppress(PreconditionFailed):
            self.store.put(
                self._key(notice_id, channel),
                body,
                if_none_match=True,
                content_type=JSON,
            )
