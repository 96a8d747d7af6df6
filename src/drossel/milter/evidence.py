"""What the MTA's macros prove about the SMTP client (SPEC §3 evidence), as a ClientInfo.

Only two things may tie an Exchange hop to the connecting client: a forward-confirmed
reverse-DNS name and the name in a *verified* TLS client certificate.  Postfix's macros
(``MILTER_README``, "Sendmail macro emulation"; values from ``src/smtpd/smtpd_milter.c``):

* ``{client_addr}``: the client's address; for IPv6 Postfix sends the RFC 5321 form with an
  ``IPv6:`` prefix, which is stripped here.
* ``{client_name}``: the verified name, i.e. the PTR name whose forward lookup gives the
  client's address back; "unknown" when the address->name lookup *or* the name->address
  verification fails.  Only this becomes ``ClientInfo.name``.
* ``{client_ptr}``: the unverified PTR name ("unknown" when the lookup fails):
  ``ClientInfo.ptr``, recorded but never proof.
* ``{cert_subject}`` / ``{cert_issuer}``: Postfix returns the peer and issuer *CommonName*
  only when the client certificate is trusted: ``smtpd_milter.c`` wraps both in
  ``IF_TRUSTED(...)`` (``TLS_CERT_IS_TRUSTED``: the chain verified against
  ``smtpd_tls_CAfile``/``CApath``), and Postfix sends no macro whose value is unset.  So
  with Postfix, a ``{cert_subject}`` that arrives at all is a verified certificate's CN.
  Postfix has no ``{verify}`` macro.  Sendmail does: there ``{cert_subject}`` is the full
  DN (``/C=../CN=host``) of any presented certificate and ``{verify}`` says ``OK`` only
  for a verified one, so when ``{verify}`` is present it must be ``OK``.

Anything that is not a plain host name (an address literal, "unknown", junk) is dropped
rather than passed on: a wrong name here could let a forged header look verified.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Final

from drossel.app.enforcer import ClientInfo

#: Macros the evidence needs, by the names Postfix and Sendmail use on the wire.
CLIENT_MACROS: Final = "{client_addr} {client_name} {client_ptr}"
TLS_MACROS: Final = "{tls_version} {cert_subject} {cert_issuer} {verify}"

#: Placeholder Postfix sends for a name it could not look up or verify.
UNKNOWN: Final = "unknown"

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# CN=value in an RFC 4514 (", "-separated) or OpenSSL one-line ("/"-separated) DN
_CN = re.compile(r"(?:^|[/,])\s*CN=([^/,+]*)", re.IGNORECASE)


def host_name(value: str | None) -> str | None:
    """``value`` as a lower-case host name without trailing dot, or None if it is none."""
    if not value:
        return None
    name = value.strip().rstrip(".").lower()
    if len(name) > 253 or name == UNKNOWN or not _HOSTNAME.fullmatch(name):
        return None
    if name.replace(".", "").isdigit():
        return None  # an IPv4 address is not a name
    return name


def client_address(value: str | None) -> str | None:
    """The address from ``{client_addr}``, without Postfix's ``IPv6:`` prefix; None if junk."""
    if not value:
        return None
    text = value.strip()
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def certificate_name(subject: str | None) -> str | None:
    """The host name a certificate subject names: Postfix's bare CN, or the CN of a DN."""
    if not subject:
        return None
    found = _CN.findall(subject)
    return host_name(found[-1] if found else subject)


def verified_tls_name(macros: Mapping[str, str]) -> str | None:
    """The client certificate's host name, only if the MTA says the certificate verified."""
    verify = macros.get("verify")
    if verify is not None and verify.strip().upper() != "OK":
        return None  # Sendmail: presented but not verified (FAIL, NO, NONE, ...)
    return certificate_name(macros.get("cert_subject"))


def client_info(
    macros: Mapping[str, str],
    *,
    connect_addr: str | None = None,
    helo: str | None = None,
) -> ClientInfo:
    """Evidence about the client from the macros (names without braces, see the session).

    ``connect_addr`` (the SMFIC_CONNECT address) is the fallback when no ``{client_addr}``
    arrived.  The SMFIC_CONNECT host name is deliberately not used: Sendmail sends the
    unverified PTR name there.
    """
    return ClientInfo(
        addr=client_address(macros.get("client_addr")) or client_address(connect_addr),
        name=host_name(macros.get("client_name")),
        ptr=host_name(macros.get("client_ptr")),
        helo=helo,
        tls_name=verified_tls_name(macros),
    )
