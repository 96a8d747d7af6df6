"""``drossel milter --workers N``: several milter processes behind one listening address.

Why processes: one Python process runs its event loop on one core; Postfix opens a milter
connection per SMTP session, so connections spread over processes scale with the cores.

How: the parent binds before it forks, so a wrong address fails at once and in one place.
For ``inet:``/``inet6:`` it binds one socket per worker with ``SO_REUSEPORT`` on the same
address, and the kernel spreads new connections evenly over them (a shared socket would let
whichever worker wakes first take a whole burst).  A ``unix:`` socket cannot be split that
way, so the workers share it.  Each worker then builds its own
:class:`~drossel.app.enforcer.Enforcer`
exactly as a single ``drossel milter`` does (own database connection, own flusher, own
outage journal ``<journal>.<n>``) and serves its socket until SIGTERM/SIGINT.

The parent only supervises: it forwards SIGTERM/SIGINT to the workers and waits for their
graceful stop, and restarts a worker that died unexpectedly (its socket stays open in the
parent, so connections queued meanwhile are served by the new worker).  The parent never
touches the database.  A parent that dies without stopping them (``kill -9``) takes the
workers with it: they get SIGTERM and stop gracefully.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Final

from drossel.milter.server import DEFAULT_BACKLOG, parse_listen, remove_stale_socket
from drossel.runtime import stop_with_parent

log = logging.getLogger("drossel.milter")

#: A worker that dies sooner than this after its start is not restarted at once ...
RESTART_DELAY: Final = 1.0
#: ... and after this many such quick deaths in a row the whole milter gives up.
MAX_QUICK_FAILURES: Final = 5
#: How often the parent looks for dead workers and due restarts.
_POLL_INTERVAL: Final = 0.05


def bind_sockets(listen: str, workers: int, unix_mode: int = 0o666) -> list[socket.socket]:
    """The listening socket of each worker (the same unix socket repeated for ``unix:``)."""
    address = parse_listen(listen)
    if address.kind == "unix":
        assert address.path is not None
        remove_stale_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(address.path)
        os.chmod(address.path, unix_mode)
        sock.listen(DEFAULT_BACKLOG)
        return [sock] * workers
    assert address.host is not None and address.port is not None
    family = socket.AF_INET6 if address.kind == "inet6" or ":" in address.host else socket.AF_INET
    port = address.port
    sockets: list[socket.socket] = []
    try:
        for _ in range(workers):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address.host, port))
            port = sock.getsockname()[1]  # port 0: the others join the one chosen first
            sock.listen(DEFAULT_BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def run_workers(
    listen: str,
    workers: int,
    serve: Callable[[int, socket.socket], int],
    restart_delay: float = RESTART_DELAY,
) -> int:
    """Fork ``workers`` processes running ``serve(index, sock)``; supervise until signalled.

    ``serve`` runs in the child and returns its exit status; it must stop gracefully on
    SIGTERM.  Returns 0 after a requested stop, 1 if a worker could not be kept running
    (it died within ``restart_delay`` of its start ``MAX_QUICK_FAILURES`` times in a row,
    e.g. a database it cannot open: then all workers are stopped).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    sockets = bind_sockets(listen, workers)
    unix_path = parse_listen(listen).path
    children: dict[int, int] = {}  # pid -> worker index
    started: dict[int, float] = {}
    quick_failures: dict[int, int] = {}
    stopping = False

    parent = os.getpid()

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                stop_with_parent(parent)
                for other in {id(s): s for s in sockets}.values():
                    if other is not sockets[index]:
                        other.close()
                status = serve(index, sockets[index])
            except BaseException:
                log.exception("milter worker %d failed", index)
            finally:
                os._exit(status)
        children[pid] = index
        started[index] = time.monotonic()

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    restarts: dict[int, float] = {}  # worker index -> when to start it again
    try:
        for index in range(workers):
            spawn(index)
        log.info("milter: %d workers on %s", workers, listen)
        # Poll instead of blocking in os.wait(): a worker waiting for its delayed restart
        # must not hold up noticing (and timing) the death of another one.
        while children or (restarts and not stopping):
            now = time.monotonic()
            for index, due in sorted(restarts.items()):
                if due <= now and not stopping:
                    del restarts[index]
                    spawn(index)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                time.sleep(_POLL_INTERVAL)
                continue
            index = children.pop(pid, -1)
            if index < 0 or stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if time.monotonic() - started[index] < restart_delay:
                quick_failures[index] = quick_failures.get(index, 0) + 1
            else:
                quick_failures[index] = 0
            if quick_failures[index] >= MAX_QUICK_FAILURES:
                log.error(
                    "milter worker %d keeps failing (exit %d); stopping all workers", index, code
                )
                failed = True
                restarts.clear()
                request_stop(signal.SIGTERM, None)
                continue
            log.warning("milter worker %d (pid %d) exited with %d; restarting", index, pid, code)
            delay = restart_delay if quick_failures[index] else 0.0
            restarts[index] = time.monotonic() + delay
    except BaseException:
        failed = True
        request_stop(signal.SIGTERM, None)
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in {id(s): s for s in sockets}.values():
            sock.close()
        if unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(unix_path)
    return 1 if failed else 0
