"""Scale benchmark (not a test): decision latency and node memory with 1,000 vs N tracked
servers, on SQLite and PostgreSQL.

For each backend and size a fresh database is filled with server rows by bulk SQL (COPY on
PostgreSQL), then a *separate node process* starts an :class:`~drossel.app.enforcer.Enforcer` on it
(records load lazily per server, so start-up does not read the table), warms its cache with a
working set of known servers (one database read each), and times ``Enforcer.process`` on a
random mix of them.  Reported per size (medians of its node runs): start-up time, cold
first-message latency (one indexed read), warm p50/p99 per message, node RSS; and per backend
the p99 ratio large/small (target <= 1.2: the steady-state path does not touch the database).

Both databases are filled first (PostgreSQL's then vacuumed, so autovacuum does not wake
during a timed run); then the node runs of the two sizes take turns (small, large; large,
small; ...), and the ratio is the median of the pairs' own ratios, each pair seconds apart: a
2-core machine that is slower for a minute (a neighbour, a background job) slows both sides of
a pair, where the two sizes run one after the other would put the slow minute on one side.
The ratio of the two sizes' medians is printed too.

    python bench/scale.py                       # 1,000 vs 1,000,000, both backends
    python bench/scale.py --servers 100000      # scale down
    python bench/scale.py --backends sqlite --messages 50000

PostgreSQL: ``$DROSSEL_TEST_PG`` (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
is used to create and drop a throw-away database per run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ADMIN_URL = os.environ.get(
    "DROSSEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
BUILD = "15.1.2507.6"


def fqdn(i: int) -> str:
    return f"ex{i:07d}.t{i % 97:02d}.example"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- filling a database ---------------------------------------------------------------------


def fill(url: str, n: int) -> float:
    from drossel.storage.migrate import upgrade
    from drossel.storage.store import Store

    started = time.perf_counter()
    store = Store(url)
    upgrade(store.engine)
    first = (NOW - timedelta(days=10)).replace(tzinfo=None)
    created = NOW.replace(tzinfo=None)
    if store.is_sqlite:
        raw = store.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("BEGIN")
            cur.execute(
                "INSERT INTO tenants (id, name, display_name, created_at) VALUES (1, 'default', "
                "'default', ?)",
                (created,),
            )
            rows = (
                (1, fqdn(i), "Exchange 2016", BUILD, "unsupported", first, first, first, 0, "")
                for i in range(n)
            )
            cur.executemany(
                "INSERT INTO servers (tenant_id, fqdn, product, build, status, first_detected, "
                "last_seen, clock_start, clock_credit_seconds, evidence) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            cur.execute("COMMIT")
        finally:
            raw.close()
    else:
        import psycopg

        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            conn.execute(
                "INSERT INTO tenants (id, name, display_name, created_at) "
                "VALUES (1, 'default', 'default', %s)",
                (created,),
            )
            with conn.cursor().copy(
                "COPY servers (tenant_id, fqdn, product, build, status, first_detected, "
                "last_seen, clock_start, clock_credit_seconds, evidence) FROM STDIN"
            ) as copy:
                for i in range(n):
                    copy.write_row(
                        (
                            1,
                            fqdn(i),
                            "Exchange 2016",
                            BUILD,
                            "unsupported",
                            first,
                            first,
                            first,
                            0,
                            "",
                        )
                    )
            conn.execute("SELECT setval(pg_get_serial_sequence('tenants', 'id'), 1)")
            conn.execute("ANALYZE servers")
    store.dispose()
    return time.perf_counter() - started


# --- one node -------------------------------------------------------------------------------


@dataclass
class Node:
    """An engine on one database, warmed up: every server of its working set read once."""

    enforcer: Any
    client: Any  # the ClientInfo every message comes from
    messages: dict[int, Any]  # server number -> its message's headers
    working_set: list[int]
    startup_s: float
    cold_s: list[float]


def warm_node(url: str, n: int, known: int, seed: int) -> Node:
    from drossel.app.enforcer import ClientInfo, Enforcer
    from drossel.config import Config
    from drossel.core.detection import parse_headers
    from drossel.runtime import open_store

    t = time.perf_counter()
    enforcer = Enforcer(open_store(url), Config(), lambda: NOW, auto_refresh=False)
    startup = time.perf_counter() - t
    rng = random.Random(seed)
    working_set = rng.sample(range(n), min(known, n))
    messages_by_server = {
        i: parse_headers(
            f"Received: from mbx (10.0.0.2) by {fqdn(i)} (10.0.0.1) with Microsoft SMTP Server "
            f"id {BUILD}; Mon, 2 Mar 2026 10:00:00 +0000\n"
        )
        for i in working_set
    }
    client = ClientInfo(addr="192.0.2.10", name="relay.example", helo="relay.example")
    cold = []
    for i in working_set:  # first message per server: one indexed read of its row
        t = time.perf_counter()
        outcome = enforcer.process(messages_by_server[i], client)
        cold.append(time.perf_counter() - t)
        assert outcome.verdict.server is not None
    assert len(enforcer.cache.records) == len(working_set)
    return Node(enforcer, client, messages_by_server, working_set, startup, cold)


def node(url: str, n: int, known: int, messages: int, seed: int) -> dict[str, float]:
    """Runs in its own process: start an engine, warm it, time the per-message path."""
    rss_start = rss_mib()
    warmed = warm_node(url, n, known, seed)
    rng = random.Random(seed + 1)
    client = warmed.client
    process, by_server = warmed.enforcer.process, warmed.messages
    order = [rng.choice(warmed.working_set) for _ in range(messages)]
    warm = []
    for i in order:
        t = time.perf_counter()
        process(by_server[i], client)
        warm.append(time.perf_counter() - t)
    warmed.enforcer.store.dispose()
    q = statistics.quantiles(warm, n=100)
    return {
        "startup_ms": warmed.startup_s * 1000,
        "cold_p50_us": statistics.median(warmed.cold_s) * 1e6,
        "warm_p50_us": q[49] * 1e6,
        "warm_p99_us": q[98] * 1e6,
        "rss_start_mib": rss_start,
        "rss_mib": rss_mib(),
    }


def side_by_side(
    small: tuple[str, int], large: tuple[str, int], known: int, messages: int, seed: int
) -> dict[str, float]:
    """Runs in its own process: two engines, one on each database, warmed alike; then
    ``messages`` per engine, the two taking turns message by message (in alternating order),
    so that whatever slows the machine for a moment slows both.  p50 and p99 of each."""
    nodes = [warm_node(url, n, known, seed) for url, n in (small, large)]
    client = nodes[0].client
    rng = random.Random(seed + 1)
    steps = [[rng.choice(node.working_set) for node in nodes] for _ in range(messages)]
    times: list[list[float]] = [[], []]
    calls = [(node.enforcer.process, node.messages) for node in nodes]
    clock = time.perf_counter
    for k, servers in enumerate(steps):
        for side in (0, 1) if k % 2 == 0 else (1, 0):
            process, by_server = calls[side]
            headers = by_server[servers[side]]
            t = clock()
            process(headers, client)
            times[side].append(clock() - t)
    for node in nodes:
        node.enforcer.store.dispose()
    result = {}
    for side, name in enumerate(("small", "large")):
        q = statistics.quantiles(times[side], n=100)
        result[f"{name}_p50_us"] = q[49] * 1e6
        result[f"{name}_p99_us"] = q[98] * 1e6
    return result


# --- driver ---------------------------------------------------------------------------------


def prepare(
    backend: str, n: int, tmp: Path, index: int = 0
) -> tuple[str, float, Callable[[], None] | None]:
    """A fresh database of ``backend`` filled with ``n`` servers: its URL, the fill time and
    what drops it (PostgreSQL) or ``None``."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'scale-{index}-{n}.db'}"
        return url, fill(url, n), None
    import psycopg

    name = f"drossel_scale_{uuid.uuid4().hex[:8]}"
    admin = ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    def cleanup() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    try:
        fill_s = fill(url, n)
        # vacuumed now, so autovacuum has no reason to wake for the bulk insert while a node
        # is being timed (it would take one of the two cores)
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) servers")
    except BaseException:
        cleanup()
        raise
    return url, fill_s, cleanup


