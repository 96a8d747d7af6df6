"""``drossel demo``: 100 days of enforcement in a few seconds, through the real gateway.

On a throw-away SQLite file (or, with ``db``, the given database, which then keeps the demo's
tenants, connectors and servers for ``drossel report`` and the web report) and loopback ports it
starts an aiosmtpd sink (the next hop) and the
real SMTP gateway in-process, then replays mail from a few fictional on-premises Exchange servers
through it with aiosmtplib while a demo clock moves over the days.  The Enforcer is the production
one with that clock; nothing in the mail path knows it is a demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from drossel.app.enforcer import Enforcer
from drossel.app.report import tenant_report
from drossel.config import Config, GatewayConfig
from drossel.core.build import Build
from drossel.core.schedule import midnight
from drossel.gateway.server import start_gateway
from drossel.runtime import build_enforcer

#: Send hours and minute pattern: a few messages per server and day, spread over the hour so the
#: throttle and block windows (at a per-server offset) are hit the way real traffic hits them.
SEND_HOURS = (8, 9, 10, 11, 13, 15)
MINUTE_STEP = 10


@dataclass(frozen=True)
class DemoServer:
    label: str
    tenant: str
    fqdn: str
    build: str
    source: str  # loopback address the server connects from (its connector's IP range)


SERVERS = (
    DemoServer(
        "Exchange 2013 CU23", "contoso", "EX2013.contoso.example", "15.0.1497.2", "127.0.0.2"
    ),
    DemoServer(
        "Exchange 2016 CU22 (far behind)",
        "contoso",
        "EX2016.contoso.example",
        "15.1.2375.7",
        "127.0.0.3",
    ),
    DemoServer(
        "Exchange SE (current)", "fabrikam", "MAIL.fabrikam.example", "15.2.2562.53", "127.0.0.4"
    ),
)


class DemoClock:
    """A clock the demo moves; the Enforcer calls it like the real one."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class DayRow:
    day: int
    date: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    stages: dict[str, int | None] = field(default_factory=dict)


