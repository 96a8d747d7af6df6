"""The state store: one SQLAlchemy Core implementation for SQLite (default) and PostgreSQL.

Everything that changes shared state (first detection, pauses against the yearly budget,
overrides, counters, notifications) goes through this class, inside transactions, so several
drossel processes on one database act as one system.  Pause budget checks lock the tenant row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    Row,
    String,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import Executable

from drossel.app.errors import Conflict, Invalid, NotFound
from drossel.app.records import (
    CONNECTOR_TYPES,
    AuditEntry,
    Connector,
    StoredServer,
    Tenant,
    merge_sightings,
)
from drossel.app.server_query import (
    ClockGroup,
    PageRow,
    ServerFilter,
    ServerPage,
    ServerQuery,
    StageModel,
)
from drossel.core.decision import Override, ServerRecord
from drossel.core.schedule import Pause
from drossel.storage import overview
from drossel.storage import schema as t
from drossel.storage.files import private_sqlite_files

__all__ = [
    "CONNECTOR_TYPES",
    "AuditEntry",
    "Connector",
    "Store",
    "StoreError",
    "StoredServer",
    "Tenant",
]

STATUSES = ("current", "behind", "unsupported", "unknown", "not_applicable")

#: PostgreSQL NOTIFY channel for changes other nodes must see at once (see :meth:`Store.notify`).
CHANGE_CHANNEL = "drossel_state"


class StoreError(Invalid):
    """Input the state refuses (bad address, empty name, ...); safe to show."""


def to_db(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def from_db(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _named_server(*columns: Any) -> Any:
    """``columns`` of the server named by the bound ``b_tenant`` and ``b_fqdn`` (the batched
    statements below take one parameter set per server)."""
    servers, tenants = t.servers, t.tenants
    return (
        select(*columns)
        .join(tenants, tenants.c.id == servers.c.tenant_id)
        .where(tenants.c.name == bindparam("b_tenant"), servers.c.fqdn == bindparam("b_fqdn"))
    )


def _dialect_insert(postgres: bool) -> Any:
    """The dialect's ``insert``, which has ``on_conflict_do_nothing`` (several nodes may add
    the same row at the same moment)."""
    return postgresql_insert if postgres else sqlite_insert


@lru_cache(maxsize=2)
def _touch_statements(postgres: bool) -> tuple[Executable, ...]:
    """What :meth:`Store.touch_servers` runs for each (tenant, fqdn, at), in this order and
    many parameter sets at a time: the current build's history first (added if missing, else
    advanced), then the server's own last-seen time; nothing ever moves backwards."""
    servers, history = t.servers, t.build_history
    at = bindparam("b_at", type_=DateTime())
    server = _named_server(servers.c.id, servers.c.build)
    server_id = server.with_only_columns(servers.c.id).scalar_subquery()
    current_build = (
        select(servers.c.build).where(servers.c.id == history.c.server_id).scalar_subquery()
    )
    listed = (
        select(history.c.id)
        .where(history.c.server_id == servers.c.id, history.c.build == servers.c.build)
        .exists()
    )
    add_history = (
        _dialect_insert(postgres)(history)
        .from_select(
            ["server_id", "build", "first_seen", "last_seen"],
            server.add_columns(at, at).where(~listed),
        )
        .on_conflict_do_nothing()  # another node added it at the same moment
    )
    advance_history = (
        update(history)
        .where(
            history.c.server_id == server_id,
            history.c.build == current_build,
            history.c.last_seen < at,
        )
        .values(last_seen=at)
    )
    advance_server = (
        update(servers)
        .where(servers.c.id == server_id, servers.c.last_seen < at)
        .values(last_seen=at)
    )
    return add_history, advance_history, advance_server


@lru_cache(maxsize=2)
def _count_statements(postgres: bool) -> tuple[Executable, ...]:
    """What :meth:`Store.add_counts` runs for each (tenant, fqdn, day, action, n), many
    parameter sets at a time: the counter row made if missing (another node may make it at
    the same moment: that insert is then skipped), then ``n`` added.  Unknown servers match
    no row and are skipped."""
    counts = t.daily_counts
    day = bindparam("b_day", type_=Date())
    action = bindparam("b_action", type_=String())
    server = _named_server(t.servers.c.id)
    add = (
        _dialect_insert(postgres)(counts)
        .from_select(
            ["server_id", "day", "action", "count"],
            server.add_columns(day, action, literal(0, Integer())),
        )
        .on_conflict_do_nothing()
    )
    bump = (
        update(counts)
        .where(
            counts.c.server_id == server.scalar_subquery(),
            counts.c.day == day,
            counts.c.action == action,
        )
        .values(count=counts.c.count + bindparam("b_n", type_=Integer()))
    )
    return add, bump


