"""Shared fixtures: the packaged catalog, the default policy, paths to test data."""

from __future__ import annotations

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
