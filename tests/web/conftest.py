from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from drossel_seed import Seeded, seed
from fastapi.testclient import TestClient

from drossel.web.app import create_app


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    state = seed(tmp_path / "state.db")
    yield state
    state.store.dispose()


@pytest.fixture
def app(seeded: Seeded):  # type: ignore[no-untyped-def]
    return create_app(seeded.store, seeded.config, seeded.clock)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c
