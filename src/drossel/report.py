"""The per-server report an admin sees (compare Exchange Online's ``Get-OnPremServerReportInfo``).

Shared by ``drossel report``, the REST API and the web pages, so all three say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from drossel.core.assessment import assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog
from drossel.core.decision import relevant_pauses
from drossel.core.policy import Policy
from drossel.core.schedule import Pause, budget_used, stage_at, stage_start
from drossel.storage.store import Store, StoredServer


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


def pause_budget(store: Store, policy: Policy, tenant: str, now: datetime) -> PauseBudget:
    used = budget_used(store.list_pauses(tenant), now.year)
    return PauseBudget(now.year, policy.pause_budget_days, used)


def server_report(
    stored: StoredServer,
    store: Store,
    policy: Policy,
    catalog: Catalog,
    now: datetime,
    pauses: list[Pause],
) -> dict[str, Any]:
    record = stored.record
    build = Build.parse(record.build)
    assessment = assess(build, now.date(), catalog, policy) if build else None
    mine = relevant_pauses(pauses, record.tenant, record.server)
    clock = record.clock
    active_clock = clock is not None and record.remediated_at is None
    stage_number: int | None = None
    throttle = block = 0
    starts: dict[str, str | None] = {
        "throttle_start": None,
        "block_start": None,
        "full_block_start": None,
        "next_stage_start": None,
    }
    next_stage: int | None = None
    if clock is not None and active_clock:
        info = stage_at(policy, clock, now, mine)
        stage_number, throttle, block = (
            info.number,
            info.stage.throttle_minutes,
            info.stage.block_minutes,
        )
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
        if info.number < len(policy.stages):
            next_stage = info.number + 1
            starts["next_stage_start"] = _iso(stage_start(policy, clock, next_stage, now, mine))
    paused_until = max((p.end for p in mine if p.active_at(now)), default=None)
    next_rates = policy.stages[next_stage - 1] if next_stage else None
    return {
        "tenant": record.tenant,
        "server_fqdn": record.server,
        "product": record.product,
        "build": record.build,
        "update_name": assessment.update_name if assessment else None,
        "status": assessment.status if assessment else record.status,
        "persistently_vulnerable": assessment.persistently_vulnerable if assessment else False,
        "reasons": list(assessment.reasons) if assessment else [],
        "first_detected": _iso(record.first_detected),
        "last_seen": _iso(record.last_seen),
        "remediated": record.remediated_at is not None,
        "remediated_at": _iso(record.remediated_at),
        "stage": stage_number,
        "throttle_minutes": throttle,
        "block_minutes": block,
        **starts,
        "next_stage": next_stage,
        "next_stage_throttle_minutes": next_rates.throttle_minutes if next_rates else None,
        "next_stage_block_minutes": next_rates.block_minutes if next_rates else None,
        "recommended_builds": list(assessment.recommended_builds) if assessment else [],
        "paused_until": paused_until.isoformat() if paused_until else None,
        "counts": {
            "accept": 0,
            "throttle": 0,
            "block": 0,
            **store.total_counts(stored.id),
        },
    }


def tenant_report(
    store: Store,
    policy: Policy,
    catalog: Catalog,
    now: datetime,
    tenant: str | None = None,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    """One object per server; servers unseen for ``inactive_after_days`` are left out unless
    asked for (they stay in the history)."""
    pauses = store.list_pauses(tenant)
    cutoff = now - timedelta(days=policy.inactive_after_days)
    result = []
    for stored in store.list_servers(tenant):
        if not include_inactive and stored.record.last_seen < cutoff:
            continue
        result.append(server_report(stored, store, policy, catalog, now, pauses))
    return result
