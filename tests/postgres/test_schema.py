"""Issue 6.1: PostgreSQL is never migrated behind the operator's back; ``drossel db upgrade``
creates the schema, and every node checks the revision at start with a clear message."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pg_nodes import Node, drossel

from drossel.runtime import open_store
from drossel.storage.migrate import SchemaOutOfDate, current_revision, head_revision
from drossel.storage.store import Store

pytestmark = pytest.mark.postgres


def test_unmigrated_database_stops_every_entry_point_with_a_clear_message(
    raw_pg_url: str, node_factory: Callable[..., Node]
) -> None:
    with pytest.raises(SchemaOutOfDate, match="run `drossel db upgrade`"):
        open_store(raw_pg_url)
    # daemons too, even though they may start while the database is unreachable
    with pytest.raises(SchemaOutOfDate, match="run `drossel db upgrade`"):
        open_store(raw_pg_url, allow_offline=True)
    for args in (["pause", "list"], ["milter", "--listen", "inet:127.0.0.1:1"]):
        result = drossel(*args, "--db", raw_pg_url)
        assert result.returncode == 2, result
        assert "database schema is at revision none" in result.stderr
        assert "run `drossel db upgrade`" in result.stderr
    # nothing was created behind the operator's back
    store = Store(raw_pg_url)
    assert current_revision(store.engine) is None
    store.dispose()

    assert drossel("db", "upgrade", "--db", raw_pg_url).returncode == 0
    assert drossel("db", "upgrade", "--db", raw_pg_url).returncode == 0  # idempotent
    store = open_store(raw_pg_url)
    assert current_revision(store.engine) == head_revision()
    store.dispose()
    assert drossel("pause", "list", "--db", raw_pg_url).returncode == 0
    node = node_factory(raw_pg_url, "a").start()
    assert node.send("ex01.contoso.example", "15.2.2562.37") == "accept"


def test_outdated_revision_is_reported(pg_url: str) -> None:
    store = Store(pg_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    store.dispose()
    result = drossel("tenant", "list", "--db", pg_url)
    assert result.returncode == 2
    assert "revision 0000" in result.stderr and "run `drossel db upgrade`" in result.stderr
