"""Who gets which notice: receivers declared once, routes from kinds of notice to them.

``OCHINAI_RECEIVER_<NAME>`` declares the receiver ``<name>``: one or more URLs,
separated by spaces or line breaks.

- ``mailto:a@example.com,b@example.com``: our SMTP channel (OCHINAI_SMTP_* and
  OCHINAI_MAIL_FROM), one mail to all of them;
- ``http(s)://...``: our Slack-compatible webhook (Slack, Mattermost, Rocket.Chat),
  unless Apprise knows the address as another service's (a Discord, Teams Workflows
  or Google Chat webhook URL): then Apprise;
- any other scheme Apprise knows (``workflows://``, ``msteams://``, ``discord://``,
  ``ntfy://``, ``gchat://``, ``tgram://``, ``line://``...): Apprise.

``OCHINAI_ROUTES`` maps kinds (the runtime's INCIDENT_KINDS and the ones each job
declares, ``Job.notices``) to receivers, ``report:sales,failure:ops``; a kind may name
several. Every kind without a route goes to ``default``: the
receiver of OCHINAI_WEBHOOK_URL and OCHINAI_MAIL_TO as before (or
``OCHINAI_RECEIVER_DEFAULT``); a route to ``none`` sends that kind nowhere. Everything
is checked when the settings load, so a typo is a 78 before any work.

Apprise answers only true or false: a false is a TransientError (75) naming the
receiver and the service, with what Apprise logged (redacted), and the send-once
record keeps the notice for the next run. Apprise's own log goes through ours (the
redactor knows each receiver URL and the tokens inside it). Services without an
idempotency key get the notice id in the text; the workbook goes as an attachment
where the service takes one, else its link is in the text.
"""

from __future__ import annotations

import email.utils
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from ochinai.runtime import logs
from ochinai.runtime.errors import ConfigError, TransientError
from ochinai.runtime.notify import (
    DEFAULT,
    INCIDENT_KINDS,
    NOWHERE,
    SMTP_TIMEOUT,
    WEBHOOK_TIMEOUT,
    Channel,
    Notice,
    Notifier,
    SmtpChannel,
    SmtpTls,
    WebhookChannel,
    notifier_from_config,
)

if TYPE_CHECKING:
    from ochinai.runtime.http import HttpClient


class CommonSettings(Protocol):
    """The settings a notifier is built from (runtime/settings.py's CommonSettings)."""

    @property
    def receivers(self) -> dict[str, str]: ...
    @property
    def routes(self) -> dict[str, list[str]]: ...
    @property
    def webhook_url(self) -> str | None: ...
    @property
    def smtp_host(self) -> str | None: ...
    @property
    def smtp_port(self) -> int | None: ...
    @property
    def smtp_tls(self) -> str: ...
    @property
    def smtp_user(self) -> str | None: ...
    @property
    def smtp_password(self) -> str | None: ...
    @property
    def mail_from(self) -> str | None: ...
    @property
    def mail_to(self) -> list[str] | None: ...
    @property
    def notify_timeout(self) -> float: ...


log = logging.getLogger("ochinai.notify")

PREFIX = "OCHINAI_RECEIVER_"
_NAME = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")
_KIND = re.compile(r"^[a-z][a-z0-9-]*$")
_SLACK = ("slack.com",)  # https hooks that stay on our webhook (Idempotency-Key)
_DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


def parse_routes(value: str) -> dict[str, list[str]]:
    """KIND:RECEIVER pairs, comma-separated (report:sales,failure:ops)"""
    routes: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        kind, sep, receiver = (x.strip() for x in item.partition(":"))
        if not sep or not kind or not receiver:
            raise ValueError(f"{item!r} is not KIND:RECEIVER")
        if not _KIND.match(kind):
            raise ValueError(f"{item!r}: {kind!r} is not a kind of notice (a lowercase name)")
        names = routes.setdefault(kind, [])
        if receiver.lower() not in names:
            names.append(receiver.lower())
    return routes


def check_kinds(routes: dict[str, list[str]], job_kinds: Iterable[str]) -> None:
    """Every routed kind is one some notice has: the runtime's or a job's (``job_kinds``,
    every registered job's); ConfigError naming OCHINAI_ROUTES and the kinds otherwise."""
    known = [*INCIDENT_KINDS, *dict.fromkeys(job_kinds)]
    for kind in routes:
        if kind not in known:
            raise ConfigError(
                f"OCHINAI_ROUTES: no notice is of the kind {kind!r}; the kinds are "
                f"{', '.join(known)}"
            )


def parse_receivers(found: Any) -> dict[str, str]:
    """URLs, space-separated: mailto:, http(s):// or a service Apprise knows"""
    # ``found``: the family's variables by name (declare.load reads them all)
    receivers: dict[str, str] = {}
    for suffix, text in sorted(found.items()):
        setting = PREFIX + suffix
        if not _NAME.match(suffix):
            raise ConfigError(f"{setting}: a receiver's name is letters, digits and _")
        for url in text.split():
            kind_of_url(url, setting)
        receivers[suffix.lower()] = text
    return receivers


