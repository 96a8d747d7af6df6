"""The client's reverse-DNS name, forward-confirmed (SPEC §3 evidence).

A PTR record is whatever the owner of the address block writes, so a PTR name alone proves
nothing: it only counts when one of its A/AAAA records leads back to the client's address
(Postfix's ``{client_name}``).  The lookup is async (dnspython), bounded by a short total
timeout and never fails a session: on a timeout or any DNS error the client simply has no
name.  The unconfirmed PTR name is kept too, for reports.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

log = logging.getLogger("drossel.gateway")

#: At most this many PTR names are tried for forward confirmation (as Postfix does).
MAX_PTR_NAMES = 5


@dataclass(frozen=True, slots=True)
class ReverseName:
    ptr: str | None = None
    """The first PTR name, confirmed or not."""
    name: str | None = None
    """A PTR name whose forward lookup contains the client's address, else ``None``."""


def _name(text: str) -> str:
    return text.rstrip(".").lower()


class ReverseLookup:
    """Forward-confirmed reverse lookups against ``nameservers`` (``None``: the system's
    ``/etc/resolv.conf``), each bounded by ``timeout`` seconds in total."""

    def __init__(
        self, nameservers: list[str] | None = None, port: int = 53, timeout: float = 2.0
    ) -> None:
        self.timeout = timeout
        self.resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            self.resolver.nameservers = list(nameservers)
            self.resolver.port = port
        self.resolver.timeout = timeout
        self.resolver.lifetime = timeout

    async def lookup(self, addr: str | None) -> ReverseName:
        """PTR, then A/AAAA of each PTR name; ``ReverseName()`` when nothing is known."""
        try:
            ip = ipaddress.ip_address((addr or "").split("%", 1)[0])
        except ValueError:
            return ReverseName()
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        found: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                return await self._confirm(ip, found)
        except TimeoutError:
            log.info("reverse lookup of %s timed out", ip)
        except dns.exception.DNSException as exc:
            log.debug("reverse lookup of %s: %s", ip, exc)
        return ReverseName(ptr=found[0] if found else None)

    async def _confirm(
        self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, found: list[str]
    ) -> ReverseName:
        try:
            answer = await self.resolver.resolve_address(str(ip))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return ReverseName()
        found.extend(_name(r.target.to_text()) for r in answer)
        rdtype = "AAAA" if ip.version == 6 else "A"
        for name in found[:MAX_PTR_NAMES]:
            try:
                forward = await self.resolver.resolve(name, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            if any(ipaddress.ip_address(r.address) == ip for r in forward):
                return ReverseName(ptr=found[0], name=name)
        return ReverseName(ptr=found[0] if found else None)
