"""``drossel milter``: run the milter for Postfix or Sendmail."""

from __future__ import annotations

import logging
import socket
from typing import Any

from drossel.config import Clock, Config, database_url
from drossel.milter.enforcement import serve_milter
from drossel.milter.workers import run_workers
from drossel.runtime import build_enforcer, event_loop_runner, open_store, run_until_stopped

log = logging.getLogger("drossel.milter")


def serve(config: Config, clock: Clock, db: str | None, sock: socket.socket | None = None) -> int:
    """One milter process: its own engine, serving until SIGTERM/SIGINT."""
    name, run = event_loop_runner(config.milter.event_loop, "milter")
    enforcer = build_enforcer(config, clock, db)

    async def main() -> None:
        log.info("milter event loop: %s", name)
        await run_until_stopped(lambda stop: serve_milter(enforcer, config.milter, stop, sock))

    run(main())
    enforcer.store.dispose()
    return 0


def cmd_milter(ctx: Any) -> int:
    config = ctx.config
    if ctx.args.listen:
        config.milter.listen = ctx.args.listen
    workers = ctx.args.workers
    if workers <= 1:
        return serve(config, ctx.clock, ctx.args.db)

    def worker(index: int, sock: socket.socket) -> int:
        # Same engine as a single process, but each worker keeps its own outage journal.
        own = config.model_copy(deep=True)
        own.storage.journal = f"{config.storage.journal_path()}.{index}"
        return serve(own, ctx.clock, ctx.args.db, sock)

    # create or migrate the embedded SQLite state once, before the workers race to do it
    open_store(database_url(config, ctx.args.db), allow_offline=True).dispose()
    return run_workers(config.milter.listen, workers, worker)


def _workers(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise ValueError(text)
    return value


def register_cli(sub: Any, command: Any) -> None:
    p = command("milter", cmd_milter, "run the milter (Postfix smtpd_milters)", json_flag=False)
    p.add_argument("--listen", help="inet:HOST:PORT, inet6:HOST:PORT or unix:/path")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="milter processes sharing the listening address (1-64, default 1; "
        "use the number of cores on a busy server)",
    )
