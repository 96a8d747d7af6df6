"""The enforcement engine: the per-message path shared by the milter and the SMTP gateway.

It wires the pure core to the state store with the caching the hot path needs:

* a server in steady state costs no database round trip: its record, the tenant's pauses and
  the overrides live in memory, refreshed every ``refresh_seconds`` (a pause made elsewhere
  takes effect within that time);
* a server's first detection, a new build, remediation or regression are written at once,
  before the verdict is logged;
* per-day counters and last-seen times are batched and written by :meth:`Enforcer.flush`
  (called every ``flush_seconds`` by the daemons, and on shutdown).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime

from drossel.catalog_source import load_catalog
from drossel.config import Clock, Config
from drossel.core.assessment import Assessment, assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog
from drossel.core.decision import (
    ConnectionFacts,
    Override,
    ServerRecord,
    Snapshot,
    Verdict,
    decide,
    observe,
)
from drossel.core.detection import DetectedServer, Detection, detect_in_headers
from drossel.core.schedule import Pause
from drossel.metrics import DB_ERRORS, DECISION_SECONDS, VERDICTS
from drossel.storage.store import Connector, Store

log = logging.getLogger("drossel.decision")


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What the MTA tells us about the SMTP client."""

    addr: str | None = None
    name: str | None = None
    helo: str | None = None
    tls_name: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    detection: Detection
    facts: ConnectionFacts


