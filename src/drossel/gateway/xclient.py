"""XCLIENT (Postfix's extension) so the next hop judges the real client, not the gateway.

Without it the next hop sees every client as the gateway's own address, and a next hop that
trusts that address (Postfix's ``permit_mynetworks`` with loopback in ``mynetworks``) relays for
anyone: an open relay.  Postfix's XCLIENT_README: values are xtext (RFC 1891), ``ADDR`` is a
bare IPv4 address or ``IPV6:``-prefixed, ``NAME`` a (forward-confirmed) hostname or
``[UNAVAILABLE]``, ``REVERSE_NAME`` the PTR name; the command
is not allowed inside a mail transaction and must stay under 512 characters, so long values go
in a second command.  After each XCLIENT the server answers with a new 220 greeting and the
client must greet again (we EHLO with the client's own HELO name).
"""

from __future__ import annotations

import ipaddress
import re

from drossel.app.enforcer import ClientInfo

UNAVAILABLE = "[UNAVAILABLE]"
MAX_COMMAND = 510  # 512 including CRLF
_HOSTNAME = re.compile(r"^[A-Za-z0-9_.:\[\]-]{1,255}$")


def xtext(value: str) -> str:
    """RFC 1891 xtext: ``+``, ``=``, controls, space and non-ASCII become ``+XX``."""
    out = []
    for byte in value.encode("utf-8", "surrogateescape"):
        if 33 <= byte <= 126 and byte not in (ord("+"), ord("=")):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def xclient_addr(addr: str | None) -> str:
    if not addr:
        return UNAVAILABLE
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return UNAVAILABLE
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"IPV6:{ip.compressed}"
    return str(ip)


def helo_for_next_hop(helo: str | None) -> str | None:
    """The client's HELO name when it can be repeated to the next hop as one EHLO argument."""
    if helo and _HOSTNAME.match(helo):
        return helo
    return None


def xclient_commands(client: ClientInfo, *, esmtp: bool, supported: set[str]) -> list[str]:
    """The XCLIENT command lines (without CRLF) for ``client``: ``NAME``/``ADDR`` first, then
    ``HELO``/``PROTO``, split so that no line exceeds the SMTP limit.  Only attributes the next
    hop announced are sent.  ``NAME`` is only ever the forward-confirmed name (SPEC §3)."""
    attrs = [
        ("ADDR", xclient_addr(client.addr)),
        ("NAME", client.name or UNAVAILABLE),
        # Postfix 2.9+: the PTR name whether or not it is confirmed (reverse_client_name)
        ("REVERSE_NAME", client.ptr or UNAVAILABLE),
        ("PROTO", "ESMTP" if esmtp else "SMTP"),
        ("HELO", client.helo or UNAVAILABLE),
    ]
    pairs = [f"{key}={xtext(value)}" for key, value in attrs if key in supported]
    lines: list[str] = []
    current = "XCLIENT"
    for pair in pairs:
        if len(pair) + 9 > MAX_COMMAND:
            continue  # a value this long is not a valid HELO/NAME: leave it unset
        if len(current) + 1 + len(pair) > MAX_COMMAND:
            lines.append(current)
            current = "XCLIENT"
        current += " " + pair
    if current != "XCLIENT":
        lines.append(current)
    return lines
