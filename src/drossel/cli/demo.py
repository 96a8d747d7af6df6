"""``drossel demo``: replay simulated months of mail through the real gateway (see
:mod:`drossel.demo`)."""

from __future__ import annotations

import json
import sys
from typing import Any


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
        "demo",
        cmd_demo,
        "replay 100 days of mail from fictional Exchange servers through the real gateway",
    )
    p.add_argument("--days", type=int, default=100, help="simulated days (default 100)")
    p.add_argument("--quiet", action="store_true", help="one summary line per server")
