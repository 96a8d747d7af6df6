"""REST API ``/api/v1``: the same objects as the pages and ``drossel report --json``.

Authentication is ``Authorization: Bearer drs_...``.  A tenant admin sees and changes only its
own tenant; anything of another tenant answers 404 exactly like something that does not exist.
Operator-only changes answer 403 to a tenant admin.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from drossel.app.errors import AppError, http_status
from drossel.app.report import pause_json, releases_json
from drossel.app.tokens import TokenService
from drossel.core.catalog import Catalog
from drossel.storage.tokens import TokenTable
from drossel.web.auth import Principal, bearer_value, lookup_bearer, token_key
from drossel.web.common import (
    OverviewParams,
    WebContext,
    audit_json,
    budget_json,
    connector_json,
    not_found,
    override_json,
    overview_of,
    report_rows,
    require_operator,
    require_server,
    require_tenant,
    server_detail,
    tenant_json,
)

MAX_ID = 2**53

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Fqdn = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=320, pattern=r"^[^@\s<>]+@[^@\s<>]+$"
    ),
]
TenantPath = Annotated[str, Path(min_length=1, max_length=200)]
ServerPath = Annotated[str, Path(min_length=1, max_length=255)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantIn(_In):
    name: Name
    display_name: Annotated[str, StringConstraints(max_length=200)] = ""
    contacts: Annotated[list[Email], Field(max_length=50)] = []


class ContactIn(_In):
    email: Email


class ConnectorIn(_In):
    tenant: Name
    name: Name
    type: Literal["OnPremises", "Partner", "Any"] = "OnPremises"
    ip_ranges: Annotated[
        list[Annotated[str, StringConstraints(max_length=50)]], Field(max_length=100)
    ] = []
    tls_name: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None


class PauseIn(_In):
    days: Annotated[StrictInt, Field(ge=1, le=366, description="1 .. the yearly pause budget")]
    start: date | None = Field(default=None, description="first paused day (UTC); default today")
    servers: Annotated[list[Fqdn], Field(max_length=200, description="empty: all servers")] = []


class ExtendIn(_In):
    days: Annotated[StrictInt, Field(ge=1, le=366)]


class OverrideIn(_In):
    tenant: Name | None = None
    server: Fqdn | None = None
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    expires: datetime | None = None


def ctx_of(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def client_ip(request: Request) -> str:
    """The client for the login limits (``[web] trusted_proxies`` decide on X-Forwarded-For)."""
    peer = request.client.host if request.client else "unknown"
    return ctx_of(request).client_address.of(peer, request.headers.getlist("x-forwarded-for"))


def api_principal(request: Request) -> Principal:
    """The bearer token's principal; failures count per client address and per token."""
    ctx = ctx_of(request)
    value = bearer_value(request.headers.get("authorization"))
    unauthorized = HTTPException(
        401,
        "missing or invalid bearer token",
        headers={"WWW-Authenticate": 'Bearer realm="drossel"'},
    )
    if value is None:
        raise unauthorized
    ip = client_ip(request)
    key = token_key(value)
    if ctx.limiter.blocked(ip) or (value and ctx.token_limiter.blocked(key)):
        raise HTTPException(429, "too many failed logins; try again in a minute")
    who = lookup_bearer(ctx.store, ctx.sessions, value, ctx.now()) if value else None
    if who is None:
        ctx.limiter.fail(ip)
        if value:
            ctx.token_limiter.fail(key)
        raise unauthorized
    return who


Ctx = Annotated[WebContext, Depends(ctx_of)]
Who = Annotated[Principal, Depends(api_principal)]

router = APIRouter(prefix="/api/v1", tags=["drossel"])


def refused(exc: AppError) -> HTTPException:
    """The HTTP answer to a refusal of the application layer: the status follows its type."""
    return HTTPException(http_status(exc), str(exc))


@router.get("/me", summary="who the token belongs to")
def me(who: Who) -> dict[str, Any]:
    return {"role": who.role, "tenant": who.tenant, "label": who.label}


# --- tokens -------------------------------------------------------------------------------


def _app_error(exc: AppError) -> HTTPException:
    return HTTPException(http_status(exc), str(exc))