def kind_of_url(url: str, setting: str) -> str:
    """``mail``, ``webhook`` or ``apprise``; ConfigError naming ``setting`` (never the
    URL: it holds tokens) when it is none of them."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is no number raises here)
    except ValueError as exc:
        raise ConfigError(f"{setting}: not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme == "mailto":
        addresses = _addresses(url)
        if not addresses:
            raise ConfigError(f"{setting}: a mailto: URL without an address")
        for n, address in enumerate(addresses, 1):
            if "@" not in email.utils.parseaddr(address)[1]:
                raise ConfigError(f"{setting}: address {n} of the mailto: is not name@domain")
        return "mail"
    if scheme in ("http", "https"):
        host = parts.hostname or ""
        if not host:
            raise ConfigError(f"{setting}: an {scheme} URL without a host")
        if any(host == h or host.endswith("." + h) for h in _SLACK):
            return "webhook"
        return "apprise" if _apprise_plugin(url) is not None else "webhook"
    if not scheme or _apprise_plugin(url) is None:
        shown = f"{scheme}://" if scheme else "a value without a scheme"
        raise ConfigError(
            f"{setting}: {shown} is neither mailto:, http(s):// nor a service Apprise "
            "knows (its URL forms: workflows://, msteams://, discord://, ntfy://, gchat://...)"
        )
    return "apprise"


def _addresses(url: str) -> list[str]:
    return [a.strip() for a in unquote(urlsplit(url).path).split(",") if a.strip()]


def _apprise_plugin(url: str) -> Any:
    import apprise  # imported only when a receiver needs it (0.2 s)

    with _apprise_log():  # "Unparseable URL ...": ours to say, by the setting's name
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def check(settings: CommonSettings) -> None:
    """Every route names a declared receiver, the default receiver is declared once, and
    mail receivers have an SMTP server; ConfigError naming the setting."""
    declared = set(settings.receivers) | {DEFAULT, NOWHERE}
    for kind, names in settings.routes.items():
        for name in names:
            if name not in declared:
                raise ConfigError(
                    f"OCHINAI_ROUTES: {kind}:{name}: no receiver {name!r}; declare it as "
                    f"{PREFIX}{name.upper()}, or route to one of "
                    f"{', '.join(sorted(declared))}"
                )
    legacy = settings.webhook_url or settings.mail_to
    if DEFAULT in settings.receivers and legacy:
        raise ConfigError(
            f"{PREFIX}DEFAULT and OCHINAI_WEBHOOK_URL / OCHINAI_MAIL_TO both declare the "
            "default receiver; keep one"
        )
    for name, text in settings.receivers.items():
        mails = [u for u in text.split() if urlsplit(u).scheme.lower() == "mailto"]
        if mails and not settings.smtp_host:
            raise ConfigError(
                f"{PREFIX}{name.upper()}: a mailto: receiver needs OCHINAI_SMTP_HOST (and "
                "OCHINAI_MAIL_FROM)"
            )
        if mails and not settings.mail_from:
            raise ConfigError(f"{PREFIX}{name.upper()}: a mailto: receiver needs OCHINAI_MAIL_FROM")


def build(settings: CommonSettings, http: HttpClient | None = None) -> Notifier:
    """The notifier the settings declare: the default receiver, the named ones, routes."""
    timeout = settings.notify_timeout
    default: list[Channel] = []
    if DEFAULT not in settings.receivers:
        legacy = notifier_from_config(
            webhook_url=settings.webhook_url,
            smtp_host=settings.smtp_host if settings.mail_to or not settings.receivers else None,
            smtp_port=settings.smtp_port,
            smtp_tls=settings.smtp_tls,
            smtp_user=settings.smtp_user,
            smtp_password=settings.smtp_password,
            mail_from=settings.mail_from if settings.mail_to else None,
            mail_to=settings.mail_to or [],
            timeout=timeout,
            http=http,
        )
        default = legacy.channels
    receivers = {
        name: _channels(name, text, settings, http) for name, text in settings.receivers.items()
    }
    if DEFAULT in receivers:
        default = receivers.pop(DEFAULT)
    return Notifier(default, receivers=receivers, routes=settings.routes)


def _channels(
    name: str, text: str, settings: CommonSettings, http: HttpClient | None
) -> list[Channel]:
    setting = PREFIX + name.upper()
    channels: list[Channel] = []
    used: dict[str, int] = {}
    for url in text.split():
        logs.redactor.add(*tokens(url))
        what = kind_of_url(url, setting)
        channel_name = ""  # named below, once the channel says what it is
        timeout = settings.notify_timeout
        channel: Channel
        if what == "mail":
            tls: SmtpTls = settings.smtp_tls  # type: ignore[assignment]
            channel = SmtpChannel(
                settings.smtp_host or "",
                settings.smtp_port or _DEFAULT_PORTS.get(tls, 25),
                tls=tls,
                user=settings.smtp_user or None,
                password=settings.smtp_password,
                mail_from=settings.mail_from or "",
                mail_to=_addresses(url),
                timeout=timeout or SMTP_TIMEOUT,
                name=channel_name,
                to_setting=setting,
            )
        elif what == "webhook":
            channel = WebhookChannel(
                url,
                timeout=timeout or WEBHOOK_TIMEOUT,
                http=http,
                name=channel_name,
                setting=setting,
            )
        else:
            channel = AppriseChannel(url, name=channel_name, setting=setting, timeout=timeout)
        label = {"mail": "mail", "webhook": "webhook"}.get(what) or channel.name
        used[label] = used.get(label, 0) + 1
        channel.name = f"{name}-{label}" + (f"-{used[label]}" if used[label] > 1 else "")
        channels.append(channel)
    return channels


def _service(plugin: Any, url: str) -> str:
    """A short, key-safe label of an Apprise plugin's service (``ntfy``, ``workflows``)."""
    schema = plugin.protocol or plugin.secure_protocol
    first = schema[0] if isinstance(schema, list | tuple) else schema or urlsplit(url).scheme
    return re.sub(r"[^a-z0-9]+", "-", str(first).lower()).strip("-") or "apprise"


