"""Process plumbing shared by the daemons (milter, gateway, web, serve): opening the state,
building the engine, periodic flush/refresh, logging set-up and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from drossel.app.enforcer import Enforcer
from drossel.app.journal import Journal
from drossel.config import Clock, Config, ConfigError, database_url
from drossel.redact import RedactingFilter, display_url, redact
from drossel.storage.listen import ChangeListener
from drossel.storage.migrate import SchemaOutOfDate, check, upgrade
from drossel.storage.store import Store

log = logging.getLogger("drossel")


#: the daemons' log line: time, level, logger, message
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _Formatter(logging.Formatter):
    """The standard formatter, with the time's text worked out once per second: a daemon logs
    one line per decision, and ``strftime`` was a quarter of a line's cost.  The same text:
    the second by ``default_time_format``, then the milliseconds.  A record without exception
    or stack text in :data:`LINE_FORMAT` is put together directly, without the generic
    ``%``-style pass over the record's attributes (a third of what formatting cost)."""

    _second: tuple[int, str] = (-1, "")

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._plain = fmt == LINE_FORMAT and datefmt is None

    def format(self, record: logging.LogRecord) -> str:
        if not self._plain or record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = message = record.getMessage()
        return f"{self.formatTime(record)} {record.levelname} {record.name} {message}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None or not self.default_msec_format:
            return super().formatTime(record, datefmt)
        return self.time_text(record.created, record.msecs)

    def time_text(self, created: float, msecs: float | None = None) -> str:
        """``%(asctime)s`` of a record made at ``created`` (``msecs`` as the record has it)."""
        second = int(created)
        known = self._second
        if known[0] != second:
            text = time.strftime(self.default_time_format, self.converter(created))
            known = self._second = (second, text)
        msec_format = self.default_msec_format
        if not msec_format:
            return known[1]
        if msecs is None:  # as LogRecord works it out
            msecs = int((created - second) * 1000) + 0.0
        return msec_format % (known[1], msecs)


class DaemonLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The daemons' log: :data:`LINE_FORMAT` lines on a stream, passwords blanked.

    :meth:`write_line` is the way in for the decision line (one per message, see
    :func:`drossel.app.enforcer.log_decision`): the same text as an INFO record through
    :mod:`logging` would give, without the record, the walk over the logger tree and the
    formatter pass, which together cost about as much as the rest of the decision."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.formatter: _Formatter = _Formatter(LINE_FORMAT)
        self.addFilter(RedactingFilter())  # no database password in any log line

    def write_line(self, name: str, message: str) -> None:
        """Write an INFO line of logger ``name`` (its level already checked by the caller)."""
        if self.level > logging.INFO or len(self.filters) != 1:
            # set up otherwise since: the standard way takes care of it
            logging.getLogger(name).handle(
                logging.LogRecord(name, logging.INFO, "", 0, message, None, None)
            )
            return
        message = redact(message)  # as the filter does (nothing while no password is known)
        line = f"{self.formatter.time_text(time.time())} INFO {name} {message}\n"
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(line)
                self.stream.flush()
            except Exception:
                self.handleError(logging.LogRecord(name, logging.INFO, "", 0, message, None, None))


