"""The operator overview (``report.overview``) against the report rows it must agree with.

Random states (servers of every status, product, connector type and evidence kind, clocks
with credits and remediations inside and outside the regression window, pauses of whole
tenants and of named servers, past, active and planned, overrides of every scope, expired
ones too) are evaluated under several policies on the memory store, SQLite and PostgreSQL.
For each request the reference is computed the slow way: every report row
(``tenant_report``), filtered, sorted and paged in Python.  The overview must give the same
total, the same rows in the same order, and the same sums of today's counters.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drossel.app.catalog_source import packaged_catalog
from drossel.app.memory import MemoryStore
from drossel.app.report import (
    STATUSES,
    OverviewRequest,
    TenantCounts,
    grader,
    overview,
    stage_model,
    tenant_counts,
    tenant_report,
)
from drossel.app.server_query import (
    EVIDENCE_KINDS,
    SORTS,
    ServerFilter,
    ServerQuery,
    ascii_lower,
)
from drossel.app.storage import StateStore
from drossel.core.decision import ServerRecord
from drossel.core.policy import Policy, Stage
from drossel.core.schedule import Pause
from drossel.storage.migrate import upgrade
from drossel.storage.store import Store
from tests.pg import postgres_database

NOW = datetime(2026, 7, 1, 12, tzinfo=UTC)
ACTOR = "test"
TENANTS = ["default", "contoso", "fabrikam", "northwind"]
BUILDS = [
    ("15.1.2507.16", "Exchange 2016"),  # unsupported
    ("15.2.1748.36", "Exchange 2019"),  # unsupported
    ("14.3.513.0", "Exchange 2010"),  # unsupported
    ("15.2.2562.17", "Exchange SE"),  # behind, persistently vulnerable
    ("15.2.2562.37", "Exchange SE"),  # behind, not yet persistently
    ("15.2.2562.43", "Exchange SE"),  # current
    ("15.2.9999.1", "Exchange SE"),  # unknown
    ("15.20.1.1", "Exchange Online"),  # not applicable
    ("not-a-build", ""),  # cannot be graded: its stored status counts
]
POLICIES = {
    "default": Policy(),
    "unverified-short-window": Policy(enforce_unverified=True, regression_window_days=5),
    "rollout": Policy(
        rollout={"Exchange 2016": "report-only"},
        enforced_connector_types=("OnPremises", "Default"),
    ),
    "report-only": Policy(mode="report-only"),
    "off": Policy(mode="off"),
    "short-schedule": Policy(
        stages=(
            Stage(start_day=0, throttle_minutes=0, block_minutes=0),
            Stage(start_day=3, throttle_minutes=10, block_minutes=0),
            Stage(start_day=7, throttle_minutes=0, block_minutes=60),
        ),
        enforced_statuses=("unsupported",),
        inactive_after_days=30,
    ),
}


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path / 'state.db'}")
        upgrade(store.engine)
        yield store
        store.dispose()
        return
    with postgres_database(f"drossel_test_{uuid.uuid4().hex[:10]}") as url:
        store = Store(url)
        upgrade(store.engine)
        yield store
        store.dispose()


def _moment(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A moment in [start, end], to the microsecond (as the databases keep it)."""
    span = int((end - start).total_seconds() * 1_000_000)
    return start + timedelta(microseconds=rng.randrange(max(span, 1)))


