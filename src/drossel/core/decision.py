"""The verdict for one message: accept, throttle (450 4.7.230) or block (550 5.7.230).

:func:`decide` is pure: detection result, connection facts, a snapshot of the server's state and
the clock go in; the verdict comes out.  Recording what happened (first detection, counters,
remediation) is the caller's job, using :func:`observe` to compute the record's next state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from drossel.core.assessment import Assessment, assess
from drossel.core.catalog import Catalog
from drossel.core.detection import DetectedServer, Detection
from drossel.core.policy import Policy, Status
from drossel.core.schedule import (
    EnforcementClock,
    Pause,
    StageInfo,
    budget_used,
    pause_days_in_year,
    stage_at,
    window_action,
    years_of,
)

Action = Literal["accept", "throttle", "block"]

THROTTLE_CODE = (450, "4.7.230")
BLOCK_CODE = (550, "5.7.230")


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    """What the MTA knows about the connection, and which tenant/connector it matched."""

    tenant: str = "default"
    connector_type: str = "Default"
    client_addr: str | None = None
    client_name: str | None = None
    helo: str | None = None
    tls_name: str | None = None


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """The enforcement record of one sending server of one tenant."""

    tenant: str
    server: str
    first_detected: datetime
    last_seen: datetime
    build: str
    product: str
    status: Status
    clock_start: datetime | None = None
    clock_credit: timedelta = timedelta(0)
    remediated_at: datetime | None = None

    @property
    def clock(self) -> EnforcementClock | None:
        if self.clock_start is None:
            return None
        return EnforcementClock(self.clock_start, self.clock_credit, self.remediated_at)


@dataclass(frozen=True, slots=True)
class Override:
    id: int | None
    tenant: str | None  # None: any tenant
    server: str | None  # None: every server of the tenant
    reason: str
    expires: datetime | None

    def applies(self, tenant: str, server: str, now: datetime) -> bool:
        if self.expires is not None and now >= self.expires:
            return False
        if self.tenant is not None and self.tenant != tenant:
            return False
        return self.server is None or self.server == server


@dataclass(frozen=True, slots=True)
class Snapshot:
    record: ServerRecord | None = None
    pauses: Sequence[Pause] = ()
    overrides: Sequence[Override] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    server: DetectedServer | None = None
    assessment: Assessment | None = None
    stage: int | None = None
    throttle_minutes: int = 0
    block_minutes: int = 0
    paused: bool = False
    enforced: bool = False
    code: int | None = None
    enhanced_code: str | None = None
    text: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "action": self.action,
            "code": self.code,
            "enhanced_code": self.enhanced_code,
            "text": self.text,
            "stage": self.stage,
            "throttle_minutes": self.throttle_minutes,
            "block_minutes": self.block_minutes,
            "paused": self.paused,
            "enforced": self.enforced,
            "server": self.server.server if self.server else None,
            "reason": self.reason,
        }


def relevant_pauses(pauses: Sequence[Pause], tenant: str, server: str) -> list[Pause]:
    return [p for p in pauses if p.tenant == tenant and p.covers(server)]


def observe(
    record: ServerRecord | None,
    facts: ConnectionFacts,
    server: DetectedServer,
    assessment: Assessment,
    now: datetime,
    policy: Policy,
) -> ServerRecord:
    """The server's record after seeing it send with ``assessment`` at ``now`` (SPEC §6).

    Vulnerable: the clock starts (or resumes).  A server remediated less than
    ``regression_window_days`` ago resumes where it left off (the gap is forgiven); later, a new
    clock starts.  Not vulnerable: a running clock stops and the record is marked remediated.
    """
    vulnerable = assessment.persistently_vulnerable
    if record is None:
        return ServerRecord(
            tenant=facts.tenant,
            server=server.server,
            first_detected=now,
            last_seen=now,
            build=server.build.short,
            product=server.product,
            status=assessment.status,
            clock_start=now if vulnerable else None,
        )
    updated = replace(
        record,
        last_seen=max(now, record.last_seen),
        build=server.build.short,
        product=server.product,
        status=assessment.status,
    )
    if vulnerable:
        if updated.clock_start is None:
            return replace(updated, clock_start=now, clock_credit=timedelta(0))
        if updated.remediated_at is not None:
            gap = now - updated.remediated_at
            if gap <= timedelta(days=policy.regression_window_days):
                return replace(updated, clock_credit=updated.clock_credit + gap, remediated_at=None)
            return replace(updated, clock_start=now, clock_credit=timedelta(0), remediated_at=None)
        return updated
    if updated.clock_start is not None and updated.remediated_at is None:
        return replace(updated, remediated_at=now)
    return updated


def _reply_text(policy: Policy, action: Action, minutes: int) -> str:
    template = policy.replies.throttle_text if action == "throttle" else policy.replies.block_text
    return template.format(service=policy.replies.service, minutes=minutes, url=policy.replies.url)


def decide(
    detection: Detection,
    facts: ConnectionFacts,
    snapshot: Snapshot,
    now: datetime,
    policy: Policy,
    catalog: Catalog,
    assessment: Assessment | None = None,
) -> Verdict:
    """Decide what to answer for one message.

    ``snapshot.record`` is the server's record *after* :func:`observe` for this message (or
    ``None`` to let the decision treat ``now`` as first detection).  ``assessment`` may be passed
    in when the caller already has it cached.
    """
    if policy.mode == "off":
        return Verdict(action="accept", reason="drossel is off")
    server = detection.connecting
    if server is None:
        return Verdict(action="accept", reason="no on-premises Exchange server detected")
    if assessment is None:
        assessment = assess(server.build, now.date(), catalog, policy)
    base = Verdict(action="accept", reason="", server=server, assessment=assessment)
    if not assessment.persistently_vulnerable:
        return replace(base, reason=f"server is {assessment.status}")
    record = snapshot.record
    clock = record.clock if record else EnforcementClock(now)
    if clock is None:
        clock = EnforcementClock(now)
    pauses = relevant_pauses(snapshot.pauses, facts.tenant, server.server)
    info: StageInfo = stage_at(policy, clock, now, pauses)
    stage = info.stage
    base = replace(
        base,
        stage=info.number,
        throttle_minutes=stage.throttle_minutes,
        block_minutes=stage.block_minutes,
    )
    for override in snapshot.overrides:
        if override.applies(facts.tenant, server.server, now):
            return replace(base, reason=f"override: {override.reason}")
    if assessment.status not in policy.enforced_statuses:
        return replace(base, reason=f"status {assessment.status} is report-only by policy")
    if policy.mode == "report-only":
        return replace(base, reason="global report-only mode")
    if assessment.product and policy.rollout_for(assessment.product) == "report-only":
        return replace(base, reason=f"{assessment.product} is report-only by policy")
    if facts.connector_type not in policy.enforced_connector_types:
        return replace(base, reason=f"connector type {facts.connector_type} is not enforced")
    if any(p.active_at(now) for p in pauses):
        return replace(base, paused=True, reason="enforcement paused by the tenant")
    window = window_action(stage, f"{facts.tenant}/{server.server}", now)
    if window == "accept":
        reason = "report-only stage" if info.number == 1 else "outside this hour's windows"
        return replace(base, enforced=True, reason=reason)
    action: Action = "throttle" if window == "throttle" else "block"
    code, enhanced = THROTTLE_CODE if action == "throttle" else BLOCK_CODE
    minutes = stage.throttle_minutes if action == "throttle" else stage.block_minutes
    return replace(
        base,
        action=action,
        enforced=True,
        code=code,
        enhanced_code=enhanced,
        text=_reply_text(policy, action, minutes),
        reason=f"stage {info.number} {action} window",
    )


def can_pause(
    existing: Sequence[Pause],
    new: Pause,
    budget_days: int,
) -> str | None:
    """``None`` if ``new`` fits the tenant's yearly budget, else a message saying why not."""
    if new.end <= new.start:
        return "a pause must last at least one day"
    for year in years_of(new.start, new.end):
        used = budget_used((p for p in existing if p.tenant == new.tenant), year)
        wanted = pause_days_in_year(new, year)
        if used + wanted > budget_days:
            left = max(budget_days - used, 0)
            return (
                f"pause budget exceeded for {year}: {used} of {budget_days} days used, "
                f"{left} left, {wanted} requested"
            )
    return None
