"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives, and a TLS certificate."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers import free_port

PASSWORD = "s3cret-Pa55word!"


@dataclass
class Inbox:
    """aiosmtpd handler that keeps every mail and answers RCPT / DATA as told."""

    rcpt_reply: str | None = None
    refuse: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    mails: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        """Refuse the recipient when ``rcpt_reply`` says so."""
        if self.rcpt_reply:
            return self.rcpt_reply
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the mail unless ``data_reply`` refuses it."""
        if self.data_reply:
            return self.data_reply
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"

    def parsed(self, index: int = -1) -> EmailMessage:
        """Return a received mail parsed the way a mail client would."""
        msg = email.message_from_bytes(self.mails[index][2], policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


def check_password(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    """aiosmtpd authenticator accepting only ochinai / PASSWORD."""
    ok = isinstance(auth_data, LoginPassword) and auth_data == (
        b"ochinai",
        PASSWORD.encode(),
    )
    # handled=False: let aiosmtpd answer 535 itself instead of leaving the client waiting.
    return AuthResult(success=ok, handled=False)


StartSmtp = Callable[..., tuple[Inbox, int]]


@pytest.fixture
def start_smtp() -> Iterator[StartSmtp]:
    # The server's own log ("mail.log") is the test server's, not the job's: kept out of
    # the job's logs, which the tests read (and check for tracebacks).
    logging.getLogger("mail.log").propagate = False
    """Start aiosmtpd servers on loopback (a given port or a free one); stop them after the test."""
    controllers: list[Controller] = []

    def start(
        inbox: Inbox | None = None, *, port: int | None = None, **kwargs: Any
    ) -> tuple[Inbox, int]:
        inbox = inbox or Inbox()
        port = port or free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return inbox, port

    yield start
    for controller in controllers:
        controller.stop()


@dataclass(frozen=True)
class Cert:
    """A self-signed certificate for 127.0.0.1 and the contexts that serve and trust it."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """Return a server-side context presenting the certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Return a verifying client context that trusts only this certificate."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """Generate a throwaway EC certificate valid for 127.0.0.1 and localhost."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ochinai test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Cert(cert_path, key_path)
