"""Per-message decision benchmark (not a test): detect + assess + decide for a known server,
and the milter's resident memory with many cached servers and many idle connections.

**Decision.**  What one message costs on the per-message path in steady state: the server was
seen before (warm-up), so its record and assessment are in the decision cache and no database
is touched.  Header sets are realistic: two to eight ``Received:`` lines (some folded, an
on-premises Exchange hop among Postfix and hosted hops) mixed with the usual other headers, as
the MTA hands them over (a list of ``(name, value)`` tuples, values still folded).  Every
measured call gets a message no call before has seen (:class:`FreshMessages`, built untimed):
its own queue ids, message id and time stamps, as real mail has; only an Exchange hop's line
repeats, but for its date.  (Until 2026-12-06 the rows cycled through a fixed list of 10,000
messages, so most calls met lines the engine had parsed before, in an earlier round or
another row: the cached rows came out about a tenth faster than with fresh mail.)

Rows, each over ``--rounds`` rounds of ``--iterations`` messages (per-call times pooled,
median and p99 reported, and the median of the per-round medians as a spread check):

* ``milter default``: the engine exactly as ``drossel milter`` builds it
  (:func:`drossel.runtime.build_enforcer`: the default SQLite store, an outage journal,
  shared state refreshed off the message path) and the call the milter makes,
  :meth:`~drossel.app.enforcer.Enforcer.process_async`, driven the way the milter drives it
  when the answer comes from memory (one ``send``, no event-loop round); ``cache`` is the
  figure of issue 12 (goal <= 20 µs median);
* ``... no cache``: the cached record and assessment are dropped before every message, so each
  one reads the store (in a worker thread, on an event loop) and grades the build again;
* ``memory``: :meth:`~drossel.app.enforcer.Enforcer.process` on a ``MemoryStore`` (the shared
  per-message path without the milter's coroutine), with and without the cache;
* ``memory, cache, INFO log``: the ``drossel.decision`` logger at INFO, formatted and
  filtered as a daemon logs by default (one line per decision), written to a null stream;
* ``memory, cache, connector``: every client matches an ``OnPremises`` connector, so every
  sighting is trusted and the clocks of the vulnerable servers run (first seen 45 days
  before: stage 3, the minute of the hour decides throttle or accept): the enforcing path;
* ``detect only``: :func:`detect_in_headers` alone, on the same headers;
* reference ``HeaderParser``: :class:`email.parser.HeaderParser` parsing the same header block,
  measured in the same run; every other row is also given as a ratio of it.

**Memory** (``--memory N``, ``--connections N``; off here, on in ``bench/run_all.py``), each in
its own process, resident memory (``VmRSS``) from ``/proc``:

* ``milter, N servers cached``: a real ``drossel milter`` process with its defaults (SQLite
  state, INFO log) on a state database holding N server records (bulk-filled as in
  ``bench/scale.py``) is sent one message from each of the N servers on four connections, so
  each server is read once and kept in the decision cache; RSS once every message is answered
  (the last-seen times and counters still queued) and again once the flusher wrote them;
* ``milter, N idle connections``: a fresh ``drossel milter`` (``max_connections`` raised above
  N, the default is 512) gets N loopback connections that negotiate as Postfix does and then
  stay idle; RSS before and with them open;
* ``engine, MemoryStore, N servers``: N distinct servers through ``Enforcer.process`` on a
  ``MemoryStore`` in one process, with the deep size of the cache and of the store's tables
  (the store is the whole state database held in memory: a test and embedded store).

Goal of issue 12: <= 150 MiB for 100,000 servers and for 1,000 idle connections.

    python bench/decision.py                          # 5 rounds x 20,000 messages
    python bench/decision.py --rounds 2 --iterations 20000 --json
    python bench/decision.py --no-decision --memory 100000 --connections 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import itertools
import json
import logging
import os
import random
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import HeaderParser
from pathlib import Path

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
BUILDS = ("15.1.2507.6", "15.2.1544.4", "15.2.1748.39", "15.2.2562.53", "15.0.1497.2")

Headers = list[tuple[str, str]]


def header_set(i: int, received: int, rng: random.Random, variant: int = 0) -> Headers:
    """One message's headers: ``received`` Received lines (>= 2), top-most first.

    ``variant`` is the server's how-manieth message: as in real mail, every message of a
    server has its own queue ids, message id and time stamps, and only an Exchange hop's line
    repeats but for its date (so nothing in the decision path can profit from seeing the
    very same header text again, as a benchmark repeating identical messages would allow).
    """
    v = variant
    stamp = f"Mon, 2 Mar 2026 {10 + v // 60 % 12:02d}:{v % 60:02d}:{i % 60:02d} +0000"
    server = f"ex{i:03d}.corp{i % 7}.example"
    build = BUILDS[i % len(BUILDS)]
    lines = [
        # our own MTA's hop (Postfix), folded as Postfix writes it
        f"from {server} ({server} [192.0.2.{i % 250 + 1}])\n\t(using TLSv1.3 with cipher "
        f"TLS_AES_256_GCM_SHA384 (256/256 bits))\n\tby mx1.receiver.example (Postfix) with ESMTPS "
        f"id 4Zx{i:05d}{v:08d}Q;\n\t{stamp}",
        # the connecting on-premises Exchange server (transport hop)
        f"from mbx{i % 3}.corp{i % 7}.example (10.1.0.{i % 200}) by {server} (10.1.0.1) with "
        f"Microsoft SMTP Server\n (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) "
        f"id {build}; {stamp}",
    ]
    extra = [
        f"from mbx{i % 3}.corp{i % 7}.example ([fe80::1%{i}]) by mbx{i % 3}.corp{i % 7}.example "
        f"([fe80::1%{i}]) with mapi id {build}; {stamp}",
        f"from app{i}.corp{i % 7}.example (app{i}.corp{i % 7}.example [10.2.0.{i % 200}])\n\tby "
        f"relay.corp{i % 7}.example (Postfix) with ESMTP id 9A{i:04d}{v:08d};\n\t{stamp}",
        f"from localhost (localhost [127.0.0.1]) by app{i}.corp{i % 7}.example (8.15.2/8.15.2) "
        f"with ESMTP id 1AB{i:04d}{v:08d}; {stamp}",
        f"from scanner.corp{i % 7}.example (scanner [10.3.0.5]) by relay.corp{i % 7}.example "
        f"(Postfix) with ESMTPS id 77{i:04d}{v:08d}; {stamp}",
        f"by 2002:a05:6000:1b0c:b0:39c:1f0a:4a1b with SMTP id\n\tabc{i}csp{v:08d};\n\t{stamp}",
        f"from edge.corp{i % 7}.example (10.0.0.9) by mbx{i % 3}.corp{i % 7}.example "
        f"(10.1.0.2) with Microsoft SMTP Server (version=TLS1_2,\n cipher=TLS_ECDHE_RSA) "
        f"id {build}; {stamp}",
    ]
    received_values = lines + extra[: max(0, received - 2)]
    others_before = [
        ("Return-Path", f"<user{i}@corp{i % 7}.example>"),
        ("X-Original-To", "someone@receiver.example"),
        ("Delivered-To", "someone@receiver.example"),
    ]
    others_after = [
        (
            "DKIM-Signature",
            f"v=1; a=rsa-sha256; c=relaxed/relaxed; d=corp{i % 7}.example;\n\t"
            "s=sel1; h=From:To:Subject:Date:Message-ID; bh=" + "x" * 44 + ";\n\tb=" + "y" * 120,
        ),
        ("From", f"User {i} <user{i}@corp{i % 7}.example>"),
        ("To", "Someone <someone@receiver.example>"),
        ("Subject", f"Quarterly report {i}"),
        ("Thread-Topic", f"Quarterly report {i}"),
        ("Thread-Index", "AQHbX2" + "a" * 30),
        ("Date", stamp),
        ("Message-ID", f"<{i:08x}.{v:08x}.abc@mbx{i % 3}.corp{i % 7}.example>"),
        ("Accept-Language", "en-US"),
        ("Content-Language", "en-US"),
        ("X-MS-Has-Attach", ""),
        ("X-MS-TNEF-Correlator", ""),
        ("x-originating-ip", f"[10.4.0.{i % 200}]"),
        ("Content-Type", 'multipart/alternative;\n\tboundary="_000_' + "b" * 24 + '_"'),
        ("MIME-Version", "1.0"),
    ]
    rng.shuffle(others_after)
    return (
        others_before[: 1 + i % 3]
        + [("Received", v) for v in received_values]
        + others_after[: 8 + i % 8]
    )


def server_message(server: int, rng: random.Random, variant: int) -> Headers:
    """Server ``server``'s ``variant``-th message: 2 to 8 ``Received:`` lines by server."""
    return header_set(server, 2 + server % 7, rng, variant)


