"""Marker of the model tests: ``known_difference(name)`` marks an example where the real layer
is known (and reported) to differ from the model; see ``tests/model/test_sequences.py``."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "known_difference(name): the real layer is known to differ from the model here "
        "(strict xfail for the real stores)",
    )
