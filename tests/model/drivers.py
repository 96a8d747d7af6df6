"""One interface over the reference model and the real application layer.

Why: the example sequences and the Hypothesis state machine say each step once and run it
against both.  A :class:`ModelDriver` answers from :mod:`tests.model.reference`; a
:class:`RealDriver` drives ``drossel.app.enforcer.Enforcer``, ``drossel.app.services.Services`` and
``drossel.app.report.report_rows`` over a real store (in memory, SQLite or PostgreSQL) and
translates their answers into the model's vocabulary (:class:`~tests.model.reference.Answer`,
report rows as dicts of the compared fields, refusals as :class:`~tests.model.reference.Refused`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from drossel.app.catalog_source import packaged_catalog
from drossel.core.catalog import Catalog
from drossel.core.policy import Policy
from tests.model.reference import Answer, Client, Model, Refused


@functools.cache
def catalog() -> Catalog:
    """The packaged catalog, parsed once (parsing it is most of an Enforcer's start-up)."""
    return packaged_catalog()


def received(server: str, build: str, now: datetime) -> tuple[str, str]:
    """An Exchange ``Received:`` line naming ``server`` with ``build``."""
    stamp = now.strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        "Received",
        f"from mbx.internal.example (10.0.0.5) by {server} (10.0.0.6) with Microsoft SMTP "
        "Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) "
        f"id {build}; {stamp}",
    )


def headers_for(server: str | None, build: str | None, now: datetime) -> list[tuple[str, str]]:
    base = [("From", "someone@example.org"), ("Subject", "model test")]
    if server is None or build is None:
        return [("Received", "from a.example by b.example with ESMTP; Mon, 1 Jan 2026"), *base]
    return [received(server, build, now), *base]


class ModelDriver:
    """The reference model behind the driver interface."""

    name = "model"

    def __init__(self, policy: Policy | None = None, align: frozenset[str] = frozenset()) -> None:
        self.model = Model(policy or Policy(), catalog(), align)

    @property
    def policy(self) -> Policy:
        return self.model.policy

    def add_tenant(self, name: str, now: datetime) -> None:
        self.model.add_tenant(name)

    def add_connector(
        self, tenant: str, type_: str, ranges: tuple[str, ...], now: datetime
    ) -> None:
        self.model.add_connector(tenant, type_, ranges)

    def message(
        self, server: str | None, build: str | None, client: Client, now: datetime
    ) -> Answer:
        return self.model.message(server, build, client, now)

    def report(self, tenant: str, now: datetime) -> dict[str, dict[str, Any]]:
        return self.model.report(tenant, now)

    def add_pause(
        self, tenant: str, start: date, days: int, servers: tuple[str, ...], now: datetime
    ) -> Any:
        return self.model.add_pause(tenant, start, days, servers, now)

    def end_pause(self, key: Any, tenant: str, now: datetime) -> None:
        self.model.end_pause(key, now)

    def extend_pause(self, key: Any, tenant: str, days: int, now: datetime) -> None:
        self.model.extend_pause(key, days, now)

    def add_override(
        self, tenant: str, server: str | None, reason: str, expires: datetime | None, now: datetime
    ) -> Any:
        return self.model.add_override(tenant, server, reason, expires)

    def remove_override(self, key: Any, tenant: str, now: datetime) -> None:
        self.model.remove_override(key)

    def charged_days(self, tenant: str, year: int) -> int:
        return self.model.charged_days(tenant, year)

    def set_policy(self, policy: Policy, now: datetime) -> None:
        self.model.policy = policy

    def restart(self, now: datetime) -> None:
        """A restart changes nothing in the model (that is the point)."""

    def close(self) -> None:
        pass


