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
from drossel.core.policy import Policy, Stage
from drossel.core.schedule import midnight, window_action

#: Any whole hour: minute buckets are turned into moments of it for ``window_action``.
_HOUR = datetime(2000, 1, 3, tzinfo=UTC)

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
    #: dated messages per minute of the hour: all a stage's windows need to know
    minutes: Counter[int] = field(default_factory=Counter)


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


def wanted_fields(block: bytes) -> bytes:
    """Only the ``Received:`` and ``Date:`` fields of a header block (with their continuation
    lines), in order: all that detection and dating read, at a fraction of the parsing cost."""
    keep: list[bytes] = []
    keeping = False
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if keeping:
                keep.append(line)
            continue
        name = line[:9].lower()
        keeping = name.startswith(b"received:") or name.startswith(b"date:")
        if keeping:
            keep.append(line)
    return b"".join(keep)


def scan(archive: Archive, policy: Policy, progress: Progress | None = None) -> Analysis:
    """Detect the connecting on-premises server of every message and tally it."""
    result = Analysis()
    for block in archive.headers(progress):
        result.messages += 1
        headers = parse_headers(to_text(wanted_fields(block)))
        server = detect_in_headers(headers, policy.trusted_hosts).connecting
        if server is None:
            continue
        _tally(result, server, message_time(headers))
    return result


def _tally(result: Analysis, server: DetectedServer, when: datetime | None) -> None:
    key = server.server.lower()
    tally = result.servers.get(key)
    if tally is None:
        tally = result.servers[key] = ServerTally(
            server.server, server.product, server.build, server.evidence, when
        )
    elif when is not None and (tally.build_seen is None or when >= tally.build_seen):
        # the newest message tells the build the server runs now
        tally.product, tally.build, tally.build_seen = server.product, server.build, when
        tally.evidence = server.evidence
    tally.messages += 1
    if when is None:
        return
    tally.dated += 1
    tally.first_seen = when if tally.first_seen is None else min(tally.first_seen, when)
    tally.last_seen = when if tally.last_seen is None else max(tally.last_seen, when)
    tally.days.add(when.date())
    tally.minutes[when.minute] += 1


def refusals(tally: ServerTally, stage: Stage, tenant: str) -> tuple[int, int]:
    """How many of the server's dated messages this stage's windows would throttle and block."""
    key = f"{tenant}/{tally.server}"
    throttled = blocked = 0
    for minute, count in tally.minutes.items():
        action = window_action(stage, key, _HOUR.replace(minute=minute))
        if action == "throttle":
            throttled += count
        elif action == "block":
            blocked += count
    return throttled, blocked


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _per_day(count: int, days: int) -> float:
    return round(count / days, 2) if days else 0.0


def server_report(
    tally: ServerTally, at: datetime, catalog: Catalog, policy: Policy, tenant: str = "default"
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

    stages: list[dict[str, Any]] = []
    refused = 0  # by the last stage
    for number, stage in enumerate(policy.stages, 1):
        throttled, blocked = refusals(tally, stage, tenant) if enforced else (0, 0)
        refused = throttled + blocked
        stages.append(
            {
                "stage": number,
                "from": _iso(start + timedelta(days=stage.start_day)) if start else None,
                "throttled_per_day": _per_day(throttled, span),
                "blocked_per_day": _per_day(blocked, span),
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
        "refused_per_day_final": _per_day(refused, span),
        "recommended_builds": list(assessment.recommended_builds),
        "reasons": list(assessment.reasons),
        "evidence": _clean(tally.evidence),
        "stages": stages,
    }


def report(
    analysis: Analysis,
    at: datetime,
    catalog: Catalog,
    policy: Policy,
    source: str = "",
    tenant: str = "default",
) -> dict[str, Any]:
    """The JSON shape of ``drossel analyze``: ``{"messages": N, "servers": [...]}``."""
    servers = sorted(
        (server_report(t, at, catalog, policy, tenant) for t in analysis.servers.values()),
        key=lambda r: (-r["messages"], r["server"].lower()),
    )
    return {
        "messages": analysis.messages,
        "messages_from_on_premises_exchange": sum(s["messages"] for s in servers),
        "at": at.isoformat(),
        "source": source,
        "servers": servers,
    }
