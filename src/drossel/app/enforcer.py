"""The enforcer: the per-message front shared by the milter and the SMTP gateway.

It wires the pure core's state machine (:func:`~drossel.core.decision.observe`,
:func:`~drossel.core.decision.decide`) to the state store through two helpers:

* :class:`~drossel.app.cache.DecisionCache`: a server in steady state costs no database round
  trip; its record, the tenant's pauses and the overrides live in memory, refreshed every
  ``refresh_seconds`` (and at once on PostgreSQL change notifications);
* :class:`~drossel.app.outage.OutageQueue`: the message path never writes to the database.
  A changed record (first detection, new build or evidence, remediation, regression) is queued
  as an observation and kept in memory; last-seen times and per-day counters are batched too.
  :meth:`Enforcer.flush` (run every ``flush_seconds`` by the daemons, in a thread) writes them;
  while the database is away they stay queued (bounded in memory, spilled to the journal) and
  are replayed in order when it answers again.

The only database call left on the message path is reading a server that is not in memory; the
daemons use :meth:`Enforcer.process_async`, which does it in a thread with a timeout, so a slow
or locked database never stalls SMTP sessions.  Several nodes on one PostgreSQL keep the
earliest first detection; a record changed on another node is dropped from the cache on its
notification.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from operator import attrgetter
from typing import Any, Generic

from typing_extensions import TypeVar

from drossel.app.cache import DecisionCache, ServerKey, compact
from drossel.app.catalog_source import SETTING_KEY, load_catalog, packaged_catalog
from drossel.app.journal import Journal
from drossel.app.outage import Observation, OutageQueue, event_from_json
from drossel.app.records import Connector
from drossel.app.storage import StateStore
from drossel.config import Clock, Config
from drossel.core.assessment import Assessment, assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog
from drossel.core.decision import (
    ConnectionFacts,
    ServerRecord,
    Snapshot,
    Verdict,
    decide,
    evidence_of,
    observe,
    observe_changes,
    verdict_for,
)
from drossel.core.detection import DetectedServer, Detection, detect_in_headers
from drossel.core.frozen import fast_init, maker
from drossel.metrics import DB_ERRORS, DECISION_SECONDS, VERDICTS

log = logging.getLogger("drossel.decision")


def log_decision(message: str) -> None:
    """Log the decision line (INFO on ``drossel.decision``; the caller checked the level).

    When the daemon's log is set up as :func:`drossel.runtime.setup_logging` leaves it (one
    handler, on the root logger, with a ``write_line`` method, and nothing on the way to it),
    the line is handed to that handler directly: the same text for a third of the cost, and
    this line is written once per message.  Any other set-up (tests, an embedding program)
    gets it the standard way."""
    root = logging.root
    logger: logging.Logger | None = log
    while logger is not root:  # nothing on the way up to the root handler
        assert logger is not None
        if logger.handlers or logger.filters or not logger.propagate:
            log.info("%s", message)
            return
        logger = logger.parent
    write_line = getattr(root.handlers[0], "write_line", None) if len(root.handlers) == 1 else None
    if write_line is None or root.filters:
        log.info("%s", message)
    else:
        write_line(log.name, message)


@fast_init
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


@dataclass(slots=True)
class _Pending:
    """A message detected and assessed, waiting for its server's record (private and never
    changed: not frozen, so building one per message stays cheap)."""

    detection: Detection
    facts: ConnectionFacts
    server: DetectedServer
    assessment: Assessment
    key: ServerKey
    cached: bool
    day: date


@fast_init
@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    detection: Detection
    facts: ConnectionFacts


_make_outcome = maker(Outcome)

#: a bare ``Enforcer`` works on any store; the daemons use ``Enforcer[Store]``
StoreT = TypeVar("StoreT", bound=StateStore, default=StateStore, covariant=True)


class Enforcer(Generic[StoreT]):
    """Detect, assess, record and decide for each message (see the module docstring).

    Generic in its store, so the daemons that run on the SQL store keep its type."""

    def __init__(
        self,
        store: StoreT,
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
        self.cache = DecisionCache()
        self.queue = OutageQueue()
        self._offline = False
        #: set by :func:`drossel.runtime.open_store` when the schema could not be checked
        self.schema_unchecked = False
        self._state_key: Any = None
        #: the verdict counter of each (action, product, stage) seen (a few dozen at most)
        self._verdict_counters: dict[tuple[str, str, int], Any] = {}
        #: :meth:`classify` per client, for the connectors it was worked out from
        self._facts: dict[ClientInfo, ConnectionFacts] = {}
        self._facts_from: list[Connector] | None = None
        self._last_facts: tuple[
            ClientInfo | None, list[Connector] | None, ConnectionFacts | None
        ] = (None, None, None)
        self._day: date | None = None
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
            shared = self.cache.shared
            shared.connectors, shared.pauses, shared.overrides = state
        log.warning(
            "state database unreachable at start (%s); deciding from %s, fail_mode=%s",
            exc.__class__.__name__,
            "the last saved state" if state is not None else "an empty state",
            self.config.storage.fail_mode,
        )

    # --- shared state ---------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        """True while the database is (or was at the last attempt) unreachable, or queued
        observations still wait to be written."""
        return self._offline

    def refresh(self) -> None:
        """Reload connectors, pauses and overrides (cheap: small tables)."""
        connectors = self.store.list_connectors()
        pauses = self.store.list_pauses()
        overrides = self.store.list_overrides()
        with self._lock:
            shared = self.cache.shared
            shared.connectors, shared.pauses, shared.overrides = connectors, pauses, overrides
            shared.refreshed_at = self.clock()
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
        last = self.cache.shared.refreshed_at
        if last is None or abs((now - last).total_seconds()) >= self.config.storage.refresh_seconds:
            try:
                self.refresh()
            except Exception:
                DB_ERRORS.labels("refresh").inc()
                self.cache.shared.refreshed_at = now  # keep the cached state; retry later
                log.warning("refresh failed; deciding from the cached state")

    def forget(self, tenant: str | None = None) -> None:
        """Drop cached server records (after an operator changed state directly)."""
        with self._lock:
            self.cache.drop_tenant(tenant)

    def on_change(self, event: dict[str, Any]) -> None:
        """Apply a change notification from any node (see :meth:`Store.notify`)."""
        kind = event.get("kind")
        if kind == "server":
            if event.get("node") == self.store.node_id:
                return
            tenant, server = event.get("tenant"), event.get("server")
            with self._lock:
                if tenant and server:
                    self.cache.drop((tenant, server))
            return
        if kind == "setting":
            if event.get("server") == SETTING_KEY:
                self.catalog = load_catalog(self.store)
                with self._lock:
                    self.cache.assessments.clear()
            return
        self.refresh()
        if kind == "tenant" and event.get("tenant"):
            self.forget(event["tenant"])

    # --- the per-message path -------------------------------------------------------------

    def classify(self, client: ClientInfo) -> ConnectionFacts:
        """Which tenant and connector the connection belongs to (SPEC §2)."""
        matched = next(
            (c for c in self.cache.shared.connectors if c.matches(client.addr, client.tls_name)),
            None,
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

    #: distinct clients whose connection facts are remembered (cleared when full)
    MAX_CLIENTS = 4096

    def _facts_of(self, client: ClientInfo) -> ConnectionFacts:
        """:meth:`classify`, remembered per client until the connectors change (refreshing
        replaces the list): the same clients send all day."""
        connectors = self.cache.shared.connectors
        last = self._last_facts
        if last[0] is client and last[1] is connectors and last[2] is not None:
            return last[2]  # the same client again
        memo = self._facts
        if connectors is not self._facts_from:
            memo.clear()
            self._facts_from = connectors
        facts = memo.get(client)
        if facts is None:
            if len(memo) >= self.MAX_CLIENTS:
                memo.clear()
            facts = memo[client] = self.classify(client)
        self._last_facts = (client, connectors, facts)
        return facts

    def assessment(self, build: Build, day: Any) -> Assessment:
        cached = self.cache.assessment(build, day)
        if cached is None:
            cached = assess(build, day, self.catalog, self.policy)
            self.cache.remember_assessment(build, day, cached)
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

    def _read(self, key: ServerKey) -> tuple[ServerRecord | None, bool]:
        """The stored record, and whether the database could be asked (no lock held: this is
        the one database round trip of the message path, for a server not in memory)."""
        if self._offline:
            return None, False
        try:
            stored = self.store.get_server(*key)
        except Exception as exc:
            with self._lock:
                self._went_offline("read", exc)
            return None, False
        return (compact(stored.record, key) if stored else None), True

    def _prepare(
        self, headers: Iterable[tuple[str, str]], client: ClientInfo, now: datetime
    ) -> _Pending | Outcome:
        """Everything up to the record: an :class:`Outcome` when no record is needed (the
        caller holds the lock)."""
        if self.auto_refresh:
            self._maybe_refresh(now)
        facts = self._facts_of(client)
        detection = detect_in_headers(headers, self.policy.trusted_hosts, catalog=self.catalog)
        server = detection.connecting
        if server is None or self.policy.mode == "off":
            verdict = decide(detection, facts, _NO_STATE, now, self.policy, self.catalog)
            return Outcome(verdict, detection, facts)
        day = now.date()
        if day == self._day:  # one date object per day in the queued counter keys
            day = self._day
        else:
            self._day = day
        assessment = self.cache.assessments.get((server.build.short, day))
        if assessment is None:
            assessment = self.assessment(server.build, day)
        key = (facts.tenant, server.server)
        return _Pending(detection, facts, server, assessment, key, key in self.cache.records, day)

    def _finish(
        self, pending: _Pending, now: datetime, read: tuple[ServerRecord | None, bool] | None
    ) -> Verdict:
        """Observe, queue the change and decide (the caller holds the lock; ``read``: what the
        database said of a server that was not in memory, or ``None`` when it was)."""
        facts, server, assessment, key = (
            pending.facts,
            pending.server,
            pending.assessment,
            pending.key,
        )
        records = self.cache.records
        if key in records:  # in memory (meanwhile, maybe): memory is newer
            old, known = records[key], True
        else:
            old, known = read if read is not None else (None, False)
        shared = self.cache.shared
        policy = self.policy
        evidence = evidence_of(facts, server.server)
        new, changed = observe_changes(
            old, facts, server, assessment, now, policy, shared.pauses, evidence
        )
        if old is not None and now < old.first_detected:  # another node saw it later
            new = _earliest(old, new, now)
            changed = _needs_write(old, new)
        if changed:
            # written by :meth:`flush` (write-behind, off the message path); the record
            # stays in memory until then
            self.queue.observe(
                Observation(
                    facts.tenant,
                    server.server,
                    server.build.short,
                    server.product,
                    server.evidence,
                    now,
                    facts,
                )
            )
            self.cache.put(key, new, blind=True)
        else:
            assert old is not None  # a first sighting always needs writing
            at = new.last_seen
            if at != old.last_seen:  # the only field that may have changed
                # OutageQueue.touch, written out (once per message)
                seen = self.queue.seen
                queued = seen.get(key)
                if queued is None or at >= queued:
                    seen[key] = at
            records[key] = new  # blind or not, as it was
        if not known and self.config.storage.fail_mode == "tempfail":
            verdict = _deferred(server, assessment)
        else:
            verdict = verdict_for(
                server,
                facts,
                new,
                shared.pauses,
                shared.overrides,
                now,
                policy,
                assessment,
                evidence,
            )
        counts = self.queue.counts  # OutageQueue.count, written out (once per message)
        count_key = (facts.tenant, server.server, pending.day, verdict.action)
        counts[count_key] = counts.get(count_key, 0) + 1
        return verdict

    def _account(self, verdict: Verdict, pending: _Pending, started: float) -> Outcome:
        """Metrics and the decision log line (outside the lock), and the outcome."""
        DECISION_SECONDS.observe(time.perf_counter() - started)
        server = pending.server
        labels = (verdict.action, server.product, verdict.stage or 0)
        counter = self._verdict_counters.get(labels)
        if counter is None:  # prometheus' labels() validates and locks: once per label set
            counter = self._verdict_counters[labels] = VERDICTS.labels(
                verdict.action, server.product, str(verdict.stage or 0)
            )
        counter.inc()
        facts = pending.facts
        if log.isEnabledFor(logging.INFO):  # the line is not even put together otherwise
            log_decision(
                f"decision action={verdict.action} server={server.server} build={server.build} "
                f"status={pending.assessment.status} stage={verdict.stage} "
                f"scheduled={verdict.scheduled_stage} evidence={verdict.evidence} "
                f"tenant={facts.tenant} client={facts.client_addr} reason={verdict.reason!r}"
            )
        return _make_outcome(verdict, pending.detection, facts)

    def process(
        self, headers: Iterable[tuple[str, str]], client: ClientInfo, now: datetime | None = None
    ) -> Outcome:
        """Detect, assess, record and decide for one message (blocking: a server not in memory
        is read from the database in this thread; CLI and tests).

        A server in memory (the steady state) is decided under one hold of the lock."""
        now = now or self.clock()
        started = time.perf_counter()
        with self._lock:
            pending = self._prepare(headers, client, now)
            if isinstance(pending, Outcome):
                return pending
            verdict = self._finish(pending, now, None) if pending.cached else None
        if verdict is None:
            read = self._read(pending.key)
            with self._lock:
                verdict = self._finish(pending, now, read)
        return self._account(verdict, pending, started)

    async def process_async(
        self,
        headers: Iterable[tuple[str, str]],
        client: ClientInfo,
        now: datetime | None = None,
        read_timeout: float | None = None,
    ) -> Outcome:
        """:meth:`process` for the event loop: no database call on the loop.  A server not in
        memory is read in a worker thread for at most ``read_timeout`` seconds (default
        ``[storage] read_timeout``); a slow or
        locked database then counts as unreachable for this message (``[storage]
        fail_mode``), so it never stalls other sessions.  Changes are written by
        :meth:`flush`, which the daemons run in a thread.  A server in memory is decided
        without suspending."""
        now = now or self.clock()
        started = time.perf_counter()
        with self._lock:
            pending = self._prepare(headers, client, now)
            if isinstance(pending, Outcome):
                return pending
            verdict = self._finish(pending, now, None) if pending.cached else None
        if verdict is not None:
            return self._account(verdict, pending, started)
        read: tuple[ServerRecord | None, bool]
        if read_timeout is None:
            read_timeout = self.config.storage.read_timeout
        try:
            read = await asyncio.wait_for(asyncio.to_thread(self._read, pending.key), read_timeout)
        except TimeoutError:
            DB_ERRORS.labels("slow-read").inc()
            log.warning(
                "state database slower than %.1fs for %s; deciding from memory",
                read_timeout,
                pending.key[1],
            )
            read = (None, False)
        with self._lock:
            verdict = self._finish(pending, now, read)
        return self._account(verdict, pending, started)

    # --- writing batched and queued state -------------------------------------------------

    def pending_events(self) -> int:
        """Queued events in memory (observations, last-seen times, counter keys)."""
        with self._lock:
            return len(self.queue)

    def flush(self) -> None:
        """Write queued observations (journal file first), last-seen times and counters.

        On failure everything stays queued (spilled to the journal beyond the memory bound)
        and the exception propagates; the daemons' flusher retries every ``flush_seconds``."""
        with self._lock:
            taken = self.queue.take()
        now = self.clock()
        journal = self.journal
        try:
            if self.schema_unchecked:
                self.store.check_schema()
                self.schema_unchecked = False
            from_file = OutageQueue()
            file_lines = journal.read() if journal is not None and journal.exists() else []
            for line in file_lines:
                event = event_from_json(line)
                if event is not None:
                    from_file.add(event)
            replayed = self._replay(from_file.observations + taken.observations)
            seen = dict(from_file.seen)
            for key, at in taken.seen.items():
                seen[key] = max(at, seen.get(key, at))
            counts = dict(from_file.counts)
            for ckey, n in taken.counts.items():
                counts[ckey] = counts.get(ckey, 0) + n
            self.store.touch_servers(seen)
            self.store.add_counts(counts, now)
            if file_lines and journal is not None:
                journal.clear()
        except BaseException as exc:
            with self._lock:
                self.queue.put_back(taken)
                self._went_offline("flush", exc)
                limit = self.config.storage.journal_memory_events
                if journal is not None and len(self.queue) > limit:
                    self._spill_locked()
            raise
        with self._lock:
            waiting = self.queue.waiting()
            for key, record in replayed.items():
                if key in waiting:
                    continue
                cached = self.cache.records.get(key)
                if cached is not None and cached.last_seen > record.last_seen:
                    record = replace(record, last_seen=cached.last_seen)
                self.cache.written(key, record)
            if taken.observations or file_lines:
                log.info(
                    "state database reachable again: wrote %d queued observations, %d counter keys",
                    len(from_file.observations) + len(taken.observations),
                    len(counts),
                )
            self._offline = False
            self.cache.blind &= self.queue.waiting()

    def _replay(self, observations: list[Observation]) -> dict[ServerKey, ServerRecord]:
        """Re-run queued observations against the stored records, in order, and save them."""
        latest: dict[ServerKey, ServerRecord | None] = {}
        for obs in observations:
            key = (obs.tenant, obs.server)
            if key in latest:
                old = latest[key]
            else:
                stored = self.store.get_server(*key)
                old = stored.record if stored else None
            build = Build.parse(obs.build)
            if build is None:
                continue
            server = DetectedServer(obs.server, build, obs.product, obs.evidence)
            assessment = self.assessment(build, obs.now.date())
            new = _earliest(
                old,
                observe(
                    old,
                    obs.facts,
                    server,
                    assessment,
                    obs.now,
                    self.policy,
                    self.cache.shared.pauses,
                ),
                obs.now,
            )
            if old is None or new != old:
                new = self.store.save_server(new, server.evidence, obs.now).record
            latest[key] = new
        return {k: v for k, v in latest.items() if v is not None}

    def _spill_locked(self) -> int:
        """Move every queued event from memory to the journal file."""
        assert self.journal is not None
        events = [e.to_json() for e in self.queue.take().events()]
        written = self.journal.append(events)
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
                elif len(self.queue):
                    log.error(
                        "database unreachable at shutdown: %d queued events are lost",
                        len(self.queue),
                    )


_NO_STATE = Snapshot()


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


#: every field of a record but ``last_seen`` (a change in one of them is written at once)
_BUT_LAST_SEEN = attrgetter(*(f.name for f in fields(ServerRecord) if f.name != "last_seen"))


def _needs_write(old: ServerRecord | None, new: ServerRecord) -> bool:
    """Whether anything but ``last_seen`` changed (compared field by field: no copy made)."""
    if old is None:
        return True
    return new is not old and bool(_BUT_LAST_SEEN(old) != _BUT_LAST_SEEN(new))


__all__ = ["ClientInfo", "Enforcer", "Outcome"]
