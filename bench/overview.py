"""Operator overview benchmark (not a test): one page of the overview of N servers on SQLite,
against a plain ``SELECT count(*) FROM servers`` on the same database as the reference.

A fresh SQLite database is filled by bulk SQL with N servers (default 100,000) in 40 tenants,
of assorted builds, products, evidence and clocks, and ten days of counters for a fifth of
them.  Each query is run five times; the median is reported with its ratio to the reference.
The store-level query (``Store.query_servers``: the counting and paging statements) and the
whole application call (``report.overview``: plus the stage model and the report rows of the
page) are timed separately.

    python bench/overview.py                    # 100,000 servers
    python bench/overview.py --servers 20000
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
BUILDS = [
    ("15.1.2507.6", "Exchange 2016"),
    ("15.1.2507.55", "Exchange 2016"),
    ("15.2.1544.4", "Exchange 2019"),
    ("15.2.1748.36", "Exchange 2019"),
    ("15.2.2562.17", "Exchange SE"),
    ("15.0.1497.2", "Exchange 2013"),
    ("14.3.513.0", "Exchange 2010"),
]
KINDS = [("Default", "unverified"), ("Default", "verified"), ("OnPremises", "connector")]


def fill(url: str, n: int) -> float:
    from drossel.storage.migrate import upgrade
    from drossel.storage.store import Store

    started = time.perf_counter()
    store = Store(url)
    upgrade(store.engine)
    rng = random.Random(7)
    naive = NOW.replace(tzinfo=None)
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("BEGIN")
        cur.executemany(
            "INSERT INTO tenants (id, name, display_name, created_at) VALUES (?, ?, ?, ?)",
            [(i + 1, f"tenant{i:02d}" if i else "default", "", naive) for i in range(40)],
        )
        rows = []
        for i in range(n):
            build, product = rng.choice(BUILDS)
            connector_type, evidence = rng.choice(KINDS)
            first = naive - timedelta(days=rng.uniform(0, 200))
            clock = first if evidence != "unverified" and rng.random() < 0.8 else None
            last = min(first + timedelta(days=rng.uniform(0, 200)), naive)
            tenant = 1 if rng.random() < 0.6 else rng.randrange(2, 41)
            fqdn = f"mx{i:06d}.d{i % 977:03d}.example"
            row = (tenant, fqdn, product, build, "behind", first, last, clock, 0, "")
            rows.append((*row, connector_type, evidence, None, True))
        cur.executemany(
            "INSERT INTO servers (tenant_id, fqdn, product, build, status, first_detected, "
            "last_seen, clock_start, clock_credit_seconds, evidence, connector_type, "
            "evidence_kind, via, trusted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        counts = []
        for server_id in range(1, n + 1, 5):
            for back in range(10):
                day = (NOW - timedelta(days=back)).date()
                counts.append((server_id, day, "accept", rng.randrange(1, 500)))
                if rng.random() < 0.3:
                    counts.append((server_id, day, "throttle", rng.randrange(1, 50)))
        cur.executemany(
            "INSERT INTO daily_counts (server_id, day, action, count) VALUES (?, ?, ?, ?)",
            counts,
        )
        cur.execute("COMMIT")
        cur.execute("ANALYZE")
    finally:
        raw.close()
    store.dispose()
    return time.perf_counter() - started


def median_seconds(run: Callable[[], object], repeat: int = 5) -> float:
    run()  # warm the page cache and the statement cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=100_000)
    args = parser.parse_args(argv)

    from sqlalchemy import text

    from drossel.app.catalog_source import packaged_catalog
    from drossel.app.report import (
        OverviewRequest,
        grader,
        overview,
        server_filter,
        stage_history,
        tenant_counts,
    )
    from drossel.app.server_query import ServerQuery
    from drossel.core.policy import Policy
    from drossel.storage.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'overview.db'}"
        print(f"filling {args.servers:,} servers ... {fill(url, args.servers):.1f} s")
        store = Store(url)
        policy, catalog = Policy(), packaged_catalog()

        def count() -> object:
            with store.engine.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM servers")).scalar_one()

        reference = median_seconds(count)
        print(f"reference SELECT count(*) FROM servers: {reference * 1000:.1f} ms")
        cases = {
            "first page, by server": OverviewRequest(),
            "page 1000 of 50, by server": OverviewRequest(page=1000),
            "by last seen, newest first": OverviewRequest(sort="last_seen", descending=True),
            "by accepted today, most first": OverviewRequest(sort="accepted", descending=True),
            "product + evidence + search": OverviewRequest(
                product="Exchange 2016", evidence="verified", search="d01"
            ),
            "status behind, 200 per page": OverviewRequest(status="behind", per_page=200),
            "one tenant, by first seen": OverviewRequest(tenant="tenant07", sort="first_seen"),
            "stage 8 (model)": OverviewRequest(stage=8),
            "by stage, highest first (model)": OverviewRequest(sort="stage", descending=True),
        }
        print(f"{'query':38} {'store ms':>9} {'ratio':>6} {'overview ms':>12} {'ratio':>6}")
        grade = grader(catalog, policy, NOW.date())
        for name, request in cases.items():
            store_column = f"{'-':>9} {'-':>6}"
            if not request.needs_model:  # with a model, the store query is part of the whole
                query = ServerQuery(
                    filter=server_filter(store, policy, NOW, request, grade),
                    today=NOW.date(),
                    sort=request.sort,
                    descending=request.descending,
                    page=request.page,
                    per_page=request.per_page,
                )
                plain = median_seconds(lambda q=query: store.query_servers(q))  # type: ignore[misc]
                store_column = f"{plain * 1000:9.1f} {plain / reference:6.1f}"
            whole = median_seconds(
                lambda r=request: overview(store, policy, catalog, NOW, r)  # type: ignore[misc]
            )
            print(f"{name:38} {store_column} {whole * 1000:12.1f} {whole / reference:6.1f}")
        wanted = server_filter(store, policy, NOW, OverviewRequest(), grade)
        history = median_seconds(lambda: stage_history(store, policy, NOW, wanted))
        print(
            f"{'stage history, 90 days':38} {'-':>9} {'-':>6} {history * 1000:12.1f} "
            f"{history / reference:6.1f}"
        )
        tenants = median_seconds(lambda: tenant_counts(store, policy, catalog, NOW))
        print(
            f"{'tenant list counts (model)':38} {'-':>9} {'-':>6} {tenants * 1000:12.1f} "
            f"{tenants / reference:6.1f}"
        )
        store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