def only(headers: Headers, keep: frozenset[str]) -> Headers:
    """The headers named in ``keep`` (lower case), in order."""
    return [(k, v) for k, v in headers if k.lower() in keep]


def header_sets(count: int, seed: int = 1, variants: int = 1) -> list[Headers]:
    """``variants`` messages from each of ``count`` servers (server ``m % count``)."""
    rng = random.Random(seed)
    return [server_message(m % count, rng, m // count) for m in range(count * variants)]


class FreshMessages:
    """A message no call before has seen, per call: server ``item``'s headers (as in
    :func:`header_sets`) with a variant number never used before, so its own queue ids,
    message id and time stamps.  Built untimed (``Row.prepare``) into :attr:`current`.

    The engine remembers the parsed text of ``Received:`` lines (an Exchange server's line
    repeats but for its date); measuring on a fixed list of messages would let every row
    profit from lines the earlier rounds and the other rows parsed, which real mail, with
    fresh queue ids in every message, never allows."""

    #: shared by all instances: no two calls of any row share a variant
    _variants = itertools.count(10**6)

    def __init__(self, count: int, keep: frozenset[str] | None = None, seed: int = 2) -> None:
        self.count = count
        self.keep = keep
        self.rng = random.Random(seed)
        self.current: Headers = []

    def make(self, item: int) -> None:
        headers = server_message(item % self.count, self.rng, next(self._variants))
        self.current = headers if self.keep is None else only(headers, self.keep)


def block_of(headers: Headers) -> str:
    """The same headers as the text a parser would read (CRLF-free, folded as given)."""
    return "".join(f"{name}: {value}\n" for name, value in headers) + "\n"


# --- measuring -------------------------------------------------------------------------------


#: calls of each row in one slice of a round (rows take turns slice by slice)
SLICES = 20


@dataclass
class Row:
    """One measured row: ``call(item)`` timed ``iterations`` times per round (items in turn),
    ``prepare(item)`` run untimed before each call, ``around`` entered around each slice."""

    name: str
    call: Callable[[int], object]
    iterations: int
    prepare: Callable[[int], object] | None = None
    around: Callable[[], AbstractContextManager[object]] = nullcontext
    pooled: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    _round: list[float] = field(default_factory=list)
    _next: int = 0

    def run_slice(self, n: int) -> None:
        """This row's share of one slice of the round: ``iterations / SLICES`` calls."""
        clock = time.perf_counter
        call, prepare = self.call, self.prepare
        times = []
        with self.around():
            for k in range(self._next, self._next + max(1, self.iterations // SLICES)):
                item = k % n
                if prepare is not None:
                    prepare(item)
                t = clock()
                call(item)
                times.append(clock() - t)
        self._next = k + 1
        self._round += [x * 1e6 for x in times]

    def end_round(self) -> None:
        self.round_medians.append(statistics.median(self._round))
        self.pooled += self._round
        self._round = []

    def result(self) -> dict[str, object]:
        q = statistics.quantiles(self.pooled, n=100)
        return {
            "row": self.name,
            "median_us": statistics.median(self.pooled),
            "p99_us": q[98],
            "round_median_spread_us": max(self.round_medians) - min(self.round_medians),
        }


def make_enforcer(kind: str, tmp: Path):  # type: ignore[no-untyped-def]
    """``default``: as ``drossel milter`` builds its engine; ``memory``: on a MemoryStore."""
    from drossel.app.enforcer import Enforcer
    from drossel.app.memory import MemoryStore
    from drossel.config import Config, config_from_dict
    from drossel.runtime import build_enforcer

    if kind == "memory":
        return Enforcer(MemoryStore(), Config(), lambda: NOW, auto_refresh=False)
    url = f"sqlite:///{tmp / 'state.db'}"
    config = config_from_dict({"storage": {"url": url, "journal": str(tmp / "journal.jsonl")}})
    return build_enforcer(config, lambda: NOW, db=url)


#: the headers the milter session keeps for the engine (``DEFAULT_KEEP_HEADERS``), lower case
MILTER_KEEPS = frozenset({"received"})


def through_the_milter(enforcer):  # type: ignore[no-untyped-def]
    """``process_async`` as the milter runs it when the engine answers from memory: the
    coroutine is started from the socket callback and finishes without suspending."""
    process_async = enforcer.process_async

    def call(headers: Headers, client: object, now: datetime) -> object:
        coroutine = process_async(headers, client, now)
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("process_async suspended on a cached server")

    return call


def engine_rows(
    kind: str,
    messages: list[Headers],
    sets: int,
    iterations: int,
    rounds: int,
    tmp: Path,
    cleanup: list,  # type: ignore[type-arg]
) -> list[Row]:
    """The rows of one engine, warmed up on ``messages`` (from ``sets`` servers): steady state
    and the cold path (and, on the memory store, INFO logging, connector clients and detection
    alone), each call on a fresh message (:class:`FreshMessages`).  The clock advances 50 ms
    per message, as in a daemon: every message moves its server's ``last_seen``."""
    from drossel.app.enforcer import ClientInfo
    from drossel.core.detection import detect_in_headers

    keep = MILTER_KEEPS if kind == "default" else None
    if keep is not None:  # the milter keeps only the Received: lines for the engine
        messages = [only(h, keep) for h in messages]
    n = len(messages)
    fresh = FreshMessages(sets, keep)
    client = ClientInfo(addr="192.0.2.10", name="mx.corp.example", helo="mx.corp.example")
    enforcer = make_enforcer(kind, tmp)
    cleanup.append(enforcer.store.dispose)
    name = "milter default (SQLite, process_async)" if kind == "default" else kind
    process = through_the_milter(enforcer) if kind == "default" else enforcer.process
    keys = []
    for headers in messages:  # warm-up: every server known and cached
        outcome = enforcer.process(headers, client, NOW)
        assert outcome.detection.connecting is not None, "no server detected"
        keys.append((outcome.facts.tenant, outcome.detection.connecting.server))
    enforcer.flush()
    total = max(iterations, n) * rounds * 4
    nows = [NOW + timedelta(milliseconds=50 * k) for k in range(total)]
    step = iter(range(total))

    def steady(i: int) -> object:
        return process(fresh.current, client, nows[next(step)])

    cache = enforcer.cache

    def drop(i: int) -> None:
        fresh.make(i)
        cache.records.pop(keys[i % sets], None)
        cache.assessments.clear()

    cold_calls = max(n, iterations // 10)
    if kind == "default":  # a server not in memory is read in a worker thread
        loop = asyncio.new_event_loop()
        cleanup.append(loop.close)

        def cold(i: int) -> object:
            coroutine = enforcer.process_async(fresh.current, client, nows[next(step)])
            return loop.run_until_complete(coroutine)

    else:
        cold = steady
    rows = [
        Row(f"{name}, cache", steady, iterations, prepare=fresh.make),
        Row(f"{name}, no cache", cold, cold_calls, prepare=drop),
    ]
    if kind == "memory":
        rows.append(
            Row("memory, cache, INFO log", steady, iterations, fresh.make, around=daemon_log)
        )
        rows.append(connector_row(messages, sets, iterations, rounds, cleanup))
        catalog, trusted = enforcer.catalog, enforcer.policy.trusted_hosts

        def detect_only(i: int) -> object:
            return detect_in_headers(fresh.current, trusted, catalog=catalog)

        rows.append(Row("detect only", detect_only, iterations, prepare=fresh.make))
    return rows


@contextmanager
def daemon_log() -> Iterator[None]:
    """The ``drossel.decision`` logger at INFO, formatted and filtered as
    :func:`drossel.runtime.setup_logging` sets up a daemon's log, written to a null stream."""
    from drossel.redact import RedactingFilter
    from drossel.runtime import setup_logging

    class Null(io.TextIOBase):
        def write(self, text: str) -> int:
            return len(text)

    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("drossel").level
    setup_logging()
    for handler in root.handlers:
        assert isinstance(handler, logging.StreamHandler)
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        handler.setStream(Null())
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("drossel").setLevel(saved[2])


def connector_row(
    messages: list[Headers],
    sets: int,
    iterations: int,
    rounds: int,
    cleanup: list,  # type: ignore[type-arg]
) -> Row:
    """Steady state of servers whose clocks run: the client matches an ``OnPremises``
    connector (trusted evidence), every server was first seen 45 days ago (a persistently
    vulnerable one is in stage 3: ten throttled minutes an hour, at its own offset; the
    current builds among them are accepted)."""
    from drossel.app.enforcer import ClientInfo

    enforcer = make_enforcer("memory", Path("."))
    cleanup.append(enforcer.store.dispose)
    enforcer.store.add_tenant("corp", [], "bench", NOW)
    enforcer.store.add_connector(
        "corp", "exchange", "OnPremises", ["192.0.2.0/24"], None, "bench", NOW
    )
    enforcer.refresh()
    client = ClientInfo(addr="192.0.2.10", name="mx.corp.example", helo="mx.corp.example")
    for headers in messages:
        outcome = enforcer.process(headers, client, NOW - timedelta(days=45))
        assert outcome.facts.connector_type == "OnPremises", outcome.facts
    enforcer.flush()
    process = enforcer.process
    stages, actions = set(), set()
    for minute in range(60):  # both outcomes of the windows occur among these servers
        for headers in messages[:20]:
            verdict = process(headers, client, NOW + timedelta(minutes=minute)).verdict
            stages.add(verdict.stage)
            actions.add(verdict.action)
    assert 3 in stages and {"throttle", "accept"} <= actions, (stages, actions)
    start = NOW + timedelta(hours=1)
    total = max(iterations, len(messages)) * rounds
    nows = [start + timedelta(milliseconds=50 * k) for k in range(total)]
    step = iter(range(total))
    fresh = FreshMessages(sets)

    def steady(i: int) -> object:
        return process(fresh.current, client, nows[next(step)])

    return Row("memory, cache, connector (clocks running)", steady, iterations, fresh.make)


def measure(iterations: int, rounds: int, sets: int, variants: int = 1) -> list[dict[str, object]]:
    """Every row, round by round; within a round the rows take turns in slices of a twentieth
    of their calls, in a rotating order, so a burst of load from other jobs on a shared
    machine falls on all rows alike (the ratios to the reference stay meaningful)."""
    messages = header_sets(sets, variants=variants)
    blocks = [block_of(h) for h in messages]
    parser = HeaderParser()
    reference = Row(
        "reference: email HeaderParser", lambda i: parser.parsestr(blocks[i]), iterations
    )
    cleanup: list[Callable[[], object]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        try:
            rows = [reference]
            for kind in ("default", "memory"):
                rows += engine_rows(
                    kind, messages, sets, iterations, rounds, Path(tmp_dir), cleanup
                )
            for _ in range(rounds):
                gc.collect()
                for turn in range(SLICES):
                    for row in rows[turn % len(rows) :] + rows[: turn % len(rows)]:
                        row.run_slice(len(messages))
                for row in rows:
                    row.end_round()
        finally:
            for close in cleanup:
                close()
    results = [row.result() for row in rows]
    base = float(results[0]["median_us"])  # type: ignore[arg-type]
    for result in results:
        result["ratio"] = float(result["median_us"]) / base  # type: ignore[arg-type]
    return results


# --- memory ----------------------------------------------------------------------------------


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_node(servers: int) -> dict[str, float]:
    """Runs in its own process: ``servers`` distinct servers through ``Enforcer.process``."""
    from drossel.app.enforcer import ClientInfo

    enforcer = make_enforcer("memory", Path("."))
    client = ClientInfo(addr="192.0.2.10")
    gc.collect()
    before = rss_mib()
    started = time.perf_counter()
    for i in range(servers):
        build = BUILDS[i % len(BUILDS)]
        headers = [
            (
                "Received",
                f"from mbx ({i}) by ex{i:07d}.t{i % 97:02d}.example (10.0.0.1) with Microsoft "
                f"SMTP Server id {build}; Mon, 2 Mar 2026 10:00:00 +0000",
            ),
            ("Subject", "hello"),
        ]
        enforcer.process(headers, client, NOW)
        if i % 10_000 == 9_999:
            enforcer.flush()  # as the daemon's flusher does: queued counters are written
    enforcer.flush()
    elapsed = time.perf_counter() - started
    gc.collect()
    cached = sum(1 for r in enforcer.cache.records.values() if r is not None)
    assert cached == servers, f"{cached} cached records for {servers} servers"
    return {
        "servers": servers,
        "rss_before_mib": before,
        "rss_mib": rss_mib(),
        "cache_mib": deep_size(enforcer.cache.records) / 2**20,
        "store_mib": deep_size(enforcer.store) / 2**20,
        "seconds": elapsed,
    }


def deep_size(root: object) -> int:
    """Bytes of every object reachable from ``root`` (each counted once), not following
    classes, modules and functions: what holding ``root`` costs beyond the imported code."""
    import types

    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif not isinstance(obj, (str, bytes, int, float, datetime, timedelta)):
            for name in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, name):
                    stack.append(getattr(obj, name))
            if hasattr(obj, "__dict__"):
                stack.append(obj.__dict__)
    return total


def memory(servers: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--memory-node", str(servers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# --- memory of a real milter process ---------------------------------------------------------


def _packet(command: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload) + 1) + command + payload


#: Postfix 3 (protocol 6) offering every action and every step, as in the milter tests
OPTNEG = _packet(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))


def milter_message(i: int, build: str) -> bytes:
    """One message as Postfix hands it to a milter: MAIL-stage macros, MAIL, RCPT, the
    headers (a ``Received:`` line of server ``i`` and a subject), end of headers and end of
    message (drossel adds its header at the end of the message by default)."""
    from scale import fqdn

    received = (
        f"from mbx{i % 5}.t{i % 97:02d}.example (10.0.0.{i % 200}) by {fqdn(i)} (10.0.0.1) "
        f"with Microsoft SMTP Server id {build}; Mon, 2 Mar 2026 10:00:{i % 60:02d} +0000"
    )
    return b"".join(
        [
            _packet(b"D", b"Mi\x00Q%07d\x00{client_addr}\x00192.0.2.10\x00" % i),
            _packet(b"M", b"<alerts@t.example>\x00"),
            _packet(b"R", b"<ops@receiver.example>\x00"),
            _packet(b"L", b"Received\x00" + received.encode() + b"\x00"),
            _packet(b"L", b"Subject\x00hello\x00"),
            _packet(b"N"),
            _packet(b"E"),
        ]
    )


class MilterClient:
    """One MTA connection to the milter: negotiates, then sends messages and waits for each
    one's final answer (accept, tempfail or reject)."""

    def __init__(self, port: int) -> None:
        from drossel.milter.framing import PacketDecoder

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = PacketDecoder()
        self.sock.sendall(OPTNEG)
        while not any(p.command == b"O" for p in self._receive()):
            pass

    def _receive(self) -> list:  # type: ignore[type-arg]
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the milter closed the connection")
        return self.decoder.feed(data)

    def send(self, messages: list[bytes]) -> None:
        self.sock.sendall(b"".join(messages))
        left = len(messages)
        while left > 0:
            left -= sum(1 for p in self._receive() if p.command in (b"a", b"t", b"r"))

    def close(self) -> None:
        self.sock.close()


def start_milter(
    tmp: Path, db_url: str, max_connections: int = 512
) -> tuple[subprocess.Popen[bytes], int]:
    """``drossel milter`` with its defaults but the state, journal and address given here."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = tmp / "drossel.toml"
    config.write_text(
        f'[storage]\nurl = "{db_url}"\njournal = "{tmp / "journal.jsonl"}"\n'
        f'[milter]\nlisten = "inet:127.0.0.1:{port}"\nmax_connections = {max_connections}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    log = (tmp / "milter.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "drossel.cli.main", "milter", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp,
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError((tmp / "milter.log").read_text()[-2000:])
        try:
            MilterClient(port).close()  # it negotiates: the milter is serving
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("drossel milter did not start") from None
            time.sleep(0.2)
    return proc, port


def stop_milter(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def settle_rss(pid: int, seconds: float = 3.0) -> float:
    """RSS once the process stopped moving (its flusher runs every second)."""
    time.sleep(seconds)
    return rss_mib(pid)


def milter_servers(servers: int, connections: int = 4) -> dict[str, float]:
    """A real milter with ``servers`` servers in its decision cache (see the docstring)."""
    from scale import BUILD, fill

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        db = tmp / "state.db"
        fill(f"sqlite:///{db}", servers)
        proc, port = start_milter(tmp, f"sqlite:///{db}")
        try:
            before = settle_rss(proc.pid)
            started = time.perf_counter()

            def work(part: int) -> None:
                client = MilterClient(port)
                batch: list[bytes] = []
                for i in range(part, servers, connections):
                    batch.append(milter_message(i, BUILD))
                    if len(batch) == 100:
                        client.send(batch)
                        batch = []
                if batch:
                    client.send(batch)
                client.close()

            threads = [threading.Thread(target=work, args=(k,)) for k in range(connections)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
            answered = rss_mib(proc.pid)
            # wait for the flusher: every server's last-seen time written
            deadline = time.monotonic() + 1800
            written = 0
            while time.monotonic() < deadline and proc.poll() is None:
                with sqlite3.connect(db, timeout=30) as conn:
                    written = conn.execute(
                        "SELECT count(*) FROM servers WHERE last_seen > first_detected"
                    ).fetchone()[0]
                if written >= servers:
                    break
                time.sleep(2)
            flushed_after = time.perf_counter() - started
            flushed = settle_rss(proc.pid)
            assert proc.poll() is None, (tmp / "milter.log").read_text()[-2000:]
        finally:
            stop_milter(proc)
    return {
        "servers": servers,
        "rss_before_mib": before,
        "rss_answered_mib": answered,
        "rss_mib": flushed,
        "written": written,
        "seconds": elapsed,
        "flushed_seconds": flushed_after,
    }


def milter_connections(count: int) -> dict[str, float]:
    """A real milter holding ``count`` idle, negotiated MTA connections (see the docstring)."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        proc, port = start_milter(tmp, f"sqlite:///{tmp / 'state.db'}", count + 64)
        clients: list[MilterClient] = []
        try:
            # one message first, so the engine, its catalog and a session are warm
            warm = MilterClient(port)
            warm.send([milter_message(0, "15.2.1748.39")])
            warm.close()
            before = settle_rss(proc.pid)
            for _ in range(count):
                clients.append(MilterClient(port))
            idle = settle_rss(proc.pid)
            # still serving: one more message on a new connection gets its answer
            probe = MilterClient(port)
            probe.send([milter_message(1, "15.2.1748.39")])
            probe.close()
            assert proc.poll() is None, (tmp / "milter.log").read_text()[-2000:]
        finally:
            for client in clients:
                client.close()
            stop_milter(proc)
    return {
        "connections": count,
        "rss_before_mib": before,
        "rss_mib": idle,
        "per_connection_kib": (idle - before) * 1024 / count,
    }


# --- output ----------------------------------------------------------------------------------


def table(rows: Sequence[dict[str, object]]) -> str:
    out = [
        "| row | median µs | p99 µs | × HeaderParser (median) | round-median spread µs |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['row']} | {r['median_us']:.1f} | {r['p99_us']:.1f} | {r['ratio']:.2f} | "
            f"{r['round_median_spread_us']:.1f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sets", type=int, default=200, help="distinct header sets / servers")
    parser.add_argument(
        "--variants", type=int, default=1, help="warm-up messages per server (own ids each)"
    )
    parser.add_argument("--memory", type=int, default=0, help="servers for the memory rows")
    parser.add_argument(
        "--connections", type=int, default=0, help="idle connections for the milter memory row"
    )
    parser.add_argument(
        "--no-engine-memory",
        action="store_true",
        help="skip the in-process MemoryStore row of --memory",
    )
    parser.add_argument("--no-decision", action="store_true", help="only the memory rows")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory-node", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/scale.py
    if args.memory_node:
        print(json.dumps(memory_node(args.memory_node)))
        return
    results: dict[str, object] = {}
    if not args.no_decision:
        rows = measure(args.iterations, args.rounds, args.sets, args.variants)
        results["decision"] = rows
        if not args.json:
            print(
                f"decision: {args.rounds} rounds x {args.iterations} messages, "
                f"{args.sets} servers x {args.variants} messages each "
                "(2-8 Received lines; own ids and times per message)"
            )
            print(table(rows))
    lines = []
    if args.memory:
        cached = milter_servers(args.memory)
        results["milter_servers"] = cached
        lines.append(
            f"| milter, {cached['servers']:,} servers cached | {cached['rss_mib']:.1f} | "
            f"{cached['rss_before_mib']:.1f} | {cached['rss_answered_mib']:.1f} MiB with the "
            f"last-seen times and counters still queued; {cached['seconds']:.0f} s to send, "
            f"{cached['flushed_seconds']:.0f} s until written |"
        )
    if args.connections:
        idle = milter_connections(args.connections)
        results["milter_connections"] = idle
        lines.append(
            f"| milter, {idle['connections']:,} idle connections | {idle['rss_mib']:.1f} | "
            f"{idle['rss_before_mib']:.1f} | {idle['per_connection_kib']:.1f} KiB per "
            f"connection |"
        )
    if args.memory and not args.no_engine_memory:
        mem = memory(args.memory)
        results["memory"] = mem
        lines.append(
            f"| engine, MemoryStore, {mem['servers']:,} servers | {mem['rss_mib']:.1f} | "
            f"{mem['rss_before_mib']:.1f} | cache records {mem['cache_mib']:.1f} MiB, "
            f"MemoryStore tables {mem['store_mib']:.1f} MiB; {mem['seconds']:.1f} s |"
        )
    if lines and not args.json:
        print("memory: resident set (VmRSS) of the process, MiB (goal <= 150)")
        print("| row | RSS | RSS before | notes |")
        print("|---|---:|---:|---|")
        print("\n".join(lines))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
