"""Real PostgreSQL for tests: start the machine's cluster if it is down, create a throw-away
database, drop it afterwards.  Tests that need it skip with a clear reason when no server can
be reached."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ADMIN_URL = os.environ.get(
    "DROSSEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _connect_admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(ADMIN_URL.replace("+psycopg", ""), autocommit=True, connect_timeout=3)


def ensure_running() -> None:
    try:
        _connect_admin().close()
        return
    except Exception:
        pass
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    for version in versions:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version.name, "main", "start"],
            check=False,
            capture_output=True,
            timeout=60,
        )
    for _ in range(30):
        try:
            _connect_admin().close()
            return
        except Exception:
            time.sleep(0.5)
    pytest.skip("no PostgreSQL server reachable at " + ADMIN_URL)


@contextmanager
def postgres_database(name: str) -> Iterator[str]:
    ensure_running()
    with _connect_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with _connect_admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@contextmanager
def migrated_postgres_database(prefix: str) -> Iterator[str]:
    """:func:`postgres_database` with a unique name starting with ``prefix``, its schema
    upgraded to the newest revision: the URL of an empty drossel state."""
    from drossel.storage.migrate import upgrade
    from drossel.storage.store import Store

    with postgres_database(f"{prefix}_{uuid.uuid4().hex[:10]}") as url:
        store = Store(url)
        upgrade(store.engine)
        store.dispose()
        yield url
