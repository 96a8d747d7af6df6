"""Per-message decision benchmark (not a test): detect + assess + decide for a known server.

What one message costs on the shared per-message path, ``Enforcer.process``, in steady state:
the server was seen before (warm-up), so its record and assessment are in the decision cache
and no database is touched.  Header sets are realistic: two to eight ``Received:`` lines
(some folded, an on-premises Exchange hop among Postfix and hosted hops) mixed with the usual
other headers, as the milter hands them over (a list of ``(name, value)`` tuples, values still
folded).

Rows, each over ``--rounds`` rounds of ``--iterations`` messages (per-call times pooled,
median and p99 reported, and the median of the per-round medians as a spread check):

* ``memory``/``sqlite`` store, ``cache``: the steady state (the figure of issue 12);
* ``memory``/``sqlite`` store, ``no cache``: the cached record and assessment are dropped before
  every message, so each one reads the store and grades the build again (the cold path);
* ``memory, INFO log``: as ``memory, cache`` but with the ``drossel.decision`` logger at INFO
  writing to a null stream, as a daemon logs;
* ``detect only``: :func:`detect_in_headers` alone, on the same headers;
* reference ``HeaderParser``: :class:`email.parser.HeaderParser` parsing the same header block,
  measured in the same run; every other row is also given as a ratio of it.

``--memory N`` (default off here, on in ``bench/run_all.py``) also runs, in a separate process,
N distinct servers through ``Enforcer.process`` on a ``MemoryStore`` and prints that process's
resident memory (goal: <= 150 MiB for 100,000 servers).

    python bench/decision.py                          # 5 rounds x 20,000 messages
    python bench/decision.py --rounds 3 --iterations 5000 --json
    python bench/decision.py --memory 100000
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.parser import HeaderParser
from pathlib import Path

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
BUILDS = ("15.1.2507.6", "15.2.1544.4", "15.2.1748.39", "15.2.2562.53", "15.0.1497.2")
STAMP = "Mon, 2 Mar 2026 10:00:{:02d} +0000"

Headers = list[tuple[str, str]]


def header_set(i: int, received: int, rng: random.Random) -> Headers:
    """One message's headers: ``received`` Received lines (>= 2), top-most first."""
    server = f"ex{i:03d}.corp{i % 7}.example"
    build = BUILDS[i % len(BUILDS)]
    lines = [
        # our own MTA's hop (Postfix), folded as Postfix writes it
        f"from {server} ({server} [192.0.2.{i % 250 + 1}])\n\t(using TLSv1.3 with cipher "
        f"TLS_AES_256_GCM_SHA384 (256/256 bits))\n\tby mx1.receiver.example (Postfix) with ESMTPS "
        f"id 4Zx{i:05d}Q;\n\t{STAMP.format(i % 60)}",
        # the connecting on-premises Exchange server (transport hop)
        f"from mbx{i % 3}.corp{i % 7}.example (10.1.0.{i % 200}) by {server} (10.1.0.1) with "
        f"Microsoft SMTP Server\n (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) "
        f"id {build}; {STAMP.format(i % 60)}",
    ]
    extra = [
        f"from mbx{i % 3}.corp{i % 7}.example ([fe80::1%{i}]) by mbx{i % 3}.corp{i % 7}.example "
        f"([fe80::1%{i}]) with mapi id {build}; {STAMP.format(i % 60)}",
        f"from app{i}.corp{i % 7}.example (app{i}.corp{i % 7}.example [10.2.0.{i % 200}])\n\tby "
        f"relay.corp{i % 7}.example (Postfix) with ESMTP id 9A{i:04d};\n\t{STAMP.format(i % 60)}",
        f"from localhost (localhost [127.0.0.1]) by app{i}.corp{i % 7}.example (8.15.2/8.15.2) "
        f"with ESMTP id 1AB{i:04d}; {STAMP.format(i % 60)}",
        f"from scanner.corp{i % 7}.example (scanner [10.3.0.5]) by relay.corp{i % 7}.example "
        f"(Postfix) with ESMTPS id 77{i:04d}; {STAMP.format(i % 60)}",
        f"by 2002:a05:6000:1b0c:b0:39c:1f0a:4a1b with SMTP id\n\tabc{i}csp123456;\n\t"
        f"{STAMP.format(i % 60)}",
        f"from edge.corp{i % 7}.example (10.0.0.9) by mbx{i % 3}.corp{i % 7}.example "
        f"(10.1.0.2) with Microsoft SMTP Server (version=TLS1_2,\n cipher=TLS_ECDHE_RSA) "
        f"id {build}; {STAMP.format(i % 60)}",
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
        ("Date", STAMP.format(i % 60)),
        ("Message-ID", f"<{i:08x}.abc@mbx{i % 3}.corp{i % 7}.example>"),
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


def header_sets(count: int, seed: int = 1) -> list[Headers]:
    rng = random.Random(seed)
    return [header_set(i, 2 + i % 7, rng) for i in range(count)]


def block_of(headers: Headers) -> str:
    """The same headers as the text a parser would read (CRLF-free, folded as given)."""
    return "".join(f"{name}: {value}\n" for name, value in headers) + "\n"


# --- measuring -------------------------------------------------------------------------------


def timed(
    call: Callable[[int], object],
    prepare: Callable[[int], object] | None,
    n: int,
    iterations: int,
    rounds: int,
) -> dict[str, float]:
    """Per-call times in µs over ``rounds`` x ``iterations`` calls (item ``k % n``)."""
    pooled: list[float] = []
    round_medians: list[float] = []
    clock = time.perf_counter
    for _ in range(rounds):
        gc.collect()
        times = []
        for k in range(iterations):
            item = k % n
            if prepare is not None:
                prepare(item)
            t = clock()
            call(item)
            times.append(clock() - t)
        times = [x * 1e6 for x in times]
        round_medians.append(statistics.median(times))
        pooled.extend(times)
    q = statistics.quantiles(pooled, n=100)
    return {
        "median_us": statistics.median(pooled),
        "p99_us": q[98],
        "round_median_spread_us": max(round_medians) - min(round_medians),
    }


def make_enforcer(kind: str, tmp: Path):  # type: ignore[no-untyped-def]
    from drossel.app.enforcer import Enforcer
    from drossel.app.memory import MemoryStore
    from drossel.config import Config
    from drossel.runtime import open_store

    store = MemoryStore() if kind == "memory" else open_store(f"sqlite:///{tmp / 'bench.db'}")
    return Enforcer(store, Config(), lambda: NOW, auto_refresh=False)


def measure_store(
    kind: str, messages: list[Headers], iterations: int, rounds: int, tmp: Path
) -> list[dict[str, object]]:
    """The rows of one store: warm-up, then steady state, cold path (and, for the memory store,
    INFO logging and detection alone).  The clock advances 50 ms per message, as in a daemon:
    every message moves its server's ``last_seen``."""
    from drossel.app.enforcer import ClientInfo
    from drossel.core.detection import detect_in_headers

    n = len(messages)
    client = ClientInfo(addr="192.0.2.10", name="mx.corp.example", helo="mx.corp.example")
    enforcer = make_enforcer(kind, tmp)
    process = enforcer.process
    keys = []
    for headers in messages:  # warm-up: every server known and cached
        outcome = process(headers, client, NOW)
        assert outcome.detection.connecting is not None, "no server detected"
        keys.append((outcome.facts.tenant, outcome.detection.connecting.server))
    enforcer.flush()
    total = max(iterations, n) * rounds * 3
    nows = [NOW + timedelta(milliseconds=50 * k) for k in range(total)]
    step = iter(range(total))

    def steady(i: int) -> object:
        return process(messages[i], client, nows[next(step)])

    rows: list[dict[str, object]] = [
        {"row": f"{kind}, cache", **timed(steady, None, n, iterations, rounds)}
    ]
    cache = enforcer.cache

    def drop(i: int) -> None:
        cache.records.pop(keys[i], None)
        cache.assessments.clear()

    cold = timed(steady, drop, n, max(n, iterations // 10), rounds)
    rows.append({"row": f"{kind}, no cache", **cold})
    if kind == "memory":
        logger = logging.getLogger("drossel.decision")
        handler = logging.StreamHandler(io.StringIO())
        old_level, old_propagate = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

        def logged(i: int) -> object:
            if handler.stream.tell() > 1_000_000:
                handler.stream.seek(0)
                handler.stream.truncate()
            return steady(i)

        try:
            rows.append(
                {"row": "memory, cache, INFO log", **timed(logged, None, n, iterations, rounds)}
            )
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
        catalog, trusted = enforcer.catalog, enforcer.policy.trusted_hosts

        def detect_only(i: int) -> object:
            return detect_in_headers(messages[i], trusted, catalog=catalog)

        rows.append({"row": "detect only", **timed(detect_only, None, n, iterations, rounds)})
    enforcer.store.dispose()
    return rows


def measure(iterations: int, rounds: int, sets: int) -> list[dict[str, object]]:
    messages = header_sets(sets)
    blocks = [block_of(h) for h in messages]
    parser = HeaderParser()
    ref = timed(lambda i: parser.parsestr(blocks[i]), None, sets, iterations, rounds)
    rows: list[dict[str, object]] = [{"row": "reference: email HeaderParser", **ref}]
    with tempfile.TemporaryDirectory() as tmp_dir:
        for kind in ("memory", "sqlite"):
            rows += measure_store(kind, messages, iterations, rounds, Path(tmp_dir))
    base = ref["median_us"]
    for row in rows:
        row["ratio"] = float(row["median_us"]) / base  # type: ignore[arg-type]
    return rows


# --- memory ----------------------------------------------------------------------------------


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
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
    parser.add_argument("--memory", type=int, default=0, help="servers for the memory row")
    parser.add_argument("--no-decision", action="store_true", help="only the memory row")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory-node", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_node:
        print(json.dumps(memory_node(args.memory_node)))
        return
    results: dict[str, object] = {}
    if not args.no_decision:
        rows = measure(args.iterations, args.rounds, args.sets)
        results["decision"] = rows
        print(
            f"decision: {args.rounds} rounds x {args.iterations} messages, "
            f"{args.sets} header sets (2-8 Received lines)"
        )
        print(table(rows))
    if args.memory:
        mem = memory(args.memory)
        results["memory"] = mem
        print(
            f"memory: {mem['servers']:,} servers in the DecisionCache (MemoryStore): "
            f"RSS {mem['rss_mib']:.1f} MiB (before: {mem['rss_before_mib']:.1f} MiB; "
            f"cache records {mem['cache_mib']:.1f} MiB, MemoryStore tables "
            f"{mem['store_mib']:.1f} MiB; {mem['seconds']:.1f} s)"
        )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
