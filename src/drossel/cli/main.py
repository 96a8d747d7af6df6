"""``drossel``: the operator command line.

Every command accepts ``--config FILE``, ``--db URL`` and ``--at``/``--now`` (a fixed clock for
tests and demos).  Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from drossel import __version__
from drossel.app.catalog_source import install_catalog, load_catalog, packaged_catalog
from drossel.app.errors import AppError
from drossel.app.report import pause_json, releases_json
from drossel.app.services import Services
from drossel.cli.output import (
    CliError,
    add_format_flags,
    closed_pipe,
    output,
    table,
)
from drossel.config import Config, ConfigError, database_url, load_config, make_clock, parse_moment
from drossel.core.assessment import assess
from drossel.core.build import Build
from drossel.core.catalog import CatalogError
from drossel.core.decision import ConnectionFacts, Snapshot, decide, observe
from drossel.core.detection import detect
from drossel.core.policy import PolicyError
from drossel.core.schedule import EnforcementClock, Pause, midnight, stage_at
from drossel.redact import display_url, redact
from drossel.runtime import open_store, setup_logging
from drossel.storage.migrate import SchemaOutOfDate, upgrade
from drossel.storage.store import CONNECTOR_TYPES, Store

EXIT_ERROR = 2


class Context:
    """What a command needs: parsed options, configuration, clock, and (lazily) the store."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config: Config = load_config(getattr(args, "config", None))
        self.clock = make_clock(getattr(args, "at", None))
        self._store: Store | None = None

    @property
    def now(self) -> Any:
        return self.clock()

    @property
    def actor(self) -> str:
        try:
            return f"cli:{getpass.getuser()}"
        except (KeyError, OSError):
            return "cli"

    def services(self) -> Services:
        return Services(self.store(), self.config)

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(database_url(self.config, getattr(self.args, "db", None)))
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# --- detection, assessment, simulation, check -----------------------------------------------


def _read_input(name: str | None) -> bytes:
    if name in (None, "-"):
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror}") from None


def cmd_detect(ctx: Context) -> int:
    # The catalog rules out 15.x builds of CU lines no on-premises release ever had.
    detection = detect(
        _read_input(ctx.args.file), ctx.config.policy.trusted_hosts, catalog=_catalog(ctx)
    )
    if ctx.args.json:
        emit(detection.to_json())
        return 0
    table(
        [(h.by, h.from_, h.build, h.product, h.kind, h.cloud) for h in detection.hops],
        ["by", "from", "build", "product", "kind", "cloud"],
    )
    for label, server in (("connecting", detection.connecting), ("origin", detection.origin)):
        text = f"{server.server} {server.product} {server.build}" if server else "none"
        print(f"{label}: {text}")
    return 0


def _catalog(ctx: Context) -> Any:
    url = database_url(ctx.config, getattr(ctx.args, "db", None))
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return packaged_catalog()
    return load_catalog(ctx.store())


def cmd_assess(ctx: Context) -> int:
    build = Build.parse(ctx.args.build)
    if build is None:
        raise CliError(f"not an Exchange build number: {ctx.args.build!r} (e.g. 15.2.1748.39)")
    result = assess(build, ctx.now.date(), _catalog(ctx), ctx.config.policy)
    if ctx.args.json:
        emit(result.to_json())
    else:
        for key, value in result.to_json().items():
            print(f"{key}: {value}")
    return 0


def _pause_spec(text: str) -> tuple[int, int]:
    try:
        start, days = (int(x) for x in text.split(":"))
    except ValueError:
        raise CliError(f"--pause takes START_DAY:DAYS, got {text!r}") from None
    if start < 0 or days < 1:
        raise CliError(f"--pause {text}: START_DAY must be >= 0 and DAYS >= 1")
    return start, days


