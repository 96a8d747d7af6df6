"""A fresh, migrated store per test, on SQLite and (marked ``postgres``) on real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.pg import postgres_database

from drossel.storage.migrate import upgrade
from drossel.storage.store import Store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
        s = Store(url)
        upgrade(s.engine)
        yield s
        s.dispose()
        return
    with postgres_database(f"drossel_test_{uuid.uuid4().hex[:10]}") as url:
        s = Store(url)
        upgrade(s.engine)
        yield s
        s.dispose()
