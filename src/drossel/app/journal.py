"""The outage journal: events a node could not write to the database, kept on local disk.

While the state database is unreachable the engine keeps deciding from memory and queues what
it would have written (first detections and build changes as *observations*, last-seen times
and per-day counters).  The queue lives in memory up to ``[storage] journal_memory_events``;
beyond that, and always on shutdown, it is appended to a JSON-lines file.  When the database is
back the file is replayed before the in-memory queue and then removed.

A second small file next to it (``<journal>.state``) holds the last shared state the node read
(connectors, pauses, overrides), so a node restarted during an outage still classifies tenants
and honours pauses and overrides.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from drossel.app.records import Connector
from drossel.core.decision import Override
from drossel.core.schedule import Pause

log = logging.getLogger("drossel.journal")

Event = dict[str, Any]


class Journal:
    """Append-only JSON-lines file of pending events (see module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.state_path = self.path.with_name(self.path.name + ".state")

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def append(self, events: Iterable[Event]) -> int:
        lines = [json.dumps(e, separators=(",", ":")) + "\n" for e in events]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # private like the state database: it holds server names and client addresses
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(descriptor, "a", encoding="utf-8") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        return len(lines)

    def read(self) -> list[Event]:
        """All events; a torn last line (crash while appending) is skipped."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        events: list[Event] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("journal %s: skipping unreadable line %d", self.path, number)
        return events

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    # --- last known shared state ----------------------------------------------------------

    def save_state(
        self, connectors: list[Connector], pauses: list[Pause], overrides: list[Override]
    ) -> None:
        data = {
            "connectors": [
                [c.id, c.tenant, c.name, c.type, list(c.ip_ranges), c.tls_name] for c in connectors
            ],
            "pauses": [
                [
                    p.id,
                    p.tenant,
                    p.start.isoformat(),
                    p.end.isoformat(),
                    list(p.servers),
                    p.ended_early,
                ]
                for p in pauses
            ],
            "overrides": [
                [o.id, o.tenant, o.server, o.reason, o.expires.isoformat() if o.expires else None]
                for o in overrides
            ],
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data))
        os.replace(tmp, self.state_path)

    def load_state(self) -> tuple[list[Connector], list[Pause], list[Override]] | None:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            connectors = [
                Connector(i, tenant, name, type_, tuple(ranges), tls)
                for i, tenant, name, type_, ranges, tls in data["connectors"]
            ]
            pauses = [
                Pause(i, tenant, date.fromisoformat(s), date.fromisoformat(e), tuple(srv), bool(x))
                for i, tenant, s, e, srv, x in data["pauses"]
            ]
            overrides = [
                Override(i, tenant, server, reason, datetime.fromisoformat(exp) if exp else None)
                for i, tenant, server, reason, exp in data["overrides"]
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return connectors, pauses, overrides
