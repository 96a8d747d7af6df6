"""``query_servers``, ``server_kinds`` and ``clock_groups`` on the memory store, SQLite and
PostgreSQL: the same data gives the same pages, totals, sums and groups on every backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect
from tests.pg import postgres_database

from drossel.app.memory import MemoryStore
from drossel.app.server_query import (
    Computed,
    Enforceable,
    ServerFilter,
    ServerQuery,
    StageModel,
    StatusMatch,
)
from drossel.app.storage import StateStore
from drossel.core.decision import ServerRecord
from drossel.core.schedule import Pause
from drossel.storage.migrate import upgrade
from drossel.storage.store import Store

NOW = datetime(2026, 7, 1, 12, tzinfo=UTC)
TODAY = NOW.date()
OLD, NEW = "15.1.2507.16", "15.2.2562.43"


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


def _server(
    store: StateStore,
    tenant: str,
    fqdn: str,
    *,
    build: str = OLD,
    product: str = "Exchange 2016",
    days: float = 10,
    clock_days: float | None = None,
    seen_days: float = 0.5,
    evidence: str = "connector",
    connector_type: str = "OnPremises",
    status: str = "unsupported",
    credit: timedelta = timedelta(0),
    remediated_days: float | None = None,
) -> int:
    first = NOW - timedelta(days=days)
    record = ServerRecord(
        tenant=tenant,
        server=fqdn,
        first_detected=first,
        last_seen=NOW - timedelta(days=seen_days),
        build=build,
        product=product,
        status=status,  # type: ignore[arg-type]
        clock_start=NOW - timedelta(days=clock_days) if clock_days is not None else None,
        clock_credit=credit,
        remediated_at=(
            NOW - timedelta(days=remediated_days) if remediated_days is not None else None
        ),
        connector_type=connector_type,
        evidence=evidence,  # type: ignore[arg-type]
    )
    return store.save_server(record, "", NOW).id


@pytest.fixture
def state(backend: StateStore) -> tuple[StateStore, dict[str, int]]:
    """Eight servers in three tenants; "mx.shared.example" exists in two of them."""
    for tenant in ("alpha", "beta", "default"):
        backend.add_tenant(tenant, [], "t", NOW - timedelta(days=100))
    ids = {
        "a1": _server(backend, "alpha", "mx.shared.example", days=40, clock_days=40),
        "b1": _server(backend, "beta", "mx.shared.example", days=5, clock_days=5),
        "a2": _server(
            backend, "alpha", "ex2.alpha.example", build=NEW, product="Exchange SE", days=80
        ),
        "a3": _server(backend, "alpha", "EX3.Alpha.example", days=70, clock_days=65),
        "d1": _server(
            backend,
            "default",
            "100%_sure.example",
            evidence="unverified",
            connector_type="Default",
            days=2,
        ),
        "d2": _server(backend, "default", "old.example", days=120, seen_days=90),
        "d3": _server(
            backend, "default", "weird.example", build="garbage", product="", status="unknown"
        ),
        "b2": _server(
            backend,
            "beta",
            "credit.beta.example",
            days=50,
            clock_days=50,
            credit=timedelta(days=3),
        ),
    }
    backend.add_counts(
        {
            ("alpha", "mx.shared.example", TODAY, "accept"): 5,
            ("alpha", "mx.shared.example", TODAY, "throttle"): 2,
            ("beta", "mx.shared.example", TODAY, "accept"): 7,
            ("alpha", "ex2.alpha.example", TODAY, "accept"): 1,
            ("alpha", "ex2.alpha.example", TODAY - timedelta(days=1), "accept"): 100,
            ("default", "old.example", TODAY, "block"): 3,
        },
        NOW,
    )
    return backend, ids


def page(store: StateStore, **kwargs: object) -> tuple[int, list[str], dict[str, int]]:
    query = ServerQuery(today=TODAY, **kwargs)  # type: ignore[arg-type]
    result = store.query_servers(query)
    names = [f"{r.server.record.tenant}/{r.server.record.server}" for r in result.rows]
    return result.total, names, result.today


def test_default_order_is_by_name_then_first_stored(
    state: tuple[StateStore, dict[str, int]],
) -> None:
    store, _ = state
    total, names, today = page(store, filter=ServerFilter())
    assert total == 8
    assert names == [
        "default/100%_sure.example",
        "alpha/EX3.Alpha.example",  # byte order: upper case first, on every backend
        "beta/credit.beta.example",
        "alpha/ex2.alpha.example",
        "alpha/mx.shared.example",  # the same name in two tenants: first stored first
        "beta/mx.shared.example",
        "default/old.example",
        "default/weird.example",
    ]
    assert today == {"accept": 13, "throttle": 2, "block": 3}


def test_paging_keeps_the_total_and_the_order(state: tuple[StateStore, dict[str, int]]) -> None:
    store, _ = state
    _, every, _ = page(store, filter=ServerFilter(), per_page=50)
    pages = [page(store, filter=ServerFilter(), page=n, per_page=3) for n in (1, 2, 3, 4)]
    assert [p[0] for p in pages] == [8, 8, 8, 8]
    assert [name for p in pages for name in p[1]] == every
    assert pages[3][1] == []  # past the end: no rows, the same total
    _, backwards, _ = page(store, filter=ServerFilter(), sort="server", descending=True)
    assert backwards[:2] == ["default/weird.example", "default/old.example"]
    # ties of the chosen column keep name, then first stored first, in both directions
    assert backwards[2:4] == ["alpha/mx.shared.example", "beta/mx.shared.example"]


@pytest.mark.parametrize(
    ("sort", "descending", "first"),
    [
        ("tenant", False, "alpha/EX3.Alpha.example"),
        ("tenant", True, "default/100%_sure.example"),
        ("product", False, "default/weird.example"),  # "" sorts first
        ("first_seen", False, "default/old.example"),
        ("first_seen", True, "default/100%_sure.example"),
        ("last_seen", False, "default/old.example"),
        ("accepted", True, "beta/mx.shared.example"),
        ("throttled", True, "alpha/mx.shared.example"),
        ("blocked", True, "default/old.example"),
    ],
)
def test_sorts(
    state: tuple[StateStore, dict[str, int]], sort: str, descending: bool, first: str
) -> None:
    store, _ = state
    total, names, _ = page(store, filter=ServerFilter(), sort=sort, descending=descending)
    assert total == 8 and names[0] == first
    assert len(set(names)) == 8


def test_filters(state: tuple[StateStore, dict[str, int]]) -> None:
    store, _ = state

    def names(**kwargs: object) -> list[str]:
        return page(store, filter=ServerFilter(**kwargs))[1]  # type: ignore[arg-type]

    assert names(tenants=frozenset({"beta"})) == [
        "beta/credit.beta.example",
        "beta/mx.shared.example",
    ]
    assert names(products=frozenset({"Exchange SE"})) == ["alpha/ex2.alpha.example"]
    assert names(evidence="unverified") == ["default/100%_sure.example"]
    assert names(seen_since=NOW - timedelta(days=60)) == [
        n for n in names() if n != "default/old.example"
    ]
    # search: a case-insensitive substring; LIKE wildcards in it are plain characters
    assert names(search="ALPHA") == ["alpha/EX3.Alpha.example", "alpha/ex2.alpha.example"]
    assert names(search="100%_") == ["default/100%_sure.example"]
    assert names(search="%") == ["default/100%_sure.example"]
    assert names(search="e_a") == []  # "_" would match any character
    assert names(search="shared.example") == ["alpha/mx.shared.example", "beta/mx.shared.example"]
    # status: graded builds, and the stored status of builds that cannot be graded
    graded = StatusMatch("unknown", frozenset(), frozenset({"garbage"}))
    assert names(status=graded) == ["default/weird.example"]
    assert names(status=StatusMatch("current", frozenset({NEW}), frozenset({"garbage"}))) == [
        "alpha/ex2.alpha.example"
    ]
    total, _, today = page(store, filter=ServerFilter(tenants=frozenset({"alpha"})))
    assert total == 3 and today == {"accept": 6, "throttle": 2, "block": 0}
    assert page(store, filter=ServerFilter(tenants=frozenset({"nobody"}))) == (
        0,
        [],
        {"accept": 0, "throttle": 0, "block": 0},
    )


def model(**kwargs: object) -> StageModel:
    """Old builds are enforced for connector evidence; limits: stage 2 from 30 days, 3 from 60
    days (alpha: 35 and 68 days, as if alpha had paused)."""
    return StageModel(
        now=NOW,
        vulnerable_builds=frozenset({OLD}),
        enforceable=(Enforceable("Exchange 2016", "OnPremises", "connector", frozenset({OLD})),),
        restart_before=NOW - timedelta(days=30),
        limits=(NOW - timedelta(days=30), NOW - timedelta(days=60)),
        tenant_limits={"alpha": (NOW - timedelta(days=35), NOW - timedelta(days=68))},
        **kwargs,  # type: ignore[arg-type]
    )


def test_stage_model(state: tuple[StateStore, dict[str, int]]) -> None:
    store, ids = state
    stages = {
        row.server.record.server + "@" + row.server.record.tenant: row.stage
        for row in store.query_servers(
            ServerQuery(filter=ServerFilter(), today=TODAY, model=model(), per_page=50)
        ).rows
    }
    assert stages == {
        "mx.shared.example@alpha": 2,  # 40 days, alpha's stage 2 limit is 35 days
        "mx.shared.example@beta": 1,
        "ex2.alpha.example@alpha": 0,  # not vulnerable
        "EX3.Alpha.example@alpha": 2,  # 65 days: not yet alpha's stage 3 (68 days)
        "100%_sure.example@default": 0,  # unverified: not enforceable
        "old.example@default": 1,  # no clock: the next sighting starts one now
        "weird.example@default": 0,
        "credit.beta.example@beta": None,  # a credit: unmodelled, unknown
    }
    unmodelled = ServerFilter(unmodelled=True)
    assert page(store, filter=unmodelled, model=model())[1] == ["beta/credit.beta.example"]
    exceptions = {ids["b2"]: Computed(3, False, False)}
    with_exceptions = model(exceptions=exceptions)
    assert page(store, filter=ServerFilter(stage=3), model=with_exceptions)[1] == [
        "beta/credit.beta.example"
    ]
    assert page(store, filter=ServerFilter(stage=2), model=with_exceptions)[1] == [
        "alpha/EX3.Alpha.example",
        "alpha/mx.shared.example",
    ]
    by_stage = page(store, filter=ServerFilter(), model=with_exceptions, sort="stage")[1]
    assert by_stage[-3:] == [
        "alpha/EX3.Alpha.example",
        "alpha/mx.shared.example",
        "beta/credit.beta.example",
    ]
    paused = model(exceptions=exceptions, paused_tenants=frozenset({"alpha"}))
    assert page(store, filter=ServerFilter(paused=True), model=paused)[1] == [
        "alpha/EX3.Alpha.example",
        "alpha/mx.shared.example",
    ]
    assert page(store, filter=ServerFilter(stage=0, paused=True), model=paused)[0] == 2
    overridden = model(exceptions=exceptions, overridden_tenants=frozenset({"default"}))
    # only vulnerable servers count as overridden (the others have nothing to override)
    assert page(store, filter=ServerFilter(overridden=True), model=overridden)[1] == [
        "default/100%_sure.example",
        "default/old.example",
    ]
    everything = model(exceptions=exceptions, override_all=True)
    assert page(store, filter=ServerFilter(overridden=False), model=everything)[1] == [
        "beta/credit.beta.example",  # its exception says not overridden
        "alpha/ex2.alpha.example",
        "default/weird.example",
    ]
    named = model(named=frozenset({("alpha", "mx.shared.example")}))
    assert sorted(page(store, filter=unmodelled, model=named)[1]) == [
        "alpha/mx.shared.example",
        "beta/credit.beta.example",
    ]
    anywhere = model(named_anywhere=frozenset({"mx.shared.example"}))
    assert page(store, filter=unmodelled, model=anywhere)[0] == 3


def test_a_remediation_inside_the_window_is_unmodelled(backend: StateStore) -> None:
    backend.add_tenant("alpha", [], "t", NOW)
    _server(backend, "alpha", "late.example", days=90, clock_days=90, remediated_days=45)
    _server(backend, "alpha", "recent.example", days=90, clock_days=90, remediated_days=3)
    rows = backend.query_servers(
        ServerQuery(filter=ServerFilter(), today=TODAY, model=model(), per_page=50)
    ).rows
    assert {r.server.record.server: r.stage for r in rows} == {
        "late.example": 1,  # remediated before the window: a new clock starts now
        "recent.example": None,
    }


def test_server_kinds(state: tuple[StateStore, dict[str, int]]) -> None:
    store, _ = state
    assert store.server_kinds() == [
        (OLD, "Exchange 2016", "Default", "unverified"),
        (OLD, "Exchange 2016", "OnPremises", "connector"),
        (NEW, "Exchange SE", "OnPremises", "connector"),
        ("garbage", "", "OnPremises", "connector"),
    ]


def test_clock_groups(state: tuple[StateStore, dict[str, int]]) -> None:
    store, _ = state
    since = TODAY - timedelta(days=59)
    groups = store.clock_groups(
        ServerFilter(),
        since,
        TODAY - timedelta(days=62),
        frozenset({"beta"}),
        frozenset({("alpha", "EX3.Alpha.example")}),
    )
    found = sorted(
        (
            g.tenant or "",
            g.server or "",
            g.first_day,
            g.clock_day or date.min,
            g.credit_seconds,
            g.remediated_day or date.min,
            g.count,
        )
        for g in groups
    )
    before = since - timedelta(days=1)
    assert found == sorted(
        [
            # alpha (no pauses: no tenant) mx.shared, 40 days on the clock
            ("", "", TODAY - timedelta(days=40), TODAY - timedelta(days=40), 0, date.min, 1),
            # detected before the window: old.example and ex2 (80 days), no clocks
            ("", "", before, date.min, 0, date.min, 2),
            ("", "", TODAY - timedelta(days=2), date.min, 0, date.min, 1),  # 100%_sure
            ("", "", TODAY - timedelta(days=10), date.min, 0, date.min, 1),  # weird.example
            # a named server keeps its name; a clock older than the oldest day is clamped
            ("", "EX3.Alpha.example", before, TODAY - timedelta(days=62), 0, date.min, 1),
            ("beta", "", TODAY - timedelta(days=5), TODAY - timedelta(days=5), 0, date.min, 1),
            # a clock with credit is not clamped
            ("beta", "", *[TODAY - timedelta(days=50)] * 2, 3 * 86400, date.min, 1),
        ]
    )
    only_beta = store.clock_groups(
        ServerFilter(tenants=frozenset({"beta"}), stage=3),  # stage is ignored here
        since,
        since,
        frozenset(),
        frozenset(),
    )
    assert sum(g.count for g in only_beta) == 2


def test_pause_of_a_tenant_does_not_change_the_query(backend: StateStore) -> None:
    """Pauses are the model's business (the application passes paused tenants)."""
    backend.add_tenant("alpha", [], "t", NOW)
    _server(backend, "alpha", "a.example", clock_days=40)
    pause = Pause(None, "alpha", TODAY, TODAY + timedelta(days=3))
    backend.insert_pause(pause, "t", NOW, lambda _: None)
    assert page(backend, filter=ServerFilter(stage=2), model=model())[0] == 1


def test_migration_0004_creates_the_overview_indexes(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(store.engine)
    inspector = inspect(store.engine)
    names = {i["name"] for i in inspector.get_indexes("servers")}
    assert {"ix_servers_fqdn", "ix_servers_last_seen", "ix_servers_kind"} <= names
    day = {i["name"]: i["column_names"] for i in inspector.get_indexes("daily_counts")}
    assert day["ix_daily_counts_day"][:2] == ["day", "server_id"]
    store.dispose()