class _Sink:
    """The next hop: accepts everything, like a mailbox server would."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received += 1
        return f"250 2.0.0 Ok: queued as {secrets.token_hex(5).upper()}"


def message(server: DemoServer, now: datetime, n: int) -> bytes:
    build = Build.parse(server.build)
    long_form = build.long if build else server.build
    stamp = format_datetime(now)
    domain = server.fqdn.split(".", 1)[1]
    lines = [
        f"Received: from {server.fqdn} (10.0.0.6) by {server.fqdn} (10.0.0.6) with Microsoft"
        " SMTP Server",
        " (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id",
        f" {server.build}; {stamp}",
        f"Received: from {server.fqdn} ([fe80::6]) by {server.fqdn} ([fe80::6%12]) with mapi id",
        f" {long_form}; {stamp}",
        f"From: Demo User <user{n}@{domain}>",
        "To: <someone@operator.example>",
        f"Subject: Demo message {n}",
        f"Date: {stamp}",
        f"Message-ID: <{secrets.token_hex(8)}@{server.fqdn}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "Quarterly figures attached.",
        "",
    ]
    return "\r\n".join(lines).encode()


def _can_bind(address: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


async def _send_day(
    server: DemoServer,
    gateway: tuple[str, int],
    clock: DemoClock,
    day_start: datetime,
    day: int,
    index: int,
    bind: bool,
    counter: list[int],
) -> dict[str, int]:
    counts = {"accepted": 0, "throttled": 0, "blocked": 0, "deferred": 0}
    client = aiosmtplib.SMTP(
        hostname=gateway[0],
        port=gateway[1],
        local_hostname=server.fqdn,
        source_address=(server.source, 0) if bind else None,
        start_tls=False,
        timeout=30,
    )
    await client.connect()
    try:
        for j, hour in enumerate(SEND_HOURS):
            minute = (day * 7 + j * MINUTE_STEP + index * 3) % 60
            clock.now = day_start + timedelta(hours=hour, minutes=minute)
            counter[0] += 1
            code = 250
            try:
                await client.sendmail(
                    f"user{counter[0]}@{server.fqdn.split('.', 1)[1]}",
                    ["someone@operator.example"],
                    message(server, clock.now, counter[0]),
                )
            except aiosmtplib.SMTPRecipientsRefused as exc:
                code = exc.recipients[0].code
            except aiosmtplib.SMTPResponseException as exc:
                code = exc.code
            if code != 250:
                with contextlib.suppress(aiosmtplib.SMTPException):
                    await client.rset()
            if code == 250:
                counts["accepted"] += 1
            elif code == 450:
                counts["throttled"] += 1
            elif code == 550:
                counts["blocked"] += 1
            else:
                counts["deferred"] += 1
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException):
            await client.quit()
    return counts


async def _run(
    enforcer: Enforcer, clock: DemoClock, start: datetime, days: int, bind: bool, progress: Any
) -> tuple[list[DayRow], int]:
    loop = asyncio.get_running_loop()
    sink = _Sink()
    sink_server = await loop.create_server(
        lambda: SMTP(sink, hostname="mailbox.operator.example", loop=loop), "127.0.0.1", 0
    )
    sink_port = int(sink_server.sockets[0].getsockname()[1])
    config = GatewayConfig(
        listen="127.0.0.1:0",
        relay=f"127.0.0.1:{sink_port}",
        hostname="gateway.operator.example",
        relay_tls="none",
        timeout=30,
        reverse_lookup=False,  # fictional servers on loopback: no DNS to ask
    )
    gateway = await start_gateway(enforcer, config)
    rows: list[DayRow] = []
    counter = [0]
    try:
        for day in range(days):
            day_start = start + timedelta(days=day)
            row = DayRow(day, day_start.date().isoformat())
            for index, server in enumerate(SERVERS):
                row.counts[server.fqdn] = await _send_day(
                    server,
                    (gateway.host, gateway.port),
                    clock,
                    day_start,
                    day,
                    index,
                    bind,
                    counter,
                )
            clock.now = day_start + timedelta(hours=18)
            await asyncio.to_thread(enforcer.flush)  # what the periodic flusher does
            stages = {
                r["server_fqdn"].lower(): r["stage"]
                for r in tenant_report(enforcer.store, enforcer.policy, enforcer.catalog, clock.now)
            }
            row.stages = {s.fqdn: stages.get(s.fqdn.lower()) for s in SERVERS}
            rows.append(row)
            if progress is not None:
                progress()
    finally:
        await gateway.close(grace=1.0)
        sink_server.close()
        await sink_server.wait_closed()
    return rows, sink.received


def _setup(enforcer: Enforcer, now: datetime, bind: bool) -> None:
    """Tenants and on-premises connectors for the demo servers; those a previous demo left in a
    kept database are reused."""
    if not bind:
        return
    store = enforcer.store
    tenants = {t.name for t in store.list_tenants()}
    for tenant, contact in (("contoso", "it@contoso.example"), ("fabrikam", "it@fabrikam.example")):
        if tenant not in tenants:
            store.add_tenant(tenant, [contact], "demo", now)
    connectors = {(c.tenant, c.name) for c in store.list_connectors()}
    for server in SERVERS:
        name = f"{server.fqdn.split('.')[0].lower()}-onprem"
        if (server.tenant, name) in connectors:
            continue
        store.add_connector(
            server.tenant,
            name,
            "OnPremises",
            [f"{server.source}/32"],
            None,
            "demo",
            now,
        )
    enforcer.refresh()


def run_demo(
    days: int = 100,
    *,
    start: datetime | None = None,
    config: Config | None = None,
    show: bool = True,
    directory: str | None = None,
    db: str | None = None,
) -> dict[str, Any]:
    """Run the demo; returns the summary (also printed with rich when ``show``).

    Without ``db`` the replay starts at ``start`` on a throw-away database.  With ``db`` it
    *ends* at ``start`` (default now) and its state stays there, so that ``drossel report`` or
    the web report opened right after shows the servers at the demo's final stages."""
    if not 1 <= days <= 3650:
        raise ValueError("--days must be between 1 and 3650")
    first = midnight((start or datetime.now(UTC)).date())
    if db:
        first -= timedelta(days=days)
    # one log line per decision would drown the table; warnings still show
    logger = logging.getLogger("drossel")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        return _run_demo(days, first, config, show, directory, db)
    finally:
        logger.setLevel(level)


