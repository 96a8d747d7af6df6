"""``drossel milter``: run the milter for Postfix or Sendmail."""

from __future__ import annotations

import asyncio
from typing import Any

from drossel.milter.enforcement import serve_milter
from drossel.runtime import build_enforcer, run_until_stopped


def cmd_milter(ctx: Any) -> int:
    config = ctx.config
    if ctx.args.listen:
        config.milter.listen = ctx.args.listen
    enforcer = build_enforcer(config, ctx.clock, ctx.args.db)

    async def main() -> None:
        await run_until_stopped(lambda stop: serve_milter(enforcer, config.milter, stop))

    asyncio.run(main())
    enforcer.store.dispose()
    return 0


def register_cli(sub: Any, command: Any) -> None:
    p = command("milter", cmd_milter, "run the milter (Postfix smtpd_milters)", json_flag=False)
    p.add_argument("--listen", help="inet:HOST:PORT, inet6:HOST:PORT or unix:/path")
