"""Scale benchmark (not a test): decision latency and node memory with 1,000 vs N tracked
servers, on SQLite and PostgreSQL.

For each backend and size a fresh database is filled with server rows by bulk SQL (COPY on
PostgreSQL), then a *separate node process* starts an :class:`~drossel.app.enforcer.Enforcer` on it
(records load lazily per server, so start-up does not read the table), warms its cache with a
working set of known servers (one database read each), and times ``Enforcer.process`` on a
random mix of them.  Reported per run: start-up time, cold first-message latency (one indexed
read), warm p50/p99 per message, node RSS; and per backend the p99 ratio large/small
(target <= 1.2: the steady-state path does not touch the database).

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


def node(url: str, n: int, known: int, messages: int, seed: int) -> dict[str, float]:
    """Runs in its own process: start an engine, warm it, time the per-message path."""
    from drossel.app.enforcer import ClientInfo, Enforcer
    from drossel.config import Config
    from drossel.core.detection import parse_headers
    from drossel.runtime import open_store

    rss_start = rss_mib()
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
    order = [rng.choice(working_set) for _ in range(messages)]
    warm = []
    for i in order:
        t = time.perf_counter()
        enforcer.process(messages_by_server[i], client)
        warm.append(time.perf_counter() - t)
    enforcer.store.dispose()
    q = statistics.quantiles(warm, n=100)
    return {
        "startup_ms": startup * 1000,
        "cold_p50_us": statistics.median(cold) * 1e6,
        "warm_p50_us": q[49] * 1e6,
        "warm_p99_us": q[98] * 1e6,
        "rss_start_mib": rss_start,
        "rss_mib": rss_mib(),
    }


# --- driver ---------------------------------------------------------------------------------


def run(backend: str, n: int, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp / f'scale-{n}.db'}"
        cleanup = None
    else:
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
        runs = []
        for seed in range(args.repeat):  # separate node processes; medians reported
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--node",
                    url,
                    "--size",
                    str(n),
                    "--known",
                    str(args.known),
                    "--messages",
                    str(args.messages),
                    "--seed",
                    str(seed),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(result.stdout))
        data = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        data["fill_s"] = fill_s
        return data
    finally:
        if cleanup is not None:
            cleanup()


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
    args = parser.parse_args()
    if args.node:
        print(json.dumps(node(args.node, args.size, args.known, args.messages, args.seed)))
        return
    print(
        f"{'backend':9} {'servers':>9} {'fill s':>7} {'start ms':>8} {'cold p50 us':>11} "
        f"{'p50 us':>7} {'p99 us':>7} {'RSS MiB':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            results = {}
            for n in (args.small, args.servers):
                r = run(backend, n, args, Path(tmp))
                results[n] = r
                print(
                    f"{backend:9} {n:>9,} {r['fill_s']:>7.1f} {r['startup_ms']:>8.0f} "
                    f"{r['cold_p50_us']:>11.0f} {r['warm_p50_us']:>7.1f} "
                    f"{r['warm_p99_us']:>7.1f} {r['rss_mib']:>8.1f}",
                    flush=True,
                )
            ratio = results[args.servers]["warm_p99_us"] / results[args.small]["warm_p99_us"]
            rss = results[args.servers]["rss_mib"] - results[args.small]["rss_mib"]
            print(
                f"{backend:9} p99 ratio {args.servers:,}/{args.small:,} = {ratio:.2f} "
                f"(target <= 1.2); RSS difference {rss:+.1f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