def _aware(moment: datetime) -> datetime:
    result = from_db(moment)
    assert result is not None
    return result


def _validate_ranges(ranges: Iterable[str]) -> tuple[str, ...]:
    result = []
    for item in ranges:
        item = item.strip()
        if not item:
            continue
        try:
            result.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise StoreError(f"not an IP address or network: {item!r}") from None
    return tuple(result)


def _check_email(address: str) -> None:
    if "@" not in address or len(address) > 320 or any(c in address for c in "\r\n <>"):
        raise StoreError(f"not a mail address: {address!r}")


def _check_text(value: str, what: str, limit: int = 200) -> str:
    value = value.strip()
    if not value:
        raise StoreError(f"{what} must not be empty")
    if len(value) > limit:
        raise StoreError(f"{what} is longer than {limit} characters")
    if any(not ch.isprintable() for ch in value):
        raise StoreError(f"{what} contains control characters")
    return value


class Store:
    """State access for one database URL (``sqlite:///file.db`` or ``postgresql+psycopg://``)."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        if engine is None:
            options: dict[str, Any] = {"future": True, "pool_pre_ping": True}
            if url.startswith("postgresql"):
                # fail fast when the server is unreachable, and never let one statement hang
                # (a lock held elsewhere): the flusher retries, sessions decide from memory
                options["connect_args"] = {
                    "connect_timeout": 5,
                    "options": "-c statement_timeout=15000",
                }
            engine = create_engine(url, **options)
        self.engine = engine
        #: set when the schema could not be checked at start (database unreachable)
        self.schema_unchecked = False
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        #: identifies this process in change notifications (to ignore its own server events)
        self.node_id = uuid.uuid4().hex[:12]
        if self.is_sqlite:
            private_sqlite_files(self.engine.url.database)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)

    # --- infrastructure -------------------------------------------------------------------

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it takes the write lock at once: see _sqlite_begin)."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()

    def check_schema(self) -> None:
        from drossel.storage.migrate import check

        check(self.engine)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def listen_conninfo(self) -> str:
        """libpq connection string for a dedicated LISTEN connection (PostgreSQL only)."""
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def notify(
        self, conn: Connection, kind: str, tenant: str | None = None, server: str | None = None
    ) -> None:
        """Tell every node a change of ``kind`` ("pause", "override", "connector", "tenant",
        "server", "setting") happened.  Sent inside the caller's transaction, so PostgreSQL
        delivers it exactly when the change commits (and never if it rolls back).  SQLite has
        no cross-process notification; its nodes rely on the periodic refresh."""
        if not self.is_postgres:
            return
        payload = json.dumps(
            {"kind": kind, "tenant": tenant, "server": server, "node": self.node_id},
            separators=(",", ":"),
        )
        conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANGE_CHANNEL, "payload": payload},
        )

    def _tenant_id(self, conn: Connection, name: str, *, lock: bool = False) -> int:
        query = select(t.tenants.c.id).where(t.tenants.c.name == name)
        if lock and not self.is_sqlite:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"unknown tenant {name!r}")
        return int(row[0])

    def ensure_tenant(self, conn: Connection, name: str, now: datetime) -> int:
        row = conn.execute(select(t.tenants.c.id).where(t.tenants.c.name == name)).first()
        if row is not None:
            return int(row[0])
        try:
            with conn.begin_nested():
                result = conn.execute(
                    insert(t.tenants).values(name=name, display_name=name, created_at=to_db(now))
                )
            return inserted_id(result)
        except IntegrityError:
            return self._tenant_id(conn, name)

    def audit(
        self,
        conn: Connection,
        actor: str,
        action: str,
        detail: str,
        now: datetime,
        tenant: str | None,
    ) -> None:
        conn.execute(
            insert(t.audit_log).values(
                at=to_db(now), actor=actor, tenant=tenant, action=action, detail=detail
            )
        )

    # --- tenants and connectors -----------------------------------------------------------

    def add_tenant(
        self, name: str, contacts: Sequence[str], actor: str, now: datetime, display_name: str = ""
    ) -> Tenant:
        name = _check_text(name, "tenant name")
        for contact in contacts:
            _check_email(contact)
        with self.tx() as conn:
            exists = conn.execute(select(t.tenants.c.id).where(t.tenants.c.name == name)).first()
            if exists is not None:
                raise Conflict(f"tenant {name!r} exists already")
            tenant_id = self.ensure_tenant(conn, name, now)
            if display_name:
                conn.execute(
                    update(t.tenants)
                    .where(t.tenants.c.id == tenant_id)
                    .values(display_name=_check_text(display_name, "display name"))
                )
            for contact in dict.fromkeys(contacts):
                conn.execute(insert(t.contacts).values(tenant_id=tenant_id, email=contact))
            self.audit(conn, actor, "tenant.add", f"contacts={','.join(contacts)}", now, name)
            self.notify(conn, "tenant", name)
        return self.get_tenant(name)

    def add_contact(self, tenant: str, email: str, actor: str, now: datetime) -> None:
        _check_email(email)
        with self.tx() as conn:
            tenant_id = self._tenant_id(conn, tenant)
            try:
                with conn.begin_nested():
                    conn.execute(insert(t.contacts).values(tenant_id=tenant_id, email=email))
            except IntegrityError:
                raise Conflict(f"{email} is already a contact of {tenant}") from None
            self.audit(conn, actor, "contact.add", email, now, tenant)
            self.notify(conn, "tenant", tenant)

    def get_tenant(self, name: str) -> Tenant:
        for tenant in self.list_tenants():
            if tenant.name == name:
                return tenant
        raise NotFound(f"unknown tenant {name!r}")

    def list_tenants(self) -> list[Tenant]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.tenants).order_by(t.tenants.c.name)).all()
            contacts = conn.execute(select(t.contacts).order_by(t.contacts.c.email)).all()
        by_tenant: dict[int, list[str]] = {}
        for c in contacts:
            by_tenant.setdefault(c.tenant_id, []).append(c.email)
        return [
            Tenant(r.id, r.name, r.display_name or r.name, tuple(by_tenant.get(r.id, [])))
            for r in rows
        ]

    def add_connector(
        self,
        tenant: str,
        name: str,
        type_: str,
        ip_ranges: Sequence[str],
        tls_name: str | None,
        actor: str,
        now: datetime,
    ) -> Connector:
        if type_ not in CONNECTOR_TYPES:
            raise StoreError(f"connector type must be one of {', '.join(CONNECTOR_TYPES)}")
        name = _check_text(name, "connector name")
        ranges = _validate_ranges(ip_ranges)
        if tls_name is not None:
            tls_name = _check_text(tls_name, "TLS name", 255)
        if not ranges and not tls_name:
            raise StoreError("a connector needs IP ranges, a TLS name, or both")
        with self.tx() as conn:
            tenant_id = self._tenant_id(conn, tenant)
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(t.connectors).values(
                            tenant_id=tenant_id,
                            name=name,
                            type=type_,
                            ip_ranges=",".join(ranges),
                            tls_name=tls_name,
                        )
                    )
            except IntegrityError:
                raise Conflict(f"connector {name!r} exists already for {tenant}") from None
            self.audit(
                conn,
                actor,
                "connector.add",
                f"{name} {type_} ranges={','.join(ranges)} tls={tls_name or ''}",
                now,
                tenant,
            )
            self.notify(conn, "connector", tenant)
        return next(c for c in self.list_connectors() if c.tenant == tenant and c.name == name)

    def list_connectors(self) -> list[Connector]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.connectors, t.tenants.c.name.label("tenant"))
                .join(t.tenants, t.tenants.c.id == t.connectors.c.tenant_id)
                .order_by(t.tenants.c.name, t.connectors.c.name)
            ).all()
        return [
            Connector(
                r.id,
                r.tenant,
                r.name,
                r.type,
                tuple(x for x in r.ip_ranges.split(",") if x),
                r.tls_name,
            )
            for r in rows
        ]

    # --- servers --------------------------------------------------------------------------

    def _server_from_row(self, row: Row[Any], tenant: str) -> StoredServer:
        record = ServerRecord(
            tenant=tenant,
            server=row.fqdn,
            first_detected=_aware(row.first_detected),
            last_seen=_aware(row.last_seen),
            build=row.build,
            product=row.product,
            status=row.status,
            clock_start=from_db(row.clock_start),
            clock_credit=timedelta(seconds=row.clock_credit_seconds or 0),
            remediated_at=from_db(row.remediated_at),
            connector_type=row.connector_type,
            evidence=row.evidence_kind,
            via=row.via,
            trusted=bool(row.trusted),
        )
        return StoredServer(row.id, record, row.evidence or "")

    def get_server(self, tenant: str, fqdn: str) -> StoredServer | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.servers)
                .join(t.tenants, t.tenants.c.id == t.servers.c.tenant_id)
                .where(t.tenants.c.name == tenant, t.servers.c.fqdn == fqdn)
            ).first()
        return None if row is None else self._server_from_row(row, tenant)

    def list_servers(self, tenant: str | None = None) -> list[StoredServer]:
        query = select(t.servers, t.tenants.c.name.label("tenant_name")).join(
            t.tenants, t.tenants.c.id == t.servers.c.tenant_id
        )
        if tenant is not None:
            query = query.where(t.tenants.c.name == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.tenants.c.name, t.servers.c.fqdn)).all()
        return [self._server_from_row(r, r.tenant_name) for r in rows]

    def save_server(self, record: ServerRecord, evidence: str, now: datetime) -> StoredServer:
        """Insert or update a server record as given (the rules are the caller's), merged
        with a stored one by :func:`~drossel.app.records.merge_sightings` (several nodes)."""
        values = {
            "product": record.product,
            "build": record.build,
            "status": record.status,
            "last_seen": to_db(record.last_seen),
            "clock_start": to_db(record.clock_start),
            "clock_credit_seconds": int(record.clock_credit.total_seconds()),
            "remediated_at": to_db(record.remediated_at),
            "evidence": evidence[:4000],
            "connector_type": record.connector_type,
            "evidence_kind": record.evidence,
            "via": (record.via or "")[:255] or None,
            "trusted": record.trusted,
        }
        with self.tx() as conn:
            tenant_id = self.ensure_tenant(conn, record.tenant, now)
            key = (t.servers.c.tenant_id == tenant_id, t.servers.c.fqdn == record.server)
            locked = select(t.servers).where(*key)
            if not self.is_sqlite:
                locked = locked.with_for_update()
            existing = conn.execute(locked).first()
            if existing is None:
                try:
                    with conn.begin_nested():
                        result = conn.execute(
                            insert(t.servers).values(
                                tenant_id=tenant_id,
                                fqdn=record.server,
                                first_detected=to_db(record.first_detected),
                                **values,
                            )
                        )
                    server_id = inserted_id(result)
                except IntegrityError:
                    existing = conn.execute(locked).first()
                    assert existing is not None
            if existing is not None:
                server_id = int(existing.id)
                before = self._server_from_row(existing, record.tenant).record
                merged = merge_sightings(before, record)
                values["clock_start"] = to_db(merged.clock_start)
                values["last_seen"] = to_db(merged.last_seen)
                conn.execute(
                    update(t.servers)
                    .where(t.servers.c.id == server_id)
                    .values(first_detected=to_db(merged.first_detected), **values)
                )
            self._touch_build(conn, server_id, record.build, record.last_seen)
            self.notify(conn, "server", record.tenant, record.server)
        stored = self.get_server(record.tenant, record.server)
        assert stored is not None
        return stored

    #: servers whose last-seen times one transaction advances (a longer batch would hold
    #: SQLite's write lock, and with it every other writer, for longer)
    TOUCH_BATCH = 500

    def touch_servers(self, seen: Mapping[tuple[str, str], datetime]) -> None:
        """Advance last-seen times (batched from the hot path); never moves one backwards.

        Many servers per transaction: one commit each cost ~1.4 ms on SQLite, so a flusher
        with 100,000 servers to touch fell minutes behind.  Keys are taken in order, so two
        nodes touching the same servers on PostgreSQL lock them in the same order."""
        rows = [
            {"b_tenant": tenant, "b_fqdn": fqdn, "b_at": to_db(at)}
            for (tenant, fqdn), at in sorted(seen.items())
        ]
        statements = _touch_statements(self.is_postgres)
        for start in range(0, len(rows), self.TOUCH_BATCH):
            with self.tx() as conn:
                for statement in statements:
                    conn.execute(statement, rows[start : start + self.TOUCH_BATCH])

    def _touch_build(self, conn: Connection, server_id: int, build: str, seen: datetime) -> None:
        key = (t.build_history.c.server_id == server_id, t.build_history.c.build == build)
        row = conn.execute(select(t.build_history.c.id).where(*key)).first()
        if row is None:
            conn.execute(
                insert(t.build_history).values(
                    server_id=server_id, build=build, first_seen=to_db(seen), last_seen=to_db(seen)
                )
            )
        else:
            conn.execute(update(t.build_history).where(*key).values(last_seen=to_db(seen)))

    def build_history(self, server_id: int) -> list[tuple[str, datetime, datetime]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.build_history)
                .where(t.build_history.c.server_id == server_id)
                .order_by(t.build_history.c.first_seen)
            ).all()
        return [(r.build, _aware(r.first_seen), _aware(r.last_seen)) for r in rows]

    # --- the operator overview -------------------------------------------------------------

    def query_servers(self, query: ServerQuery) -> ServerPage:
        with self.engine.connect() as conn:
            total, today, rows = overview.query_servers(conn, query, self.is_postgres)
        return ServerPage(
            total=total,
            rows=[
                PageRow(
                    self._server_from_row(r, r.tenant_name),
                    {a: int(r._mapping[f"today_{a}"]) for a in overview.ACTIONS},
                    None if r.model_stage is None else int(r.model_stage),
                )
                for r in rows
            ],
            today=today,
        )

    def stage_counts(self, filter: ServerFilter, model: StageModel) -> dict[tuple[str, int], int]:
        with self.engine.connect() as conn:
            return overview.stage_counts(conn, filter, model)

    def server_kinds(self) -> list[tuple[str, str, str, str]]:
        with self.engine.connect() as conn:
            return overview.server_kinds(conn)

    def clock_groups(
        self,
        filter: ServerFilter,
        since: date,
        oldest_clock: date,
        tenants: frozenset[str],
        named: frozenset[tuple[str, str]],
    ) -> list[ClockGroup]:
        with self.engine.connect() as conn:
            return overview.clock_groups(
                conn, filter, since, oldest_clock, tenants, named, self.is_sqlite
            )

    # --- counters -------------------------------------------------------------------------

    def add_counts(self, counts: dict[tuple[str, str, date, str], int], now: datetime) -> None:
        """Add batched per-day counters: key (tenant, server, day, action) → n."""
        if not counts:
            return
        rows = [
            {"b_tenant": tenant, "b_fqdn": fqdn, "b_day": day, "b_action": action, "b_n": n}
            for (tenant, fqdn, day, action), n in sorted(counts.items())
        ]
        statements = _count_statements(self.is_postgres)
        with self.tx() as conn:  # one transaction: a retried flush never counts twice
            for statement in statements:
                conn.execute(statement, rows)

    def daily_counts(self, server_id: int, since: date) -> dict[date, dict[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.daily_counts).where(
                    t.daily_counts.c.server_id == server_id, t.daily_counts.c.day >= since
                )
            ).all()
        result: dict[date, dict[str, int]] = {}
        for r in rows:
            result.setdefault(r.day, {})[r.action] = int(r._mapping["count"])
        return result

    def total_counts(self, server_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.daily_counts.c.action, func.sum(t.daily_counts.c.count))
                .where(t.daily_counts.c.server_id == server_id)
                .group_by(t.daily_counts.c.action)
            ).all()
        return {action: int(n) for action, n in rows}

    # --- pauses ---------------------------------------------------------------------------

    def _pauses(self, conn: Connection, tenant: str | None) -> list[Pause]:
        query = select(t.pauses, t.tenants.c.name.label("tenant_name")).join(
            t.tenants, t.tenants.c.id == t.pauses.c.tenant_id
        )
        if tenant is not None:
            query = query.where(t.tenants.c.name == tenant)
        rows = conn.execute(query.order_by(t.pauses.c.start_date, t.pauses.c.id)).all()
        return [
            Pause(
                id=r.id,
                tenant=r.tenant_name,
                start=r.start_date,
                end=r.end_date,
                servers=tuple(s for s in r.servers.split(",") if s),
                ended_early=bool(r.ended_early),
            )
            for r in rows
        ]

    def list_pauses(self, tenant: str | None = None) -> list[Pause]:
        with self.engine.connect() as conn:
            return self._pauses(conn, tenant)

    def insert_pause(
        self,
        pause: Pause,
        actor: str,
        now: datetime,
        check: Callable[[list[Pause]], None],
    ) -> Pause:
        """Store a new pause of ``pause.tenant`` after ``check`` accepted it against the tenant's
        other pauses (it raises to refuse).  The check runs with the tenant locked, so
        concurrent requests on any node can never overspend the budget together."""
        with self.tx() as conn:
            tenant_id = self._tenant_id(conn, pause.tenant, lock=True)
            if pause.servers:
                known = {
                    r[0]
                    for r in conn.execute(
                        select(t.servers.c.fqdn).where(t.servers.c.tenant_id == tenant_id)
                    )
                }
                unknown = [n for n in pause.servers if n not in known]
                if unknown:
                    raise Invalid(f"unknown server(s) of {pause.tenant}: {', '.join(unknown)}")
            check(self._pauses(conn, pause.tenant))
            result = conn.execute(
                insert(t.pauses).values(
                    tenant_id=tenant_id,
                    servers=",".join(pause.servers),
                    start_date=pause.start,
                    end_date=pause.end,
                    ended_early=False,
                    created_by=actor,
                    created_at=to_db(now),
                )
            )
            pause_id = inserted_id(result)
            self.audit(
                conn,
                actor,
                "pause.add",
                f"id={pause_id} {pause.start}..{pause.end} ({pause.days} days) "
                f"servers={','.join(pause.servers) or 'all'}",
                now,
                pause.tenant,
            )
            self.notify(conn, "pause", pause.tenant)
        return replace(pause, id=pause_id)

    def change_pause(
        self,
        pause_id: int,
        change: Callable[[Pause, list[Pause]], Pause],
        action: str,
        actor: str,
        now: datetime,
        tenant: str | None = None,
    ) -> Pause:
        """Replace a pause's end by what ``change(pause, other_pauses_of_its_tenant)`` returns
        (it raises to refuse), with the tenant locked; audited as ``action``."""
        with self.tx() as conn:
            row = conn.execute(
                select(t.pauses.c.tenant_id, t.tenants.c.name.label("tenant_name"))
                .join(t.tenants, t.tenants.c.id == t.pauses.c.tenant_id)
                .where(t.pauses.c.id == pause_id)
            ).first()
            if row is None or (tenant is not None and row.tenant_name != tenant):
                raise NotFound(f"unknown pause {pause_id}")
            self._tenant_id(conn, row.tenant_name, lock=True)
            pauses = self._pauses(conn, row.tenant_name)
            old = next(p for p in pauses if p.id == pause_id)
            new = change(old, [p for p in pauses if p.id != pause_id])
            conn.execute(
                update(t.pauses)
                .where(t.pauses.c.id == pause_id)
                .values(end_date=new.end, ended_early=new.ended_early)
            )
            self.audit(
                conn,
                actor,
                action,
                f"id={pause_id} end {old.end} -> {new.end}",
                now,
                row.tenant_name,
            )
            self.notify(conn, "pause", row.tenant_name)
        return new

    # --- overrides ------------------------------------------------------------------------

    def add_override(
        self,
        tenant: str | None,
        server: str | None,
        reason: str,
        expires: datetime | None,
        actor: str,
        now: datetime,
    ) -> Override:
        reason = _check_text(reason, "reason", 500)
        # the rules (tenant or server, expiry in the future) are the services'
        if server is not None:
            server = _check_text(server, "server", 255).lower()
        with self.tx() as conn:
            tenant_id = self._tenant_id(conn, tenant) if tenant is not None else None
            result = conn.execute(
                insert(t.overrides).values(
                    tenant_id=tenant_id,
                    server=server,
                    reason=reason,
                    expires_at=to_db(expires),
                    created_by=actor,
                    created_at=to_db(now),
                )
            )
            override_id = inserted_id(result)
            self.audit(
                conn,
                actor,
                "override.add",
                f"id={override_id} server={server or '*'} expires={expires} reason={reason}",
                now,
                tenant,
            )
            self.notify(conn, "override", tenant, server)
        return Override(override_id, tenant, server, reason, expires)

    def list_overrides(self, now: datetime | None = None) -> list[Override]:
        """Overrides not removed (and, given ``now``, not expired)."""
        query = (
            select(t.overrides, t.tenants.c.name.label("tenant_name"))
            .outerjoin(t.tenants, t.tenants.c.id == t.overrides.c.tenant_id)
            .where(t.overrides.c.removed_at.is_(None))
            .order_by(t.overrides.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        result = [
            Override(r.id, r.tenant_name, r.server, r.reason, from_db(r.expires_at)) for r in rows
        ]
        if now is not None:
            result = [o for o in result if o.expires is None or o.expires > now]
        return result

    def remove_override(
        self, override_id: int, actor: str, now: datetime, tenant: str | None = None
    ) -> None:
        with self.tx() as conn:
            row = conn.execute(
                select(t.overrides, t.tenants.c.name.label("tenant_name"))
                .outerjoin(t.tenants, t.tenants.c.id == t.overrides.c.tenant_id)
                .where(t.overrides.c.id == override_id, t.overrides.c.removed_at.is_(None))
            ).first()
            if row is None or (tenant is not None and row.tenant_name != tenant):
                raise NotFound(f"unknown override {override_id}")
            conn.execute(
                update(t.overrides)
                .where(t.overrides.c.id == override_id)
                .values(removed_at=to_db(now))
            )
            self.audit(conn, actor, "override.remove", f"id={override_id}", now, row.tenant_name)
            self.notify(conn, "override", row.tenant_name, row.server)

    def server_status_counts(self) -> dict[str, int]:
        """Servers per status (for the metrics gauge)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.servers.c.status, func.count()).group_by(t.servers.c.status)
            ).all()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({str(status): int(n) for status, n in rows})
        return counts

    def tenant_exists(self, name: str) -> bool:
        with self.engine.connect() as conn:
            query = select(t.tenants.c.id).where(t.tenants.c.name == name)
            return conn.execute(query).first() is not None

    # --- audit, settings, notifications ----------------------------------------------------

    def list_audit(self, tenant: str | None = None, limit: int = 200) -> list[AuditEntry]:
        query = select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(t.audit_log.c.tenant == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [AuditEntry(r.id, _aware(r.at), r.actor, r.tenant, r.action, r.detail) for r in rows]

    def get_setting(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.settings.c.value).where(t.settings.c.key == key)).first()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str, actor: str, now: datetime) -> None:
        with self.tx() as conn:
            changed = conn.execute(
                update(t.settings)
                .where(t.settings.c.key == key)
                .values(value=value, updated_at=to_db(now))
            ).rowcount
            if not changed:
                conn.execute(insert(t.settings).values(key=key, value=value, updated_at=to_db(now)))
            self.audit(conn, actor, "setting.set", key, now, None)
            self.notify(conn, "setting", None, key)

    def claim_notification(
        self, event_key: str, tenant: str, server: str | None, event: str, body: str, now: datetime
    ) -> bool:
        """Record a notification event once; ``False`` if any node recorded it before."""
        with self.tx() as conn:
            tenant_id = self._tenant_id(conn, tenant)
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(t.notifications).values(
                            event_key=event_key,
                            tenant_id=tenant_id,
                            server=server,
                            event=event,
                            created_at=to_db(now),
                            attempts=0,
                            body=body,
                        )
                    )
            except IntegrityError:
                return False
        return True


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let pysqlite leave transaction control to SQLAlchemy's "begin" event below.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


#: execution option marking a connection as a write transaction (``Store.tx``)
_WRITE = "drossel_write"


def _sqlite_begin(conn: Connection) -> None:
    """Writers (``Store.tx``) take SQLite's write lock when they begin (``BEGIN IMMEDIATE``),
    so a read-then-write transaction waits its turn (busy_timeout) instead of failing on the
    upgrade; readers begin deferred, and in WAL mode read a snapshot without any lock, so a
    long read (the operator overview) never holds up the flusher or the web's writes."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


def inserted_id(result: Any) -> int:
    """The primary key of the row an INSERT created."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
