"""SQL of the operator overview: :class:`~drossel.app.server_query.ServerQuery` as one counting
and one paging statement, the stage model as a ``CASE`` expression (see
:class:`~drossel.app.server_query.StageModel`), and the clock groups of the stage history.

Filters are plain comparisons on indexed columns where they can be; the sort is stable (server
name, then id: first stored first, after the chosen column) and byte-wise on both databases
(``COLLATE "C"`` on PostgreSQL, SQLite's default), so SQLite, PostgreSQL and the memory store
page identically, and the default order can walk the index on the server name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    DateTime,
    Integer,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

from drossel.app.server_query import (
    COUNT_SORTS,
    ClockGroup,
    ServerFilter,
    ServerQuery,
    StageModel,
    ascii_lower,
)
from drossel.storage import schema as t

S = t.servers
T = t.tenants
ACTIONS = ("accept", "throttle", "block")


def _dt(moment: datetime) -> ColumnElement[Any]:
    naive = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    return literal(naive, DateTime)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0))


def _ids(ids: Iterable[int]) -> ColumnElement[bool]:
    """``servers.id IN (...)`` with the numbers written into the statement (no limit on the
    number of bound parameters; integers only)."""
    values = sorted(ids)
    if not values:
        return false()
    return S.c.id.in_(bindparam(None, values, type_=Integer, expanding=True, literal_execute=True))


def _any(clauses: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return or_(false(), *clauses) if clauses else false()


def _of_tenants(names: Iterable[str]) -> ColumnElement[bool]:
    """The server belongs to one of these tenants (by id: no join with ``tenants``)."""
    wanted = sorted(set(names))
    if not wanted:
        return false()
    return S.c.tenant_id.in_(select(T.c.id).where(T.c.name.in_(wanted)).scalar_subquery())


def _named(pairs: Iterable[tuple[str, str]]) -> ColumnElement[bool]:
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for tenant, fqdn in pairs:
        by_tenant[tenant].append(fqdn)
    return _any(
        [
            and_(_of_tenants([tenant]), S.c.fqdn.in_(sorted(names)))
            for tenant, names in by_tenant.items()
        ]
    )


class ModelSql:
    """The stage model as column expressions over ``servers`` joined with ``tenants``."""

    def __init__(self, model: StageModel) -> None:
        vulnerable = S.c.build.in_(sorted(model.vulnerable_builds))
        remediated_lately = (
            S.c.remediated_at >= _dt(model.restart_before)
            if model.restart_before is not None
            else false()
        )
        self.unmodelled = and_(
            vulnerable,
            or_(
                S.c.clock_credit_seconds != 0,
                remediated_lately,
                _named(model.named),
                S.c.fqdn.in_(sorted(model.named_anywhere)),
            ),
        )
        overridden = and_(
            vulnerable,
            true() if model.override_all else _of_tenants(model.overridden_tenants),
        )
        enforceable = _any(
            [
                and_(
                    S.c.product == e.product,
                    S.c.connector_type == e.connector_type,
                    S.c.evidence_kind == e.evidence,
                    S.c.build.in_(sorted(e.builds)),
                )
                for e in model.enforceable
            ]
        )
        enforced = and_(vulnerable, not_(overridden), enforceable)
        paused_tenant = _of_tenants(model.paused_tenants)
        now = _dt(model.now)
        clock = case(
            (S.c.remediated_at.is_not(None), now),
            (S.c.clock_start.is_(None), now),
            else_=S.c.clock_start,
        )

        def band(limits: tuple[datetime, ...]) -> ColumnElement[Any]:
            if not limits:
                return literal(1, Integer)
            steps = [(clock <= _dt(limits[i]), literal(i + 2, Integer)) for i in range(len(limits))]
            return case(*reversed(steps), else_=literal(1, Integer))

        by_limits: dict[tuple[datetime, ...], list[str]] = defaultdict(list)
        for tenant, limits in model.tenant_limits.items():
            if limits != model.limits:
                by_limits[limits].append(tenant)
        stage_of_clock: ColumnElement[Any]
        if by_limits:
            stage_of_clock = case(
                *[
                    (_of_tenants(tenants), band(limits))
                    for limits, tenants in sorted(by_limits.items(), key=lambda kv: kv[1])
                ],
                else_=band(model.limits),
            )
        else:
            stage_of_clock = band(model.limits)

        by_stage: dict[int, list[int]] = defaultdict(list)
        paused_ids, overridden_ids = [], []
        for server_id, value in model.exceptions.items():
            by_stage[value.stage].append(server_id)
            if value.paused:
                paused_ids.append(server_id)
            if value.overridden:
                overridden_ids.append(server_id)
        known = _ids(model.exceptions)
        unknown = null()
        self.stage: ColumnElement[Any] = case(
            *[(_ids(ids), literal(stage, Integer)) for stage, ids in sorted(by_stage.items())],
            (self.unmodelled, unknown),
            (and_(enforced, not_(paused_tenant)), stage_of_clock),
            else_=literal(0, Integer),
        )
        self.paused: ColumnElement[Any] = case(
            (known, case((_ids(paused_ids), true()), else_=false())),
            (self.unmodelled, unknown),
            else_=and_(enforced, paused_tenant),
        )
        self.overridden: ColumnElement[Any] = case(
            (known, case((_ids(overridden_ids), true()), else_=false())),
            (self.unmodelled, unknown),
            else_=overridden,
        )


def _today(day: date) -> Any:
    dc = t.daily_counts
    return (
        select(
            dc.c.server_id,
            *[
                func.sum(case((dc.c.action == action, dc.c["count"]), else_=0)).label(action)
                for action in ACTIONS
            ],
        )
        .where(dc.c.day == day)
        .group_by(dc.c.server_id)
        .subquery("today")
    )


def _where(f: ServerFilter, model: ModelSql | None) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if f.tenants is not None:
        clauses.append(_of_tenants(f.tenants))
    if f.products is not None:
        clauses.append(S.c.product.in_(sorted(f.products)))
    if f.status is not None:
        clauses.append(
            or_(
                S.c.build.in_(sorted(f.status.builds)),
                and_(S.c.build.in_(sorted(f.status.ungraded)), S.c.status == f.status.status),
            )
        )
    if f.evidence is not None:
        clauses.append(S.c.evidence_kind == f.evidence)
    if f.search:
        needle = ascii_lower(f.search).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(func.lower(S.c.fqdn).like(f"%{needle}%", escape="\\"))
    if f.seen_since is not None:
        clauses.append(S.c.last_seen >= _dt(f.seen_since))
    if f.needs_model:
        if model is None:
            raise ValueError("filtering by stage needs a stage model")
        if f.stage is not None:
            clauses.append(model.stage == f.stage)
        if f.paused is not None:
            clauses.append(model.paused if f.paused else not_(model.paused))
        if f.overridden is not None:
            clauses.append(model.overridden if f.overridden else not_(model.overridden))
        if f.unmodelled:
            clauses.append(model.unmodelled)
    return clauses


def _text(column: ColumnElement[Any], postgres: bool) -> ColumnElement[Any]:
    return column.collate("C") if postgres else column


def _today_of(day: date, action: str) -> ColumnElement[Any]:
    """One server's counter of ``action`` on ``day`` (a primary-key lookup)."""
    dc = t.daily_counts
    return func.coalesce(
        select(dc.c["count"])
        .where(dc.c.server_id == S.c.id, dc.c.day == day, dc.c.action == action)
        .scalar_subquery(),
        0,
    )


