"""``drossel serve``: one process running what the configuration enables (milter, SMTP gateway,
admin web and notifications) on one shared engine, SQLite by default."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from drossel.app.records import new_token_value
from drossel.config import Config, database_url
from drossel.redact import display_url
from drossel.runtime import build_enforcer, run_until_stopped
from drossel.storage.files import create_private
from drossel.storage.store import Store
from drossel.storage.tokens import add_token, list_tokens
from drossel.web.session_key import state_directory

log = logging.getLogger("drossel")

Service = Callable[[asyncio.Event], Awaitable[None]]


TOKEN_FILE = "drossel-operator-token"


def first_operator_token(store: Store, now: datetime) -> str | None:
    """On a fresh state, create an operator token so the web can be used at once (see
    :func:`hand_over_token`).  ``None`` when an operator token exists already."""
    if any(t.role == "operator" and t.revoked_at is None for t in list_tokens(store)):
        return None
    token = new_token_value()
    add_token(store, token, "operator", None, "created by first drossel serve", "serve", now)
    return token


def hand_over_token(token: str, directory: Path, interactive: bool) -> tuple[str, ...]:
    """Panel lines for the first operator token: the token itself on an interactive terminal
    (seen once, by the person starting drossel); otherwise (journald, log files) only the path
    of a 0600 file holding it, so the token never lands in a log."""
    if interactive:
        return (
            f"            first start: operator login token {token}",
            "            (shown once; more with: drossel token create --operator)",
        )
    path = directory / TOKEN_FILE
    try:
        path.unlink(missing_ok=True)
        create_private(path, token + "\n")
    except OSError as exc:
        log.warning("could not write the first operator token to %s: %s", path, exc.strerror)
        return (
            "            first start: an operator token was created but could not be shown;",
            "            revoke it (drossel token list) and use: drossel token create --operator",
        )
    return (
        f"            first start: operator login token written to {path} (mode 0600)",
        "            read it, then delete the file; more with: drossel token create --operator",
    )


def describe(config: Config, db_url: str, token_lines: Sequence[str] = ()) -> str:
    lines = [f"state       {display_url(db_url)}", f"policy      mode={config.policy.mode}"]
    if config.serve.milter:
        lines.append(
            f"milter      {config.milter.listen}   "
            f"(Postfix: smtpd_milters = {config.milter.listen}, milter_default_action = accept)"
        )
    if config.serve.gateway:
        lines.append(f"gateway     smtp://{config.gateway.listen} -> relay {config.gateway.relay}")
    if config.serve.web:
        lines.append(f"admin web   http://{config.web.listen}/   (metrics at /metrics)")
        if token_lines:
            lines.extend(token_lines)
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
    token = None
    if config.serve.web:
        try:
            token = first_operator_token(enforcer.store, ctx.clock())
        except Exception as exc:  # the database may be unreachable; serving starts anyway
            log.warning("could not check for an operator token: %s", exc)
    token_lines = (
        hand_over_token(token, state_directory(config, db_url), sys.stderr.isatty())
        if token
        else ()
    )
    Console(stderr=True).print(
        Panel(describe(config, db_url, token_lines), title="drossel is running")
    )
    asyncio.run(run_until_stopped(*services))
    enforcer.store.dispose()
    return 0


def register_cli(sub: Any, command: Any) -> None:
    command(
        "serve",
        cmd_serve,
        "run what the configuration enables (milter, gateway, web)",
        json_flag=False,
    )