def random_state(store: StateStore, rng: random.Random, servers: int = 70) -> None:
    for tenant in TENANTS:
        store.add_tenant(tenant, [], ACTOR, NOW - timedelta(days=400))
    by_tenant: dict[str, list[str]] = {t: [] for t in TENANTS}
    for _ in range(servers):
        tenant = rng.choice(TENANTS)
        # few names, so the same server name turns up in several tenants
        fqdn = f"mx{rng.randrange(30)}.{rng.choice(['a', 'b', 'c_d'])}.example"
        if store.get_server(tenant, fqdn) is not None:
            continue
        build, product = rng.choice(BUILDS)
        connector_type = rng.choice(["Default", "Default", "OnPremises", "Partner", "Any"])
        first = _moment(rng, NOW - timedelta(days=150), NOW)
        clock = credit = remediated = None
        if rng.random() < 0.75:
            clock = _moment(rng, first, min(first + timedelta(days=20), NOW))
            if rng.random() < 0.2:
                credit = timedelta(seconds=rng.randrange(1, 40 * 86400))
            if rng.random() < 0.3:
                # inside or outside the regression window
                remediated = _moment(rng, clock, NOW)
        record = ServerRecord(
            tenant=tenant,
            server=fqdn,
            first_detected=first,
            last_seen=_moment(rng, first, NOW),
            build=build,
            product=product,
            status=rng.choice(STATUSES),  # type: ignore[arg-type]
            clock_start=clock,
            clock_credit=credit or timedelta(0),
            remediated_at=remediated,
            connector_type=connector_type,
            evidence=rng.choice(EVIDENCE_KINDS),  # type: ignore[arg-type]
            via=rng.choice([fqdn, "relay.example", None]),
            trusted=rng.random() < 0.8,
        )
        store.save_server(record, "", NOW)
        by_tenant[tenant].append(fqdn)
    today = NOW.date()
    for tenant in rng.sample(TENANTS, 3):
        for _ in range(rng.randrange(1, 3)):
            start = today + timedelta(days=rng.randrange(-120, 10))
            end = start + timedelta(days=rng.randrange(1, 30))
            named: tuple[str, ...] = ()
            if by_tenant[tenant] and rng.random() < 0.4:
                named = tuple(rng.sample(by_tenant[tenant], min(2, len(by_tenant[tenant]))))
            store.insert_pause(Pause(None, tenant, start, end, named), ACTOR, NOW, lambda _: None)
    scopes: list[tuple[str | None, str | None]] = [(rng.choice(TENANTS), None)]
    for _ in range(3):
        tenant = rng.choice(TENANTS)
        if by_tenant[tenant]:
            scopes.append((tenant, rng.choice(by_tenant[tenant])))
    scopes.append((None, f"mx{rng.randrange(30)}.a.example"))
    if rng.random() < 0.3:
        scopes.append((None, None))
    for tenant, server in scopes:
        expires = rng.choice([None, NOW + timedelta(days=5), NOW - timedelta(hours=1)])
        store.add_override(tenant, server, "reason", expires, ACTOR, NOW - timedelta(days=2))
    counts: dict[Any, int] = {}
    for stored in rng.sample(store.list_servers(), 25):
        for day in (today, today - timedelta(days=1)):
            for action in ("accept", "throttle", "block"):
                if rng.random() < 0.6:
                    counts[(stored.record.tenant, stored.record.server, day, action)] = (
                        rng.randrange(1, 9)
                    )
    store.add_counts(counts, NOW)


def report_rows(store: StateStore, policy: Policy) -> list[tuple[dict[str, Any], int, datetime]]:
    """Every report row with today's counters, its server id and last-seen time."""
    ids = {(s.record.tenant, s.record.server): s for s in store.list_servers()}
    result = []
    for row in tenant_report(store, policy, packaged_catalog(), NOW, None, include_inactive=True):
        stored = ids[(row["tenant"], row["server_fqdn"])]
        counts = store.daily_counts(stored.id, NOW.date()).get(NOW.date(), {})
        today = {a: counts.get(a, 0) for a in ("accept", "throttle", "block")}
        result.append(({**row, "today": today}, stored.id, stored.record.last_seen))
    return result


def reference(
    every: list[tuple[dict[str, Any], int, datetime]], policy: Policy, request: OverviewRequest
) -> tuple[int, list[dict[str, Any]], dict[str, int]]:
    """The page the slow way: every report row, filtered, sorted and paged in Python."""
    cutoff = NOW - timedelta(days=policy.inactive_after_days)
    rows = []
    for row, server_id, last_seen in every:
        if not request.include_inactive and last_seen < cutoff:
            continue
        wanted = [
            (request.tenant, row["tenant"]),
            (request.product, row["product"]),
            (request.status, row["status"]),
            (request.stage, row["stage"]),
            (request.evidence, row["evidence"]),
            (request.paused, row["paused"]),
            (request.overridden, row["override"] is not None),
        ]
        if any(want is not None and want != have for want, have in wanted):
            continue
        if request.search and ascii_lower(request.search) not in ascii_lower(row["server_fqdn"]):
            continue
        rows.append((row, server_id))

    def key(item: tuple[dict[str, Any], int]) -> Any:
        row = item[0]
        return {
            "server": row["server_fqdn"],
            "tenant": row["tenant"],
            "product": row["product"],
            "stage": row["stage"],
            "first_seen": datetime.fromisoformat(row["first_detected"]),
            "last_seen": datetime.fromisoformat(row["last_seen"]),
            "accepted": row["today"]["accept"],
            "throttled": row["today"]["throttle"],
            "blocked": row["today"]["block"],
        }[request.sort]

    rows.sort(key=lambda item: (item[0]["server_fqdn"], item[1]))
    rows.sort(key=key, reverse=request.descending)
    start = (request.page - 1) * request.per_page
    sums = {a: sum(r["today"][a] for r, _ in rows) for a in ("accept", "throttle", "block")}
    return len(rows), [r for r, _ in rows[start : start + request.per_page]], sums