def tokens(url: str) -> list[str]:
    """The URL and the parts of it that hold its secret, for the log redactor: the user
    and password (ntfy's tk_ token, msteams' ids), and the last path segment and query
    values that look made up (8 characters or more with a digit: a Slack hook's token,
    a Teams Workflows sig=, an ntfy topic). Words such as a path's ``services`` or
    ``workflows``, which other text has too, are left."""
    parts = urlsplit(url)
    made_up = [unquote(parts.path.rstrip("/").rpartition("/")[2])]
    made_up += [v for _, v in parse_qsl(parts.query)]
    made_up = [f for f in made_up if len(f) >= 8 and any(c.isdigit() for c in f)]
    return [url, parts.password or "", unquote(parts.username or ""), *made_up]


class _Captured(logging.Handler):
    """What Apprise logs at WARNING and up while it sends, for the error message."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logs.redactor.redact(record.getMessage()))


@contextmanager
def _apprise_log() -> Iterator[_Captured]:
    """Apprise's log, kept from ours: what it says of a failure goes into the error
    (redacted), which ``deliver`` logs once as a WARNING; its ERROR lines would
    otherwise be taken for the run's own error."""
    captured = _Captured()
    logger = logging.getLogger("apprise")
    propagate = logger.propagate
    logger.addHandler(captured)
    logger.propagate = False
    try:
        yield captured
    finally:
        logger.propagate = propagate
        logger.removeHandler(captured)


class AppriseChannel:
    """A notice through Apprise to one service; a service that does not take it is a
    TransientError, so the next run sends it again (the send-once record says so)."""

    def __init__(self, url: str, *, name: str, setting: str, timeout: float | None) -> None:
        import apprise

        plugin = _apprise_plugin(url)
        if plugin is None:
            raise ConfigError(f"{setting}: not a URL Apprise knows")
        if timeout:
            plugin.socket_connect_timeout = plugin.socket_read_timeout = timeout
        # ``name`` empty: the service's label (``ntfy``), for the caller to name it by
        self.name, self.setting = name or _service(plugin, url), setting
        self.service = str(plugin.service_name)
        self.where = f"{setting} ({self.service})"
        self.attachments = bool(getattr(plugin, "attachment_support", False))
        self._apprise = apprise.Apprise()
        self._apprise.add(plugin)

    def text(self, notice: Notice) -> str:
        """The body: the text, the attachments' names when the service takes none, the
        link, and the notice id (most services have no idempotency key)."""
        lines = [notice.text]
        if notice.attachments and not self.attachments:
            names = ", ".join(a.filename for a in notice.attachments)
            lines.append(f"添付ファイル ({names}) はこの通知先に送れないため、リンクからどうぞ。")
        if notice.link:
            lines.append(notice.link)
        lines.append(f"通知 ID: {notice.key}")
        return "\n\n".join(line for line in lines if line)

    def send(self, notice: Notice) -> None:
        """Deliver ``notice`` or raise TransientError naming the receiver and service."""
        import apprise

        kind = {
            "error": apprise.NotifyType.FAILURE,
            "warning": apprise.NotifyType.WARNING,
        }.get(notice.severity, apprise.NotifyType.INFO)
        if notice.kind == "recovery":
            kind = apprise.NotifyType.SUCCESS
        with tempfile.TemporaryDirectory(prefix="ochinai-attach-") as tmp, _apprise_log() as said:
            attach = None
            if notice.attachments and self.attachments:
                attach = apprise.AppriseAttachment()
                for n, item in enumerate(notice.attachments):
                    path = Path(tmp) / str(n) / Path(item.filename).name
                    path.parent.mkdir()
                    path.write_bytes(item.content)
                    attach.add(str(path))
            ok = self._apprise.notify(
                body=self.text(notice),
                title=notice.subject,
                notify_type=kind,
                body_format=apprise.NotifyFormat.TEXT,
                attach=attach,
            )
        if not ok:
            why = "; ".join(said.lines[-3:]) or "no reason given"
            raise TransientError(
                f"{self.where}: the service did not take the notice ({why}); the next run "
                "sends it again"
            )
