"""The admin web app: pages, REST API (``/api/v1``, OpenAPI at ``/openapi.json``) and
``/metrics``; plus :func:`serve_web`, which runs it under uvicorn until ``stop`` is set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from drossel import __version__
from drossel.app.errors import AppError, http_status
from drossel.config import Clock, Config, WebConfig
from drossel.core.catalog import Catalog
from drossel.metrics import SERVERS_BY_STATUS
from drossel.storage.store import Store
from drossel.web import api, pages
from drossel.web.auth import SESSION_COOKIE, Principal
from drossel.web.common import WebContext

log = logging.getLogger("drossel.web")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def create_app(
    store: Store, config: Config, clock: Clock, catalog: Catalog | None = None
) -> FastAPI:
    app = FastAPI(
        title="drossel",
        version=__version__,
        description=(
            "Report, throttle and block mail from out-of-date Exchange servers. "
            "Authenticate with `Authorization: Bearer drs_...` (see `drossel token create`)."
        ),
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.ctx = WebContext.create(store, config, clock, catalog)
    app.include_router(api.router)
    app.include_router(pages.router)
    static = resources.files("drossel.web").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if config.web.metrics_auth:
            who = _bearer_or_session(request)
            if not isinstance(who, Principal):
                return who
            if not who.is_operator:
                return JSONResponse({"detail": "operators only"}, status_code=403)
        try:
            for status, n in store.server_status_counts().items():
                SERVERS_BY_STATUS.labels(status=status).set(n)
        except Exception:  # the scrape still answers with the other metrics
            log.exception("could not count servers for /metrics")
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(pages.LoginRequired)
    async def login_required(request: Request, exc: pages.LoginRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.next_path)}", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if is_api(request):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        return _error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(AppError)
    async def refused(request: Request, exc: AppError) -> Response:
        status = http_status(exc)
        if is_api(request):
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return _error_page(request, status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if is_api(request):
            errors = [
                {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                for e in exc.errors()
            ]
            return JSONResponse({"detail": errors}, status_code=422)
        return _error_page(request, 404, "not found")

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        if config.web.docs_auth and _is_docs(request.url.path):
            who = await run_in_threadpool(_bearer_or_session, request)
            if not isinstance(who, Principal):
                if request.url.path.startswith("/api/docs") and "authorization" not in (
                    request.headers
                ):
                    who = RedirectResponse(f"/login?next={quote('/api/docs')}", status_code=303)
                for key, value in SECURITY_HEADERS.items():
                    who.headers.setdefault(key, value)
                return who
        response: Response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.url.path.startswith("/api/docs"):
            del response.headers["Content-Security-Policy"]
        return response

    return app


def _is_docs(path: str) -> bool:
    return path == "/openapi.json" or path == "/api/docs" or path.startswith("/api/docs/")


def _bearer_or_session(request: Request) -> Principal | Response:
    """The principal of a bearer token, else of a session cookie; else the refusal to send
    (401, or 429 while the client or token is over its failure limit)."""
    ctx = request.app.state.ctx
    if "authorization" not in request.headers:
        who = ctx.sessions.read(ctx.store, request.cookies.get(SESSION_COOKIE), ctx.now())
        if who is not None:
            return who  # type: ignore[no-any-return]
    try:
        return api.api_principal(request)
    except HTTPException as exc:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )


def _error_page(request: Request, status: int, detail: str) -> Response:
    messages = {
        401: "Please log in.",
        403: detail if detail != "operators only" else "Only operators may open this page.",
        404: "There is nothing here, or you may not see it.",
    }
    who = None
    with contextlib.suppress(Exception):
        ctx = request.app.state.ctx
        who = ctx.sessions.read(ctx.store, request.cookies.get(SESSION_COOKIE), ctx.now())
    return pages.render(
        request, "error.html", who, status, code=status, detail=messages.get(status, detail)
    )


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen address must be HOST:PORT, got {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


async def serve_web(
    app: FastAPI,
    web: WebConfig,
    stop: asyncio.Event,
    listen: str | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    """Run ``app`` under uvicorn on ``listen`` (default ``web.listen``) until ``stop`` is set."""
    import uvicorn

    host, port = parse_listen(listen or web.listen)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            log_config=None,  # uvicorn's records go through drossel's handlers (redaction)
            lifespan="off",
            proxy_headers=False,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
    )
    # the daemon handles signals itself (stop event); uvicorn must not install its own
    setattr(server, "install_signal_handlers", lambda: None)  # noqa: B010
    task = asyncio.create_task(server.serve())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if task not in done:
        server.should_exit = True
        await task
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopper
    if task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    log.info("web server on %s:%d stopped", host, port)
