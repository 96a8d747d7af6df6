"""The outage queue in-process (fast, SQLite with a switchable failure): fail modes, the
memory bound, the journal across a restart, and exact counters after recovery.  The same
behaviour against a real PostgreSQL stop/start is in ``test_outage.py``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from drossel.app.enforcer import ClientInfo, Enforcer
from drossel.app.journal import Journal
from drossel.config import config_from_dict
from drossel.core.detection import parse_headers
from drossel.runtime import open_store
from drossel.storage.store import Store

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)


def headers(server: str) -> list[tuple[str, str]]:
    return parse_headers(
        f"Received: from mbx (10.0.0.2) by {server} (10.0.0.1) with Microsoft SMTP Server id "
        "15.1.2507.6; Mon, 2 Mar 2026 10:00:00 +0000\n"
    )


CLIENT = ClientInfo(addr="192.0.2.10", name="relay.example", helo="relay.example")


class Outage:
    """Makes every database access of a store fail while ``down``."""

    def __init__(self, store: Store) -> None:
        self.down = False
        from sqlalchemy import event

        def refuse(*_args: object) -> None:
            if self.down:
                raise OperationalError("connect", {}, ConnectionRefusedError("db down"))

        event.listen(store.engine, "before_cursor_execute", refuse)
        event.listen(store.engine, "engine_connect", refuse)


@pytest.mark.parametrize("fail_mode", ["cache", "tempfail"])
def test_outage_queue_journal_restart_and_recovery(tmp_path: Path, fail_mode: str) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    config = config_from_dict(
        {
            "policy": {"enforce_unverified": True},  # CLIENT relays: unverified evidence
            "storage": {"fail_mode": fail_mode, "journal_memory_events": 2},
        }
    )
    journal = Journal(tmp_path / "journal.jsonl")
    now = [T0]
    store = open_store(url)
    outage = Outage(store)
    engine = Enforcer(store, config, lambda: now[0], auto_refresh=False, journal=journal)
    assert engine.process(headers("known.example"), CLIENT).verdict.action == "accept"
    engine.flush()

    outage.down = True
    now[0] += timedelta(minutes=1)
    assert engine.process(headers("known.example"), CLIENT).verdict.action == "accept"
    unknown = engine.process(headers("new.example"), CLIENT).verdict
    if fail_mode == "cache":
        assert unknown.action == "accept" and unknown.stage == 1
    else:
        assert unknown.action == "throttle" and unknown.code == 451
    assert engine.offline
    with pytest.raises(OperationalError):
        engine.flush()
    assert journal.exists() and engine.pending_events() == 0  # beyond the bound: spilled
    engine.process(headers("known.example"), CLIENT)
    engine.shutdown()  # the database is still down: the rest goes to the journal too
    assert engine.pending_events() == 0

    # restart during the outage
    restarted = Enforcer(store, config, lambda: now[0], auto_refresh=False, journal=journal)
    assert restarted.offline
    restarted.process(headers("new.example"), CLIENT)
    outage.down = False
    restarted.flush()
    assert not restarted.offline and not journal.exists()
    for server, counts in (("known.example", 3), ("new.example", 2)):
        stored = store.get_server("default", server)
        assert stored is not None
        assert sum(store.total_counts(stored.id).values()) == counts
    new = store.get_server("default", "new.example")
    assert new is not None and new.record.first_detected == T0 + timedelta(minutes=1)
    store.dispose()


def test_journal_files_are_private(tmp_path: Path) -> None:
    """Server names and client addresses stay private like the state database (0600)."""
    import os
    import stat

    from drossel.app.journal import Journal

    old = os.umask(0o022)
    try:
        journal = Journal(tmp_path / "journal.jsonl")
        journal.append([{"t": "seen", "tenant": "t", "server": "s", "at": "2026-01-01T00:00:00"}])
        journal.save_state([], [], [])
    finally:
        os.umask(old)
    for path in (journal.path, journal.state_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
