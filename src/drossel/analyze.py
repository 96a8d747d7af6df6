"""What-if before enforcing: run detection over a mail archive and say what the schedule would do.

An operator points this at mail they already received (an mbox, a Maildir, a directory of
``.eml`` files).  Every message goes through the production detection (the same code as the
milter and gateway), every detected on-premises Exchange server is graded against the packaged
catalog, and for each one the report says when throttling and blocking would begin if
enforcement started at ``at``, and how many of the archive's messages per day each stage would
have refused, using the real minute windows of that server.  No database is touched.

Memory is constant in the number of messages: per server only counters, per stage and per
archive day.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from drossel.archive import Archive, Progress
from drossel.core.assessment import assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog
from drossel.core.detection import DetectedServer, detect_in_headers, parse_headers, to_text
from drossel.core.policy import Policy
from drossel.core.schedule import midnight, window_action

#: Longest evidence text kept per server (a Received header, printable characters only).
MAX_EVIDENCE = 300


@dataclass
class ServerTally:
    """What the archive showed of one server."""

    server: str
    product: str
    build: Build
    evidence: str
    build_seen: datetime | None = None
    messages: int = 0
    #: messages with a usable date (only those count in per-day rates)
    dated: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    days: set[date] = field(default_factory=set)
    #: per stage number: messages that stage's windows would have throttled / blocked
    throttled: Counter[int] = field(default_factory=Counter)
    blocked: Counter[int] = field(default_factory=Counter)


@dataclass
class Analysis:
    messages: int = 0
    servers: dict[str, ServerTally] = field(default_factory=dict)


def message_time(headers: list[tuple[str, str]]) -> datetime | None:
    """When the message arrived: the date of the top-most ``Received:`` line, else ``Date:``."""
    candidates = [v.rpartition(";")[2] for n, v in headers if n.lower() == "received"][:1]
    candidates += [v for n, v in headers if n.lower() == "date"][:1]
    for text in candidates:
        try:
            moment = parsedate_to_datetime(" ".join(text.split()))
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
        if moment is None:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            return moment.astimezone(UTC)
        except (OverflowError, ValueError):
            continue
    return None


def _clean(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in " ".join(text.split()))[:MAX_EVIDENCE]


def scan(
    archive: Archive,
    policy: Policy,
    tenant: str = "default",
    progress: Progress | None = None,
) -> Analysis:
    """Detect the connecting on-premises server of every message and tally it."""
    result = Analysis()
    for block in archive.headers(progress):
        result.messages += 1
        headers = parse_headers(to_text(block))
        server = detect_in_headers(headers, policy.trusted_hosts).connecting
        if server is None:
            continue
        _tally(result, server, message_time(headers), policy, tenant)
    return result


def _tally(
    result: Analysis, server: DetectedServer, when: datetime | None, policy: Policy, tenant: str
) -> None:
    key = server.server.lower()
    tally = result.servers.get(key)
    if tally is None:
        tally = result.servers[key] = ServerTally(
            server.server, server.product, server.build, _clean(server.evidence), when
        )
    elif when is not None and (tally.build_seen is None or when >= tally.build_seen):
        # the newest message tells the build the server runs now
        tally.product, tally.build, tally.build_seen = server.product, server.build, when
        tally.evidence = _clean(server.evidence)
    tally.messages += 1
    if when is None:
        return
    tally.dated += 1
    tally.first_seen = when if tally.first_seen is None else min(tally.first_seen, when)
    tally.last_seen = when if tally.last_seen is None else max(tally.last_seen, when)
    tally.days.add(when.date())
    window_key = f"{tenant}/{server.server}"
    for number, stage in enumerate(policy.stages, 1):
        action = window_action(stage, window_key, when)
        if action == "throttle":
            tally.throttled[number] += 1
        elif action == "block":
            tally.blocked[number] += 1


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _per_day(count: int, days: int) -> float:
    return round(count / days, 2) if days else 0.0


def server_report(
    tally: ServerTally, at: datetime, catalog: Catalog, policy: Policy
) -> dict[str, Any]:
    """One server: what it is, what the archive shows, what enforcing from ``at`` would do."""
    assessment = assess(tally.build, at.date(), catalog, policy)
    enforced = (
        policy.mode == "enforce"
        and assessment.persistently_vulnerable
        and assessment.status in policy.enforced_statuses
        and policy.rollout_for(tally.product) == "enforce"
    )
    span = (
        (tally.last_seen.date() - tally.first_seen.date()).days + 1
        if tally.first_seen and tally.last_seen
        else 0
    )
    start = midnight(at.date()) if enforced else None

    def begins(pred: Any) -> str | None:
        if start is None:
            return None
        for stage in policy.stages:
            if pred(stage):
                return _iso(start + timedelta(days=stage.start_day))
        return None

    stages = []
    for number, stage in enumerate(policy.stages, 1):
        stages.append(
            {
                "stage": number,
                "from": _iso(start + timedelta(days=stage.start_day)) if start else None,
                "throttled_per_day": _per_day(tally.throttled[number], span) if enforced else 0.0,
                "blocked_per_day": _per_day(tally.blocked[number], span) if enforced else 0.0,
            }
        )
    return {
        "server": tally.server,
        "product": tally.product,
        "build": tally.build.short,
        "update_name": assessment.update_name,
        "status": assessment.status,
        "enforced": enforced,
        "messages": tally.messages,
        "first_seen": _iso(tally.first_seen),
        "last_seen": _iso(tally.last_seen),
        "active_days": len(tally.days),
        "messages_per_day": _per_day(tally.dated, span),
        "throttle_start": begins(lambda s: s.throttle_minutes > 0),
        "block_start": begins(lambda s: s.block_minutes > 0),
        "full_block_start": begins(lambda s: s.block_minutes >= 60),
        "refused_per_day_final": (
            stages[-1]["throttled_per_day"] + stages[-1]["blocked_per_day"] if enforced else 0.0
        ),
        "recommended_builds": list(assessment.recommended_builds),
        "reasons": list(assessment.reasons),
        "evidence": tally.evidence,
        "stages": stages,
    }


def report(
    analysis: Analysis, at: datetime, catalog: Catalog, policy: Policy, source: str = ""
) -> dict[str, Any]:
    """The JSON shape of ``drossel analyze``: ``{"messages": N, "servers": [...]}``."""
    servers = sorted(
        (server_report(t, at, catalog, policy) for t in analysis.servers.values()),
        key=lambda r: (-r["messages"], r["server"].lower()),
    )
    return {
        "messages": analysis.messages,
        "messages_from_on_premises_exchange": sum(s["messages"] for s in servers),
        "at": at.isoformat(),
        "source": source,
        "servers": servers,
    }
