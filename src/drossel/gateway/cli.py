"""``drossel gateway``: the standalone SMTP gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from typing import Any

from drossel.config import ConfigError, database_url
from drossel.gateway.handler import split_hostport
from drossel.gateway.server import check_next_hop, serve_gateway
from drossel.runtime import (
    build_enforcer,
    event_loop_runner,
    open_store,
    run_until_stopped,
    stop_with_parent,
)

log = logging.getLogger("drossel.gateway")


def cmd_gateway(ctx: Any) -> int:
    config = ctx.config
    updates: dict[str, Any] = {
        k: v for k, v in (("listen", ctx.args.listen), ("relay", ctx.args.relay)) if v
    }
    if ctx.args.workers is not None:
        updates["workers"] = ctx.args.workers
    if updates:
        config.gateway = config.gateway.model_validate({**config.gateway.model_dump(), **updates})
    if config.gateway.workers > 1:
        return run_workers(ctx, config.gateway.workers)
    return run_worker(ctx, reuse_port=False)


def run_worker(ctx: Any, *, reuse_port: bool) -> int:
    """One gateway process: serve until SIGTERM/SIGINT, then finish open transactions and
    flush the state."""
    config = ctx.config
    enforcer = build_enforcer(config, ctx.clock, ctx.args.db)

    async def main() -> None:
        log.info("gateway event loop: %s", loop_name)
        await run_until_stopped(
            lambda stop: serve_gateway(enforcer, config.gateway, stop, reuse_port=reuse_port)
        )

    loop_name, run = event_loop_runner(config.gateway.event_loop, "gateway")
    try:
        run(main())
    finally:
        enforcer.store.dispose()
    return 0


def run_workers(ctx: Any, workers: int) -> int:
    """``workers`` gateway processes sharing the listening port (SO_REUSEPORT: the kernel
    spreads the connections), so the gateway uses every core.  Each worker is a node on the
    shared state database.  SIGTERM/SIGINT here is passed on to every worker; a worker that
    fails stops the others."""
    gateway = ctx.config.gateway
    _, port = split_hostport(gateway.listen, 2525)
    if port == 0:
        raise ConfigError("[gateway] workers > 1 needs a fixed listen port (not 0)")
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("[gateway] workers > 1 needs SO_REUSEPORT (Linux, BSD)")
    # one clear error before anything is forked (every worker checks again itself)
    asyncio.run(check_next_hop(gateway, gateway.hostname or socket.getfqdn()))
    # create or migrate the embedded SQLite state once, before the workers race to do it
    open_store(database_url(ctx.config, ctx.args.db), allow_offline=True).dispose()
    children: list[int] = []
    parent = os.getpid()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                stop_with_parent(parent)  # no worker outlives a killed parent
                code = run_worker(ctx, reuse_port=True)
            except BaseException as exc:
                print(f"drossel: gateway worker {os.getpid()}: {exc}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    result = 0
    remaining = set(children)
    while remaining:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and result == 0:
            result = code if code > 0 else 1
            forward(signal.SIGTERM, None)  # one worker failed: stop the others too
    return result


def register_cli(sub: Any, command: Any) -> None:
    p = command(
        "gateway",
        cmd_gateway,
        "run the standalone SMTP gateway (relays accepted mail to the next hop)",
        json_flag=False,
    )
    p.add_argument("--listen", help="HOST:PORT to accept SMTP on (default [gateway] listen)")
    p.add_argument("--relay", help="HOST:PORT of the next hop (default [gateway] relay)")
    p.add_argument(
        "--workers",
        type=int,
        help="gateway processes sharing the port (default [gateway] workers; e.g. the cores)",
    )
