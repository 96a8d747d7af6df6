"""The SQLite state and its companion files are private (0600); shared existing files are
reported in the log."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drossel.storage.migrate import upgrade
from drossel.storage.store import Store

NOW = datetime(2026, 7, 1, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_wal_and_shm_files_are_created_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a typical umask that would give 0644
    try:
        store = Store(f"sqlite:///{tmp_path / 'state.db'}")
        upgrade(store.engine)
        with store.engine.connect():  # while open, SQLite keeps its -wal and -shm files
            store.add_tenant("contoso", [], "t", NOW)
            files = {p.name: mode(p) for p in tmp_path.iterdir()}
        store.dispose()
    finally:
        os.umask(old)
    assert files == {"state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600}


def test_shared_state_files_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    Store(f"sqlite:///{path}").dispose()
    path.chmod(0o640)
    Store(f"sqlite:///{path}").dispose()
    assert f"{path} has mode 0640" in caplog.text
    assert mode(path) == 0o640  # an operator's choice is reported, not changed
