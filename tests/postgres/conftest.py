"""Multi-node tests on real PostgreSQL: a throw-away database per test (``tests/pg.py``),
migrated with ``drossel db upgrade``, and ``drossel milter`` processes stopped in teardown."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pg_nodes import Node, db_upgrade
from tests.pg import postgres_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database, migrated by the command line like an operator would."""
    with postgres_database(f"drossel_nodes_{uuid.uuid4().hex[:10]}") as url:
        db_upgrade(url)
        yield url


@pytest.fixture
def raw_pg_url() -> Iterator[str]:
    """A fresh database without any schema."""
    with postgres_database(f"drossel_raw_{uuid.uuid4().hex[:10]}") as url:
        yield url


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def make(url: str, name: str, **kw: object) -> Node:
        node = Node(url, tmp_path / name, name=name, **kw)  # type: ignore[arg-type]
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()
