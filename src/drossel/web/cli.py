"""``drossel web``: the admin web report and REST API (and, if enabled, the notifier)."""

from __future__ import annotations

import asyncio
from typing import Any


def cmd_web(ctx: Any) -> int:
    from drossel.config import database_url
    from drossel.notify.service import run_notifier
    from drossel.runtime import log, open_store, stop_on_signals
    from drossel.web.app import create_app, parse_listen, serve_web

    listen = ctx.args.listen or ctx.config.web.listen
    parse_listen(listen)  # fail early with a clear message
    store = open_store(database_url(ctx.config, getattr(ctx.args, "db", None)))
    app = create_app(store, ctx.config, ctx.clock)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        log.info("web report on http://%s/", listen)
        tasks = [serve_web(app, ctx.config.web, stop, listen=listen)]
        if ctx.config.notify.enabled and not ctx.args.no_notify:
            tasks.append(run_notifier(store, ctx.config, ctx.clock, stop))
        await asyncio.gather(*tasks)

    try:
        asyncio.run(main())
    finally:
        store.dispose()
    return 0


def register_cli(sub: Any, command: Any) -> None:
    p = command("web", cmd_web, "serve the admin web report and REST API", json_flag=False)
    p.add_argument("--listen", help="HOST:PORT (default [web] listen, 127.0.0.1:8080)")
    p.add_argument(
        "--no-notify", action="store_true", help="do not run the mail notifier in this process"
    )
