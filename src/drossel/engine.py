"""The enforcement engine: the per-message path shared by the milter and the SMTP gateway.

It wires the pure core to the state store with the caching the hot path needs:

* a server in steady state costs no database round trip: its record, the tenant's pauses and
  the overrides live in memory, refreshed every ``refresh_seconds`` (a pause made elsewhere
  takes effect within that time);
* a server's first detection, a new build, remediation or regression are written at once,
  before the verdict is logged;
* per-day counters and last-seen times are batched and written by :meth:`Enforcer.flush`
  (called every ``flush_seconds`` by the daemons, and on shutdown);
* several nodes on one PostgreSQL: :meth:`Enforcer.on_change` applies change notifications
  (LISTEN/NOTIFY, see :mod:`drossel.storage.listen`) so a pause or override made elsewhere
  takes effect within a second; a server seen by two nodes keeps the earliest first detection;
* database outage: verdicts continue from memory per ``[storage] fail_mode``; what would have
  been written is queued (observations, last-seen, counters), bounded in memory and spilled to
  the local :class:`~drossel.storage.journal.Journal`, and replayed by :meth:`Enforcer.flush`
  once the database answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from drossel.app.records import Connector
from drossel.app.storage import StateStore
from drossel.catalog_source import SETTING_KEY, load_catalog, packaged_catalog
from drossel.config import Clock, Config
from drossel.core.assessment import Assessment, assess
from drossel.core.build import Build
from drossel.core.build import Build as _Build
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
from drossel.storage.journal import Event, Journal

log = logging.getLogger("drossel.decision")


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What the MTA tells us about the SMTP client.

    ``name`` is only a *forward-confirmed* reverse-DNS name (Postfix's ``{client_name}``; the
    gateway's own lookup), ``ptr`` the unconfirmed PTR name (``{client_ptr}``), ``tls_name`` only
    a name from a *verified* TLS client certificate.  ``helo`` proves nothing (SPEC §3).
    """

    addr: str | None = None
    name: str | None = None
    helo: str | None = None
    tls_name: str | None = None
    ptr: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    detection: Detection
    facts: ConnectionFacts


