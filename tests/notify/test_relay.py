"""Notification mail through a real aiosmtpd relay on loopback that requires STARTTLS and SMTP
AUTH (test certificate made here), and the ``Date:`` of the configured clock."""

from __future__ import annotations

import datetime as dt
import ipaddress
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from smtp_sink import Sink, free_port

from drossel.app.catalog_source import packaged_catalog
from drossel.config import ConfigError, NotifyConfig, config_from_dict
from drossel.notify import scan_and_notify
from drossel.notify.service import send_mail

USER, PASSWORD = "drossel", "s3cret-relay"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (also the CA bundle the client trusts)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.pem", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Relay:
    port: int
    ca: Path
    sink: Sink
    logins: list[str] = field(default_factory=list)
    tls_sessions: list[bool] = field(default_factory=list)


class _TlsSink(Sink):
    def __init__(self, relay_tls: list[bool]) -> None:
        super().__init__()
        self.relay_tls = relay_tls

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.relay_tls.append(session.ssl is not None)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tls_sessions: list[bool] = []
    state = Relay(free_port(), cert, _TlsSink(tls_sessions), tls_sessions=tls_sessions)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any):  # type: ignore[no-untyped-def]
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == USER
            and auth_data.password.decode() == PASSWORD
        )
        if ok:
            state.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # aiosmtpd then answers 535

    controller = Controller(
        state.sink,
        hostname="127.0.0.1",
        port=state.port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticate,
    )
    controller.start()
    yield state
    controller.stop()


def notify_config(relay: Relay, **overrides: Any) -> NotifyConfig:
    values: dict[str, Any] = {
        "enabled": True,
        "relay": f"127.0.0.1:{relay.port}",
        "sender": "drossel@mx.example",
        "tls": "starttls",
        "tls_ca": str(relay.ca),
        "username": USER,
        "password": PASSWORD,
    }
    values.update(overrides)
    return NotifyConfig(**values)


CLOCK = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)


def test_starttls_and_auth_deliver_with_the_clock_date(relay: Relay) -> None:
    send_mail(notify_config(relay), ["it@contoso.example"], "subject", "body\n", CLOCK)
    assert len(relay.sink.messages) == 1
    sender, recipients, message = relay.sink.messages[0]
    assert (sender, recipients) == ("drossel@mx.example", ["it@contoso.example"])
    assert relay.logins == [USER]
    assert relay.tls_sessions == [True]
    assert parsedate_to_datetime(message["Date"]) == CLOCK


def test_password_file(relay: Relay, tmp_path: Path) -> None:
    secret = tmp_path / "relay-password"
    secret.write_text(PASSWORD + "\n")
    config = notify_config(relay, password=None, password_file=str(secret))
    send_mail(config, ["it@contoso.example"], "subject", "body\n", CLOCK)
    assert relay.logins == [USER]


def test_wrong_password_is_refused(relay: Relay) -> None:
    with pytest.raises(smtplib.SMTPAuthenticationError):
        send_mail(notify_config(relay, password="wrong"), ["a@b.example"], "s", "b\n", CLOCK)
    assert relay.sink.messages == []


def test_untrusted_certificate_is_refused(relay: Relay) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        send_mail(notify_config(relay, tls_ca=None), ["a@b.example"], "s", "b\n", CLOCK)
    assert relay.sink.messages == []


def test_relay_requiring_starttls_refuses_plain_mail(relay: Relay) -> None:
    config = notify_config(relay, tls="none", username=None, password=None)
    with pytest.raises(smtplib.SMTPException):
        send_mail(config, ["a@b.example"], "s", "b\n", CLOCK)
    assert relay.sink.messages == []


def test_auth_without_tls_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"notify.*tls"):
        config_from_dict({"notify": {"username": "u", "password": "p"}})
    with pytest.raises(ConfigError, match="password"):
        config_from_dict({"notify": {"tls": "starttls", "username": "u"}})


def test_scan_sends_through_the_tls_relay_dated_by_the_clock(seeded, relay: Relay) -> None:  # type: ignore[no-untyped-def]
    config = seeded.config.model_copy(update={"notify": notify_config(relay)})
    later = seeded.now + dt.timedelta(days=3, minutes=7)
    sent = scan_and_notify(seeded.store, config, packaged_catalog(), later)
    assert sent and len(relay.sink.messages) == len(sent)
    assert all(t for t in relay.tls_sessions)
    assert {parsedate_to_datetime(m["Date"]) for _, _, m in relay.sink.messages} == {later}