def run_node(target: list[str], args: argparse.Namespace, seed: int) -> dict[str, float]:
    """One node process: ``["--node", URL, "--size", N]`` (:func:`node`) or
    ``["--pair", URL, N, URL, N]`` (:func:`side_by_side`)."""
    command = [
        sys.executable, __file__, *target, "--known", str(args.known),
        "--messages", str(args.messages), "--seed", str(seed),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout))


def run_pair(
    backend: str, sizes: tuple[int, int], args: argparse.Namespace, tmp: Path
) -> tuple[dict[int, dict[str, float]], list[dict[str, float]]]:
    """Both sizes of one backend: each size's own node runs (taking turns: small, large;
    large, small; ...) for start-up, cold reads and memory, and the side-by-side runs
    (:func:`side_by_side`) for the latency ratio.  The medians of each size's own runs, and
    the side-by-side results."""
    prepared: list[tuple[str, float, Callable[[], None] | None]] = []
    try:
        for index, n in enumerate(sizes):  # inside: a database made before a failure is dropped
            prepared.append(prepare(backend, n, tmp, index))
        runs: list[list[dict[str, float]]] = [[], []]
        pairs = []
        for seed in range(args.repeat):
            for side in (0, 1) if seed % 2 == 0 else (1, 0):
                target = ["--node", prepared[side][0], "--size", str(sizes[side])]
                runs[side].append(run_node(target, args, seed))
            target = ["--pair", prepared[0][0], str(sizes[0]), prepared[1][0], str(sizes[1])]
            pairs.append(run_node(target, args, seed))
    finally:
        for _url, _fill, cleanup in prepared:
            if cleanup is not None:
                cleanup()
    medians = {}
    for side, n in enumerate(sizes):
        medians[n] = {key: statistics.median(r[key] for r in runs[side]) for key in runs[side][0]}
        medians[n]["fill_s"] = prepared[side][1]
    return medians, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1_000_000, help="large size")
    parser.add_argument("--small", type=int, default=1_000, help="small size")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--known", type=int, default=1_000, help="working set of servers")
    parser.add_argument("--messages", type=int, default=50_000, help="timed messages per run")
    parser.add_argument("--repeat", type=int, default=3, help="node runs per size (median)")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pair", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        print(json.dumps(node(args.node, args.size, args.known, args.messages, args.seed)))
        return
    if args.pair:
        small = (args.pair[0], int(args.pair[1]))
        large = (args.pair[2], int(args.pair[3]))
        print(json.dumps(side_by_side(small, large, args.known, args.messages, args.seed)))
        return
    print(
        f"{'backend':9} {'servers':>9} {'fill s':>7} {'start ms':>8} {'cold p50 us':>11} "
        f"{'p50 us':>7} {'p99 us':>7} {'RSS MiB':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            sizes = (args.small, args.servers)
            results, pairs = run_pair(backend, sizes, args, Path(tmp))
            for n in sizes:
                r = results[n]
                print(
                    f"{backend:9} {n:>9,} {r['fill_s']:>7.1f} {r['startup_ms']:>8.0f} "
                    f"{r['cold_p50_us']:>11.0f} {r['warm_p50_us']:>7.1f} "
                    f"{r['warm_p99_us']:>7.1f} {r['rss_mib']:>8.1f}",
                    flush=True,
                )
            p99 = [p["large_p99_us"] / p["small_p99_us"] for p in pairs]
            p50 = [p["large_p50_us"] / p["small_p50_us"] for p in pairs]
            rss = results[args.servers]["rss_mib"] - results[args.small]["rss_mib"]
            side = {
                key: statistics.median(p[key] for p in pairs)
                for key in ("small_p50_us", "large_p50_us", "small_p99_us", "large_p99_us")
            }
            print(
                f"{backend:9} side by side: p50 {side['small_p50_us']:.1f} / "
                f"{side['large_p50_us']:.1f} us, p99 {side['small_p99_us']:.1f} / "
                f"{side['large_p99_us']:.1f} us",
                flush=True,
            )
            print(
                f"{backend:9} p99 ratio {args.servers:,}/{args.small:,} = "
                f"{statistics.median(p99):.2f} (target <= 1.2; side by side, median of "
                f"{len(p99)} runs {min(p99):.2f}-{max(p99):.2f}; p50 ratio "
                f"{statistics.median(p50):.2f}); RSS difference {rss:+.1f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
