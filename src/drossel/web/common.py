"""State shared by the API and the pages: the app context, tenant visibility and the JSON
shapes of every object (the pages render the same dictionaries)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import HTTPException
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from drossel.app.catalog_source import load_catalog
from drossel.app.report import (
    Overview,
    OverviewRequest,
    overview,
    pause_budget,
    pause_json,
    server_report,
    tenant_report,
)
from drossel.app.server_query import Sort
from drossel.app.services import Services
from drossel.config import Clock, Config
from drossel.core.catalog import Catalog
from drossel.core.decision import Override, relevant_pauses
from drossel.storage.store import AuditEntry, Connector, Store, StoredServer, Tenant
from drossel.web.auth import ClientAddress, FailureLimiter, Principal, Sessions
from drossel.web.session_key import session_keys
from drossel.web.views import daily_series, timeline

CHART_DAYS = 90


@dataclass
class WebContext:
    store: Store
    config: Config
    clock: Clock
    fixed_catalog: Catalog | None
    sessions: Sessions
    limiter: FailureLimiter  # failed logins per client address
    token_limiter: FailureLimiter  # failed logins per token (its first characters)
    client_address: ClientAddress

    @classmethod
    def create(
        cls, store: Store, config: Config, clock: Clock, catalog: Catalog | None
    ) -> WebContext:
        return cls(
            store,
            config,
            clock,
            catalog,
            Sessions(session_keys(config, store.url)),
            FailureLimiter(config.web.login_attempts_per_minute),
            FailureLimiter(config.web.token_attempts_per_minute),
            ClientAddress(config.web.trusted_proxies),
        )

    def now(self) -> datetime:
        return self.clock()

    @property
    def services(self) -> Services:
        return Services(self.store, self.config)

    def catalog(self) -> Catalog:
        return self.fixed_catalog or load_catalog(self.store)

    @property
    def budget_days(self) -> int:
        return self.config.policy.pause_budget_days


def not_found(what: str = "not found") -> HTTPException:
    return HTTPException(status_code=404, detail=what)


def require_tenant(ctx: WebContext, who: Principal, tenant: str) -> str:
    """The tenant if ``who`` may see it; otherwise 404 (never reveal other tenants)."""
    if len(tenant) > 200 or not who.can_see(tenant) or not ctx.store.tenant_exists(tenant):
        raise not_found("unknown tenant")
    return tenant


def require_operator(who: Principal) -> None:
    if not who.is_operator:
        raise HTTPException(status_code=403, detail="operators only")


def require_server(ctx: WebContext, who: Principal, tenant: str, fqdn: str) -> StoredServer:
    require_tenant(ctx, who, tenant)
    stored = ctx.store.get_server(tenant, fqdn) if len(fqdn) <= 255 else None
    if stored is None:
        raise not_found("unknown server")
    return stored


# --- JSON shapes ---------------------------------------------------------------------------


def tenant_json(t: Tenant) -> dict[str, Any]:
    return {"name": t.name, "display_name": t.display_name, "contacts": list(t.contacts)}


def connector_json(c: Connector) -> dict[str, Any]:
    return {
        "id": c.id,
        "tenant": c.tenant,
        "name": c.name,
        "type": c.type,
        "ip_ranges": list(c.ip_ranges),
        "tls_name": c.tls_name,
    }


def override_json(o: Override) -> dict[str, Any]:
    return {
        "id": o.id,
        "tenant": o.tenant,
        "server": o.server,
        "reason": o.reason,
        "expires": o.expires.isoformat() if o.expires else None,
    }


def audit_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "actor": e.actor,
        "tenant": e.tenant,
        "action": e.action,
        "detail": e.detail,
    }


def budget_json(ctx: WebContext, tenant: str) -> dict[str, Any]:
    return pause_budget(ctx.store, ctx.config.policy, tenant, ctx.now()).to_json()


def report_rows(ctx: WebContext, who: Principal, tenant: str | None, include_inactive: bool):  # type: ignore[no-untyped-def]
    if not who.is_operator:
        tenant = who.tenant
    return tenant_report(
        ctx.store, ctx.config.policy, ctx.catalog(), ctx.now(), tenant, include_inactive
    )


def server_detail(ctx: WebContext, stored: StoredServer) -> dict[str, Any]:
    now = ctx.now()
    policy = ctx.config.policy
    pauses = ctx.store.list_pauses(stored.record.tenant)
    report = server_report(stored, ctx.store, policy, ctx.catalog(), now, pauses)
    counts = ctx.store.daily_counts(stored.id, now.date() - timedelta(days=CHART_DAYS - 1))
    stages = timeline(stored, policy, now, pauses)
    mine = relevant_pauses(pauses, stored.record.tenant, stored.record.server)
    return {
        "report": report,
        "timeline": [
            {
                "stage": s.number,
                "start": _iso_day(s.start),
                "end": _iso_day(s.end),
                "throttle_minutes": s.throttle,
                "block_minutes": s.block,
                "current": s.current,
            }
            for s in stages
        ],
        "pauses": [pause_json(p, now) for p in mine],
        "daily_counts": daily_series(counts, now.date(), CHART_DAYS),
        "build_history": [
            {"build": b, "first_seen": f.isoformat(), "last_seen": last.isoformat()}
            for b, f, last in ctx.store.build_history(stored.id)
        ],
        "evidence": stored.evidence,
    }


def _iso_day(d: date | None) -> str | None:
    return d.isoformat() if d else None


# --- the operator overview's parameters (the page /operator/servers and /api/v1/report) -----

PER_PAGE_CHOICES = (50, 100, 200)


class OverviewParams(BaseModel):
    """Filters, sort and page of the server overview, from a query string: validated here,
    so hostile input is refused (422) before it reaches the store.  Empty values (an "any"
    choice of the page's form) count as absent; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore")

    tenant: Annotated[str, StringConstraints(max_length=200)] | None = None
    product: Annotated[str, StringConstraints(max_length=40)] | None = None
    status: Literal["current", "behind", "unsupported", "unknown", "not_applicable"] | None = None
    stage: (
        Annotated[int, Field(ge=0, le=99, description="applied stage; 0: nothing applied")] | None
    ) = None
    evidence: Literal["connector", "verified", "unverified"] | None = None
    paused: bool | None = None
    overridden: bool | None = None
    search: (
        Annotated[
            str, StringConstraints(max_length=255), Field(description="part of the server name")
        ]
        | None
    ) = None
    include_inactive: bool = False
    sort: Sort = "server"
    order: Literal["asc", "desc"] = "asc"
    page: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    per_page: Annotated[int, Field(ge=1, le=500)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data

    @field_validator("tenant", "product", "search")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value.isprintable():
            raise ValueError("must not contain control characters")
        return value or None

    @property
    def paged(self) -> bool:
        """Whether the paged answer was asked for (``/api/v1/report``)."""
        return self.page is not None or self.per_page is not None

    @property
    def filtered(self) -> bool:
        fields = ("product", "status", "stage", "evidence", "paused", "overridden", "search")
        return any(getattr(self, name) is not None for name in fields) or self.sort != "server"

    def request(self, max_stage: int, tenant: str | None) -> OverviewRequest:
        if self.stage is not None and self.stage > max_stage:
            raise HTTPException(422, f"stage must be between 0 and {max_stage}")
        return OverviewRequest(
            tenant=tenant,
            product=self.product,
            status=self.status,
            stage=self.stage,
            evidence=self.evidence,
            paused=self.paused,
            overridden=self.overridden,
            search=self.search,
            include_inactive=self.include_inactive,
            sort=self.sort,
            descending=self.order == "desc",
            page=self.page or 1,
            per_page=self.per_page or PER_PAGE_CHOICES[0],
        )

    def query(self, **changes: Any) -> dict[str, str]:
        """These parameters (with ``changes``) as a query string's items, defaults left out."""
        values = {**self.model_dump(), **changes}
        defaults = OverviewParams().model_dump()
        return {
            k: ("yes" if v else "no") if isinstance(v, bool) else str(v)
            for k, v in values.items()
            if v is not None and v != defaults[k]
        }


def overview_of(ctx: WebContext, who: Principal, params: OverviewParams) -> Overview:
    """The overview as ``who`` may see it: a tenant admin sees only its own tenant."""
    tenant = params.tenant if who.is_operator else who.tenant
    request = params.request(len(ctx.config.policy.stages), tenant)
    return overview(ctx.store, ctx.config.policy, ctx.catalog(), ctx.now(), request)