@router.get("/tokens", summary="API/web tokens, without their values (operator)")
def list_tokens(ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    require_operator(who)
    return [row.to_json() for row in TokenService(TokenTable(ctx.store)).list()]


@router.post(
    "/tokens/{token_id}/revoke", summary="revoke a token and end its sessions at once (operator)"
)
def revoke_token(token_id: IdPath, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_operator(who)
    try:
        return TokenService(TokenTable(ctx.store)).revoke(token_id, who.actor, ctx.now()).to_json()
    except AppError as exc:
        raise _app_error(exc) from None


# --- tenants ------------------------------------------------------------------------------


@router.get("/tenants", summary="tenants you may see")
def list_tenants(ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    return [tenant_json(t) for t in ctx.store.list_tenants() if who.can_see(t.name)]


@router.post("/tenants", status_code=201, summary="add a tenant (operator)")
def add_tenant(body: TenantIn, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_operator(who)
    try:
        tenant = ctx.services.add_tenant(
            body.name, body.contacts, who.actor, ctx.now(), body.display_name.strip()
        )
    except AppError as exc:
        raise refused(exc) from None
    return tenant_json(tenant)


@router.get("/tenants/{tenant}", summary="one tenant with its pause budget")
def get_tenant(tenant: TenantPath, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_tenant(ctx, who, tenant)
    return {**tenant_json(ctx.store.get_tenant(tenant)), "budget": budget_json(ctx, tenant)}


@router.post(
    "/tenants/{tenant}/contacts", status_code=201, summary="add an admin contact (operator)"
)
def add_contact(tenant: TenantPath, body: ContactIn, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_tenant(ctx, who, tenant)
    require_operator(who)
    try:
        ctx.services.add_contact(tenant, body.email, who.actor, ctx.now())
    except AppError as exc:
        raise refused(exc) from None
    return tenant_json(ctx.store.get_tenant(tenant))


# --- report and servers ---------------------------------------------------------------------


@router.get(
    "/report",
    summary="the per-server report (same fields as `drossel report --json`), filtered and paged",
    description=(
        "Without `page` and `per_page`: a list of report rows, as before (all of them, or "
        "those matching the filters, in the chosen order).  With either: one page, "
        '`{"total", "page", "per_page", "pages", "today", "servers"}`, every row with '
        "`today`: its accepted, throttled and blocked messages today, and `today` the same "
        "summed over all matching servers.  A tenant admin sees its own tenant only."
    ),
)
def report(
    ctx: Ctx, who: Who, params: Annotated[OverviewParams, Query()]
) -> list[dict[str, Any]] | dict[str, Any]:
    if params.tenant is not None:
        require_tenant(ctx, who, params.tenant)
    if not params.paged and not params.filtered:
        return report_rows(ctx, who, params.tenant, params.include_inactive)  # type: ignore[no-any-return]
    if params.paged:
        return overview_of(ctx, who, params).to_json()
    rows: list[dict[str, Any]] = []
    number = 1
    while True:  # every matching row, a page at a time
        result = overview_of(ctx, who, params.model_copy(update={"page": number, "per_page": 500}))
        rows += [{k: v for k, v in row.items() if k != "today"} for row in result.servers]
        if number >= result.pages:
            return rows
        number += 1


@router.get("/tenants/{tenant}/servers", summary="report rows of one tenant")
def list_servers(
    tenant: TenantPath, ctx: Ctx, who: Who, include_inactive: bool = False
) -> list[dict[str, Any]]:
    require_tenant(ctx, who, tenant)
    return report_rows(ctx, who, tenant, include_inactive)  # type: ignore[no-any-return]


@router.get(
    "/tenants/{tenant}/servers/{server}",
    summary="one server: report, stage timeline, 90 daily counts, build history, evidence",
)
def get_server(tenant: TenantPath, server: ServerPath, ctx: Ctx, who: Who) -> dict[str, Any]:
    return server_detail(ctx, require_server(ctx, who, tenant, server))


# --- pauses -----------------------------------------------------------------------------------


@router.get("/tenants/{tenant}/pauses", summary="pauses of a tenant")
def list_pauses(tenant: TenantPath, ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    require_tenant(ctx, who, tenant)
    now = ctx.now()
    return [pause_json(p, now) for p in ctx.store.list_pauses(tenant)]


@router.get("/tenants/{tenant}/budget", summary="pause budget used and left this year")
def get_budget(tenant: TenantPath, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_tenant(ctx, who, tenant)
    return budget_json(ctx, tenant)


@router.post("/tenants/{tenant}/pauses", status_code=201, summary="pause throttling and blocking")
def add_pause(tenant: TenantPath, body: PauseIn, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_tenant(ctx, who, tenant)
    now = ctx.now()
    start = body.start or now.date()
    try:
        pause = ctx.services.add_pause(tenant, start, body.days, body.servers, who.actor, now)
    except AppError as exc:
        raise refused(exc) from None
    return {**pause_json(pause, now), "budget": budget_json(ctx, tenant)}


def _own_pause(ctx: WebContext, tenant: str, pause_id: int):  # type: ignore[no-untyped-def]
    for pause in ctx.store.list_pauses(tenant):
        if pause.id == pause_id:
            return pause
    raise not_found("unknown pause")


@router.post("/tenants/{tenant}/pauses/{pause_id}/end", summary="end a pause today")
def end_pause(tenant: TenantPath, pause_id: IdPath, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_tenant(ctx, who, tenant)
    _own_pause(ctx, tenant, pause_id)
    now = ctx.now()
    try:
        pause = ctx.services.end_pause(pause_id, who.actor, now, tenant=tenant)
    except AppError as exc:
        raise refused(exc) from None
    return {**pause_json(pause, now), "budget": budget_json(ctx, tenant)}


@router.post(
    "/tenants/{tenant}/pauses/{pause_id}/extend",
    status_code=201,
    summary="extend a pause: more days at its end, within the budget",
)
def extend_pause(
    tenant: TenantPath, pause_id: IdPath, body: ExtendIn, ctx: Ctx, who: Who
) -> dict[str, Any]:
    require_tenant(ctx, who, tenant)
    _own_pause(ctx, tenant, pause_id)
    now = ctx.now()
    try:
        pause = ctx.services.extend_pause(pause_id, body.days, who.actor, now, tenant=tenant)
    except AppError as exc:
        raise refused(exc) from None
    return {**pause_json(pause, now), "budget": budget_json(ctx, tenant)}


# --- overrides, connectors, audit, catalog ---------------------------------------------------


@router.get("/overrides", summary="active allow-overrides you may see")
def list_overrides(ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    return [
        override_json(o)
        for o in ctx.store.list_overrides(ctx.now())
        if who.is_operator or (o.tenant is not None and o.tenant == who.tenant)
    ]


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@router.post("/overrides", status_code=201, summary="add an allow-override (operator)")
def add_override(body: OverrideIn, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_operator(who)
    if body.tenant is not None:
        require_tenant(ctx, who, body.tenant)
    try:
        expires = _aware(body.expires)
    except (OverflowError, ValueError):
        raise HTTPException(422, "expires is out of range") from None
    try:
        override = ctx.services.add_override(
            body.tenant, body.server, body.reason, expires, who.actor, ctx.now()
        )
    except AppError as exc:
        raise refused(exc) from None
    return override_json(override)


@router.delete("/overrides/{override_id}", summary="remove an allow-override (operator)")
def remove_override(override_id: IdPath, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_operator(who)
    try:
        ctx.services.remove_override(override_id, who.actor, ctx.now())
    except AppError as exc:
        raise refused(exc) from None
    return {"removed": override_id}


@router.get("/connectors", summary="inbound connectors you may see")
def list_connectors(ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    return [connector_json(c) for c in ctx.store.list_connectors() if who.can_see(c.tenant)]


@router.post("/connectors", status_code=201, summary="add an inbound connector (operator)")
def add_connector(body: ConnectorIn, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_operator(who)
    require_tenant(ctx, who, body.tenant)
    try:
        connector = ctx.services.add_connector(
            body.tenant, body.name, body.type, body.ip_ranges, body.tls_name, who.actor, ctx.now()
        )
    except AppError as exc:
        raise refused(exc) from None
    return connector_json(connector)


@router.get("/audit", summary="audit log, newest first")
def list_audit(
    ctx: Ctx,
    who: Who,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    if tenant is not None:
        require_tenant(ctx, who, tenant)
    if not who.is_operator:
        tenant = who.tenant
    return [audit_json(e) for e in ctx.store.list_audit(tenant, limit)]


def catalog_json(catalog: Catalog, search: str | None, product: str | None) -> dict[str, Any]:
    return {
        "version": catalog.version,
        "release_count": len(catalog.releases),
        "releases": releases_json(catalog, search, product),
    }


@router.get("/catalog", summary="the Exchange build catalog in use")
def get_catalog(
    ctx: Ctx,
    who: Who,
    search: Annotated[str | None, Query(max_length=100)] = None,
    product: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    return catalog_json(ctx.catalog(), search, product)
