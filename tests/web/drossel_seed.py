"""A seeded state for the web and notification tests: two tenants, servers at known stages,
tokens for every role, and 90 days of counters, all relative to a fixed clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from drossel.config import Config, NotifyConfig
from drossel.core.decision import ServerRecord
from drossel.storage.migrate import upgrade
from drossel.storage.store import Store
from drossel.storage.tokens import add_token

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
ACTOR = "test"
OPERATOR_TOKEN = "drs_operator_token_for_tests_000000000000"
CONTOSO_TOKEN = "drs_contoso_admin_token_for_tests_0000000"
FABRIKAM_TOKEN = "drs_fabrikam_admin_token_for_tests_000000"

EVIDENCE = (
    "Received: from EX01.contoso.local (10.0.0.6) by EX01.contoso.local (10.0.0.6) with "
    "Microsoft SMTP Server (version=TLS1_2) id 15.1.2507.16; Wed, 1 Jul 2026 10:00:00 +0000\n"
    "X-Test: <script>alert('evidence')</script>"
)


@dataclass
class Seeded:
    store: Store
    config: Config
    now: datetime

    def clock(self) -> datetime:
        return self.now


def server(
    tenant: str,
    fqdn: str,
    days_on_clock: float | None,
    build: str = "15.1.2507.16",
    product: str = "Exchange 2016",
    status: str = "unsupported",
    now: datetime = NOW,
    remediated_days_ago: float | None = None,
) -> ServerRecord:
    clock_start = now - timedelta(days=days_on_clock) if days_on_clock is not None else None
    first = clock_start or now - timedelta(days=3)
    return ServerRecord(
        tenant=tenant,
        server=fqdn,
        first_detected=first,
        last_seen=now - timedelta(hours=1),
        build=build,
        product=product,
        status=status,  # type: ignore[arg-type]
        clock_start=clock_start,
        remediated_at=(
            now - timedelta(days=remediated_days_ago) if remediated_days_ago is not None else None
        ),
    )


def seed(path: Path, smtp_port: int = 25, now: datetime = NOW) -> Seeded:
    store = Store(f"sqlite:///{path}")
    upgrade(store.engine)
    store.add_tenant(
        "contoso", ["admin@contoso.example", "ops@contoso.example"], ACTOR, now, "Contoso Ltd"
    )
    store.add_tenant("fabrikam", ["it@fabrikam.example"], ACTOR, now, "Fabrikam")
    store.add_connector(
        "contoso", "contoso-onprem", "OnPremises", ["192.0.2.0/24"], None, ACTOR, now
    )
    store.add_connector(
        "fabrikam", "fab-onprem", "OnPremises", ["198.51.100.0/24"], None, ACTOR, now
    )
    # contoso: one throttled server (stage 2), one just detected, one current
    store.save_server(server("contoso", "ex01.contoso.example", 35), EVIDENCE, now)
    store.save_server(server("contoso", "ex02.contoso.example", 2), "", now)
    store.save_server(
        server(
            "contoso",
            "ex03.contoso.example",
            None,
            build="15.2.2562.43",
            product="Exchange SE",
            status="current",
        ),
        "",
        now,
    )
    # fabrikam: a blocking server (stage 5)
    store.save_server(server("fabrikam", "mail.fabrikam.example", 63), "", now)
    counts: dict[tuple[str, str, date, str], int] = {}
    for offset in range(90):
        day = (now - timedelta(days=offset)).date()
        counts[("contoso", "ex01.contoso.example", day, "accept")] = 40 + offset % 7
        if offset < 5:
            counts[("contoso", "ex01.contoso.example", day, "throttle")] = 4
        counts[("fabrikam", "mail.fabrikam.example", day, "accept")] = 10
        if offset < 3:
            counts[("fabrikam", "mail.fabrikam.example", day, "block")] = 2
    store.add_counts(counts, now)
    add_token(store, OPERATOR_TOKEN, "operator", None, "ops-team", ACTOR, now)
    add_token(store, CONTOSO_TOKEN, "tenant-admin", "contoso", "contoso-admin", ACTOR, now)
    add_token(store, FABRIKAM_TOKEN, "tenant-admin", "fabrikam", "fabrikam-admin", ACTOR, now)
    config = Config(
        notify=NotifyConfig(
            enabled=True,
            relay=f"127.0.0.1:{smtp_port}",
            sender="drossel@mx.example",
            report_url="https://report.example/",
            interval_seconds=0.2,
        )
    )
    return Seeded(store, config, now)


TOKENS = {"operator": OPERATOR_TOKEN, "contoso": CONTOSO_TOKEN, "fabrikam": FABRIKAM_TOKEN}


def auth(who: str) -> dict[str, str]:
    """Bearer header for "operator", "contoso", "fabrikam"; none for anyone else."""
    return {"Authorization": f"Bearer {TOKENS[who]}"} if who in TOKENS else {}
