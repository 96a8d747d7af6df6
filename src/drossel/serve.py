"""``drossel serve``: one process running what the configuration enables (milter, SMTP gateway,
admin web and notifications) on one shared engine, SQLite by default."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.panel import Panel
from sqlalchemy import select

from drossel.config import Config, database_url
from drossel.runtime import build_enforcer, run_until_stopped
from drossel.storage.schema import tokens
from drossel.storage.store import Store

Service = Callable[[asyncio.Event], Awaitable[None]]


def first_operator_token(store: Store, now: datetime) -> str | None:
    """On a fresh state, create an operator token so the web can be used at once; it is shown
    once, on the start screen.  ``None`` when an operator token exists already."""
    with store.engine.connect() as conn:
        exists = conn.execute(
            select(tokens.c.id).where(tokens.c.role == "operator", tokens.c.revoked_at.is_(None))
        ).first()
    if exists is not None:
        return None
    token = "drs_" + secrets.token_urlsafe(32)
    store.add_token(token, "operator", None, "created by first drossel serve", "serve", now)
    return token


def describe(config: Config, db_url: str, token: str | None = None) -> str:
    lines = [f"state       {db_url}", f"policy      mode={config.policy.mode}"]
    if config.serve.milter:
        lines.append(
            f"milter      {config.milter.listen}   "
            f"(Postfix: smtpd_milters = {config.milter.listen}, milter_default_action = accept)"
        )
    if config.serve.gateway:
        lines.append(f"gateway     smtp://{config.gateway.listen} -> relay {config.gateway.relay}")
    if config.serve.web:
        lines.append(f"admin web   http://{config.web.listen}/   (metrics at /metrics)")
        if token:
            lines.append(f"            first start: operator login token {token}")
            lines.append("            (shown once; more with: drossel token create --operator)")
        else:
            lines.append("            log in with a token from: drossel token create --operator")
    if config.notify.enabled:
        lines.append(f"notify      via {config.notify.relay} from {config.notify.sender}")
    lines.append("stop with Ctrl-C or SIGTERM")
    return "\n".join(lines)


def cmd_serve(ctx: Any) -> int:
    config: Config = ctx.config
    db_url = database_url(config, ctx.args.db)
    enforcer = build_enforcer(config, ctx.clock, ctx.args.db)
    services: list[Service] = []
    if config.serve.milter:
        from drossel.milter.enforcement import serve_milter

        services.append(lambda stop: serve_milter(enforcer, config.milter, stop))
    if config.serve.gateway:
        from drossel.gateway.server import serve_gateway

        services.append(lambda stop: serve_gateway(enforcer, config.gateway, stop))
    if config.serve.web:
        from drossel.web.app import create_app, serve_web

        app = create_app(enforcer.store, config, ctx.clock, enforcer.catalog)
        services.append(lambda stop: serve_web(app, config.web, stop))
    if config.notify.enabled:
        from drossel.notify.service import run_notifier

        services.append(lambda stop: run_notifier(enforcer.store, config, ctx.clock, stop))
    if not services:
        raise ValueError("nothing to serve: enable [serve] milter, gateway or web")
    token = first_operator_token(enforcer.store, ctx.clock()) if config.serve.web else None
    Console(stderr=True).print(Panel(describe(config, db_url, token), title="drossel is running"))
    asyncio.run(run_until_stopped(*services))
    enforcer.store.dispose()
    return 0


def register_cli(sub: Any, command: Any) -> None:
    command("serve", cmd_serve, "run what the configuration enables (milter, gateway, web)",
            json_flag=False)