class Enforcer:
    def __init__(
        self,
        store: StateStore,
        config: Config,
        clock: Clock,
        catalog: Catalog | None = None,
        auto_refresh: bool = True,
        journal: Journal | None = None,
    ) -> None:
        """``auto_refresh`` reloads shared state on the message path once ``refresh_seconds``
        passed; daemons turn it off and refresh from their background flusher instead.
        ``journal`` (optional) is where queued events go beyond ``journal_memory_events`` and on
        shutdown during an outage; without one they stay in memory."""
        self.store = store
        self.config = config
        self.policy = config.policy
        self.clock = clock
        self.auto_refresh = auto_refresh
        self.journal = journal
        self._lock = threading.RLock()
        self._records: dict[tuple[str, str], ServerRecord | None] = {}
        self._assessments: dict[tuple[Build, date], Assessment] = {}
        self._counts: dict[tuple[str, str, date, str], int] = {}
        self._seen: dict[tuple[str, str], datetime] = {}
        self._pending: list[Event] = []
        self._blind: set[tuple[str, str]] = set()
        self._offline = False
        #: set by :func:`drossel.runtime.open_store` when the schema could not be checked
        self.schema_unchecked = False
        self._connectors: list[Connector] = []
        self._pauses: list[Pause] = []
        self._overrides: list[Override] = []
        self._refreshed_at: datetime | None = None
        self._state_key: Any = None
        try:
            self.catalog = catalog or load_catalog(store)
        except Exception:
            log.warning("state database unreachable: using the packaged catalog")
            self.catalog = packaged_catalog()
        try:
            self.refresh()
        except Exception as exc:
            self._start_offline(exc)

    def _start_offline(self, exc: Exception) -> None:
        DB_ERRORS.labels("refresh").inc()
        self._offline = True
        state = self.journal.load_state() if self.journal is not None else None
        if state is not None:
            self._connectors, self._pauses, self._overrides = state
        log.warning(
            "state database unreachable at start (%s); deciding from %s, fail_mode=%s",
            exc.__class__.__name__,
            "the last saved state" if state is not None else "an empty state",
            self.config.storage.fail_mode,
        )

    # --- shared state refresh -------------------------------------------------------------

    @property
    def offline(self) -> bool:
        """True while the database is (or was at the last attempt) unreachable, or queued
        events still wait to be written."""
        return self._offline

    def refresh(self) -> None:
        """Reload connectors, pauses and overrides (cheap: small tables)."""
        connectors = self.store.list_connectors()
        pauses = self.store.list_pauses()
        overrides = self.store.list_overrides()
        with self._lock:
            self._connectors, self._pauses, self._overrides = connectors, pauses, overrides
            self._refreshed_at = self.clock()
        key = (tuple(connectors), tuple(pauses), tuple(overrides))
        # the snapshot lets a node restarted during a database outage keep its tenants, pauses
        # and overrides (a local SQLite file has no outage of its own: no snapshot there)
        if self.journal is not None and not self.store.is_sqlite and key != self._state_key:
            try:
                self.journal.save_state(connectors, pauses, overrides)
                self._state_key = key
            except OSError:
                log.warning("cannot save the shared state next to %s", self.journal.path)

    def _maybe_refresh(self, now: datetime) -> None:
        last = self._refreshed_at
        if last is None or abs((now - last).total_seconds()) >= self.config.storage.refresh_seconds:
            try:
                self.refresh()
            except Exception:
                DB_ERRORS.labels("refresh").inc()
                self._refreshed_at = now  # keep the cached state; retry after refresh_seconds
                log.warning("refresh failed; deciding from the cached state")

    def forget(self, tenant: str | None = None) -> None:
        """Drop cached server records (after an operator changed state directly)."""
        with self._lock:
            if tenant is None:
                keys = list(self._records)
            else:
                keys = [k for k in self._records if k[0] == tenant]
            for key in keys:
                self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        # records observed without the database stay until their events are written
        if key not in self._blind:
            self._records.pop(key, None)

    def on_change(self, event: dict[str, Any]) -> None:
        """Apply a change notification from any node (see :meth:`Store.notify`)."""
        kind = event.get("kind")
        if kind == "server":
            if event.get("node") == self.store.node_id:
                return
            tenant, server = event.get("tenant"), event.get("server")
            with self._lock:
                if tenant and server:
                    self._drop((tenant, server))
            return
        if kind == "setting":
            if event.get("server") == SETTING_KEY:
                self.catalog = load_catalog(self.store)
                with self._lock:
                    self._assessments.clear()
            return
        self.refresh()
        if kind == "tenant" and event.get("tenant"):
            self.forget(event["tenant"])

    # --- classification -------------------------------------------------------------------

    def classify(self, client: ClientInfo) -> ConnectionFacts:
        """Which tenant and connector the connection belongs to (SPEC §2)."""
        matched = next(
            (c for c in self._connectors if c.matches(client.addr, client.tls_name)), None
        )
        return ConnectionFacts(
            tenant=matched.tenant if matched else "default",
            connector_type=matched.type if matched else "Default",
            client_addr=client.addr,
            client_name=client.name,
            helo=client.helo,
            tls_name=client.tls_name,
            ptr=client.ptr,
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

    def _went_offline(self, op: str, exc: BaseException | None = None) -> None:
        DB_ERRORS.labels(op).inc()
        if not self._offline:
            log.warning(
                "state database unreachable (%s: %s); deciding from memory, fail_mode=%s",
                op,
                exc.__class__.__name__ if exc else "error",
                self.config.storage.fail_mode,
            )
        self._offline = True

    def _record(self, tenant: str, server: str) -> ServerRecord | None:
        record, _known = self._lookup((tenant, server))
        return record

    def _lookup(self, key: tuple[str, str]) -> tuple[ServerRecord | None, bool]:
        """The cached or stored record, and whether it is known (``False``: the database could
        not be asked and nothing is cached)."""
        if key in self._records:
            return self._records[key], key not in self._blind
        if self._offline:
            return None, False
        try:
            stored = self.store.get_server(*key)
        except Exception as exc:
            self._went_offline("read", exc)
            return None, False
        self._records[key] = stored.record if stored else None
        return self._records[key], True

    def _write(
        self,
        record: ServerRecord,
        server: DetectedServer,
        facts: ConnectionFacts,
        now: datetime,
    ) -> ServerRecord:
        """Write a first detection / change now, or queue it while the database is away."""
        if not self._offline:
            try:
                return self.store.save_server(record, server.evidence, now).record
            except Exception as exc:
                self._went_offline("write", exc)
        self._pending.append(
            {
                "t": "obs",
                "tenant": record.tenant,
                "server": server.server,
                "build": server.build.short,
                "product": server.product,
                "evidence": server.evidence[:4000],
                "now": now.isoformat(),
                "facts": {
                    "connector_type": facts.connector_type,
                    "client_addr": facts.client_addr,
                    "client_name": facts.client_name,
                    "helo": facts.helo,
                    "tls_name": facts.tls_name,
                    "ptr": facts.ptr,
                },
            }
        )
        return record

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
            key = (facts.tenant, server.server)
            old, known = self._lookup(key)
            if not known:
                self._blind.add(key)
            new = _earliest(old, observe(old, facts, server, assessment, now, self.policy), now)
            if _needs_write(old, new):
                new = self._write(new, server, facts, now)
            elif new != old:
                self._seen[key] = max(new.last_seen, self._seen.get(key, new.last_seen))
            self._records[key] = new
            if key in self._blind and self.config.storage.fail_mode == "tempfail":
                verdict = _deferred(server, assessment)
            else:
                snapshot = Snapshot(record=new, pauses=self._pauses, overrides=self._overrides)
                verdict = decide(
                    detection, facts, snapshot, now, self.policy, self.catalog, assessment
                )
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

    # --- writing batched and queued state -------------------------------------------------

    def pending_events(self) -> int:
        """Queued events in memory (observations, last-seen times, counter keys)."""
        with self._lock:
            return len(self._pending) + len(self._seen) + len(self._counts)

    def flush(self) -> None:
        """Write queued observations (journal file first), last-seen times and counters.

        On failure everything stays queued (spilled to the journal beyond the memory bound)
        and the exception propagates; the daemons' flusher retries every ``flush_seconds``."""
        with self._lock:
            counts, self._counts = self._counts, {}
            seen, self._seen = self._seen, {}
            pending, self._pending = self._pending, []
        now = self.clock()
        journal = self.journal
        try:
            if self.schema_unchecked:
                from drossel.storage.migrate import check

                check(self.store.engine)  # type: ignore[attr-defined]
                self.schema_unchecked = False
            file_events = journal.read() if journal is not None and journal.exists() else []
            obs = [e for e in file_events if e.get("t") == "obs"] + pending
            all_seen: dict[tuple[str, str], datetime] = {}
            all_counts: dict[tuple[str, str, date, str], int] = {}
            for e in file_events:
                if e.get("t") == "seen":
                    k = (e["tenant"], e["server"])
                    at = datetime.fromisoformat(e["at"])
                    all_seen[k] = max(at, all_seen.get(k, at))
                elif e.get("t") == "count":
                    ck = (e["tenant"], e["server"], date.fromisoformat(e["day"]), e["action"])
                    all_counts[ck] = all_counts.get(ck, 0) + int(e["n"])
            for k, at in seen.items():
                all_seen[k] = max(at, all_seen.get(k, at))
            for ck, n in counts.items():
                all_counts[ck] = all_counts.get(ck, 0) + n
            replayed = self._replay(obs)
            for (tenant, server), at in all_seen.items():
                self.store.touch_server(tenant, server, at)
            self.store.add_counts(all_counts, now)
            if file_events and journal is not None:
                journal.clear()
        except BaseException as exc:
            with self._lock:
                self._pending = pending + self._pending
                for key, n in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + n
                for k, at in seen.items():
                    self._seen[k] = max(at, self._seen.get(k, at))
                self._went_offline("flush", exc)
                limit = self.config.storage.journal_memory_events
                if journal is not None and self.pending_events() > limit:
                    self._spill_locked()
            raise
        with self._lock:
            waiting = {(e["tenant"], e["server"]) for e in self._pending}
            for server_key, record in replayed.items():
                if server_key in waiting:
                    continue
                cached = self._records.get(server_key)
                if cached is not None and cached.last_seen > record.last_seen:
                    record = replace(record, last_seen=cached.last_seen)
                self._records[server_key] = record
                self._blind.discard(server_key)
            if obs or file_events:
                log.info(
                    "state database reachable again: wrote %d queued observations, %d counter keys",
                    len(obs),
                    len(all_counts),
                )
            if not self._pending:
                self._offline = False
                self._blind.clear()

    def _replay(self, events: list[Event]) -> dict[tuple[str, str], ServerRecord]:
        """Re-run queued observations against the stored records, in order, and save them."""
        latest: dict[tuple[str, str], ServerRecord | None] = {}
        for e in events:
            key = (e["tenant"], e["server"])
            if key in latest:
                old = latest[key]
            else:
                stored = self.store.get_server(*key)
                old = stored.record if stored else None
            build = _Build.parse(e["build"])
            if build is None:
                continue
            now = datetime.fromisoformat(e["now"])
            server = DetectedServer(e["server"], build, e["product"], e.get("evidence", ""))
            assessment = self.assessment(build, now.date())
            facts = ConnectionFacts(tenant=e["tenant"], **e.get("facts", {}))
            new = _earliest(old, observe(old, facts, server, assessment, now, self.policy), now)
            if old is None or new != old:
                new = self.store.save_server(new, server.evidence, now).record
            latest[key] = new
        return {k: v for k, v in latest.items() if v is not None}

    def _spill_locked(self) -> int:
        """Move every queued event from memory to the journal file."""
        assert self.journal is not None
        events: list[Event] = list(self._pending)
        events += [
            {"t": "seen", "tenant": k[0], "server": k[1], "at": at.isoformat()}
            for k, at in self._seen.items()
        ]
        events += [
            {
                "t": "count",
                "tenant": k[0],
                "server": k[1],
                "day": k[2].isoformat(),
                "action": k[3],
                "n": n,
            }
            for k, n in self._counts.items()
        ]
        written = self.journal.append(events)
        self._pending, self._seen, self._counts = [], {}, {}
        if written:
            log.warning("spilled %d queued events to the journal %s", written, self.journal.path)
        return written

    def shutdown(self) -> None:
        """Last flush on the way out; if the database is away, keep everything in the journal
        (replayed by the next start)."""
        try:
            self.flush()
        except Exception:
            with self._lock:
                if self.journal is not None:
                    self._spill_locked()
                elif self.pending_events():
                    log.error(
                        "database unreachable at shutdown: %d queued events are lost",
                        self.pending_events(),
                    )


def _deferred(server: DetectedServer, assessment: Assessment) -> Verdict:
    return Verdict(
        action="throttle",
        reason="state database unreachable and server unknown (fail_mode=tempfail)",
        server=server,
        assessment=assessment,
        code=451,
        enhanced_code="4.3.0",
        text="Temporary local problem, please try again later",
    )


def _earliest(old: ServerRecord | None, new: ServerRecord, now: datetime) -> ServerRecord:
    """Another node may have recorded the server a moment *later* by its clock than this node
    saw it (same second, clocks apart): the first detection is the earliest sighting, and a
    clock that started at the first detection starts then too."""
    if old is None or now >= old.first_detected:
        return new
    clock_start = new.clock_start
    if (
        clock_start is not None
        and old.clock_start is not None
        and old.clock_start - old.first_detected < timedelta(seconds=1)
        and new.remediated_at is None
        and new.clock_credit == old.clock_credit
    ):
        clock_start = min(now, clock_start)
    return replace(new, first_detected=now, clock_start=clock_start)


def _needs_write(old: ServerRecord | None, new: ServerRecord) -> bool:
    if old is None:
        return True
    return replace(old, last_seen=new.last_seen) != new