def _run_demo(
    days: int,
    first: datetime,
    config: Config | None,
    show: bool,
    directory: str | None,
    db: str | None,
) -> dict[str, Any]:
    clock = DemoClock(first)
    bind = all(_can_bind(s.source) for s in SERVERS)
    with tempfile.TemporaryDirectory(prefix="drossel-demo-", dir=directory) as tmp:
        demo_config = Config(policy=(config or Config()).policy)
        enforcer = build_enforcer(demo_config, clock, db or f"sqlite:///{Path(tmp) / 'demo.db'}")
        try:
            _setup(enforcer, first, bind)
            rows, delivered = _execute(enforcer, clock, first, days, bind, show)
            report = tenant_report(enforcer.store, enforcer.policy, enforcer.catalog, clock.now)
        finally:
            enforcer.store.dispose()
    summary = _summary(rows, delivered, report, first, days)
    if show:
        _print(rows, summary)
    return summary


def _execute(
    enforcer: Enforcer, clock: DemoClock, first: datetime, days: int, bind: bool, show: bool
) -> tuple[list[DayRow], int]:
    if not show:
        return asyncio.run(_run(enforcer, clock, first, days, bind, None))
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("replaying mail through the gateway", total=days)
        return asyncio.run(_run(enforcer, clock, first, days, bind, lambda: progress.advance(task)))


def _summary(
    rows: list[DayRow], delivered: int, report: list[dict[str, Any]], first: datetime, days: int
) -> dict[str, Any]:
    servers = []
    for server in SERVERS:
        totals = {"accepted": 0, "throttled": 0, "blocked": 0, "deferred": 0}
        first_refused: int | None = None
        for row in rows:
            counts = row.counts[server.fqdn]
            for key in totals:
                totals[key] += counts[key]
            if first_refused is None and (counts["throttled"] or counts["blocked"]):
                first_refused = row.day
        servers.append(
            {
                "label": server.label,
                "tenant": server.tenant,
                "server": server.fqdn,
                "build": server.build,
                "sent": sum(totals.values()),
                **totals,
                "first_refused_day": first_refused,
                "final_stage": rows[-1].stages.get(server.fqdn) if rows else None,
                "days": [
                    {"day": r.day, **r.counts[server.fqdn], "stage": r.stages.get(server.fqdn)}
                    for r in rows
                ],
            }
        )
    return {
        "start": first.isoformat(),
        "days": days,
        "delivered_to_next_hop": delivered,
        "servers": servers,
        "report": report,
    }


def _print(rows: list[DayRow], summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="What each server experienced (accepted / throttled 450 / blocked 550)")
    table.add_column("day", justify="right")
    table.add_column("date")
    for server in SERVERS:
        table.add_column(f"{server.fqdn}\n{server.label}", justify="center")
    for row in rows:
        cells = []
        for server in SERVERS:
            c = row.counts[server.fqdn]
            stage = row.stages.get(server.fqdn)
            text = f"{c['accepted']}/{c['throttled']}/{c['blocked']}"
            if stage:
                text += f"  stage {stage}"
            style = "red" if c["blocked"] else "yellow" if c["throttled"] else "green"
            cells.append(f"[{style}]{text}[/{style}]")
        table.add_row(str(row.day), row.date, *cells)
    console.print(table)

    totals = Table(title="Totals")
    for name in ("server", "build", "sent", "accepted", "throttled", "blocked", "first refused"):
        totals.add_column(name)
    for s in summary["servers"]:
        totals.add_row(
            s["server"],
            s["build"],
            str(s["sent"]),
            str(s["accepted"]),
            str(s["throttled"]),
            str(s["blocked"]),
            "never" if s["first_refused_day"] is None else f"day {s['first_refused_day']}",
        )
    console.print(totals)

    report = Table(title="drossel report (end of demo)")
    for name in ("tenant", "server", "update", "status", "stage", "thr/blk min/h", "install"):
        report.add_column(name)
    for r in summary["report"]:
        report.add_row(
            r["tenant"],
            r["server_fqdn"],
            r["update_name"] or r["build"],
            r["status"],
            str(r["stage"] or "-"),
            f"{r['throttle_minutes']}/{r['block_minutes']}",
            "; ".join(r["recommended_builds"][:2]),
        )
    console.print(report)
    console.print(
        f"{summary['delivered_to_next_hop']} messages reached the next hop; throttled mail is "
        "retried by the sending server, blocked mail bounces to its author."
    )