def query_servers(
    conn: Any, query: ServerQuery, postgres: bool
) -> tuple[int, dict[str, int], list[Any]]:
    """How many servers match, today's counters summed over them, and the page rows
    (``servers`` columns, ``tenant_name``, ``today_<action>``, ``model_stage``).

    Three statements, each the cheapest for its part: the count touches the servers only, the
    sums start from today's counters (index on day), and the page reads today's counters of
    its own rows only, unless it is sorted by them (then they are joined, aggregated once)."""
    model = ModelSql(query.model) if query.model is not None else None
    clauses = _where(query.filter, model)
    servers = S.join(T, T.c.id == S.c.tenant_id)
    total = conn.execute(select(func.count()).select_from(S).where(*clauses)).scalar_one()
    dc = t.daily_counts
    sums = dict.fromkeys(ACTIONS, 0)
    if total:
        summed = select(dc.c.action, func.sum(dc.c["count"])).where(dc.c.day == query.today)
        if clauses:
            summed = summed.select_from(dc.join(S, S.c.id == dc.c.server_id)).where(*clauses)
        for action, n in conn.execute(summed.group_by(dc.c.action)).all():
            if action in sums:
                sums[str(action)] = int(n or 0)
    if total <= query.offset:
        return int(total), sums, []
    # the page's ids first, sorting as little as possible; then its rows and counters
    source: Any = T.join(S, T.c.id == S.c.tenant_id) if query.sort == "tenant" else S
    keys: dict[str, ColumnElement[Any]] = {
        "server": _text(S.c.fqdn, postgres),
        "tenant": _text(T.c.name, postgres),
        "product": _text(S.c.product, postgres),
        "first_seen": S.c.first_detected,
        "last_seen": S.c.last_seen,
    }
    if query.sort in COUNT_SORTS:
        today = _today(query.today)
        source = source.outerjoin(today, today.c.server_id == S.c.id)
        keys[query.sort] = func.coalesce(today.c[COUNT_SORTS[query.sort]], 0)
    if model is not None:
        keys["stage"] = func.coalesce(model.stage, -1)
    key = keys[query.sort]
    order: list[ColumnElement[Any]] = [key.desc() if query.descending else key.asc()]
    if query.sort != "server":  # a repeated column keeps SQLite from walking the index
        order.append(_text(S.c.fqdn, postgres))
    order.append(S.c.id)
    ids = [
        int(row[0])
        for row in conn.execute(
            select(S.c.id)
            .select_from(source)
            .where(*clauses)
            .order_by(*order)
            .limit(query.per_page)
            .offset(query.offset)
        )
    ]
    rows = conn.execute(
        select(
            S,
            T.c.name.label("tenant_name"),
            *[_today_of(query.today, action).label(f"today_{action}") for action in ACTIONS],
            (model.stage if model is not None else null()).label("model_stage"),
        )
        .select_from(servers)
        .where(_ids(ids))
    ).all()
    position = {server_id: index for index, server_id in enumerate(ids)}
    return int(total), sums, sorted(rows, key=lambda r: position[r.id])


