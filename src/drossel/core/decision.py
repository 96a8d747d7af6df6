"""The verdict for one message: accept, throttle (450 4.7.230) or block (550 5.7.230).

:func:`decide` is pure: detection result, connection facts, a snapshot of the server's state and
the clock go in; the verdict comes out.  Recording what happened (first detection, counters,
remediation) is the caller's job, using :func:`observe` to compute the record's next state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

from drossel.core.assessment import Assessment, assess
from drossel.core.catalog import Catalog
from drossel.core.detection import DetectedServer, Detection
from drossel.core.frozen import fast_init, maker
from drossel.core.policy import Policy, Status
from drossel.core.schedule import (
    EnforcementClock,
    Pause,
    StageInfo,
    budget_used,
    forgiven_gap,
    pause_days_in_year,
    stage_at,
    stage_for_day,
    window_action,
    years_of,
)

Action = Literal["accept", "throttle", "block"]

THROTTLE_CODE = (450, "4.7.230")
BLOCK_CODE = (550, "5.7.230")


Evidence = Literal["connector", "verified", "unverified"]


@fast_init
@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    """What the MTA knows about the connection, and which tenant/connector it matched.

    ``client_name`` is a forward-confirmed reverse-DNS name only, ``tls_name`` a name from a
    verified TLS client certificate only; ``ptr`` and ``helo`` prove nothing (SPEC §3)."""

    tenant: str = "default"
    connector_type: str = "Default"
    client_addr: str | None = None
    client_name: str | None = None
    helo: str | None = None
    tls_name: str | None = None
    ptr: str | None = None


def evidence_of(facts: ConnectionFacts, server: str) -> tuple[Evidence, str | None]:
    """How the server named in the headers is tied to the connecting client (SPEC §3), and the
    client it came through (``via``): a connector match, a verified name, or nothing."""
    via = facts.client_name or facts.ptr or facts.helo or facts.client_addr
    if facts.connector_type != "Default":
        return "connector", via
    name, tls_name = facts.client_name, facts.tls_name
    if name or tls_name:
        fqdn = server.lower().rstrip(".")
        if fqdn and (
            (name and fqdn == name.lower().rstrip("."))
            or (tls_name and fqdn == tls_name.lower().rstrip("."))
        ):
            return "verified", via
    return "unverified", via


def trusted(evidence: Evidence, policy: Policy) -> bool:
    """Only connector or verified evidence starts or moves a clock, unless the policy says
    unverified sightings are enforced too."""
    return evidence != "unverified" or policy.enforce_unverified


def enforcement_blocker(
    policy: Policy,
    status: str,
    product: str,
    connector_type: str,
    evidence: Evidence,
    via: str | None,
) -> str | None:
    """Why enforcement does not apply to mail like this, or ``None`` when it does (SPEC §4).

    The one place for the rollout rules: the clock starts only where this says ``None``, and the
    verdict and the report give this reason when nothing is applied."""
    if status not in policy.enforced_statuses:
        return f"status {status} is report-only by policy"
    if policy.mode != "enforce":
        return "global report-only mode"
    if product and policy.rollout_for(product) == "report-only":
        return f"{product} is report-only by rollout"
    if connector_type not in policy.enforced_connector_types:
        return f"connector type {connector_type} is not enforced"
    if not trusted(evidence, policy):
        return f"unverified: seen via {via or 'an unknown client'}"
    return None


MAX_BLOCKERS = 4096
_BLOCKERS: dict[tuple[int, str, str, str, str, str | None], tuple[Policy, str | None]] = {}


def _blocker(
    policy: Policy,
    status: str,
    product: str,
    connector_type: str,
    evidence: Evidence,
    via: str | None,
) -> str | None:
    """:func:`enforcement_blocker`, remembered (asked for every message of a vulnerable
    server; bounded, cleared when full).  An entry holds its policy, so the policy's id in
    the key cannot belong to another policy while the entry exists."""
    key = (id(policy), status, product, connector_type, evidence, via)
    known = _BLOCKERS.get(key)
    if known is not None:
        return known[1]
    blocker = enforcement_blocker(policy, status, product, connector_type, evidence, via)
    if len(_BLOCKERS) >= MAX_BLOCKERS:
        _BLOCKERS.clear()
    _BLOCKERS[key] = (policy, blocker)
    return blocker


@fast_init
@dataclass(frozen=True, slots=True)
class ServerRecord:
    """The enforcement record of one sending server of one tenant.

    ``first_detected`` is history (the first sighting of any kind); the schedule runs from
    ``clock_start``, the first sighting on which enforcement applied (SPEC §4).  ``build``,
    ``product``, ``status`` and ``connector_type`` are from the latest trusted sighting (from the
    latest sighting while none was trusted); ``evidence``/``via`` from the latest sighting."""

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
    connector_type: str = "Default"
    evidence: Evidence = "connector"
    via: str | None = None
    trusted: bool = True

    @property
    def clock(self) -> EnforcementClock | None:
        if self.clock_start is None:
            return None
        return EnforcementClock(self.clock_start, self.clock_credit, self.remediated_at)

    @property
    def running(self) -> bool:
        """A clock started and not stopped by remediation."""
        return self.clock_start is not None and self.remediated_at is None


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


@fast_init
@dataclass(frozen=True, slots=True)
class Snapshot:
    record: ServerRecord | None = None
    pauses: Sequence[Pause] = ()
    overrides: Sequence[Override] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one message.  ``stage`` and the minutes are what is *applied* (0 when
    nothing is); ``scheduled_stage`` is the schedule's, and ``applied_reason`` says why nothing
    is applied where the server is persistently vulnerable."""

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
    scheduled_stage: int | None = None
    applied_reason: str | None = None
    evidence: Evidence | None = None
    via: str | None = None
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
            "scheduled_stage": self.scheduled_stage,
            "applied_reason": self.applied_reason,
            "paused": self.paused,
            "enforced": self.enforced,
            "evidence": self.evidence,
            "via": self.via,
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
    pauses: Sequence[Pause] = (),
) -> ServerRecord:
    """The server's record after seeing it send with ``assessment`` at ``now`` (SPEC §3, §4, §6).

    Only a trusted sighting (connector or verified evidence) moves the clock: it starts on the
    first sighting on which enforcement applies; a server remediated at most
    ``regression_window_days`` ago resumes where it left off (the gap is forgiven), later a new
    clock starts (when enforcement applies); not vulnerable any more: a running clock stops
    and the record is marked remediated.  An untrusted sighting is history only."""
    return observe_changes(record, facts, server, assessment, now, policy, pauses)[0]


