"""``drossel token create|list|revoke``: logins for the web report and the REST API.

A token's value is printed once, at creation; only its hash is stored.  Revoking a token ends
its bearer use and every web session made with it, on every node, at the next request.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from drossel.app.tokens import TokenService
from drossel.cli.output import CliError, table
from drossel.storage.tokens import TokenTable


def _service(ctx: Any) -> TokenService:
    return TokenService(TokenTable(ctx.store()))


def cmd_token_create(ctx: Any) -> int:

    if bool(ctx.args.tenant) == bool(ctx.args.operator):
        raise CliError("give either --tenant T or --operator")
    role = "operator" if ctx.args.operator else "tenant-admin"
    value, _ = _service(ctx).create(role, ctx.args.tenant, ctx.args.label or "", ctx.actor, ctx.now)
    print(value)
    return 0


def cmd_token_list(ctx: Any) -> int:
    rows = [row.to_json() for row in _service(ctx).list()]
    if ctx.args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0

    table(
        [
            (
                r["id"],
                r["tenant"] or "(operator)",
                r["label"],
                r["created"],
                r["last_used"],
                r["revoked"],
            )
            for r in rows
        ],
        ["id", "tenant or operator", "label", "created", "last used", "revoked"],
    )
    return 0


def cmd_token_revoke(ctx: Any) -> int:
    row = _service(ctx).revoke(ctx.args.id, ctx.actor, ctx.now)
    print(f"token {row.id} revoked; its sessions have ended")
    return 0


def register(sub: Any, command: Any) -> None:
    token = sub.add_parser("token", help="API/web tokens").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    p = command(
        "create", cmd_token_create, "create a token (printed once)", json_flag=False, parent=token
    )
    p.add_argument("--tenant")
    p.add_argument("--operator", action="store_true")
    p.add_argument("--label")
    command("list", cmd_token_list, "list tokens (never their values)", parent=token)
    p = command(
        "revoke",
        cmd_token_revoke,
        "revoke a token and end its sessions",
        json_flag=False,
        parent=token,
    )
    p.add_argument("id", type=int)
