"""The little world the model tests play in: tenants, connectors, servers, builds, clients, and
how to open a driver over each kind of store.

Why fixed names: examples and Hypothesis steps pick from these, so a failing step list reads
like a story ("t1's ex01 sends Exchange 2013 via its connector") and shrinks well.
"""

from __future__ import annotations

import itertools
import shutil
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from drossel.app.memory import MemoryStore
from drossel.config import Config
from drossel.core.policy import Policy
from drossel.storage.migrate import upgrade
from drossel.storage.store import Store
from tests.model.drivers import ModelDriver, RealDriver
from tests.model.reference import Client
from tests.pg import ADMIN_URL, _connect_admin, postgres_database

START = datetime(2026, 9, 1, 10, 0, tzinfo=UTC)

#: tenant -> (connector type, IP range); documentation ranges, never contacted.
TENANTS: dict[str, tuple[str, str]] = {
    "t1": ("OnPremises", "192.0.2.0/24"),
    "t2": ("OnPremises", "198.51.100.0/24"),
    "t3": ("Partner", "203.0.113.0/24"),
}
CONNECTOR_ADDR = {"t1": "192.0.2.10", "t2": "198.51.100.10", "t3": "203.0.113.10"}
SERVERS: dict[str, tuple[str, ...]] = {
    "t1": ("ex01.t1.example", "ex02.t1.example"),
    "t2": ("mail.t2.example",),
    "t3": ("ex.t3.example",),
}
#: servers mail reaches us from without any connector (default tenant)
OUTSIDE_SERVERS = ("mx.outside.example",)
ALL_SERVERS = tuple(itertools.chain(*SERVERS.values(), OUTSIDE_SERVERS))
OUTSIDE_ADDR = "100.64.7.9"
RELAY = "relay.forwarder.example"

#: builds and what they are on 2026-09-01 (the model asks ``assess`` on every step's date)
BUILDS = {
    "e2013": "15.0.1497.48",  # Exchange 2013 CU23 Mar23SU: unsupported
    "e2016": "15.1.2507.16",  # Exchange 2016 CU23: unsupported
    "se_feb26": "15.2.2562.37",  # Exchange SE Feb26SU: behind; persistently vulnerable 09-08 on
    "se_rtm": "15.2.2562.17",  # Exchange SE RTM: behind, persistently vulnerable
    "se_current": "15.2.2562.53",  # Exchange SE Sep26SUv2: current (newest in the catalog)
}
OLD = BUILDS["e2013"]
CURRENT = BUILDS["se_current"]


def connector_client(tenant: str) -> Client:
    return Client(addr=CONNECTOR_ADDR[tenant], helo="whatever.example")


def verified_client(server: str) -> Client:
    """Mail from outside any connector whose forward-confirmed name is the server."""
    return Client(addr=OUTSIDE_ADDR, name=server, helo=server)


def tls_client(server: str) -> Client:
    return Client(addr=OUTSIDE_ADDR, tls_name=server, helo=server)


def forged_client(server: str) -> Client:
    """A relay that only *says* it is the server (EHLO), PTR of the relay."""
    return Client(addr=OUTSIDE_ADDR, helo=server, ptr=RELAY)


class Installations:
    """Fresh installations of one kind, cheaply: the schema is migrated once into a template
    (an SQLite file that is copied, a PostgreSQL template database) and every installation
    starts from a copy of it.  Close it to remove the template."""

    def __init__(self, kind: str, workdir: Path | None = None) -> None:
        self.kind = kind
        self.workdir = workdir
        self._template: str | None = None
        self._count = itertools.count()
        self._stack = ExitStack()

    def _sqlite_template(self) -> Path:
        assert self.workdir is not None, "SQLite needs a working directory"
        path = self.workdir / "template.db"
        if self._template is None:
            store = Store(f"sqlite:///{path}")
            upgrade(store.engine)
            store.dispose()
            self._template = str(path)
        return path

    def _postgres_template(self) -> str:
        if self._template is None:
            name = f"drossel_model_tmpl_{uuid.uuid4().hex[:10]}"
            url = self._stack.enter_context(postgres_database(name))
            store = Store(url)
            upgrade(store.engine)
            store.dispose()
            self._template = name
        return self._template

    def open(self, policy: Policy | None = None) -> ModelDriver | RealDriver:
        """A fresh installation with ``policy`` (the default policy if ``None``)."""
        if self.kind == "model":
            return ModelDriver(policy)
        config = Config().model_copy(update={"policy": policy or Policy()})
        if self.kind == "memory":
            return RealDriver("memory", MemoryStore(), config, lambda: None)
        stack = ExitStack()
        if self.kind == "sqlite":
            assert self.workdir is not None
            path = self.workdir / f"model-{next(self._count)}.db"
            shutil.copyfile(self._sqlite_template(), path)
            url = f"sqlite:///{path}"
            stack.callback(path.unlink, missing_ok=True)
        elif self.kind == "postgres":
            template_db = self._postgres_template()
            name = f"drossel_model_{uuid.uuid4().hex[:12]}"
            with _connect_admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
            stack.callback(_drop_database, name)
            url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        else:
            raise ValueError(f"unknown kind of installation: {self.kind}")
        store = Store(url)
        stack.callback(store.dispose)
        return RealDriver(self.kind, store, config, stack.close)

    def close(self) -> None:
        self._stack.close()


def _drop_database(name: str) -> None:
    with _connect_admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def set_up_tenants(driver: ModelDriver | RealDriver, now: datetime = START) -> None:
    for tenant, (type_, network) in TENANTS.items():
        driver.add_tenant(tenant, now)
        driver.add_connector(tenant, type_, (network,), now)