class Enforcer:
    def __init__(
        self,
        store: Store,
        config: Config,
        clock: Clock,
        catalog: Catalog | None = None,
        auto_refresh: bool = True,
    ) -> None:
        """``auto_refresh`` reloads shared state on the message path once ``refresh_seconds``
        passed; daemons turn it off and refresh from their background flusher instead."""
        self.store = store
        self.config = config
        self.policy = config.policy
        self.clock = clock
        self.auto_refresh = auto_refresh
        self.catalog = catalog or load_catalog(store)
        self._lock = threading.RLock()
        self._records: dict[tuple[str, str], ServerRecord | None] = {}
        self._assessments: dict[tuple[Build, date], Assessment] = {}
        self._counts: dict[tuple[str, str, date, str], int] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._connectors: list[Connector] = []
        self._pauses: list[Pause] = []
        self._overrides: list[Override] = []
        self._refreshed_at: datetime | None = None
        self._client_servers: dict[tuple[str, str], DetectedServer] = {}
        self.refresh()

    # --- shared state refresh -------------------------------------------------------------

    def refresh(self) -> None:
        """Reload connectors, pauses and overrides (cheap: small tables)."""
        connectors = self.store.list_connectors()
        pauses = self.store.list_pauses()
        overrides = self.store.list_overrides()
        with self._lock:
            self._connectors, self._pauses, self._overrides = connectors, pauses, overrides
            self._refreshed_at = self.clock()

    def _maybe_refresh(self, now: datetime) -> None:
        last = self._refreshed_at
        if last is None or abs((now - last).total_seconds()) >= self.config.storage.refresh_seconds:
            self.refresh()

    def forget(self, tenant: str | None = None) -> None:
        """Drop cached server records (after an operator changed state directly)."""
        with self._lock:
            if tenant is None:
                self._records.clear()
            else:
                for key in [k for k in self._records if k[0] == tenant]:
                    del self._records[key]

    # --- classification -------------------------------------------------------------------

    def classify(self, client: ClientInfo) -> ConnectionFacts:
        """Which tenant and connector the connection belongs to (SPEC §2)."""
        for connector in self._connectors:
            if connector.matches(client.addr, client.tls_name):
                return ConnectionFacts(
                    tenant=connector.tenant,
                    connector_type=connector.type,
                    client_addr=client.addr,
                    client_name=client.name,
                    helo=client.helo,
                    tls_name=client.tls_name,
                )
        return ConnectionFacts(
            tenant="default",
            connector_type="Default",
            client_addr=client.addr,
            client_name=client.name,
            helo=client.helo,
            tls_name=client.tls_name,
        )

    # --- the per-message path -------------------------------------------------------------

    def assessment(self, build: Build, day: date) -> Assessment:
        key = (build, day)
        cached = self._assessments.get(key)
        if cached is None:
            cached = assess(build, day, self.catalog, self.policy)
            if len(self._assessments) > 10_000:
                self._assessments.clear()
            self._assessments[key] = cached
        return cached

    def _record(self, tenant: str, server: str) -> ServerRecord | None:
        key = (tenant, server)
        if key not in self._records:
            stored = self.store.get_server(tenant, server)
            self._records[key] = stored.record if stored else None
        return self._records[key]

    def process(
        self, headers: Iterable[tuple[str, str]], client: ClientInfo, now: datetime | None = None
    ) -> Outcome:
        """Detect, assess, record and decide for one message."""
        now = now or self.clock()
        started = time.perf_counter()
        with self._lock:
            if self.auto_refresh:
                self._maybe_refresh(now)
            facts = self.classify(client)
            detection = detect_in_headers(headers, self.policy.trusted_hosts)
            server = detection.connecting
            if server is None or self.policy.mode == "off":
                verdict = decide(detection, facts, Snapshot(), now, self.policy, self.catalog)
                return Outcome(verdict, detection, facts)
            assessment = self.assessment(server.build, now.date())
            old = self._record(facts.tenant, server.server)
            new = observe(old, facts, server, assessment, now, self.policy)
            if _needs_write(old, new):
                stored = self.store.save_server(new, server.evidence, now)
                new = stored.record
            elif new != old:
                self._dirty.add((facts.tenant, server.server))
            self._records[(facts.tenant, server.server)] = new
            if client.addr and _client_is(client, server.server):
                if len(self._client_servers) > 100_000:
                    self._client_servers.clear()
                self._client_servers[(facts.tenant, client.addr)] = server
            snapshot = Snapshot(record=new, pauses=self._pauses, overrides=self._overrides)
            verdict = decide(detection, facts, snapshot, now, self.policy, self.catalog, assessment)
            count_key = (facts.tenant, server.server, now.date(), verdict.action)
            self._counts[count_key] = self._counts.get(count_key, 0) + 1
        DECISION_SECONDS.observe(time.perf_counter() - started)
        VERDICTS.labels(verdict.action, server.product, str(verdict.stage or 0)).inc()
        log.info(
            "decision action=%s server=%s build=%s status=%s stage=%s tenant=%s client=%s "
            "reason=%r",
            verdict.action,
            server.server,
            server.build,
            assessment.status,
            verdict.stage,
            facts.tenant,
            client.addr,
            verdict.reason,
        )
        return Outcome(verdict, detection, facts)

    def early_block(self, client: ClientInfo, now: datetime | None = None) -> Verdict | None:
        """A block verdict for this client before its headers are known, or ``None``.

        Only when the server last seen from this client address is fully blocked (a stage with
        60 block minutes) under the current pauses and overrides: then refusing at RCPT saves
        the transfer of the message and gives the same reply.  Memory only, no database.
        """
        now = now or self.clock()
        with self._lock:
            facts = self.classify(client)
            server = self._client_servers.get((facts.tenant, client.addr or ""))
            if server is None:
                return None
            record = self._records.get((facts.tenant, server.server))
            if record is None:
                return None
            detection = Detection(hops=(), connecting=server, origin=server)
            snapshot = Snapshot(record=record, pauses=self._pauses, overrides=self._overrides)
            assessment = self.assessment(server.build, now.date())
            verdict = decide(detection, facts, snapshot, now, self.policy, self.catalog, assessment)
        if verdict.action == "block" and verdict.block_minutes >= 60:
            with self._lock:
                key = (facts.tenant, server.server, now.date(), "block")
                self._counts[key] = self._counts.get(key, 0) + 1
            VERDICTS.labels("block", server.product, str(verdict.stage or 0)).inc()
            log.info(
                "decision action=block server=%s build=%s stage=%s tenant=%s client=%s "
                "reason='refused at RCPT: fully blocked'",
                server.server, server.build, verdict.stage, facts.tenant, client.addr,
            )
            return verdict
        return None

    def flush(self) -> None:
        """Write batched counters and last-seen times."""
        with self._lock:
            counts, self._counts = self._counts, {}
            dirty = [self._records.get(k) for k in self._dirty]
            self._dirty = set()
        now = self.clock()
        try:
            for record in dirty:
                if record is not None:
                    self.store.touch_server(record.tenant, record.server, record.last_seen)
            self.store.add_counts(counts, now)
        except Exception:
            DB_ERRORS.labels("flush").inc()
            with self._lock:
                for key, n in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + n
            raise


def _client_is(client: ClientInfo, server: str) -> bool:
    """Whether the SMTP client itself is the Exchange server named in the headers (by HELO or
    reverse DNS name).  Only then may a later connection from that address be refused before
    its headers are known: a relay in front of several servers must not inherit one's block."""
    names = {n.lower().rstrip(".") for n in (client.helo, client.name) if n}
    return server in names


def _needs_write(old: ServerRecord | None, new: ServerRecord) -> bool:
    if old is None:
        return True
    return replace(old, last_seen=new.last_seen) != new
