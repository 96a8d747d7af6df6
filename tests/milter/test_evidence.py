"""Client evidence from milter macros (SPEC §3): raw Postfix/Sendmail bytes -> ClientInfo."""

from __future__ import annotations

import milter_bytes as mb
import pytest
from milter_helpers import RecordingPolicy, replay

from drossel.app.enforcer import ClientInfo
from drossel.milter.enforcement import client_info
from drossel.milter.evidence import certificate_name, client_address, host_name
from drossel.milter.session import MilterSession


async def _evidence(mail_macro: bytes) -> ClientInfo:
    """Replay a session whose MAIL stage carries ``mail_macro``; evidence at end of headers."""
    policy = RecordingPolicy()
    stream = b"".join(
        (mb.OPTNEG, mb.HELO, mail_macro, mb.MAIL, mb.RCPT, mb.HDR_RECEIVED_1, mb.EOH, mb.QUIT)
    )
    await replay(MilterSession(policy), stream)
    (ctx,) = policy.eoh_calls
    return client_info(ctx)


async def test_postfix_verified_name_and_trusted_certificate() -> None:
    info = await _evidence(mb.MACRO_MAIL_VERIFIED)
    assert info == ClientInfo(
        addr="203.0.113.25",
        name="mail.contoso.example",
        ptr="mail.contoso.example",
        helo="mail.contoso.example",
        tls_name="mail.contoso.example",
    )


async def test_postfix_unconfirmed_ptr_is_not_a_name() -> None:
    info = await _evidence(mb.MACRO_MAIL_UNCONFIRMED)
    assert info.addr == "2001:db8::25"  # "IPv6:" prefix of Postfix's {client_addr} removed
    assert info.name is None  # "unknown": the PTR did not resolve back
    assert info.ptr == "mail.contoso.example"
    assert info.tls_name is None  # no TLS macros: no certificate name


async def test_sendmail_unverified_certificate_is_ignored() -> None:
    info = await _evidence(mb.MACRO_MAIL_SENDMAIL_FAIL)
    assert info.name is None  # "[203.0.113.25]" is an address literal, not a name
    assert info.ptr is None
    assert info.tls_name is None  # {verify} FAIL


async def test_sendmail_verified_certificate_dn() -> None:
    info = await _evidence(mb.MACRO_MAIL_SENDMAIL_OK)
    assert info.tls_name == "mail.contoso.example"


async def test_connect_host_name_is_never_taken_as_verified() -> None:
    """The SMFIC_CONNECT host name (Sendmail: an unverified PTR) proves nothing."""
    policy = RecordingPolicy()
    stream = b"".join((mb.OPTNEG, mb.CONNECT, mb.MAIL, mb.RCPT, mb.EOH, mb.QUIT))
    await replay(MilterSession(policy), stream)
    info = client_info(policy.eoh_calls[0])
    assert info.addr == "203.0.113.25"  # the CONNECT address is the fallback
    assert info.name is None and info.ptr is None and info.tls_name is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mail.Contoso.Example.", "mail.contoso.example"),
        ("localhost", "localhost"),
        ("unknown", None),
        ("UNKNOWN", None),
        ("[203.0.113.25]", None),
        ("203.0.113.25", None),
        ("-bad-.example", None),
        ("a..b", None),
        ("mail.contoso.example\r\nX: y", None),
        ("x" * 64 + ".example", None),
        ("", None),
        (None, None),
    ],
)
def test_host_name(value: str | None, expected: str | None) -> None:
    assert host_name(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.25", "203.0.113.25"),
        ("IPv6:2001:DB8::25", "2001:db8::25"),
        ("ipv6:::1", "::1"),
        ("not-an-address", None),
        ("", None),
    ],
)
def test_client_address(value: str, expected: str | None) -> None:
    assert client_address(value) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("mail.contoso.example", "mail.contoso.example"),  # Postfix: the CN only
        ("/C=DE/O=Contoso/CN=mail.contoso.example", "mail.contoso.example"),  # Sendmail
        ("CN=mail.contoso.example,O=Contoso,C=DE", "mail.contoso.example"),  # RFC 4514
        ("Contoso Mail Gateway", None),  # a CN that is not a host name
        ("*.contoso.example", None),  # wildcards name no single host
        ("/C=DE/O=Contoso", None),
    ],
)
def test_certificate_name(subject: str, expected: str | None) -> None:
    assert certificate_name(subject) == expected