def cmd_simulate(ctx: Context) -> int:
    policy = ctx.config.policy
    if not 0 < ctx.args.days <= 3650:
        raise CliError("--days must be between 1 and 3650")
    origin = date(2000, 1, 3)
    pauses = [
        Pause(None, "sim", origin + timedelta(days=s), origin + timedelta(days=s + d))
        for s, d in map(_pause_spec, ctx.args.pause or [])
    ]
    clock = EnforcementClock(midnight(origin))
    rows = []
    for day in range(ctx.args.days):
        now = midnight(origin + timedelta(days=day))
        info = stage_at(policy, clock, now, pauses)
        paused = any(p.active_at(now) for p in pauses)
        rows.append(
            {
                "day": day,
                "stage": info.number,
                "throttle_minutes": 0 if paused else info.stage.throttle_minutes,
                "block_minutes": 0 if paused else info.stage.block_minutes,
                "paused": paused,
            }
        )
    if ctx.args.json:
        emit(rows)
    else:
        table(
            [tuple(r.values()) for r in rows],
            ["day", "stage", "throttle min/h", "block min/h", "paused"],
        )
    return 0


def _facts_for_evidence(facts: ConnectionFacts, evidence: str, server: str) -> ConnectionFacts:
    """Connection facts that give ``evidence`` for ``server`` (``drossel check --evidence``)."""
    if evidence == "connector":
        if facts.connector_type == "Default":
            raise CliError(
                "--connector-type Default is mail through no connector: "
                "give --evidence verified or --evidence unverified with it"
            )
        return facts
    if evidence == "verified":
        return replace(facts, connector_type="Default", client_name=server)
    return replace(facts, connector_type="Default", helo=server, client_addr="192.0.2.1")


def cmd_check(ctx: Context) -> int:
    """Whole pipeline once, without touching any state."""
    now = ctx.now
    first_seen = parse_moment(ctx.args.first_seen) if ctx.args.first_seen else now
    if first_seen > now:
        raise CliError("--first-seen must not be after --at")
    policy = ctx.config.policy
    catalog = _catalog(ctx)
    detection = detect(_read_input(ctx.args.file), policy.trusted_hosts, catalog=catalog)
    assessment = None
    snapshot = Snapshot()
    facts = ConnectionFacts(tenant=ctx.args.tenant, connector_type=ctx.args.connector_type)
    if detection.connecting is not None:
        server = detection.connecting
        facts = _facts_for_evidence(facts, ctx.args.evidence, server.server)
        assessment = assess(server.build, now.date(), catalog, policy)
        first = observe(None, facts, server, assessment, first_seen, policy)
        record = observe(first, facts, server, assessment, now, policy)
        snapshot = Snapshot(record=record)
    verdict = decide(detection, facts, snapshot, now, policy, catalog, assessment)
    result = {
        "detection": detection.to_json(),
        "assessment": assessment.to_json() if assessment else None,
        "verdict": verdict.to_json(),
    }
    if ctx.args.json:
        emit(result)
    else:
        v = verdict
        print(f"{v.action}: {v.code or ''} {v.enhanced_code or ''} {v.text or v.reason}".strip())
    return 0


# --- catalog ----------------------------------------------------------------------------------


def cmd_catalog(ctx: Context) -> int:
    catalog = _catalog(ctx)
    rows = releases_json(catalog, ctx.args.search, ctx.args.product)
    if ctx.args.json:
        emit({"version": catalog.version, "releases": rows})
    else:
        table([tuple(r.values()) for r in rows], list(rows[0]) if rows else ["none"])
        print(f"catalog {catalog.version}: {len(rows)} of {len(catalog.releases)} releases")
    return 0


