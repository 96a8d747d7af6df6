"""The admin web pages (server-rendered, Jinja2, no JavaScript needed).

Sessions come from logging in with a token; every form carries a CSRF token bound to the
session.  Changes redirect back with a fixed message code (never echoing user text from the URL).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import ValidationError

from drossel.app.errors import AppError, Invalid, NotFound, http_status
from drossel.app.report import (
    day_of,
    grader,
    pause_json,
    server_filter,
    stage_history,
    stage_rates,
    tenant_counts,
)
from drossel.config import ConfigError, parse_moment
from drossel.storage.store import CONNECTOR_TYPES
from drossel.storage.tokens import token_by_value
from drossel.web import views
from drossel.web.api import PauseIn, catalog_json, client_ip, ctx_of
from drossel.web.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    TOKEN_MAX_LENGTH,
    Principal,
    token_key,
)
from drossel.web.common import (
    PER_PAGE_CHOICES,
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

templates = Jinja2Templates(directory=str(resources.files("drossel.web").joinpath("templates")))
templates.env.globals.update(day=day_of, rates=stage_rates, install=views.install_text)

router = APIRouter(include_in_schema=False)

DONE = {
    "pause_added": "The pause was created.",
    "pause_ended": "The pause was ended; its unused days are back in the budget.",
    "pause_extended": "The pause was extended.",
    "tenant_added": "The tenant was added.",
    "contact_added": "The contact was added.",
    "connector_added": "The connector was added.",
    "override_added": "The override was added.",
    "override_removed": "The override was removed.",
}


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def secure(request: Request, ctx: WebContext) -> bool:
    configured = ctx.config.web.secure_cookies
    if configured is not None:
        return configured
    return request.url.scheme == "https"


def page_principal(request: Request) -> Principal:
    ctx = ctx_of(request)
    who = ctx.sessions.read(ctx.store, request.cookies.get(SESSION_COOKIE), ctx.now())
    if who is None:
        raise LoginRequired(request.url.path)
    return who


def render(
    request: Request,
    name: str,
    who: Principal | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    ctx = ctx_of(request)
    done = request.query_params.get("done")
    context.setdefault("message", DONE.get(done or ""))
    context.setdefault("error", None)
    response = templates.TemplateResponse(
        request,
        name,
        {
            "who": who,
            "csrf": ctx.sessions.csrf_for(who.nonce) if who else "",
            "now": ctx.now(),
            "today": ctx.now().date(),
            "budget_days": ctx.budget_days,
            **context,
        },
        status_code=status,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def form_of(request: Request, who: Principal) -> Any:
    form = await request.form()
    ctx = ctx_of(request)
    value = form.get("csrf")
    if not isinstance(value, str) or not ctx.sessions.check_csrf(who.nonce, value):
        raise HTTPException(
            403, "The form expired or did not come from this site. Reload the page and try again."
        )
    return form


def text_field(form: Any, name: str, limit: int) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    value = value.strip()
    if len(value) > limit:
        raise Invalid(f"{name.replace('_', ' ')} is longer than {limit} characters")
    return value


def redirect(path: str, done: str | None = None) -> RedirectResponse:
    return RedirectResponse(path + (f"?done={done}" if done else ""), status_code=303)


# --- login ----------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value[:500]


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    import secrets

    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", None, next=_safe_next(next), login_csrf=token)
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=secure(request, ctx_of(request)),
        max_age=3600,
        path="/login",
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    import secrets

    ctx = ctx_of(request)
    form = await request.form()
    ip = client_ip(request)
    next_path = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    sent = form.get("csrf")

    def again(error: str, status: int) -> Response:
        fresh = secrets.token_urlsafe(24)
        response = render(
            request, "login.html", None, status, next=next_path, login_csrf=fresh, error=error
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            fresh,
            httponly=True,
            samesite="strict",
            secure=secure(request, ctx),
            max_age=3600,
            path="/login",
        )
        return response

    if not cookie or not isinstance(sent, str) or sent != cookie:
        return again("The login form expired. Please try again.", 403)
    if ctx.limiter.blocked(ip):
        return again("Too many failed logins from your address. Wait a minute and try again.", 429)
    token = form.get("token")
    value = token.strip() if isinstance(token, str) else ""
    if value and ctx.token_limiter.blocked(token_key(value)):
        return again("Too many failed logins with this token. Wait a minute and try again.", 429)
    info = token_by_value(ctx.store, value) if 0 < len(value) <= TOKEN_MAX_LENGTH else None
    if info is None:
        ctx.limiter.fail(ip)
        if value:
            ctx.token_limiter.fail(token_key(value))
        return again("That token is not valid.", 401)
    response = redirect(next_path if next_path != "/" else "/")
    response.set_cookie(
        SESSION_COOKIE,
        ctx.sessions.issue(ctx.store, info, ctx.now()),
        httponly=True,
        samesite="strict",
        secure=secure(request, ctx),
        max_age=SESSION_SECONDS,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    who = page_principal(request)
    await form_of(request, who)
    ctx_of(request).sessions.end(ctx_of(request).store, request.cookies.get(SESSION_COOKIE))
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(request: Request) -> Response:
    who = page_principal(request)
    if who.is_operator:
        return redirect("/operator/servers")
    return redirect(f"/t/{quote(who.tenant or '', safe='')}")


# --- tenant pages -----------------------------------------------------------------------------

_LEVEL_ORDER = {"bad": 0, "warn": 1, "info": 2, "ok": 3}


@router.get("/t/{tenant}", response_class=HTMLResponse)
def overview(request: Request, tenant: str) -> Response:
    ctx = ctx_of(request)
    who = page_principal(request)
    require_tenant(ctx, who, tenant)
    rows = report_rows(ctx, who, tenant, include_inactive=False)
    banners = sorted(
        (views.banner(r) for r in rows), key=lambda b: (_LEVEL_ORDER[b.level], b.server)
    )
    return render(
        request,
        "overview.html",
        who,
        tenant=ctx.store.get_tenant(tenant),
        rows=rows,
        banners=banners,
        budget=budget_json(ctx, tenant),
        active_pauses=[
            pause_json(p, ctx.now())
            for p in ctx.store.list_pauses(tenant)
            if p.end > ctx.now().date()
        ],
    )


@router.get("/t/{tenant}/servers/{server}", response_class=HTMLResponse)
def server_page(request: Request, tenant: str, server: str) -> Response:
    ctx = ctx_of(request)
    who = page_principal(request)
    stored = require_server(ctx, who, tenant, server)
    detail = server_detail(ctx, stored)
    pauses = [p for p in ctx.store.list_pauses(tenant) if p.covers(stored.record.server)]
    stages = views.timeline(stored, ctx.config.policy, ctx.now(), ctx.store.list_pauses(tenant))
    return render(
        request,
        "server.html",
        who,
        tenant=ctx.store.get_tenant(tenant),
        d=detail,
        r=detail["report"],
        banner=views.banner(detail["report"]),
        stages=stages,
        timeline_svg=Markup(views.timeline_svg(stages, ctx.now().date(), pauses)),
        chart_svg=Markup(views.counts_svg(detail["daily_counts"])),
        totals={
            k: sum(d[k] for d in detail["daily_counts"]) for k in ("accept", "throttle", "block")
        },
    )


def _pause_page(
    request: Request,
    who: Principal,
    tenant: str,
    status: int = 200,
    error: str | None = None,
    form: dict[str, Any] | None = None,
) -> Response:
    ctx = ctx_of(request)
    now = ctx.now()
    return render(
        request,
        "pauses.html",
        who,
        status,
        error=error,
        tenant=ctx.store.get_tenant(tenant),
        budget=budget_json(ctx, tenant),
        pauses=[pause_json(p, now) for p in reversed(ctx.store.list_pauses(tenant))],
        servers=[s.record.server for s in ctx.store.list_servers(tenant)],
        form=form or {},
        max_start=(now.date() + timedelta(days=366)).isoformat(),
    )


@router.get("/t/{tenant}/pauses", response_class=HTMLResponse)
def pauses_page(request: Request, tenant: str) -> Response:
    ctx = ctx_of(request)
    who = page_principal(request)
    require_tenant(ctx, who, tenant)
    return _pause_page(request, who, tenant)


@router.post("/t/{tenant}/pauses")
async def pause_create(request: Request, tenant: str) -> Response:
    ctx = ctx_of(request)
    who = page_principal(request)
    require_tenant(ctx, who, tenant)
    form = await form_of(request, who)
    now = ctx.now()
    scope = form.get("scope")
    chosen = [s for s in form.getlist("server") if isinstance(s, str)][:200]
    try:
        raw_days = text_field(form, "days", 20)
        raw_start = text_field(form, "start", 20)
    except AppError as exc:
        return _pause_page(request, who, tenant, 400, str(exc), {"scope": scope})
    shown = {"days": raw_days, "start": raw_start, "scope": scope, "servers": chosen}
    try:
        days = int(raw_days)
    except ValueError:
        return _pause_page(
            request,
            who,
            tenant,
            400,
            "Enter the number of days as a whole number (for example 14).",
            shown,
        )
    try:
        start = date.fromisoformat(raw_start) if raw_start else now.date()
    except ValueError:
        return _pause_page(request, who, tenant, 400, "Enter the start date as YYYY-MM-DD.", shown)
    if scope == "chosen" and not chosen:
        return _pause_page(
            request, who, tenant, 400, "Tick at least one server, or choose all servers.", shown
        )
    servers = chosen if scope == "chosen" else []
    if days < 1 or days > ctx.budget_days:
        return _pause_page(
            request,
            who,
            tenant,
            400,
            f"A pause lasts from 1 to {ctx.budget_days} days.",
            shown,
        )
    if start < now.date():
        return _pause_page(request, who, tenant, 400, "A pause cannot start in the past.", shown)
    try:
        PauseIn(days=days, start=start, servers=servers)
    except ValidationError:
        return _pause_page(request, who, tenant, 400, "Some server names are too long.", shown)
    try:
        ctx.services.add_pause(tenant, start, days, servers, who.actor, now)
    except AppError as exc:
        return _pause_page(request, who, tenant, http_status(exc), str(exc), shown)
    return redirect(f"/t/{quote(tenant, safe='')}/pauses", "pause_added")


def _int_path(value: str) -> int:
    if not value.isdigit() or len(value) > 15:
        raise not_found("unknown pause")
    return int(value)


@router.post("/t/{tenant}/pauses/{pause_id}/end")
async def pause_end(request: Request, tenant: str, pause_id: str) -> Response:
    ctx = ctx_of(request)
    who = page_principal(request)
    require_tenant(ctx, who, tenant)
    await form_of(request, who)
    number = _int_path(pause_id)
    if not any(p.id == number for p in ctx.store.list_pauses(tenant)):
        raise not_found("unknown pause")
    try:
        ctx.services.end_pause(number, who.actor, ctx.now(), tenant=tenant)
    except AppError as exc:
        return _pause_page(request, who, tenant, http_status(exc), str(exc))
    return redirect(f"/t/{quote(tenant, safe='')}/pauses", "pause_ended")


@router.post("/t/{tenant}/pauses/{pause_id}/extend")
async def pause_extend(request: Request, tenant: str, pause_id: str) -> Response:
    ctx = ctx_of(request)
    who = page_principal(request)
    require_tenant(ctx, who, tenant)
    form = await form_of(request, who)
    number = _int_path(pause_id)
    old = next((p for p in ctx.store.list_pauses(tenant) if p.id == number), None)
    if old is None:
        raise not_found("unknown pause")
    now = ctx.now()
    try:
        days = int(text_field(form, "days", 20))
    except (ValueError, AppError):
        return _pause_page(
            request, who, tenant, 400, "Enter the number of extra days as a whole number."
        )
    if days < 1 or days > ctx.budget_days:
        return _pause_page(
            request, who, tenant, 400, f"A pause lasts from 1 to {ctx.budget_days} days."
        )
    try:
        ctx.services.extend_pause(old.id or 0, days, who.actor, now, tenant=tenant)
    except AppError as exc:
        return _pause_page(request, who, tenant, http_status(exc), str(exc))
    return redirect(f"/t/{quote(tenant, safe='')}/pauses", "pause_extended")


@router.get("/t/{tenant}/audit", response_class=HTMLResponse)
def tenant_audit(request: Request, tenant: str) -> Response:
    ctx = ctx_of(request)
    who = page_principal(request)
    require_tenant(ctx, who, tenant)
    return render(
        request,
        "audit.html",
        who,
        tenant=ctx.store.get_tenant(tenant),
        entries=[audit_json(e) for e in ctx.store.list_audit(tenant)],
    )


# --- operator pages ---------------------------------------------------------------------------


def _operator(request: Request) -> tuple[WebContext, Principal]:
    who = page_principal(request)
    require_operator(who)
    return ctx_of(request), who


def _tenants_page(
    request: Request, who: Principal, status: int = 200, error: str | None = None
) -> Response:
    ctx = ctx_of(request)
    counts = tenant_counts(ctx.store, ctx.config.policy, ctx.catalog(), ctx.now())
    per_tenant = {
        tenant: {"servers": c.servers, "enforced": c.enforced} for tenant, c in counts.items()
    }
    return render(
        request,
        "op_tenants.html",
        who,
        status,
        error=error,
        tenants=[tenant_json(t) for t in ctx.store.list_tenants()],
        per_tenant=per_tenant,
    )


OperatorPage = Callable[..., Response]


async def _operator_change(
    request: Request,
    page: OperatorPage,
    done: tuple[str, str],
    change: Callable[[WebContext, Principal, Any], None],
    error_status: int = 400,
) -> Response:
    """The one shape of every operator form: check the operator and the CSRF token, make the
    change through the services, then redirect with a notice or show the page with the
    refusal (the message of the application layer's typed error)."""
    ctx, who = _operator(request)
    form = await form_of(request, who)
    try:
        change(ctx, who, form)
    except AppError as exc:
        return page(request, who, error_status, str(exc))
    return redirect(*done)


def _overview_params(request: Request) -> OverviewParams:
    """The page's query parameters, or 422 naming the bad ones (never echoing them)."""
    try:
        return OverviewParams.model_validate(dict(request.query_params))
    except ValidationError as exc:
        names = sorted({str(e["loc"][0]) for e in exc.errors() if e.get("loc")})
        raise HTTPException(
            422, f"Invalid filter, sort or page: {', '.join(names) or 'parameters'}."
        ) from None


#: the columns of the server overview: (sort key, heading)
OVERVIEW_COLUMNS = (
    ("server", "Server"),
    ("tenant", "Tenant"),
    ("product", "Product / build"),
    ("stage", "Stage now"),
    ("first_seen", "First seen"),
    ("last_seen", "Last seen"),
    ("accepted", "Accepted today"),
    ("throttled", "Throttled today"),
    ("blocked", "Blocked today"),
)


@router.get("/operator/servers", response_class=HTMLResponse)
def op_servers(request: Request) -> Response:
    """Every server of every tenant (the default tenant included): filters, sort, pages,
    today's counters, and the servers per stage over the last 90 days."""
    ctx, who = _operator(request)
    params = _overview_params(request)
    result = overview_of(ctx, who, params)
    policy = ctx.config.policy
    now = ctx.now()
    wanted = server_filter(
        ctx.store,
        policy,
        now,
        params.request(len(policy.stages), params.tenant),
        grader(ctx.catalog(), policy, now.date()),
    )
    history = stage_history(ctx.store, policy, now, wanted)

    def url(**changes: Any) -> str:
        return "/operator/servers?" + urlencode(params.query(**changes))

    sort_links = {
        key: url(
            sort=key,
            order="desc" if params.sort == key and params.order == "asc" else "asc",
            page=None,
        )
        for key, _ in OVERVIEW_COLUMNS
    }
    page = result.page
    return render(
        request,
        "op_servers.html",
        who,
        params=params,
        result=result,
        rows=result.servers,
        columns=OVERVIEW_COLUMNS,
        sort_links=sort_links,
        pages={
            "first": url(page=None) if page > 1 else None,
            "previous": url(page=page - 1 if page > 2 else None) if page > 1 else None,
            "next": url(page=page + 1) if page < result.pages else None,
            "last": url(page=result.pages) if page < result.pages else None,
        },
        tenants=[t.name for t in ctx.store.list_tenants()],
        stages=range(len(policy.stages) + 1),
        per_page_choices=PER_PAGE_CHOICES,
        history_svg=Markup(views.stage_history_svg(history)),
        history=history,
    )


@router.get("/operator/tenants", response_class=HTMLResponse)
def op_tenants(request: Request) -> Response:
    _, who = _operator(request)
    return _tenants_page(request, who)


@router.post("/operator/tenants")
async def op_tenant_add(request: Request) -> Response:
    def add(ctx: WebContext, who: Principal, form: Any) -> None:
        contacts = text_field(form, "contacts", 2000).replace(";", ",").split(",")
        ctx.services.add_tenant(
            text_field(form, "name", 200),
            [c.strip() for c in contacts if c.strip()],
            who.actor,
            ctx.now(),
            text_field(form, "display_name", 200),
        )

    return await _operator_change(
        request, _tenants_page, ("/operator/tenants", "tenant_added"), add
    )


@router.post("/operator/tenants/{tenant}/contacts")
async def op_contact_add(request: Request, tenant: str) -> Response:
    def add(ctx: WebContext, who: Principal, form: Any) -> None:
        require_tenant(ctx, who, tenant)
        ctx.services.add_contact(tenant, text_field(form, "email", 320), who.actor, ctx.now())

    return await _operator_change(
        request, _tenants_page, ("/operator/tenants", "contact_added"), add
    )


def _connectors_page(
    request: Request, who: Principal, status: int = 200, error: str | None = None
) -> Response:
    ctx = ctx_of(request)
    return render(
        request,
        "op_connectors.html",
        who,
        status,
        error=error,
        connectors=[connector_json(c) for c in ctx.store.list_connectors()],
        tenants=[t.name for t in ctx.store.list_tenants()],
        types=CONNECTOR_TYPES,
    )


@router.get("/operator/connectors", response_class=HTMLResponse)
def op_connectors(request: Request) -> Response:
    _, who = _operator(request)
    return _connectors_page(request, who)


@router.post("/operator/connectors")
async def op_connector_add(request: Request) -> Response:
    def add(ctx: WebContext, who: Principal, form: Any) -> None:
        ranges = text_field(form, "ip_ranges", 4000).replace(",", " ").split()
        ctx.services.add_connector(
            text_field(form, "tenant", 200),
            text_field(form, "name", 200),
            text_field(form, "type", 20),
            [r for r in ranges if r],
            text_field(form, "tls_name", 255) or None,
            who.actor,
            ctx.now(),
        )

    return await _operator_change(
        request, _connectors_page, ("/operator/connectors", "connector_added"), add
    )


def _overrides_page(
    request: Request, who: Principal, status: int = 200, error: str | None = None
) -> Response:
    ctx = ctx_of(request)
    return render(
        request,
        "op_overrides.html",
        who,
        status,
        error=error,
        overrides=[override_json(o) for o in ctx.store.list_overrides(ctx.now())],
        tenants=[t.name for t in ctx.store.list_tenants()],
    )


@router.get("/operator/overrides", response_class=HTMLResponse)
def op_overrides(request: Request) -> Response:
    _, who = _operator(request)
    return _overrides_page(request, who)


@router.post("/operator/overrides")
async def op_override_add(request: Request) -> Response:
    def add(ctx: WebContext, who: Principal, form: Any) -> None:
        raw_expires = text_field(form, "expires", 40)
        expires: datetime | None = None
        if raw_expires:
            try:
                expires = parse_moment(raw_expires).astimezone(UTC)
            except (ConfigError, OverflowError):
                raise Invalid("expires must be a date (YYYY-MM-DD) or an ISO 8601 time") from None
        ctx.services.add_override(
            text_field(form, "tenant", 200) or None,
            text_field(form, "server", 255) or None,
            text_field(form, "reason", 500),
            expires,
            who.actor,
            ctx.now(),
        )

    return await _operator_change(
        request, _overrides_page, ("/operator/overrides", "override_added"), add
    )


@router.post("/operator/overrides/{override_id}/remove")
async def op_override_remove(request: Request, override_id: str) -> Response:
    def remove(ctx: WebContext, who: Principal, _form: Any) -> None:
        if not override_id.isdigit() or len(override_id) > 15:
            raise NotFound("unknown override")
        ctx.services.remove_override(int(override_id), who.actor, ctx.now())

    return await _operator_change(
        request,
        _overrides_page,
        ("/operator/overrides", "override_removed"),
        remove,
        error_status=404,
    )


@router.get("/operator/catalog", response_class=HTMLResponse)
def op_catalog(request: Request, search: str | None = None) -> Response:
    ctx, who = _operator(request)
    search = (search or "")[:100] or None
    return render(
        request,
        "op_catalog.html",
        who,
        catalog=catalog_json(ctx.catalog(), search, None),
        search=search or "",
    )


@router.get("/operator/audit", response_class=HTMLResponse)
def op_audit(request: Request) -> Response:
    ctx, who = _operator(request)
    return render(
        request,
        "audit.html",
        who,
        tenant=None,
        entries=[audit_json(e) for e in ctx.store.list_audit(None, 500)],
    )
