"""The per-server report an admin sees (compare Exchange Online's ``Get-OnPremServerReportInfo``).

Shared by ``drossel report``, the REST API, the web pages and the notification mails, so all
say the same thing.  A row shows what is *applied* to the server's mail now: it is the verdict a
message from that server (its last build, evidence and connector type) would get at this
moment, computed by the same functions as the verdict (:func:`~drossel.core.decision.observe`
and :func:`~drossel.core.decision.applied_state`), so the report cannot disagree with it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from drossel.app.records import StoredServer
from drossel.app.server_query import (
    SORTS,
    Computed,
    Enforceable,
    ServerFilter,
    ServerQuery,
    StageModel,
    StatusMatch,
)
from drossel.app.storage import StateStore
from drossel.config import Config
from drossel.core.assessment import Assessment, assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog
from drossel.core.decision import (
    OFF_REASON,
    Applied,
    ConnectionFacts,
    Evidence,
    Override,
    ServerRecord,
    applied_state,
    enforcement_blocker,
    observe,
    relevant_pauses,
)
from drossel.core.detection import DetectedServer
from drossel.core.policy import Policy
from drossel.core.schedule import (
    EnforcementClock,
    Pause,
    budget_used,
    pause_days_in_year,
    stage_at,
    stage_start,
    years_of,
)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _first_stage(policy: Policy, predicate: Any) -> int | None:
    for index, stage in enumerate(policy.stages):
        if predicate(stage):
            return index + 1
    return None


@dataclass(frozen=True, slots=True)
class PauseBudget:
    year: int
    budget: int
    used: int

    @property
    def left(self) -> int:
        return max(self.budget - self.used, 0)

    def to_json(self) -> dict[str, int]:
        return {
            "year": self.year,
            "budget_days": self.budget,
            "used_days": self.used,
            "left_days": self.left,
        }


def pause_budget(store: StateStore, policy: Policy, tenant: str, now: datetime) -> PauseBudget:
    used = budget_used(store.list_pauses(tenant), now.year)
    return PauseBudget(now.year, policy.pause_budget_days, used)


Grader = Callable[[str], Assessment | None]


def grader(catalog: Catalog, policy: Policy, today: date) -> Grader:
    """``build text -> assessment`` at ``today``, each build graded once (many servers share
    a build)."""
    cache: dict[str, Assessment | None] = {}

    def grade(text: str) -> Assessment | None:
        if text not in cache:
            build = Build.parse(text)
            cache[text] = assess(build, today, catalog, policy) if build else None
        return cache[text]

    return grade


@dataclass(frozen=True, slots=True)
class _Now:
    """What is applied to one server now, and the record it is computed from."""

    assessment: Assessment | None
    record: ServerRecord
    state: Applied | None


def _applied_now(
    stored: StoredServer,
    policy: Policy,
    now: datetime,
    pauses: list[Pause],
    overrides: list[Override],
    grade: Grader,
) -> _Now:
    """What a message from the server (its last build, evidence and connector type) would
    get at ``now``: the one computation behind the report row and the overview's stage."""
    last = stored.record
    assessment = grade(last.build)
    record = last
    if assessment is not None and policy.mode != "off":
        # what the next message like the last one would do to the record (clock start,
        # remediation, regression by the passing of time), without storing it
        facts = ConnectionFacts(tenant=last.tenant, connector_type=last.connector_type)
        sighting = DetectedServer(last.server, assessment.build, last.product, "")
        record = _as_last_sighting(
            observe(last, _facts_like(last, facts), sighting, assessment, now, policy, pauses),
            last,
        )
    state = (
        applied_state(
            record,
            assessment,
            record.connector_type,
            record.evidence,
            record.via,
            pauses,
            overrides,
            now,
            policy,
        )
        if assessment is not None and policy.mode != "off"
        else None
    )
    return _Now(assessment, record, state)


def _off_reason(policy: Policy, assessment: Assessment | None) -> str | None:
    """With the global mode ``off`` nothing is applied: a server the schedule would hold
    says so, as its messages' verdicts do."""
    if policy.mode == "off" and assessment is not None and assessment.persistently_vulnerable:
        return OFF_REASON
    return None


def computed_of(
    stored: StoredServer,
    policy: Policy,
    now: datetime,
    pauses: list[Pause],
    overrides: list[Override],
    grade: Grader,
) -> Computed:
    """The overview's stage, paused and overridden of one server, as its report row has them."""
    state = _applied_now(stored, policy, now, pauses, overrides, grade).state
    if state is None:
        return Computed(0, False, False)
    return Computed(state.stage, state.paused_until is not None, state.override is not None)


