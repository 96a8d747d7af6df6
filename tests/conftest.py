"""Shared fixtures: the packaged catalog, the default policy, paths to test data."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from drossel.app.catalog_source import packaged_catalog
from drossel.core.catalog import Catalog
from drossel.core.policy import Policy

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return packaged_catalog()


@pytest.fixture(scope="session")
def policy() -> Policy:
    return Policy()


@pytest.fixture
def headers_dir() -> Path:
    return FIXTURES / "headers"


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that sets up logging as a daemon does (``setup_logging``: a handler on the
    ``sys.stderr`` of that moment, which is pytest's capture) must not leave it behind: later
    tests' log lines would go to a closed stream ("--- Logging error ---" in the output)."""
    root = logging.getLogger()
    ours = logging.getLogger("drossel")
    saved = root.handlers[:], root.level, ours.level
    yield
    root.handlers[:], ours.level = saved[0], saved[2]
    root.setLevel(saved[1])