def stage_counts(conn: Any, f: ServerFilter, model: StageModel) -> dict[tuple[str, int], int]:
    """How many servers matching ``f`` each tenant has at each applied stage, in one grouped
    statement (unmodelled rows the model has no exception for count as stage -1)."""
    model_sql = ModelSql(model)
    stage = func.coalesce(model_sql.stage, -1)
    rows = conn.execute(
        select(T.c.name, stage, func.count())
        .select_from(S.join(T, T.c.id == S.c.tenant_id))
        .where(*_where(f, model_sql))
        .group_by(T.c.name, stage)
    ).all()
    return {(str(tenant), int(number)): int(n) for tenant, number, n in rows}


def server_kinds(conn: Any) -> list[tuple[str, str, str, str]]:
    rows = conn.execute(
        select(S.c.build, S.c.product, S.c.connector_type, S.c.evidence_kind).distinct()
    ).all()
    return sorted((str(b), str(p), str(c), str(e)) for b, p, c, e in rows)


def clock_groups(
    conn: Any,
    f: ServerFilter,
    since: date,
    oldest_clock: date,
    tenants: frozenset[str],
    named: frozenset[tuple[str, str]],
    sqlite: bool,
) -> list[ClockGroup]:
    plain = ServerFilter(
        tenants=f.tenants,
        products=f.products,
        status=f.status,
        evidence=f.evidence,
        search=f.search,
        seen_since=f.seen_since,
    )

    def day(value: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.date(value, type_=Date) if sqlite else cast(value, Date)

    start = _dt(_midnight(since))
    before = _dt(_midnight(since - timedelta(days=1)))
    oldest = _dt(_midnight(oldest_clock))
    keyed = (
        select(
            case((T.c.name.in_(sorted(tenants)), T.c.name), else_=null()).label("tenant"),
            case((_named(named), S.c.fqdn), else_=null()).label("server"),
            day(case((S.c.first_detected < start, before), else_=S.c.first_detected)).label(
                "first_day"
            ),
            day(
                case(
                    (and_(S.c.clock_start < oldest, S.c.clock_credit_seconds == 0), oldest),
                    else_=S.c.clock_start,
                )
            ).label("clock_day"),
            S.c.clock_credit_seconds.label("credit"),
            day(case((S.c.remediated_at < start, before), else_=S.c.remediated_at)).label(
                "remediated_day"
            ),
        )
        .select_from(S.join(T, T.c.id == S.c.tenant_id))
        .where(*_where(plain, None))
        .subquery("keyed")
    )
    columns = [keyed.c[name] for name in ("tenant", "server", "first_day", "clock_day")]
    columns += [keyed.c.credit, keyed.c.remediated_day]
    rows = conn.execute(select(*columns, func.count()).group_by(*columns)).all()
    return [
        ClockGroup(
            tenant=r[0],
            server=r[1],
            first_day=_as_date(r[2]),
            clock_day=_as_date(r[3]) if r[3] is not None else None,
            credit_seconds=int(r[4] or 0),
            remediated_day=_as_date(r[5]) if r[5] is not None else None,
            count=int(r[6]),
        )
        for r in rows
    ]


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
