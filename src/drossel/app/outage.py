"""The outage queue: what the per-message path could not (or need not yet) write, as typed events.

Three kinds of event leave the message path: an :class:`Observation` (a sighting that changed a
server's record: first detection, new build, evidence, remediation, regression), a
:class:`LastSeen` time, and a per-day :class:`Count` of verdicts.  Last-seen times and counters
are batched in memory by design; observations wait here only while the database is away.  The
queue is bounded in memory by the caller; beyond that, and on shutdown during an outage, it is
spilled to the local journal (JSON lines, see :mod:`drossel.app.journal`) and replayed in
order when the database answers again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from drossel.core.decision import ConnectionFacts


@dataclass(frozen=True, slots=True)
class Observation:
    """A sighting to be re-applied to the stored record (in order) when it can be written."""

    tenant: str
    server: str
    build: str
    product: str
    evidence: str
    now: datetime
    facts: ConnectionFacts = field(default_factory=ConnectionFacts)

    def to_json(self) -> dict[str, Any]:
        facts = {k: v for k, v in asdict(self.facts).items() if k != "tenant"}
        return {
            "t": "obs",
            "tenant": self.tenant,
            "server": self.server,
            "build": self.build,
            "product": self.product,
            "evidence": self.evidence[:4000],
            "now": self.now.isoformat(),
            "facts": facts,
        }


@dataclass(frozen=True, slots=True)
class LastSeen:
    tenant: str
    server: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "t": "seen",
            "tenant": self.tenant,
            "server": self.server,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Count:
    tenant: str
    server: str
    day: date
    action: str
    n: int

    def to_json(self) -> dict[str, Any]:
        return {
            "t": "count",
            "tenant": self.tenant,
            "server": self.server,
            "day": self.day.isoformat(),
            "action": self.action,
            "n": self.n,
        }


Event = Observation | LastSeen | Count

_FACT_FIELDS = {"connector_type", "client_addr", "client_name", "helo", "tls_name", "ptr"}


def event_from_json(data: dict[str, Any]) -> Event | None:
    """The typed event of a journal line, or ``None`` for a line this version cannot use."""
    try:
        kind = data.get("t")
        if kind == "obs":
            raw = data.get("facts") or {}
            facts = {k: v for k, v in raw.items() if k in _FACT_FIELDS and isinstance(v, str)}
            return Observation(
                tenant=str(data["tenant"]),
                server=str(data["server"]),
                build=str(data["build"]),
                product=str(data["product"]),
                evidence=str(data.get("evidence", "")),
                now=datetime.fromisoformat(data["now"]),
                facts=ConnectionFacts(tenant=str(data["tenant"]), **facts),
            )
        if kind == "seen":
            return LastSeen(
                str(data["tenant"]), str(data["server"]), datetime.fromisoformat(data["at"])
            )
        if kind == "count":
            return Count(
                str(data["tenant"]),
                str(data["server"]),
                date.fromisoformat(data["day"]),
                str(data["action"]),
                int(data["n"]),
            )
    except (KeyError, TypeError, ValueError):
        return None
    return None


CountKey = tuple[str, str, date, str]


class OutageQueue:
    """Pending observations, last-seen times and counters of one process (not thread-safe:
    the enforcer holds its lock around every call)."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []
        self.seen: dict[tuple[str, str], datetime] = {}
        self.counts: dict[CountKey, int] = {}

    def __len__(self) -> int:
        return len(self.observations) + len(self.seen) + len(self.counts)

    def observe(self, observation: Observation) -> None:
        self.observations.append(observation)

    def touch(self, key: tuple[str, str], at: datetime) -> None:
        self.seen[key] = max(at, self.seen.get(key, at))

    def count(self, key: CountKey, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def take(self) -> OutageQueue:
        """Everything queued, leaving this queue empty."""
        taken = OutageQueue()
        taken.observations, self.observations = self.observations, []
        taken.seen, self.seen = self.seen, {}
        taken.counts, self.counts = self.counts, {}
        return taken

    def put_back(self, other: OutageQueue) -> None:
        """Re-queue ``other`` (taken earlier) in front of what arrived since."""
        self.observations = other.observations + self.observations
        for key, at in other.seen.items():
            self.touch(key, at)
        for ckey, n in other.counts.items():
            self.count(ckey, n)

    def add(self, event: Event) -> None:
        if isinstance(event, Observation):
            self.observe(event)
        elif isinstance(event, LastSeen):
            self.touch((event.tenant, event.server), event.at)
        else:
            self.count((event.tenant, event.server, event.day, event.action), event.n)

    def events(self) -> list[Event]:
        result: list[Event] = list(self.observations)
        result += [LastSeen(k[0], k[1], at) for k, at in self.seen.items()]
        result += [Count(k[0], k[1], k[2], k[3], n) for k, n in self.counts.items()]
        return result

    def waiting(self) -> set[tuple[str, str]]:
        """Servers with observations not yet written."""
        return {(o.tenant, o.server) for o in self.observations}