def requests(rng: random.Random, stages: int) -> list[OverviewRequest]:
    everything = {"include_inactive": True, "per_page": 9}
    result = [OverviewRequest(per_page=9), OverviewRequest(**everything, page=3)]  # type: ignore[arg-type]
    result += [OverviewRequest(**everything, stage=k) for k in range(stages + 1)]  # type: ignore[arg-type]
    for flag in (True, False):
        result.append(OverviewRequest(**everything, paused=flag))  # type: ignore[arg-type]
        result.append(OverviewRequest(**everything, overridden=flag))  # type: ignore[arg-type]
    for sort in SORTS:
        result.append(OverviewRequest(sort=sort, include_inactive=True, per_page=8, page=2))
        result.append(OverviewRequest(sort=sort, descending=True, per_page=8))
    result += [OverviewRequest(**everything, status=s) for s in STATUSES]  # type: ignore[arg-type]
    result += [OverviewRequest(**everything, evidence=e) for e in EVIDENCE_KINDS]  # type: ignore[arg-type]
    result += [
        OverviewRequest(**everything, search="MX1"),  # type: ignore[arg-type]
        OverviewRequest(**everything, search="c_d"),  # type: ignore[arg-type]
        OverviewRequest(**everything, search="c%d"),  # type: ignore[arg-type]
        OverviewRequest(**everything, search="x_.b"),  # type: ignore[arg-type]
        OverviewRequest(**everything, product="Exchange SE", sort="stage", descending=True),  # type: ignore[arg-type]
        OverviewRequest(tenant="contoso", sort="stage", per_page=5, page=2),
        OverviewRequest(tenant="default", paused=False, overridden=False, sort="last_seen"),
    ]
    for _ in range(6):  # random combinations
        result.append(
            OverviewRequest(
                tenant=rng.choice([None, *TENANTS]),
                product=rng.choice([None, "Exchange 2016", "Exchange SE"]),
                status=rng.choice([None, *STATUSES]),
                stage=rng.choice([None, 0, 1, 2]),
                evidence=rng.choice([None, *EVIDENCE_KINDS]),
                paused=rng.choice([None, True, False]),
                overridden=rng.choice([None, False]),
                include_inactive=rng.random() < 0.5,
                sort=rng.choice(SORTS),
                descending=rng.random() < 0.5,
                per_page=rng.choice([3, 50]),
                page=rng.choice([1, 2]),
            )
        )
    return result


@pytest.mark.parametrize("seed", [1, 2])
def test_overview_agrees_with_the_report_rows(backend: StateStore, seed: int) -> None:
    rng = random.Random(seed)
    random_state(backend, rng)
    catalog = packaged_catalog()
    for name, policy in POLICIES.items():
        every = report_rows(backend, policy)
        for request in requests(rng, len(policy.stages)):
            result = overview(backend, policy, catalog, NOW, request)
            total, rows, sums = reference(every, policy, request)
            where = f"{name}: {request}"
            assert result.total == total, where
            assert [(r["tenant"], r["server_fqdn"]) for r in result.servers] == [
                (r["tenant"], r["server_fqdn"]) for r in rows
            ], where
            assert result.servers == rows, where
            assert result.today == sums, where


def test_random_states_reach_every_part_of_the_model() -> None:
    """The states above exercise what the stage model leaves to the one-by-one computation
    (credits, recent remediations, named servers), per-tenant limits (past pauses), and
    servers at many stages (so the test above can fail)."""
    exceptions = limits = 0
    stages: set[int] = set()
    policy = POLICIES["default"]
    for seed in (1, 2, 3):
        store = MemoryStore()
        random_state(store, random.Random(seed))
        grade = grader(packaged_catalog(), policy, NOW.date())
        model = stage_model(
            store, policy, NOW, store.list_pauses(), store.list_overrides(NOW), grade
        )
        unmodelled = store.query_servers(
            ServerQuery(filter=ServerFilter(unmodelled=True), today=NOW.date(), model=model)
        )
        exceptions += unmodelled.total
        limits += len(model.tenant_limits)
        every = OverviewRequest(include_inactive=True, per_page=500)
        stages |= {
            r["stage"] for r in overview(store, policy, packaged_catalog(), NOW, every).servers
        }
    assert exceptions > 0 and limits > 0
    assert {0, 1, 8} <= stages and len(stages) >= 6, stages


@pytest.mark.parametrize("seed", [1, 2])
def test_tenant_counts_agree_with_the_report_rows(backend: StateStore, seed: int) -> None:
    """The operators' tenant list counts in the store what the active report rows say: per
    tenant, its servers and those with throttle or block minutes applied now."""
    random_state(backend, random.Random(seed))
    catalog = packaged_catalog()
    enforced_somewhere = False
    for name, policy in POLICIES.items():
        want: dict[str, TenantCounts] = {}
        for row in tenant_report(backend, policy, catalog, NOW, None):
            before = want.get(row["tenant"], TenantCounts(0, 0))
            enforced = bool(row["throttle_minutes"] or row["block_minutes"])
            want[row["tenant"]] = TenantCounts(before.servers + 1, before.enforced + int(enforced))
        got = tenant_counts(backend, policy, catalog, NOW)
        assert got == want, name
        enforced_somewhere |= any(c.enforced for c in got.values())
    assert enforced_somewhere  # the states reach throttled and blocked servers