def cmd_catalog_load(ctx: Context) -> int:
    try:
        text = Path(ctx.args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {ctx.args.file}: {exc.strerror}") from None
    catalog = install_catalog(ctx.store(), text, ctx.actor, ctx.now, force=ctx.args.force)
    print(f"installed catalog {catalog.version} ({len(catalog.releases)} releases)")
    return 0


# --- state ------------------------------------------------------------------------------------


#: The report columns of the default (80-column) table; ``--wide``/``--csv``/``--json`` show all.
REPORT_COLUMNS = (
    "tenant",
    "server_fqdn",
    "update_name",
    "status",
    "stage",
    "throttle_minutes",
    "block_minutes",
    "next_stage_start",
)


def cmd_report(ctx: Context) -> int:
    from drossel.app.report import pause_budget, tenant_report

    store = ctx.store()
    rows = tenant_report(
        store,
        ctx.config.policy,
        load_catalog(store),
        ctx.now,
        tenant=ctx.args.tenant,
        include_inactive=ctx.args.all,
    )
    output(rows, ctx.args, REPORT_COLUMNS)
    if ctx.args.tenant and not (ctx.args.json or ctx.args.csv):
        budget = pause_budget(store, ctx.config.policy, ctx.args.tenant, ctx.now)
        print(f"pause budget {budget.year}: {budget.used} of {budget.budget} days used")
    return 0


def cmd_tenant_add(ctx: Context) -> int:
    tenant = ctx.services().add_tenant(
        ctx.args.name, ctx.args.contact or [], ctx.actor, ctx.now, ctx.args.display_name or ""
    )
    print(f"tenant {tenant.name} added")
    return 0


def cmd_tenant_list(ctx: Context) -> int:
    tenants = ctx.store().list_tenants()
    if ctx.args.json:
        emit([{"name": t.name, "contacts": list(t.contacts)} for t in tenants])
    else:
        table([(t.name, ", ".join(t.contacts)) for t in tenants], ["tenant", "contacts"])
    return 0


def cmd_connector_add(ctx: Context) -> int:
    connector = ctx.services().add_connector(
        ctx.args.tenant,
        ctx.args.name,
        ctx.args.type,
        ctx.args.ip or [],
        ctx.args.tls_name,
        ctx.actor,
        ctx.now,
    )
    print(f"connector {connector.name} added to {connector.tenant}")
    return 0


def cmd_connector_list(ctx: Context) -> int:
    rows = [
        {
            "tenant": c.tenant,
            "name": c.name,
            "type": c.type,
            "ip_ranges": list(c.ip_ranges),
            "tls_name": c.tls_name,
        }
        for c in ctx.store().list_connectors()
    ]
    if ctx.args.json:
        emit(rows)
    else:
        table(
            [
                (r["tenant"], r["name"], r["type"], ", ".join(r["ip_ranges"] or ()), r["tls_name"])
                for r in rows
            ],
            ["tenant", "name", "type", "ip ranges", "tls name"],
        )
    return 0


def cmd_pause_add(ctx: Context) -> int:
    start = date.fromisoformat(ctx.args.start) if ctx.args.start else ctx.now.date()
    pause = ctx.services().add_pause(
        ctx.args.tenant, start, ctx.args.days, ctx.args.server or [], ctx.actor, ctx.now
    )
    if ctx.args.json:
        emit(pause_json(pause, ctx.now))
    else:
        print(f"pause {pause.id} for {pause.tenant}: {pause.start} until {pause.end}")
    return 0


def cmd_pause_list(ctx: Context) -> int:
    pauses = [pause_json(p, ctx.now) for p in ctx.store().list_pauses(ctx.args.tenant)]
    if ctx.args.json:
        emit(pauses)
    else:
        columns = ["id", "tenant", "start", "end", "charged_days", "servers", "state"]
        table([tuple(str(p[c]) for c in columns) for p in pauses], columns)
    return 0


def cmd_pause_end(ctx: Context) -> int:
    pause = ctx.services().end_pause(ctx.args.id, ctx.actor, ctx.now)
    print(
        f"pause {pause.id} ended; it now runs {pause.start} until {pause.end} "
        f"({pause.days} days charged)"
    )
    return 0


def cmd_pause_extend(ctx: Context) -> int:
    pause = ctx.services().extend_pause(ctx.args.id, ctx.args.days, ctx.actor, ctx.now)
    if ctx.args.json:
        emit(pause_json(pause, ctx.now))
    else:
        print(f"pause {pause.id} now runs {pause.start} until {pause.end}")
    return 0


def cmd_override_add(ctx: Context) -> int:
    expires = parse_moment(ctx.args.expires) if ctx.args.expires else None
    override = ctx.services().add_override(
        ctx.args.tenant, ctx.args.server, ctx.args.reason, expires, ctx.actor, ctx.now
    )
    print(f"override {override.id} added")
    return 0


def cmd_override_list(ctx: Context) -> int:
    rows = [
        {
            "id": o.id,
            "tenant": o.tenant,
            "server": o.server,
            "reason": o.reason,
            "expires": o.expires.isoformat() if o.expires else None,
        }
        for o in ctx.store().list_overrides(ctx.now)
    ]
    if ctx.args.json:
        emit(rows)
    else:
        table([tuple(r.values()) for r in rows], list(rows[0]) if rows else ["none"])
    return 0


def cmd_override_remove(ctx: Context) -> int:
    ctx.services().remove_override(ctx.args.id, ctx.actor, ctx.now)
    print(f"override {ctx.args.id} removed")
    return 0


def cmd_db_upgrade(ctx: Context) -> int:
    url = database_url(ctx.config, ctx.args.db)
    store = Store(url)
    try:
        upgrade(store.engine)
    finally:
        store.dispose()
    print(f"database schema is up to date ({display_url(url)})")
    return 0


def cmd_audit(ctx: Context) -> int:
    rows = [
        {
            "at": e.at.isoformat(),
            "actor": e.actor,
            "tenant": e.tenant,
            "action": e.action,
            "detail": e.detail,
        }
        for e in ctx.store().list_audit(ctx.args.tenant)
    ]
    output(rows, ctx.args, ["at", "actor", "tenant", "action", "detail"])
    return 0


# --- parser -----------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    parser.add_argument("--config", help="configuration file (TOML); default $DROSSEL_CONFIG")
    parser.add_argument("--db", help="database URL; default $DROSSEL_DB or sqlite:///drossel.db")
    parser.add_argument(
        "--at",
        "--now",
        dest="at",
        help="pretend it is this ISO 8601 time (tests and demos)",
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


Handler = Callable[[Context], int]


def build_parser() -> argparse.ArgumentParser:
    from drossel.cli import analyze as analyze_cli
    from drossel.cli import daemons, tokens

    parser = argparse.ArgumentParser(
        prog="drossel",
        description="Report, throttle and block mail from out-of-date Exchange servers.",
    )
    parser.add_argument("--version", action="version", version=f"drossel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Handler, help_: str, json_flag: bool = True, parent: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_, description=help_)
        _common(p, json_flag)
        p.set_defaults(handler=handler)
        return p

    p = command("detect", cmd_detect, "show the Exchange hops and servers in a message")
    p.add_argument("file", nargs="?", default="-", help="message or header file, - for stdin")

    p = command("assess", cmd_assess, "grade an Exchange build against the catalog")
    p.add_argument("build", help="e.g. 15.2.1748.39 or 15.02.1748.039")

    p = command("simulate", cmd_simulate, "print the enforcement schedule day by day")
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--pause", action="append", metavar="START_DAY:DAYS")

    p = command("check", cmd_check, "run detection, assessment and decision once (no state)")
    p.add_argument("file", help="message or header file, - for stdin")
    p.add_argument("--first-seen", help="when the server was first detected (default: --at)")
    p.add_argument("--tenant", default="default")
    p.add_argument(
        "--connector-type",
        default="OnPremises",
        choices=["Default", *CONNECTOR_TYPES],
        help="connector type the message came through (default: an OnPremises connector; "
        "Default is no connector and needs --evidence verified or unverified)",
    )
    p.add_argument(
        "--evidence",
        default="connector",
        choices=["connector", "verified", "unverified"],
        help="how the server is tied to the client (SPEC §3); verified and unverified "
        "mean mail matching no connector",
    )

    catalog = sub.add_parser("catalog", help="list, search or update the Exchange catalog")
    _common(catalog)
    catalog.set_defaults(handler=cmd_catalog)
    catalog.add_argument("--search", help="text in update name or build")
    catalog.add_argument("--product", help='e.g. "Exchange 2019"')
    catalog_sub = catalog.add_subparsers(dest="catalog_command", metavar="ACTION")
    p = command("list", cmd_catalog, "list or search the catalog", parent=catalog_sub)
    p.add_argument("--search", help="text in update name or build")
    p.add_argument("--product", help='e.g. "Exchange 2019"')
    p = command(
        "load",
        cmd_catalog_load,
        "validate and install a newer catalog file",
        json_flag=False,
        parent=catalog_sub,
    )
    p.add_argument("file")
    p.add_argument("--force", action="store_true", help="install even if older")

    p = command("report", cmd_report, "per-server enforcement report")
    add_format_flags(p)
    p.add_argument("--tenant")
    p.add_argument("--all", action="store_true", help="include servers unseen for 60 days")

    tenant = sub.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    p = command("add", cmd_tenant_add, "add a tenant", json_flag=False, parent=tenant)
    p.add_argument("name")
    p.add_argument("--contact", action="append", help="admin mail address (repeatable)")
    p.add_argument("--display-name")
    command("list", cmd_tenant_list, "list tenants", parent=tenant)

    connector = sub.add_parser("connector", help="manage inbound connectors").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    p = command(
        "add", cmd_connector_add, "add an inbound connector", json_flag=False, parent=connector
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--type", default="OnPremises", choices=CONNECTOR_TYPES)
    p.add_argument("--ip", action="append", help="sender IP range in CIDR form (repeatable)")
    p.add_argument("--tls-name", help="TLS client certificate name")
    command("list", cmd_connector_list, "list connectors", parent=connector)

    pause = sub.add_parser("pause", help="manage pauses").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    p = command("add", cmd_pause_add, "pause throttling and blocking", parent=pause)
    p.add_argument("--tenant", required=True)
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--start", help="first paused day (YYYY-MM-DD), default today")
    p.add_argument("--server", action="append", help="only this server (repeatable)")
    p = command("list", cmd_pause_list, "list pauses", parent=pause)
    p.add_argument("--tenant")
    p = command("end", cmd_pause_end, "end a pause today", json_flag=False, parent=pause)
    p.add_argument("id", type=int)
    p = command("extend", cmd_pause_extend, "add days to a pause", parent=pause)
    p.add_argument("id", type=int)
    p.add_argument("--days", type=int, required=True)

    override = sub.add_parser("override", help="manage allow-overrides").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    p = command(
        "add",
        cmd_override_add,
        "never throttle/block a server or tenant",
        json_flag=False,
        parent=override,
    )
    p.add_argument("--tenant")
    p.add_argument("--server")
    p.add_argument("--reason", required=True)
    p.add_argument("--expires", help="ISO 8601 time the override ends")
    command("list", cmd_override_list, "list active overrides", parent=override)
    p = command(
        "remove", cmd_override_remove, "remove an override", json_flag=False, parent=override
    )
    p.add_argument("id", type=int)

    p = command("audit", cmd_audit, "show the audit log")
    add_format_flags(p)
    p.add_argument("--tenant")

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="sub", required=True, metavar="ACTION"
    )
    command("upgrade", cmd_db_upgrade, "create or migrate the schema", json_flag=False, parent=db)

    tokens.register(sub, command)

    analyze_cli.register(sub, command)
    daemons.register(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    ctx: Context | None = None
    try:
        ctx = Context(args)
        return int(args.handler(ctx))
    except (
        CliError,
        ConfigError,
        PolicyError,
        CatalogError,
        SchemaOutOfDate,
        AppError,
    ) as exc:
        print(redact(f"drossel: error: {exc}"), file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return closed_pipe()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(redact(f"drossel: error: {type(exc).__name__}: {exc}"), file=sys.stderr)
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        return 1
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
