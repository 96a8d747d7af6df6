"""Process plumbing shared by the daemons (milter, gateway, web, serve): opening the state,
building the engine, periodic flush/refresh, logging set-up and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from drossel.config import Clock, Config, database_url
from drossel.engine import Enforcer
from drossel.storage.migrate import check, upgrade
from drossel.storage.store import Store

log = logging.getLogger("drossel")


def setup_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr; library chatter (alembic, uvicorn access) kept down."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("drossel").setLevel(level)


def open_store(url: str) -> Store:
    """Open the state; the embedded SQLite default is created/upgraded on the spot, a shared
    database is only checked (run ``drossel db upgrade`` once, not from every node)."""
    store = Store(url)
    if store.is_sqlite:
        upgrade(store.engine)
    else:
        check(store.engine)
    return store


def build_enforcer(config: Config, clock: Clock, db: str | None = None) -> Enforcer:
    return Enforcer(open_store(database_url(config, db)), config, clock, auto_refresh=False)


async def run_flusher(enforcer: Enforcer, stop: asyncio.Event) -> None:
    """Write batched counters every ``flush_seconds``; a failing database is retried later
    (the counters stay in memory), and a last flush runs on stop."""
    interval = enforcer.config.storage.flush_seconds
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        try:
            await asyncio.to_thread(enforcer.flush)
            await asyncio.to_thread(enforcer.refresh)
        except Exception:
            log.exception("state flush failed; will retry")


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def run_until_stopped(*services: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run coroutines that each serve until ``stop`` is set (SIGTERM/SIGINT)."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    await asyncio.gather(*(service(stop) for service in services))