def observe_changes(
    record: ServerRecord | None,
    facts: ConnectionFacts,
    server: DetectedServer,
    assessment: Assessment,
    now: datetime,
    policy: Policy,
    pauses: Sequence[Pause] = (),
    evidence: tuple[Evidence, str | None] | None = None,
) -> tuple[ServerRecord, bool]:
    """:func:`observe`, and whether any field but ``last_seen`` changed (always for a first
    sighting): the per-message form.  ``evidence`` is :func:`evidence_of` when the caller has
    it already.

    The next state is worked out field by field and built once, and a sighting that changes
    nothing returns ``record`` itself."""
    kind, via = evidence if evidence is not None else evidence_of(facts, server.server)
    is_trusted = kind != "unverified" or policy.enforce_unverified  # trusted()
    if record is None:
        first_detected = last_seen = now
        clock_start: datetime | None = None
        clock_credit = _NO_TIME
        remediated_at: datetime | None = None
        was_trusted = is_trusted
    else:
        last_seen = max(now, record.last_seen)
        if not is_trusted and record.trusted:
            # history only: never the build, the evidence or the clock of a trusted record
            if last_seen is record.last_seen:
                return record, False
            return _with_last_seen(record, last_seen), False
        first_detected = record.first_detected
        clock_start = record.clock_start
        clock_credit = record.clock_credit
        remediated_at = record.remediated_at
        was_trusted = record.trusted
    status = assessment.status
    if is_trusted:
        if not assessment.persistently_vulnerable:
            if clock_start is not None and remediated_at is None:  # running: it stops
                remediated_at = now
        elif clock_start is None:
            if _applies(policy, status, server.product, facts.connector_type, kind, via):
                clock_start, clock_credit = now, _NO_TIME
        elif remediated_at is not None:
            if now - remediated_at <= timedelta(days=policy.regression_window_days):
                tenant = facts.tenant if record is None else record.tenant
                name = server.server if record is None else record.server
                mine = relevant_pauses(pauses, tenant, name)
                clock_credit = clock_credit + forgiven_gap(remediated_at, now, mine)
            elif _applies(policy, status, server.product, facts.connector_type, kind, via):
                clock_start, clock_credit = now, _NO_TIME
            else:
                clock_start, clock_credit = None, _NO_TIME
            remediated_at = None
    build = server.build.short
    product = server.product
    connector_type = facts.connector_type
    trusted_now = was_trusted or is_trusted
    if record is None:
        changed, tenant, name = True, facts.tenant, server.server
    else:
        # compared as the enforcer's "needs writing" always compared (by value) ...
        changed = not (
            build == record.build
            and kind == record.evidence
            and via == record.via
            and clock_start == record.clock_start
            and remediated_at == record.remediated_at
            and status == record.status
            and product == record.product
            and connector_type == record.connector_type
            and trusted_now == record.trusted
            and clock_credit == record.clock_credit
            and first_detected == record.first_detected
        )
        # ... and the record itself is kept only when every value is its own (the times by
        # identity: an equal time in another zone would still change the record's text)
        if (
            not changed
            and last_seen is record.last_seen
            and clock_start is record.clock_start
            and remediated_at is record.remediated_at
        ):
            return record, False
        tenant, name = record.tenant, record.server
    new = _make_record(
        tenant,
        name,
        first_detected,
        last_seen,
        build,
        product,
        status,
        clock_start,
        clock_credit,
        remediated_at,
        connector_type,
        kind,
        via,
        trusted_now,
    )
    return new, changed


