"""The storage interface of the application layer.

:class:`drossel.storage.store.Store` (SQLAlchemy: SQLite, PostgreSQL) implements it, and so does
:class:`drossel.app.memory.MemoryStore` for tests and the reference model.  Storage keeps data
and makes changes atomic; the rules (budgets, clocks, what a pause costs) live in the
application layer and reach the store as values or as ``check``/``change`` callables that run
inside the store's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Protocol

from drossel.app.records import AuditEntry, Connector, StoredServer, Tenant
from drossel.app.server_query import ClockGroup, ServerFilter, ServerPage, ServerQuery, StageModel
from drossel.core.decision import Override, ServerRecord
from drossel.core.schedule import Pause


class StateStore(Protocol):
    """What the application layer needs of a state store."""

    is_sqlite: bool
    node_id: str

    def dispose(self) -> None:
        """Release connections (end of process)."""

    def check_schema(self) -> None:
        """Raise if the stored schema is not the one this drossel needs."""

    # tenants and connectors
    def add_tenant(
        self, name: str, contacts: Sequence[str], actor: str, now: datetime, display_name: str = ""
    ) -> Tenant: ...
    def add_contact(self, tenant: str, email: str, actor: str, now: datetime) -> None: ...
    def get_tenant(self, name: str) -> Tenant: ...
    def list_tenants(self) -> list[Tenant]: ...
    def add_connector(
        self,
        tenant: str,
        name: str,
        type_: str,
        ip_ranges: Sequence[str],
        tls_name: str | None,
        actor: str,
        now: datetime,
    ) -> Connector: ...
    def list_connectors(self) -> list[Connector]: ...

    # servers and counters
    def get_server(self, tenant: str, fqdn: str) -> StoredServer | None: ...
    def list_servers(self, tenant: str | None = None) -> list[StoredServer]: ...
    def save_server(self, record: ServerRecord, evidence: str, now: datetime) -> StoredServer: ...
    def touch_servers(self, seen: Mapping[tuple[str, str], datetime]) -> None:
        """Advance each (tenant, server)'s last-seen time to the given one, never backwards
        (unknown servers are skipped)."""
        ...

    def add_counts(self, counts: dict[tuple[str, str, date, str], int], now: datetime) -> None: ...
    def daily_counts(self, server_id: int, since: date) -> dict[date, dict[str, int]]: ...
    def total_counts(self, server_id: int) -> dict[str, int]: ...
    def build_history(self, server_id: int) -> list[tuple[str, datetime, datetime]]: ...

    # the operator overview (see drossel.app.server_query)
    def query_servers(self, query: ServerQuery) -> ServerPage:
        """One page of the servers matching ``query.filter`` in its order, how many match,
        and today's counters of all of them; evaluated in the store (indexes, no full load)."""
        ...

    def stage_counts(self, filter: ServerFilter, model: StageModel) -> dict[tuple[str, int], int]:
        """How many servers matching ``filter`` each tenant has at each applied stage of
        ``model`` (0: nothing applied; -1: a row the model leaves open and has no exception
        for): (tenant, stage) → servers, one grouped query."""
        ...

    def server_kinds(self) -> list[tuple[str, str, str, str]]:
        """Distinct (build, product, connector type, evidence kind) of the stored servers."""
        ...

    def clock_groups(
        self,
        filter: ServerFilter,
        since: date,
        oldest_clock: date,
        tenants: frozenset[str],
        named: frozenset[tuple[str, str]],
    ) -> list[ClockGroup]:
        """The servers matching the stored-column part of ``filter`` (stage, paused,
        overridden are ignored), counted per group of what a stage history needs: the tenant
        (only for ``tenants``), the server (only for ``named`` (tenant, server) pairs), the day
        of first detection (days before ``since`` as the day before it), the day of the clock
        start (before ``oldest_clock`` and without credit: ``oldest_clock``), the clock credit
        in seconds and the day of remediation (days before ``since`` as the day before it)."""
        ...

    # pauses and overrides
    def list_pauses(self, tenant: str | None = None) -> list[Pause]: ...
    def insert_pause(
        self, pause: Pause, actor: str, now: datetime, check: Callable[[list[Pause]], None]
    ) -> Pause: ...
    def change_pause(
        self,
        pause_id: int,
        change: Callable[[Pause, list[Pause]], Pause],
        action: str,
        actor: str,
        now: datetime,
        tenant: str | None = None,
    ) -> Pause: ...
    def add_override(
        self,
        tenant: str | None,
        server: str | None,
        reason: str,
        expires: datetime | None,
        actor: str,
        now: datetime,
    ) -> Override: ...
    def list_overrides(self, now: datetime | None = None) -> list[Override]: ...
    def remove_override(
        self, override_id: int, actor: str, now: datetime, tenant: str | None = None
    ) -> None: ...

    # audit and settings
    def list_audit(self, tenant: str | None = None, limit: int = 200) -> list[AuditEntry]: ...
    def get_setting(self, key: str) -> str | None: ...
    def set_setting(self, key: str, value: str, actor: str, now: datetime) -> None: ...
