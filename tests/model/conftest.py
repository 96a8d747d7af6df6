"""Marker of the model tests: ``known_difference(name)`` marks an example where the real layer
is known (and reported) to differ from the model; see ``tests/model/test_sequences.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "known_difference(name): the real layer is known to differ from the model here "
        "(strict xfail for the real stores)",
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How much the state machine ran, per store: sequences (Hypothesis examples, including
    those it generates while shrinking), steps and messages."""
    from tests.model.test_machine import LONG, RUN_COUNTS

    if not RUN_COUNTS:
        return
    terminalreporter.section("model state machine")
    terminalreporter.write_line(f"profile: {'long' if LONG else 'CI (bounded)'}")
    for kind, counts in RUN_COUNTS.items():
        terminalreporter.write_line(
            f"{kind}: {counts['sequences']} sequences, {counts['steps']} steps, "
            f"{counts['messages']} messages, {counts['seconds']} s"
        )


@pytest.fixture(scope="session")
def installations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Any]]:
    """Installations of each kind for the whole session: the schema is migrated once per kind
    (an SQLite template file, a PostgreSQL template database), not once per test."""
    from tests.model.world import Installations

    opened: dict[str, Installations] = {}
    workdir = tmp_path_factory.mktemp("model")

    def of(kind: str) -> Installations:
        if kind not in opened:
            opened[kind] = Installations(kind, workdir)
        return opened[kind]

    yield of
    for each in opened.values():
        each.close()