_NO_TIME = timedelta(0)
_make_record = maker(ServerRecord)


def _applies(
    policy: Policy,
    status: str,
    product: str,
    connector_type: str,
    evidence: Evidence,
    via: str | None,
) -> bool:
    return _blocker(policy, status, product, connector_type, evidence, via) is None


def _with_last_seen(old: ServerRecord, last_seen: datetime) -> ServerRecord:
    return _make_record(
        old.tenant,
        old.server,
        old.first_detected,
        last_seen,
        old.build,
        old.product,
        old.status,
        old.clock_start,
        old.clock_credit,
        old.remediated_at,
        old.connector_type,
        old.evidence,
        old.via,
        old.trusted,
    )


def _resumable(record: ServerRecord, now: datetime, policy: Policy) -> bool:
    """A clock stopped by remediation that a regression now would resume (its age frozen at
    the remediation), not restart."""
    return (
        record.clock_start is not None
        and record.remediated_at is not None
        and now - record.remediated_at <= timedelta(days=policy.regression_window_days)
    )


@fast_init
@dataclass(frozen=True, slots=True)
class Applied:
    """What is applied to a server's mail at one moment, and what the schedule says."""

    scheduled: StageInfo | None  # None: not persistently vulnerable, nothing scheduled
    stage: int  # applied stage, 0 when nothing is applied
    throttle_minutes: int
    block_minutes: int
    reason: str | None  # why nothing is applied although something is scheduled
    paused_until: date | None = None
    override: Override | None = None


#: why nothing is applied while the global mode is ``off`` (verdict and report alike)
OFF_REASON = "drossel is off"

NOTHING = Applied(scheduled=None, stage=0, throttle_minutes=0, block_minutes=0, reason=None)
_make_applied = maker(Applied)
_make_verdict = maker(Verdict)


