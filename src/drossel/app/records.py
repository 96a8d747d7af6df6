"""The records the application layer keeps: tenants, connectors, stored servers, audit entries.

Plain values, shared by every storage implementation (SQL, in memory) and the adapters.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from drossel.core.decision import ServerRecord

CONNECTOR_TYPES = ("OnPremises", "Partner", "Any")

#: every token starts so, which lets secret scanners and the login form recognise one
TOKEN_PREFIX = "drs_"


def new_token_value() -> str:
    """A new API/web token (shown once; only its hash is stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: int
    name: str
    display_name: str
    contacts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Connector:
    id: int
    tenant: str
    name: str
    type: str
    ip_ranges: tuple[str, ...]
    tls_name: str | None

    def matches(self, client_addr: str | None, tls_name: str | None) -> bool:
        """IP ranges and TLS name must both match where both are configured."""
        ip_ok = True
        if self.ip_ranges:
            ip_ok = False
            if client_addr:
                try:
                    address = ipaddress.ip_address(client_addr.strip("[]").removeprefix("IPv6:"))
                except ValueError:
                    address = None
                if address is not None:
                    ip_ok = any(
                        address in ipaddress.ip_network(r, strict=False) for r in self.ip_ranges
                    )
        tls_ok = True
        if self.tls_name:
            tls_ok = tls_name is not None and tls_name.lower() == self.tls_name.lower()
        return ip_ok and tls_ok and bool(self.ip_ranges or self.tls_name)


@dataclass(frozen=True, slots=True)
class StoredServer:
    id: int
    record: ServerRecord
    evidence: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    tenant: str | None
    action: str
    detail: str


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A token as listed for operators (never its value)."""

    id: int
    role: str
    tenant: str | None
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "role": self.role,
            "tenant": self.tenant,
            "label": self.label,
            "created": self.created_at.isoformat(),
            "last_used": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def merge_sightings(stored: ServerRecord, new: ServerRecord) -> ServerRecord:
    """``new`` as it is to be stored over ``stored`` (written meanwhile by another node): the
    first detection is the earliest of both, last seen the latest; when both clocks started at
    their own first sighting (two nodes' first sightings raced), the clock starts at the
    earliest one (SPEC §9).  Any other clock change (remediation, a new clock after a
    regression) is ``new``'s, as given."""
    clock_start = new.clock_start
    if (
        stored.clock_start is not None
        and clock_start is not None
        and stored.clock_start == stored.first_detected
        and clock_start == new.first_detected
    ):
        clock_start = min(stored.clock_start, clock_start)
    return replace(
        new,
        first_detected=min(stored.first_detected, new.first_detected),
        last_seen=max(stored.last_seen, new.last_seen),
        clock_start=clock_start,
    )