def server_report(
    stored: StoredServer,
    store: StateStore,
    policy: Policy,
    catalog: Catalog,
    now: datetime,
    pauses: list[Pause],
    overrides: list[Override] | None = None,
    grade: Grader | None = None,
) -> dict[str, Any]:
    """One server's report row (SPEC §7): applied stage and rates, and why they differ from
    the schedule."""
    if overrides is None:
        overrides = store.list_overrides(now)
    if grade is None:
        grade = grader(catalog, policy, now.date())
    last = stored.record
    applied = _applied_now(stored, policy, now, pauses, overrides, grade)
    assessment, record, state = applied.assessment, applied.record, applied.state
    mine = relevant_pauses(pauses, last.tenant, last.server)
    clock = record.clock if record.running else None
    starts: dict[str, str | None] = {
        "throttle_start": None,
        "block_start": None,
        "full_block_start": None,
        "next_stage_start": None,
    }
    scheduled = state.scheduled if state else None
    next_stage: int | None = None
    if clock is not None and scheduled is not None:
        throttle_stage = _first_stage(policy, lambda s: s.throttle_minutes > 0)
        block_stage = _first_stage(policy, lambda s: s.block_minutes > 0)
        full_stage = _first_stage(policy, lambda s: s.block_minutes >= 60)
        for key, number in (
            ("throttle_start", throttle_stage),
            ("block_start", block_stage),
            ("full_block_start", full_stage),
        ):
            if number is not None:
                starts[key] = _iso(stage_start(policy, clock, number, now, mine))
        if scheduled.number < len(policy.stages):
            next_stage = scheduled.number + 1
            starts["next_stage_start"] = _iso(stage_start(policy, clock, next_stage, now, mine))
    next_rates = policy.stages[next_stage - 1] if next_stage else None
    paused_until = max((p.end for p in mine if p.active_at(now)), default=None)
    return {
        "tenant": last.tenant,
        "server_fqdn": last.server,
        "product": last.product,
        "build": last.build,
        "update_name": assessment.update_name if assessment else None,
        "status": assessment.status if assessment else last.status,
        "persistently_vulnerable": assessment.persistently_vulnerable if assessment else False,
        "reasons": list(assessment.reasons) if assessment else [],
        "evidence": last.evidence,
        "via": last.via,
        "connector_type": last.connector_type,
        "first_detected": _iso(last.first_detected),
        "last_seen": _iso(last.last_seen),
        "clock_start": _iso(record.clock_start) if record.running else None,
        "remediated": record.remediated_at is not None,
        "remediated_at": _iso(record.remediated_at),
        "stage": state.stage if state else 0,
        "throttle_minutes": state.throttle_minutes if state else 0,
        "block_minutes": state.block_minutes if state else 0,
        "applied_reason": state.reason if state else _off_reason(policy, assessment),
        "scheduled_stage": scheduled.number if scheduled else None,
        "scheduled_throttle_minutes": scheduled.stage.throttle_minutes if scheduled else 0,
        "scheduled_block_minutes": scheduled.stage.block_minutes if scheduled else 0,
        **starts,
        "next_stage": next_stage,
        "next_stage_throttle_minutes": next_rates.throttle_minutes if next_rates else None,
        "next_stage_block_minutes": next_rates.block_minutes if next_rates else None,
        "recommended_builds": list(assessment.recommended_builds) if assessment else [],
        "paused": bool(state and state.paused_until),
        "paused_until": paused_until.isoformat() if paused_until else None,
        "override": state.override.reason if state and state.override else None,
        "counts": {
            "accept": 0,
            "throttle": 0,
            "block": 0,
            **store.total_counts(stored.id),
        },
    }


def _facts_like(record: Any, facts: ConnectionFacts) -> ConnectionFacts:
    """Connection facts that give the record's last evidence again (see ``evidence_of``)."""
    if record.evidence == "verified":
        return replace(facts, client_name=record.server, ptr=record.via)
    if record.connector_type != "Default" or record.evidence == "connector":
        return replace(facts, client_name=record.via)
    return replace(facts, helo=record.via or "")


def _as_last_sighting(record: Any, last: Any) -> Any:
    """Keep the stored last-seen time and evidence (the hypothetical sighting adds none)."""
    return replace(record, last_seen=last.last_seen, evidence=last.evidence, via=last.via)


