"""LISTEN/NOTIFY on PostgreSQL: a pause, override or connector made on one node reaches every
node's engine within a second.

:class:`ChangeListener` is a daemon thread with its own psycopg connection (autocommit) that
``LISTEN``\\ s on :data:`drossel.storage.store.CHANGE_CHANNEL` and hands each payload to a
callback.  On connection loss it reconnects with a capped backoff and then calls
``on_connect`` (notifications sent while it was away are lost, so the owner refreshes fully).
The engine's periodic refresh remains the safety net.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from drossel.storage.store import CHANGE_CHANNEL

log = logging.getLogger("drossel.listen")


class ChangeListener:
    def __init__(
        self,
        conninfo: str,
        on_event: Callable[[dict[str, Any]], None],
        on_connect: Callable[[], None] | None = None,
        poll_seconds: float = 0.25,
    ) -> None:
        self.conninfo = conninfo
        self.on_event = on_event
        self.on_connect = on_connect
        self.poll_seconds = poll_seconds
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drossel-listen", daemon=True)

    def start(self) -> ChangeListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {CHANGE_CHANNEL}")
                    self.connected.set()
                    backoff = 0.2
                    log.info("listening for state changes on %s", CHANGE_CHANNEL)
                    if self.on_connect is not None:
                        self._call(self.on_connect)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self.poll_seconds):
                            self._deliver(note.payload)
            except Exception as exc:  # connection refused, terminated, ...
                if self._stop.is_set():
                    break
                if self.connected.is_set():
                    log.warning("change listener lost its connection (%s); reconnecting", exc)
                self.connected.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self.connected.clear()

    def _deliver(self, raw: str) -> None:
        try:
            payload: dict[str, Any] = json.loads(raw)
        except ValueError:
            payload = {"kind": "unknown"}
        self._call(lambda: self.on_event(payload))

    @staticmethod
    def _call(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("state change handler failed")
