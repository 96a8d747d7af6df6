"""Services that change shared state: pauses, overrides, tenants, connectors (SPEC §5, §6).

The API, the web pages and the CLI all call these, so each rule has one home.  Refusals are
typed (:mod:`drossel.app.errors`); the adapters turn the type into an HTTP status or an exit
code.  The budget rules run inside the store's transaction (``check``/``change`` callables),
so concurrent requests on several nodes can never overspend a tenant's budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from drossel.app.errors import Conflict, Invalid
from drossel.app.records import Connector, Tenant
from drossel.app.storage import StateStore
from drossel.config import Config
from drossel.core.decision import Override, can_pause
from drossel.core.policy import Policy
from drossel.core.schedule import Pause, budget_used, ended_pause, extended_pause


def _whole_days(days: object) -> int:
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise Invalid("pause days must be a whole number of at least 1")
    return days


def _server_names(servers: Sequence[str]) -> tuple[str, ...]:
    names: list[str] = []
    for raw in servers:
        name = raw.strip().lower()
        if not name or len(name) > 255 or any(not ch.isprintable() for ch in name):
            raise Invalid(f"not a server name: {raw!r}")
        names.append(name)
    return tuple(dict.fromkeys(names))


class Services:
    """State changes with their rules, over any :class:`StateStore`."""

    def __init__(self, store: StateStore, config: Config | Policy) -> None:
        self.store = store
        self.policy = config.policy if isinstance(config, Config) else config

    # --- pauses (SPEC §5) -------------------------------------------------------------------

    @property
    def budget_days(self) -> int:
        return self.policy.pause_budget_days

    def _refuse_over_budget(self, others: list[Pause], pause: Pause) -> None:
        problem = can_pause(others, pause, self.budget_days)
        if problem:
            raise Conflict(problem)

    def add_pause(
        self,
        tenant: str,
        start: date,
        days: int,
        servers: Sequence[str],
        actor: str,
        now: datetime,
    ) -> Pause:
        """A pause of ``days`` whole days from ``start`` (all servers if ``servers`` is empty)."""
        days = _whole_days(days)
        if days > self.budget_days:
            raise Invalid(f"a pause can last at most {self.budget_days} days")
        if start < now.date():
            raise Invalid("a pause cannot start in the past")
        if start > now.date() + timedelta(days=366):
            raise Invalid("a pause can start at most one year ahead")
        pause = Pause(None, tenant, start, start + timedelta(days=days), _server_names(servers))
        return self.store.insert_pause(
            pause, actor, now, lambda others: self._refuse_over_budget(others, pause)
        )

    def end_pause(
        self, pause_id: int, actor: str, now: datetime, tenant: str | None = None
    ) -> Pause:
        """End a pause today: today still counts, the days after it go back to the budget; a
        pause that has not started is cancelled."""
        today = now.date()

        def change(pause: Pause, _others: list[Pause]) -> Pause:
            if pause.end <= today or pause.end == pause.start:
                raise Conflict(f"pause {pause_id} has already ended")
            new = ended_pause(pause, today)
            if new.end == pause.end:
                raise Conflict(f"pause {pause_id} has already ended: today is its last day")
            return new

        return self.store.change_pause(pause_id, change, "pause.end", actor, now, tenant)

    def extend_pause(
        self, pause_id: int, days: int, actor: str, now: datetime, tenant: str | None = None
    ) -> Pause:
        """Add ``days`` to the end of a pause that has not ended, within the budget."""
        days = _whole_days(days)
        today = now.date()

        def change(pause: Pause, others: list[Pause]) -> Pause:
            if pause.end <= today or pause.end == pause.start:
                raise Conflict(f"pause {pause_id} has already ended")
            new = extended_pause(pause, days)
            if new.days > self.budget_days:
                raise Invalid(f"a pause can last at most {self.budget_days} days")
            self._refuse_over_budget(others, new)
            return new

        return self.store.change_pause(pause_id, change, "pause.extend", actor, now, tenant)

    def charged_days(self, tenant: str, year: int) -> int:
        """Days charged to the tenant's budget in ``year``: every day a pause was in force."""
        return budget_used(self.store.list_pauses(tenant), year)

    # --- overrides (SPEC §6) ----------------------------------------------------------------

    def add_override(
        self,
        tenant: str | None,
        server: str | None,
        reason: str,
        expires: datetime | None,
        actor: str,
        now: datetime,
    ) -> Override:
        if tenant is None and server is None:
            raise Invalid("an override needs a tenant, a server, or both")
        if expires is not None and expires <= now:
            raise Invalid("an override must expire in the future")
        return self.store.add_override(tenant, server, reason, expires, actor, now)

    def remove_override(
        self, override_id: int, actor: str, now: datetime, tenant: str | None = None
    ) -> None:
        self.store.remove_override(override_id, actor, now, tenant)

    # --- tenants and connectors -------------------------------------------------------------

    def add_tenant(
        self, name: str, contacts: Sequence[str], actor: str, now: datetime, display_name: str = ""
    ) -> Tenant:
        return self.store.add_tenant(name, contacts, actor, now, display_name)

    def add_contact(self, tenant: str, email: str, actor: str, now: datetime) -> None:
        self.store.add_contact(tenant, email, actor, now)

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
        return self.store.add_connector(tenant, name, type_, ip_ranges, tls_name, actor, now)
