"""An in-memory :class:`~drossel.app.storage.StateStore`: the same contract as the SQL store,
held in dictionaries.  Used by tests and the reference-model checks, where a database would
only slow thousands of random sequences down; the SQL store is held to the same tests.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

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
    COUNT_SORTS,
    ClockGroup,
    Computed,
    PageRow,
    ServerFilter,
    ServerPage,
    ServerQuery,
    StageModel,
    ascii_lower,
)
from drossel.core.decision import Override, ServerRecord
from drossel.core.schedule import Pause


class MemoryStore:
    """State in memory; one lock makes every change atomic, as a transaction would."""

    is_sqlite = False
    is_postgres = False

    def __init__(self) -> None:
        self.node_id = uuid.uuid4().hex[:12]
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._tenants: dict[str, Tenant] = {}
        self._connectors: list[Connector] = []
        self._servers: dict[tuple[str, str], StoredServer] = {}
        self._history: dict[int, dict[str, tuple[datetime, datetime]]] = {}
        self._counts: dict[tuple[int, date, str], int] = {}
        self._pauses: dict[int, Pause] = {}
        self._overrides: dict[int, Override] = {}
        self._audit: list[AuditEntry] = []
        self._settings: dict[str, str] = {}

    def dispose(self) -> None:
        """Nothing to release."""

    def check_schema(self) -> None:
        """No schema in memory."""

    def _audit_entry(
        self, actor: str, action: str, detail: str, now: datetime, tenant: str | None
    ) -> None:
        self._audit.append(AuditEntry(next(self._ids), now, actor, tenant, action, detail))

    def _ensure_tenant(self, name: str) -> Tenant:
        if name not in self._tenants:
            self._tenants[name] = Tenant(next(self._ids), name, name, ())
        return self._tenants[name]

    def _known_tenant(self, name: str) -> Tenant:
        if name not in self._tenants:
            raise NotFound(f"unknown tenant {name!r}")
        return self._tenants[name]

    # --- tenants and connectors -----------------------------------------------------------

    def add_tenant(
        self, name: str, contacts: Sequence[str], actor: str, now: datetime, display_name: str = ""
    ) -> Tenant:
        with self._lock:
            if not name.strip():
                raise Invalid("tenant name must not be empty")
            if name in self._tenants:
                raise Conflict(f"tenant {name!r} exists already")
            tenant = Tenant(next(self._ids), name, display_name or name, tuple(contacts))
            self._tenants[name] = tenant
            self._audit_entry(actor, "tenant.add", f"contacts={','.join(contacts)}", now, name)
            return tenant

    def add_contact(self, tenant: str, email: str, actor: str, now: datetime) -> None:
        with self._lock:
            known = self._known_tenant(tenant)
            if email in known.contacts:
                raise Conflict(f"{email} is already a contact of {tenant}")
            self._tenants[tenant] = replace(known, contacts=(*known.contacts, email))
            self._audit_entry(actor, "contact.add", email, now, tenant)

    def get_tenant(self, name: str) -> Tenant:
        return self._known_tenant(name)

    def list_tenants(self) -> list[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: t.name)

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
        with self._lock:
            if type_ not in CONNECTOR_TYPES:
                raise Invalid(f"connector type must be one of {', '.join(CONNECTOR_TYPES)}")
            self._known_tenant(tenant)
            if any(c.tenant == tenant and c.name == name for c in self._connectors):
                raise Conflict(f"connector {name!r} exists already for {tenant}")
            connector = Connector(next(self._ids), tenant, name, type_, tuple(ip_ranges), tls_name)
            self._connectors.append(connector)
            self._audit_entry(actor, "connector.add", name, now, tenant)
            return connector

    def list_connectors(self) -> list[Connector]:
        return sorted(self._connectors, key=lambda c: (c.tenant, c.name))

    # --- servers and counters -------------------------------------------------------------

    def get_server(self, tenant: str, fqdn: str) -> StoredServer | None:
        return self._servers.get((tenant, fqdn))

    def list_servers(self, tenant: str | None = None) -> list[StoredServer]:
        return [s for key, s in sorted(self._servers.items()) if tenant is None or key[0] == tenant]

    def save_server(self, record: ServerRecord, evidence: str, now: datetime) -> StoredServer:
        with self._lock:
            self._ensure_tenant(record.tenant)
            key = (record.tenant, record.server)
            existing = self._servers.get(key)
            if existing is not None:
                record = merge_sightings(existing.record, record)
                server_id = existing.id
            else:
                server_id = next(self._ids)
            stored = StoredServer(server_id, record, evidence[:4000])
            self._servers[key] = stored
            self._touch_build(server_id, record.build, record.last_seen)
            return stored

    def _touch_build(self, server_id: int, build: str, seen: datetime) -> None:
        history = self._history.setdefault(server_id, {})
        first, last = history.get(build, (seen, seen))
        history[build] = (min(first, seen), max(last, seen))

    def touch_servers(self, seen: Mapping[tuple[str, str], datetime]) -> None:
        with self._lock:
            for key, at in seen.items():
                stored = self._servers.get(key)
                if stored is None or stored.record.last_seen >= at:
                    continue
                record = replace(stored.record, last_seen=at)
                self._servers[key] = replace(stored, record=record)
                self._touch_build(stored.id, record.build, at)

    def add_counts(self, counts: dict[tuple[str, str, date, str], int], now: datetime) -> None:
        with self._lock:
            for (tenant, fqdn, day, action), n in counts.items():
                stored = self._servers.get((tenant, fqdn))
                if stored is not None:
                    key = (stored.id, day, action)
                    self._counts[key] = self._counts.get(key, 0) + n

    def daily_counts(self, server_id: int, since: date) -> dict[date, dict[str, int]]:
        result: dict[date, dict[str, int]] = {}
        for (sid, day, action), n in self._counts.items():
            if sid == server_id and day >= since:
                result.setdefault(day, {})[action] = n
        return result

    def total_counts(self, server_id: int) -> dict[str, int]:
        result: dict[str, int] = {}
        for (sid, _day, action), n in self._counts.items():
            if sid == server_id:
                result[action] = result.get(action, 0) + n
        return result

    def build_history(self, server_id: int) -> list[tuple[str, datetime, datetime]]:
        items = self._history.get(server_id, {}).items()
        return sorted(((b, f, last) for b, (f, last) in items), key=lambda x: x[1])

    # --- the operator overview (the same contract as the SQL in drossel.storage.overview) ---

    def _matching(self, f: ServerFilter) -> list[StoredServer]:
        with self._lock:
            servers = list(self._servers.values())
        result = []
        for stored in servers:
            r = stored.record
            if f.tenants is not None and r.tenant not in f.tenants:
                continue
            if f.products is not None and r.product not in f.products:
                continue
            if f.status is not None and not (
                r.build in f.status.builds
                or (r.build in f.status.ungraded and r.status == f.status.status)
            ):
                continue
            if f.evidence is not None and r.evidence != f.evidence:
                continue
            if f.search and ascii_lower(f.search) not in ascii_lower(r.server):
                continue
            if f.seen_since is not None and r.last_seen < f.seen_since:
                continue
            result.append(stored)
        return result

    def stage_counts(self, filter: ServerFilter, model: StageModel) -> dict[tuple[str, int], int]:
        result: Counter[tuple[str, int]] = Counter()
        page = self.query_servers(
            ServerQuery(filter=filter, today=model.now.date(), per_page=1 << 62, model=model)
        )
        for row in page.rows:  # the page carries the model's stage of each row
            result[(row.server.record.tenant, row.stage if row.stage is not None else -1)] += 1
        return dict(result)

    def query_servers(self, query: ServerQuery) -> ServerPage:
        f, model = query.filter, query.model
        rows: list[tuple[StoredServer, dict[str, int], Computed | None]] = []
        for stored in self._matching(f):
            r = stored.record
            computed = None
            if model is not None:
                computed = model.compute(
                    stored.id,
                    r.tenant,
                    r.server,
                    r.build,
                    r.product,
                    r.connector_type,
                    r.evidence,
                    r.clock_start,
                    r.clock_credit.total_seconds(),
                    r.remediated_at,
                )
                if f.stage is not None and (computed is None or computed.stage != f.stage):
                    continue
                if f.paused is not None and (computed is None or computed.paused != f.paused):
                    continue
                if f.overridden is not None and (
                    computed is None or computed.overridden != f.overridden
                ):
                    continue
                if f.unmodelled and not (
                    r.build in model.vulnerable_builds
                    and model.unmodelled(
                        r.tenant, r.server, r.clock_credit.total_seconds(), r.remediated_at
                    )
                ):
                    continue
            elif f.needs_model:
                raise ValueError("filtering by stage needs a stage model")
            today = {
                a: self._counts.get((stored.id, query.today, a), 0)
                for a in ("accept", "throttle", "block")
            }
            rows.append((stored, today, computed))

        def key(item: tuple[StoredServer, dict[str, int], Computed | None]) -> Any:
            stored, today, computed = item
            r = stored.record
            if query.sort == "stage":
                return computed.stage if computed is not None else -1
            if query.sort in COUNT_SORTS:
                return today[COUNT_SORTS[query.sort]]
            return {
                "server": r.server,
                "tenant": r.tenant,
                "product": r.product,
                "first_seen": r.first_detected,
                "last_seen": r.last_seen,
            }[query.sort]

        rows.sort(key=lambda item: (item[0].record.server, item[0].id))
        rows.sort(key=key, reverse=query.descending)
        page = rows[query.offset : query.offset + query.per_page]
        return ServerPage(
            total=len(rows),
            rows=[
                PageRow(stored, today, computed.stage if computed is not None else None)
                for stored, today, computed in page
            ],
            today={
                a: sum(today[a] for _, today, _ in rows) for a in ("accept", "throttle", "block")
            },
        )

    def server_kinds(self) -> list[tuple[str, str, str, str]]:
        with self._lock:
            records = [s.record for s in self._servers.values()]
        return sorted({(r.build, r.product, r.connector_type, r.evidence) for r in records})

    def clock_groups(
        self,
        filter: ServerFilter,
        since: date,
        oldest_clock: date,
        tenants: frozenset[str],
        named: frozenset[tuple[str, str]],
    ) -> list[ClockGroup]:
        plain = ServerFilter(
            tenants=filter.tenants,
            products=filter.products,
            status=filter.status,
            evidence=filter.evidence,
            search=filter.search,
            seen_since=filter.seen_since,
        )
        before = since - timedelta(days=1)
        start = datetime.combine(since, time(0), tzinfo=UTC)
        oldest = datetime.combine(oldest_clock, time(0), tzinfo=UTC)
        groups: Counter[tuple[str | None, str | None, date, date | None, int, date | None]]
        groups = Counter()
        for stored in self._matching(plain):
            r = stored.record
            credit = int(r.clock_credit.total_seconds())
            clock_day = None
            if r.clock_start is not None:
                clock_day = (
                    oldest_clock if r.clock_start < oldest and credit == 0 else r.clock_start.date()
                )
            remediated_day = None
            if r.remediated_at is not None:
                remediated_day = before if r.remediated_at < start else r.remediated_at.date()
            groups[
                (
                    r.tenant if r.tenant in tenants else None,
                    r.server if (r.tenant, r.server) in named else None,
                    before if r.first_detected < start else r.first_detected.date(),
                    clock_day,
                    credit,
                    remediated_day,
                )
            ] += 1
        return [
            ClockGroup(tenant, server, first, clock, credit, remediated, n)
            for (tenant, server, first, clock, credit, remediated), n in groups.items()
        ]

    # --- pauses and overrides -------------------------------------------------------------

    def list_pauses(self, tenant: str | None = None) -> list[Pause]:
        pauses = [p for p in self._pauses.values() if tenant is None or p.tenant == tenant]
        return sorted(pauses, key=lambda p: (p.start, p.id or 0))

    def insert_pause(
        self, pause: Pause, actor: str, now: datetime, check: Callable[[list[Pause]], None]
    ) -> Pause:
        with self._lock:
            self._known_tenant(pause.tenant)
            unknown = [s for s in pause.servers if (pause.tenant, s) not in self._servers]
            if unknown:
                raise Invalid(f"unknown server(s) of {pause.tenant}: {', '.join(unknown)}")
            check(self.list_pauses(pause.tenant))
            stored = replace(pause, id=next(self._ids))
            assert stored.id is not None
            self._pauses[stored.id] = stored
            self._audit_entry(actor, "pause.add", f"id={stored.id}", now, pause.tenant)
            return stored

    def change_pause(
        self,
        pause_id: int,
        change: Callable[[Pause, list[Pause]], Pause],
        action: str,
        actor: str,
        now: datetime,
        tenant: str | None = None,
    ) -> Pause:
        with self._lock:
            old = self._pauses.get(pause_id)
            if old is None or (tenant is not None and old.tenant != tenant):
                raise NotFound(f"unknown pause {pause_id}")
            others = [p for p in self.list_pauses(old.tenant) if p.id != pause_id]
            new = change(old, others)
            self._pauses[pause_id] = new
            self._audit_entry(
                actor, action, f"id={pause_id} end {old.end} -> {new.end}", now, old.tenant
            )
            return new

    def add_override(
        self,
        tenant: str | None,
        server: str | None,
        reason: str,
        expires: datetime | None,
        actor: str,
        now: datetime,
    ) -> Override:
        with self._lock:
            if tenant is not None:
                self._known_tenant(tenant)
            if not reason.strip():
                raise Invalid("reason must not be empty")
            override = Override(
                next(self._ids), tenant, server.lower() if server else None, reason, expires
            )
            assert override.id is not None
            self._overrides[override.id] = override
            self._audit_entry(actor, "override.add", f"id={override.id}", now, tenant)
            return override

    def list_overrides(self, now: datetime | None = None) -> list[Override]:
        result = sorted(self._overrides.values(), key=lambda o: o.id or 0)
        if now is not None:
            result = [o for o in result if o.expires is None or o.expires > now]
        return result

    def remove_override(
        self, override_id: int, actor: str, now: datetime, tenant: str | None = None
    ) -> None:
        with self._lock:
            override = self._overrides.get(override_id)
            if override is None or (tenant is not None and override.tenant != tenant):
                raise NotFound(f"unknown override {override_id}")
            del self._overrides[override_id]
            self._audit_entry(actor, "override.remove", f"id={override_id}", now, override.tenant)

    # --- audit and settings ---------------------------------------------------------------

    def list_audit(self, tenant: str | None = None, limit: int = 200) -> list[AuditEntry]:
        entries = [a for a in reversed(self._audit) if tenant is None or a.tenant == tenant]
        return entries[:limit]

    def get_setting(self, key: str) -> str | None:
        return self._settings.get(key)

    def set_setting(self, key: str, value: str, actor: str, now: datetime) -> None:
        with self._lock:
            self._settings[key] = value
            self._audit_entry(actor, "setting.set", key, now, None)