def applied_state(
    record: ServerRecord | None,
    assessment: Assessment,
    connector_type: str,
    evidence: Evidence,
    via: str | None,
    pauses: Sequence[Pause],
    overrides: Sequence[Override],
    now: datetime,
    policy: Policy,
) -> Applied:
    """The applied stage of a server's mail (SPEC §4, §5, §7): the one function behind both the
    verdict and the report row, so they cannot disagree.  ``record`` is after the sighting."""
    if not assessment.persistently_vulnerable or record is None:
        return NOTHING
    mine = relevant_pauses(pauses, record.tenant, record.server) if pauses else []
    if record.clock_start is not None and (
        record.remediated_at is None or _resumable(record, now, policy)
    ):  # running, or stopped by a remediation a regression now would resume
        clock = record.clock
        assert clock is not None
        scheduled = stage_at(policy, clock, now, mine)
    else:
        scheduled = stage_for_day(policy, 0)
    for override in overrides:
        if override.applies(record.tenant, record.server, now):
            until = f" until {override.expires.isoformat()}" if override.expires else ""
            reason = f"override{until}: {override.reason}"
            return _make_applied(scheduled, 0, 0, 0, reason, override=override)
    blocker = _blocker(policy, assessment.status, record.product, connector_type, evidence, via)
    if blocker is not None:
        return _make_applied(scheduled, 0, 0, 0, blocker)
    active = [p for p in mine if p.active_at(now)]
    if active:
        pause_end = max(p.end for p in active)
        reason = f"paused until {pause_end.isoformat()}"
        return _make_applied(scheduled, 0, 0, 0, reason, paused_until=pause_end)
    stage = scheduled.stage
    return _make_applied(
        scheduled, scheduled.number, stage.throttle_minutes, stage.block_minutes, None
    )


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
    ``None``: it is computed here as a first sighting).  ``assessment`` may be passed in when
    the caller already has it cached.
    """
    if policy.mode == "off":
        return Verdict(action="accept", reason=OFF_REASON)
    server = detection.connecting
    if server is None:
        return Verdict(action="accept", reason="no on-premises Exchange server detected")
    if assessment is None:
        assess_ = assess(server.build, now.date(), catalog, policy)
    else:
        assess_ = assessment
    evidence = evidence_of(facts, server.server)
    record = snapshot.record
    if record is None:
        record = observe(None, facts, server, assess_, now, policy)
    return verdict_for(
        server,
        facts,
        record,
        snapshot.pauses,
        snapshot.overrides,
        now,
        policy,
        assess_,
        evidence,
    )


def verdict_for(
    server: DetectedServer,
    facts: ConnectionFacts,
    record: ServerRecord,
    pauses: Sequence[Pause],
    overrides: Sequence[Override],
    now: datetime,
    policy: Policy,
    assessment: Assessment,
    evidence: tuple[Evidence, str | None],
) -> Verdict:
    """:func:`decide` for a detected server whose record (after :func:`observe`), assessment
    and :func:`evidence_of` the caller has: the per-message form, with the policy not off."""
    kind, via = evidence
    state = applied_state(
        record, assessment, facts.connector_type, kind, via, pauses, overrides, now, policy
    )
    # the verdict is built once: accept unless this minute is in the stage's windows
    scheduled = state.scheduled
    action: Action = "accept"
    enforced = False
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    if scheduled is None:
        reason = f"server is {assessment.status}"
    elif state.reason is not None:
        reason = state.reason
    else:
        enforced = True
        applied = policy.stages[state.stage - 1]
        window = window_action(applied, f"{facts.tenant}/{server.server}", now)
        if window == "accept":
            reason = "report-only stage" if state.stage == 1 else "outside this hour's windows"
        else:
            action = "throttle" if window == "throttle" else "block"
            code, enhanced = THROTTLE_CODE if action == "throttle" else BLOCK_CODE
            minutes = applied.throttle_minutes if action == "throttle" else applied.block_minutes
            text = _reply_text(policy, action, minutes)
            reason = f"stage {state.stage} {action} window"
    return _make_verdict(
        action,
        reason,
        server,
        assessment,
        state.stage,
        state.throttle_minutes,
        state.block_minutes,
        state.paused_until is not None,
        enforced,
        code,
        enhanced,
        text,
        scheduled.number if scheduled else None,
        state.reason,
        kind,
        via,
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
                f"only {left} of {budget_days} days are left for {year}, {wanted} requested"
            )
    return None