def setup_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr; library chatter (alembic, uvicorn access) kept down.

    A daemon logs a line per decision, so a record gathers only what the format prints: no
    caller lookup (a stack walk per line), thread or process fields (the switches of the
    logging HOWTO's "Optimization" section; a quarter of a line's cost)."""
    logging._srcfile = None  # documented switch, see the HOWTO
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=logging.WARNING,
        handlers=[DaemonLogHandler(sys.stderr)],
        force=True,
    )
    logging.getLogger("drossel").setLevel(level)


def event_loop_runner(
    choice: str, section: str = "milter"
) -> tuple[str, Callable[[Coroutine[Any, Any, None]], None]]:
    """``[milter]``/``[gateway] event_loop``: the name and ``run`` function of the loop to use.

    uvloop (libuv, in C) does the socket and callback work of the event loop, which is most of
    the milter's own CPU per message once the protocol is lean (docs/benchmarks.md); it is a
    dependency, but ``asyncio`` stays selectable and is used where uvloop cannot be imported.
    """
    if choice in ("auto", "uvloop"):
        try:
            import uvloop  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            if choice == "uvloop":
                raise ConfigError(
                    f"[{section}] event_loop = uvloop, but uvloop is not installed"
                ) from None
        else:
            return "uvloop", uvloop.run
    return "asyncio", asyncio.run


def open_store(url: str, *, allow_offline: bool = False) -> Store:
    """Open the state; the embedded SQLite default is created/upgraded on the spot, a shared
    database is only checked (run ``drossel db upgrade`` once, not from every node).

    ``allow_offline`` (daemons): an unreachable server is not fatal; the store is returned with
    ``schema_unchecked`` set and the engine checks the schema before it writes anything."""
    store = Store(url)
    try:
        if store.is_sqlite:
            upgrade(store.engine)
        else:
            check(store.engine)
    except SchemaOutOfDate:
        raise
    except Exception as exc:
        if not allow_offline or store.is_sqlite:
            raise
        log.warning("state database %s unreachable at start: %s", display_url(url), exc)
        store.schema_unchecked = True
    return store


def build_enforcer(config: Config, clock: Clock, db: str | None = None) -> Enforcer[Store]:
    """The engine for a daemon: refresh off the message path (see :func:`run_flusher`), an
    outage journal at ``[storage] journal``, and able to start while a shared database is
    unreachable (deciding per ``[storage] fail_mode``)."""
    store = open_store(database_url(config, db), allow_offline=True)
    enforcer = Enforcer(
        store, config, clock, auto_refresh=False, journal=Journal(config.storage.journal_path())
    )
    enforcer.schema_unchecked = store.schema_unchecked
    return enforcer


def start_listener(enforcer: Enforcer) -> ChangeListener | None:
    """On PostgreSQL, listen for changes made on other nodes (one listener per engine)."""
    store = enforcer.store
    if not isinstance(store, Store) or not store.is_postgres or not enforcer.config.storage.listen:
        return None
    existing = getattr(enforcer, "_listener", None)
    if existing is not None:
        enforcer._listener_users += 1  # type: ignore[attr-defined]
        return existing  # type: ignore[no-any-return]

    def reconnected() -> None:
        enforcer.refresh()
        enforcer.forget()

    listener = ChangeListener(store.listen_conninfo(), enforcer.on_change, reconnected).start()
    enforcer._listener = listener  # type: ignore[attr-defined]
    enforcer._listener_users = 1  # type: ignore[attr-defined]
    return listener


def stop_listener(enforcer: Enforcer) -> None:
    listener = getattr(enforcer, "_listener", None)
    if listener is None:
        return
    enforcer._listener_users -= 1  # type: ignore[attr-defined]
    if enforcer._listener_users <= 0:  # type: ignore[attr-defined]
        enforcer._listener = None  # type: ignore[attr-defined]
        listener.stop()


async def run_flusher(enforcer: Enforcer, stop: asyncio.Event) -> None:
    """Write batched counters every ``flush_seconds`` and refresh shared state every
    ``refresh_seconds`` (the safety net under LISTEN/NOTIFY, which this also starts on
    PostgreSQL).  A failing database is retried (events stay queued, see
    :meth:`Enforcer.flush`); on stop a last flush runs, or the queue goes to the journal."""
    storage = enforcer.config.storage
    interval = min(storage.flush_seconds, storage.refresh_seconds)
    listener = start_listener(enforcer)
    loop = asyncio.get_running_loop()
    last_flush = last_refresh = loop.time()
    failing = False
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set():
                break
            now = loop.time()
            if now - last_flush >= storage.flush_seconds - 0.01 or enforcer.offline:
                last_flush = now
                try:
                    await asyncio.to_thread(enforcer.flush)
                    if failing:
                        log.warning("state database reachable again; queued events written")
                    failing = False
                except Exception as exc:
                    if not failing:
                        log.warning("state flush failed (%s); will retry", exc)
                    failing = True
            if now - last_refresh >= storage.refresh_seconds - 0.01 and not failing:
                last_refresh = now
                try:
                    await asyncio.to_thread(enforcer.refresh)
                except Exception as exc:
                    log.warning("state refresh failed (%s); will retry", exc)
    finally:
        if listener is not None:
            await asyncio.to_thread(stop_listener, enforcer)
        await asyncio.to_thread(enforcer.shutdown)


#: Linux prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def stop_with_parent(parent: int) -> None:
    """In a forked worker: get SIGTERM (a graceful stop) when the supervising ``parent`` dies,
    however it dies, ``kill -9`` included, so no worker goes on serving unsupervised and
    holding the listening address.  Linux only (prctl); elsewhere only the check below."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


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