def _aware(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


ENHANCED_CODES = {None: None, 450: "4.7.230", 550: "5.7.230"}


def answer_of(verdict: Any) -> Answer:
    """The compared parts of a real verdict (the enhanced code must go with the code)."""
    assert verdict.enhanced_code == ENHANCED_CODES.get(verdict.code, "?"), verdict
    return Answer(
        action=verdict.action,
        code=verdict.code,
        stage=verdict.stage or 0,
        throttle_minutes=verdict.throttle_minutes,
        block_minutes=verdict.block_minutes,
        scheduled_stage=getattr(verdict, "scheduled_stage", None) or 0,
        reason=bool(getattr(verdict, "applied_reason", None)),
    )


def row_of(row: dict[str, Any]) -> dict[str, Any]:
    """The compared fields of a real report row, normalised like the model's."""
    return {
        "build": row.get("build"),
        "status": row.get("status"),
        "evidence": row.get("evidence"),
        "via": row.get("via"),
        "first_detected": _aware(row.get("first_detected")),
        "last_seen": _aware(row.get("last_seen")),
        "stage": row.get("stage") or 0,
        "throttle_minutes": row.get("throttle_minutes") or 0,
        "block_minutes": row.get("block_minutes") or 0,
        "scheduled_stage": row.get("scheduled_stage") or 0,
        "applied_reason": bool(row.get("applied_reason")),
        "paused": bool(row.get("paused_until")),  # a pause in force, whatever else applies
        "remediated": bool(row.get("remediated")),
    }


class RealDriver:
    """The real application layer over ``store`` (a restart is a fresh Enforcer)."""

    def __init__(self, name: str, store: Any, config: Any, on_close: Callable[[], None]) -> None:
        from drossel.app.enforcer import ClientInfo, Enforcer
        from drossel.app.errors import AppError
        from drossel.app.report import report_rows
        from drossel.app.services import Services

        self.name = name
        self._app_error = AppError
        self._report_rows = report_rows
        self._services_cls = Services
        self._client_cls = ClientInfo
        self._enforcer_cls = Enforcer
        self.store = store
        self.config = config
        self.catalog = catalog()
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self._on_close = on_close
        self.services = Services(store, config)
        self.enforcer = self._fresh()

    def _fresh(self) -> Any:
        return self._enforcer_cls(self.store, self.config, lambda: self.now, catalog=self.catalog)

    @property
    def policy(self) -> Policy:
        policy: Policy = self.config.policy
        return policy

    def _changed(self) -> None:
        self.enforcer.refresh()

    def _call(self, at: datetime, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.now = at
        # the daemons' flusher writes queued sightings every second; a state change comes
        # from an admin, later than that (a per-server pause needs the server on record)
        self.enforcer.flush()
        try:
            return fn(*args, **kwargs)
        except self._app_error as exc:
            raise Refused(str(exc)) from exc
        finally:
            self._changed()

    def add_tenant(self, name: str, now: datetime) -> None:
        self._call(now, self.services.add_tenant, name, [], actor="model", now=now)

    def add_connector(
        self, tenant: str, type_: str, ranges: tuple[str, ...], now: datetime
    ) -> None:
        self._call(
            now,
            self.services.add_connector,
            tenant,
            f"{tenant}-{type_}-{len(ranges)}",
            type_,
            list(ranges),
            None,
            actor="model",
            now=now,
        )

    def message(
        self, server: str | None, build: str | None, client: Client, now: datetime
    ) -> Answer:
        self.now = now
        info = self._client_cls(
            addr=client.addr,
            name=client.name,
            helo=client.helo,
            tls_name=client.tls_name,
            ptr=client.ptr,
        )
        outcome = self.enforcer.process(headers_for(server, build, now), info, now)
        return answer_of(outcome.verdict)

    def report(self, tenant: str, now: datetime) -> dict[str, dict[str, Any]]:
        self.now = now
        self.enforcer.flush()
        rows = self._report_rows(self.store, self.config, self.catalog, tenant, now)
        return {row["server_fqdn"]: row_of(row) for row in rows}

    def add_pause(
        self, tenant: str, start: date, days: int, servers: tuple[str, ...], now: datetime
    ) -> Any:
        pause = self._call(
            now, self.services.add_pause, tenant, start, days, list(servers), actor="model", now=now
        )
        return pause.id

    def end_pause(self, key: Any, tenant: str, now: datetime) -> None:
        self._call(now, self.services.end_pause, key, actor="model", now=now, tenant=tenant)

    def extend_pause(self, key: Any, tenant: str, days: int, now: datetime) -> None:
        self._call(
            now, self.services.extend_pause, key, days, actor="model", now=now, tenant=tenant
        )

    def add_override(
        self, tenant: str, server: str | None, reason: str, expires: datetime | None, now: datetime
    ) -> Any:
        override = self._call(
            now, self.services.add_override, tenant, server, reason, expires, actor="model", now=now
        )
        return override.id

    def remove_override(self, key: Any, tenant: str, now: datetime) -> None:
        self._call(now, self.services.remove_override, key, actor="model", now=now, tenant=tenant)

    def charged_days(self, tenant: str, year: int) -> int:
        return int(self.services.charged_days(tenant, year))

    def set_policy(self, policy: Policy, now: datetime) -> None:
        self.config = self.config.model_copy(update={"policy": policy})
        self.services = self._services_cls(self.store, self.config)
        self.restart(now)

    def restart(self, now: datetime) -> None:
        self.now = now
        self.enforcer.shutdown()
        self.enforcer = self._fresh()

    def close(self) -> None:
        try:
            self.enforcer.shutdown()
        finally:
            self._on_close()