def tenant_report(
    store: StateStore,
    policy: Policy,
    catalog: Catalog,
    now: datetime,
    tenant: str | None = None,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    """One object per server; servers unseen for ``inactive_after_days`` are left out unless
    asked for (they stay in the history)."""
    pauses = store.list_pauses(tenant)
    overrides = store.list_overrides(now)
    grade = grader(catalog, policy, now.date())
    cutoff = now - timedelta(days=policy.inactive_after_days)
    result = []
    for stored in store.list_servers(tenant):
        if not include_inactive and stored.record.last_seen < cutoff:
            continue
        result.append(server_report(stored, store, policy, catalog, now, pauses, overrides, grade))
    return result


def report_rows(
    store: StateStore,
    config: Config | Policy,
    catalog: Catalog,
    tenant: str | None,
    now: datetime,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    """The report rows of a tenant (all tenants for ``None``)."""
    policy = config.policy if isinstance(config, Config) else config
    return tenant_report(store, policy, catalog, now, tenant, include_inactive)


# --- the operator overview: every server, filtered, sorted and paged in the store ------------

STATUSES = ("current", "behind", "unsupported", "unknown", "not_applicable")
#: servers evaluated one by one per store query while collecting the model's exceptions
_BATCH = 500


@dataclass(frozen=True, slots=True)
class OverviewRequest:
    """What an operator (or a tenant admin, limited to its tenant) asks the overview for."""

    tenant: str | None = None
    product: str | None = None
    status: str | None = None
    stage: int | None = None
    evidence: str | None = None
    paused: bool | None = None
    overridden: bool | None = None
    search: str | None = None
    include_inactive: bool = False
    sort: str = "server"
    descending: bool = False
    page: int = 1
    per_page: int = 50

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")

    @property
    def needs_model(self) -> bool:
        return (
            self.sort == "stage"
            or self.stage is not None
            or self.paused is not None
            or self.overridden is not None
        )


@dataclass(frozen=True, slots=True)
class Overview:
    total: int
    page: int
    per_page: int
    #: report rows (as ``drossel report --json``) with ``today``: today's counters
    servers: list[dict[str, Any]]
    #: today's counters over every matching server
    today: dict[str, int]
    #: products and tenants of the stored servers, for the filter form
    products: list[str] = field(default_factory=list)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "page": self.page,
            "per_page": self.per_page,
            "pages": self.pages,
            "today": self.today,
            "servers": self.servers,
        }


def _limits(policy: Policy, now: datetime, pauses: list[Pause]) -> tuple[datetime, ...]:
    """For stages 2, 3, ...: the latest clock start at which a running clock (no credit,
    these pauses) is at that stage or later at ``now``.  Found by bisection on
    :func:`~drossel.core.schedule.stage_at` itself (the stage never drops as the clock start
    moves back), to the microsecond the database keeps."""
    paused = timedelta(0)
    for pause in pauses:
        start, end = pause.interval()
        paused += max(min(end, now) - start, timedelta(0))
    limits = []
    for number in range(2, len(policy.stages) + 1):
        days = policy.stages[number - 1].start_day
        low, high = now - timedelta(days=days + 1) - paused, now
        while high - low > timedelta(microseconds=1):
            middle = low + (high - low) // 2
            if stage_at(policy, EnforcementClock(middle), now, pauses).number >= number:
                low = middle
            else:
                high = middle
        limits.append(low)
    return tuple(limits)


Kind = tuple[str, str, str, str]


def stage_model(
    store: StateStore,
    policy: Policy,
    now: datetime,
    pauses: list[Pause],
    overrides: list[Override],
    grade: Grader,
    kinds: list[Kind] | None = None,
) -> StageModel:
    """The applied stage of every server (:func:`~drossel.core.decision.applied_state`, as the
    report row computes it after the hypothetical next sighting) as data the store can
    evaluate; see :class:`~drossel.app.server_query.StageModel` for how.

    Why this is exact: ``applied_state`` gives nothing to a server whose build is not
    persistently vulnerable, then lets an override win, then the policy's exemptions
    (:func:`~drossel.core.decision.enforcement_blocker`, a function of status, product,
    connector type and evidence: evaluated here for every distinct combination stored), then
    an active pause, and otherwise the stage of the clock.  The clock is the stored one, or
    (no clock, or remediated longer than the regression window ago) a new one starting now.
    A clock's stage depends only on its start and the pauses that cover the server; for
    whole-tenant pauses that is one limit per stage and tenant (:func:`_limits`).  Everything
    else (a forgiven clock credit, a remediation inside the regression window, a server named
    by a pause or an override) is left *unmodelled*; :func:`overview` computes those servers
    one by one with the same function as the report row.  ``tests/test_overview.py``
    holds the model to the report rows on random states."""
    tenant_pauses: dict[str, list[Pause]] = defaultdict(list)
    named: set[tuple[str, str]] = set()
    paused_tenants: set[str] = set()
    for pause in pauses:
        if pause.servers:
            named.update((pause.tenant, server) for server in pause.servers)
            continue
        tenant_pauses[pause.tenant].append(pause)
        if pause.active_at(now):
            paused_tenants.add(pause.tenant)
    override_all = False
    overridden_tenants: set[str] = set()
    named_anywhere: set[str] = set()
    for override in overrides:
        if not override.applies(override.tenant or "", override.server or "", now):
            continue  # expired
        if override.server is None:
            if override.tenant is None:
                override_all = True
            else:
                overridden_tenants.add(override.tenant)
        elif override.tenant is None:
            named_anywhere.add(override.server)
        else:
            named.add((override.tenant, override.server))
    vulnerable: set[str] = set()
    enforceable: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    if policy.mode != "off":
        for build, product, connector_type, evidence in kinds or store.server_kinds():
            assessment = grade(build)
            if assessment is None or not assessment.persistently_vulnerable:
                continue
            vulnerable.add(build)
            blocker = enforcement_blocker(
                policy, assessment.status, product, connector_type, cast(Evidence, evidence), None
            )
            if blocker is None:
                enforceable[(product, connector_type, evidence)].add(build)
    default_limits = _limits(policy, now, [])
    return StageModel(
        now=now,
        vulnerable_builds=frozenset(vulnerable),
        enforceable=tuple(
            Enforceable(product, connector_type, evidence, frozenset(builds))
            for (product, connector_type, evidence), builds in sorted(enforceable.items())
        ),
        override_all=override_all,
        overridden_tenants=frozenset(overridden_tenants),
        paused_tenants=frozenset(paused_tenants),
        restart_before=now - timedelta(days=policy.regression_window_days),
        limits=default_limits,
        tenant_limits={
            tenant: _limits(policy, now, mine)
            for tenant, mine in sorted(tenant_pauses.items())
            if any(p.interval()[0] < now for p in mine)
        },
        named=frozenset(named),
        named_anywhere=frozenset(named_anywhere),
    )


def _status_match(
    store: StateStore, status: str, grade: Grader, kinds: list[Kind] | None
) -> StatusMatch:
    """The builds graded ``status`` now (as the report row shows the status)."""
    builds, ungraded = set(), set()
    for build, *_ in kinds or store.server_kinds():
        assessment = grade(build)
        if assessment is None:
            ungraded.add(build)
        elif assessment.status == status:
            builds.add(build)
    return StatusMatch(status, frozenset(builds), frozenset(ungraded))


def server_filter(
    store: StateStore,
    policy: Policy,
    now: datetime,
    request: OverviewRequest,
    grade: Grader,
    kinds: list[Kind] | None = None,
) -> ServerFilter:
    """The store filter of a request (without the model, which :func:`overview` adds)."""
    return ServerFilter(
        tenants=frozenset({request.tenant}) if request.tenant is not None else None,
        products=frozenset({request.product}) if request.product is not None else None,
        status=_status_match(store, request.status, grade, kinds) if request.status else None,
        evidence=request.evidence,
        search=request.search or None,
        seen_since=None
        if request.include_inactive
        else now - timedelta(days=policy.inactive_after_days),
        stage=request.stage,
        paused=request.paused,
        overridden=request.overridden,
    )


def overview(
    store: StateStore,
    policy: Policy,
    catalog: Catalog,
    now: datetime,
    request: OverviewRequest,
) -> Overview:
    """One page of the overview: report rows of the servers matching ``request``, with
    today's counters, how many match, and today's counters summed over all of them.

    Filtering, sorting and paging happen in the store.  Stage, paused and overridden (filters,
    or the stage sort) are computed by the store from :func:`stage_model`; the servers the
    model leaves open (bounded by what pauses and overrides name and by recent regressions,
    not by the number of servers) are computed first, one by one, with the function behind the
    report row, and passed in as the model's exceptions, so totals and pages stay exact."""
    grade = grader(catalog, policy, now.date())
    pauses = store.list_pauses()
    overrides = store.list_overrides(now)
    kinds = store.server_kinds()
    wanted = server_filter(store, policy, now, request, grade, kinds)
    today = now.date()
    model = None
    if request.needs_model:
        model = _exact_model(store, policy, now, pauses, overrides, grade, kinds, wanted)
    page = store.query_servers(
        ServerQuery(
            filter=wanted,
            today=today,
            sort=request.sort,
            descending=request.descending,
            page=request.page,
            per_page=request.per_page,
            model=model,
        )
    )
    rows = []
    for row in page.rows:
        report = server_report(
            row.server, store, policy, catalog, now, pauses, overrides, grade=grade
        )
        rows.append({**report, "today": row.today})
    products = sorted({product for _, product, _, _ in kinds})
    return Overview(page.total, request.page, request.per_page, rows, page.today, products)


@dataclass(frozen=True, slots=True)
class TenantCounts:
    """A tenant's active servers, and how many of them are throttled or blocked in some
    minutes of the hour now (applied, not scheduled)."""

    servers: int
    enforced: int


def tenant_counts(
    store: StateStore, policy: Policy, catalog: Catalog, now: datetime
) -> dict[str, TenantCounts]:
    """Per tenant with active servers, :class:`TenantCounts` (the operators' tenant list),
    counted in the store with the overview's stage model, so a state of hundreds of thousands
    of servers is never loaded; the same counts as the report rows would give."""
    grade = grader(catalog, policy, now.date())
    pauses = store.list_pauses()
    overrides = store.list_overrides(now)
    kinds = store.server_kinds()
    active = ServerFilter(seen_since=now - timedelta(days=policy.inactive_after_days))
    model = _exact_model(store, policy, now, pauses, overrides, grade, kinds, active)
    enforcing = {
        number
        for number, stage in enumerate(policy.stages, start=1)
        if stage.throttle_minutes or stage.block_minutes
    }
    servers: dict[str, int] = defaultdict(int)
    enforced: dict[str, int] = defaultdict(int)
    for (tenant, stage), n in store.stage_counts(active, model).items():
        servers[tenant] += n
        if stage in enforcing:
            enforced[tenant] += n
    return {tenant: TenantCounts(n, enforced[tenant]) for tenant, n in servers.items()}


def _exact_model(
    store: StateStore,
    policy: Policy,
    now: datetime,
    pauses: list[Pause],
    overrides: list[Override],
    grade: Grader,
    kinds: list[Kind],
    wanted: ServerFilter,
) -> StageModel:
    """:func:`stage_model` with the servers it leaves open among those ``wanted`` computed
    one by one and passed in as its exceptions, so what a store counts with it is exact."""
    model = stage_model(store, policy, now, pauses, overrides, grade, kinds)
    return replace(
        model,
        exceptions=_exceptions(store, policy, now, pauses, overrides, grade, wanted, model),
    )


def _exceptions(
    store: StateStore,
    policy: Policy,
    now: datetime,
    pauses: list[Pause],
    overrides: list[Override],
    grade: Grader,
    wanted: ServerFilter,
    model: StageModel,
) -> dict[int, Computed]:
    """The unmodelled servers among those matching the stored-column filters, computed."""
    plain = replace(wanted, stage=None, paused=None, overridden=None, unmodelled=True)
    result: dict[int, Computed] = {}
    number = 1
    while True:
        batch = store.query_servers(
            ServerQuery(
                filter=plain,
                today=now.date(),
                sort="server",
                page=number,
                per_page=_BATCH,
                model=model,
            )
        )
        for row in batch.rows:
            result[row.server.id] = computed_of(row.server, policy, now, pauses, overrides, grade)
        if number * _BATCH >= batch.total or not batch.rows:
            return result
        number += 1


# --- stage history: servers per stage over the last days ------------------------------------


@dataclass(frozen=True, slots=True)
class StageHistory:
    """Per day (oldest first): servers at each scheduled stage ("1" .. "8"), "paused", and
    "none" (detected by then, no clock running)."""

    days: list[date]
    stages: int
    counts: list[dict[str, int]]


def stage_history(
    store: StateStore,
    policy: Policy,
    now: datetime,
    wanted: ServerFilter,
    days: int = 90,
) -> StageHistory:
    """How many of the servers matching ``wanted`` (stage, paused and overridden are ignored:
    those say what applies *now*) were at each stage of the schedule at the end of each of the
    last ``days`` days (today: now), derived from the stored records as they are now.

    A server counts from the day it was first detected.  On a day it counts as "none" when no
    clock was running (none started yet, or remediated by then), as "paused" when a pause
    covering it was in force, and otherwise at the stage
    :func:`~drossel.core.schedule.stage_at` gives its clock (start, forgiven credit, the pauses
    covering it) at the end of that day.  Clock starts are taken at the start of their day, and
    so is the stage change: the chart counts whole days, as the schedule does.  What the
    records no longer hold is not shown: an earlier clock replaced by a new one after a late
    regression, when a forgiven credit was earned, overrides, and the policy's exemptions
    (servers they exempt have no clock, so they count as "none")."""
    today = now.date()
    first = today - timedelta(days=days - 1)
    pauses = store.list_pauses()
    with_pauses = frozenset(p.tenant for p in pauses)
    named = frozenset((p.tenant, s) for p in pauses for s in p.servers)
    longest = max(s.start_day for s in policy.stages)
    paused_days = sum(p.days for p in pauses)
    oldest = first - timedelta(days=longest + paused_days + 1)
    plain = replace(wanted, stage=None, paused=None, overridden=None, unmodelled=False)
    groups = store.clock_groups(plain, first, oldest, with_pauses, named)
    window = [first + timedelta(days=i) for i in range(days)]
    samples = [
        min(datetime.combine(d + timedelta(days=1), time(0), tzinfo=UTC), now)
        - timedelta(microseconds=1)
        for d in window
    ]
    counts: list[Counter[str]] = [Counter() for _ in window]
    for group in groups:
        mine = [
            p
            for p in pauses
            if p.tenant == group.tenant and (not p.servers or group.server in p.servers)
        ]
        clock = (
            EnforcementClock(
                datetime.combine(group.clock_day, time(0), tzinfo=UTC),
                timedelta(seconds=group.credit_seconds),
            )
            if group.clock_day is not None
            else None
        )
        for index, day in enumerate(window):
            if group.first_day > day:
                continue
            if (
                clock is None
                or group.clock_day is None
                or group.clock_day > day
                or (group.remediated_day is not None and group.remediated_day <= day)
            ):
                key = "none"
            elif any(p.active_at(samples[index]) for p in mine):
                key = "paused"
            else:
                key = str(stage_at(policy, clock, samples[index], mine).number)
            counts[index][key] += group.count
    return StageHistory(window, len(policy.stages), [dict(c) for c in counts])


def pause_json(p: Pause, now: datetime) -> dict[str, Any]:
    """A pause as the CLI, the API and the pages show it, with the days it costs: every day
    of ``[start, end)``, per calendar year (SPEC §5)."""
    today = now.date()
    state = "ended" if p.end <= today else ("active" if p.start <= today else "planned")
    return {
        "id": p.id,
        "tenant": p.tenant,
        "start": p.start.isoformat(),
        "end": p.end.isoformat(),
        "days": p.days,
        "charged_days": p.days,
        "charged_by_year": {
            str(year): pause_days_in_year(p, year) for year in years_of(p.start, p.end)
        }
        if p.days
        else {},
        "servers": list(p.servers),
        "all_servers": not p.servers,
        "ended_early": p.ended_early,
        "state": state,
    }


# --- wording shared by the web pages and the notification mails -----------------------------


def day_of(value: str | None) -> str:
    """``2026-12-01T10:00:00+00:00`` → ``2026-12-01``."""
    return value[:10] if value else "—"


def stage_rates(throttle: int | None, block: int | None) -> str:
    throttle, block = throttle or 0, block or 0
    if block >= 60:
        return "all mail refused (550)"
    parts = []
    if block:
        parts.append(f"{block} min/h refused (550)")
    if throttle:
        parts.append(f"{throttle} min/h delayed (450)")
    return ", ".join(parts) or "report only"


def releases_json(
    catalog: Catalog, search: str | None = None, product: str | None = None
) -> list[dict[str, Any]]:
    """Catalog releases as ``drossel catalog --json`` and ``/api/v1/catalog`` show them."""
    releases = catalog.search(search) if search else list(catalog.releases)
    if product:
        releases = [r for r in releases if r.product.lower() == product.lower()]
    return [
        {
            "product": r.product,
            "update_name": r.update_name,
            "build": r.build.short,
            "build_long": r.build.long,
            "release_date": r.release_date.isoformat(),
            "kind": r.kind,
        }
        for r in releases
    ]
