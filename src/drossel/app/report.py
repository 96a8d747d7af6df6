"""The per-server report an admin sees (compare Exchange Online's ``Get-OnPremServerReportInfo``).

Shared by ``drossel report``, the REST API, the web pages and the notification mails, so all
say the same thing.  A row shows what is *applied* to the server's mail now: it is the verdict a
message from that server (its last build, evidence and connector type) would get at this
moment, computed by the same functions as the verdict (:func:`~drossel.core.decision.observe`
and :func:`~drossel.core.decision.applied_state`), so the report cannot disagree with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from drossel.app.records import StoredServer
from drossel.app.storage import StateStore
from drossel.config import Config
from drossel.core.assessment import assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog
from drossel.core.decision import (
    ConnectionFacts,
    Override,
    applied_state,
    observe,
    relevant_pauses,
)
from drossel.core.detection import DetectedServer
from drossel.core.policy import Policy
from drossel.core.schedule import Pause, budget_used, pause_days_in_year, stage_start, years_of


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


def server_report(
    stored: StoredServer,
    store: StateStore,
    policy: Policy,
    catalog: Catalog,
    now: datetime,
    pauses: list[Pause],
    overrides: list[Override] | None = None,
) -> dict[str, Any]:
    """One server's report row (SPEC §7): applied stage and rates, and why they differ from
    the schedule."""
    if overrides is None:
        overrides = store.list_overrides(now)
    last = stored.record
    build = Build.parse(last.build)
    assessment = assess(build, now.date(), catalog, policy) if build else None
    mine = relevant_pauses(pauses, last.tenant, last.server)
    record = last
    if build is not None and assessment is not None and policy.mode != "off":
        # what the next message like the last one would do to the record (clock start,
        # remediation, regression by the passing of time), without storing it
        facts = ConnectionFacts(tenant=last.tenant, connector_type=last.connector_type)
        sighting = DetectedServer(last.server, build, last.product, "")
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
        "applied_reason": state.reason if state else None,
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
    cutoff = now - timedelta(days=policy.inactive_after_days)
    result = []
    for stored in store.list_servers(tenant):
        if not include_inactive and stored.record.last_seen < cutoff:
            continue
        result.append(server_report(stored, store, policy, catalog, now, pauses, overrides))
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
