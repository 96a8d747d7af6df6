"""``drossel gateway`` (the standalone SMTP gateway) and ``drossel demo``."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from drossel.gateway.server import serve_gateway
from drossel.runtime import build_enforcer, run_until_stopped


def cmd_gateway(ctx: Any) -> int:
    config = ctx.config
    updates = {k: v for k, v in (("listen", ctx.args.listen), ("relay", ctx.args.relay)) if v}
    if updates:
        config.gateway = config.gateway.model_copy(update=updates)
    enforcer = build_enforcer(config, ctx.clock, ctx.args.db)

    async def main() -> None:
        # SIGTERM/SIGINT set ``stop``: stop accepting, finish open transactions, final flush
        await run_until_stopped(lambda stop: serve_gateway(enforcer, config.gateway, stop))

    try:
        asyncio.run(main())
    finally:
        enforcer.store.dispose()
    return 0


def cmd_demo(ctx: Any) -> int:
    from drossel.demo import run_demo

    if not 1 <= ctx.args.days <= 3650:
        print("drossel: error: --days must be between 1 and 3650", file=sys.stderr)
        return 2
    quiet = ctx.args.quiet or ctx.args.json
    summary = run_demo(
        ctx.args.days, start=ctx.clock(), config=ctx.config, show=not quiet, db=ctx.args.db
    )
    if ctx.args.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    elif ctx.args.quiet:
        for s in summary["servers"]:
            print(
                f"{s['server']} {s['build']}: sent {s['sent']}, accepted {s['accepted']}, "
                f"throttled {s['throttled']}, blocked {s['blocked']}, "
                f"final stage {s['final_stage'] or '-'}"
            )
    return 0


def register_cli(sub: Any, command: Any) -> None:
    p = command(
        "gateway",
        cmd_gateway,
        "run the standalone SMTP gateway (relays accepted mail to the next hop)",
        json_flag=False,
    )
    p.add_argument("--listen", help="HOST:PORT to accept SMTP on (default [gateway] listen)")
    p.add_argument("--relay", help="HOST:PORT of the next hop (default [gateway] relay)")

    p = command(
        "demo",
        cmd_demo,
        "replay 100 days of mail from fictional Exchange servers through the real gateway",
    )
    p.add_argument("--days", type=int, default=100, help="simulated days (default 100)")
    p.add_argument("--quiet", action="store_true", help="one summary line per server")
