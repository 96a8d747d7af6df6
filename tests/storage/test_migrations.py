"""Migration 0002 on a database made by 0001: the session key row leaves the settings table,
tokens keep working and gain "last used", sessions get their table."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from drossel.storage.migrate import _config, current_revision, head_revision
from drossel.storage.store import Store
from drossel.storage.tokens import list_tokens, token_by_value

NOW = datetime(2026, 7, 1, tzinfo=UTC)


def _migrate(store: Store, revision: str) -> None:
    config = _config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def test_0002_removes_the_session_key_from_the_database(store: Store) -> None:
    with store.engine.begin() as conn:  # the fixture's store is at head: start again at 0001
        for table in ("web_sessions", "notifications", "daily_counts", "build_history",
                      "servers", "pauses", "overrides", "contacts", "connectors", "tokens",
                      "tenants", "settings", "audit_log", "alembic_version"):  # fmt: skip
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    _migrate(store, "0001")
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO settings (key, value, updated_at) VALUES "
                "('web.session_secret', 'aa', '2026-01-01'), ('other', 'kept', '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO tokens (token_hash, role, label, created_at) VALUES "
                "(:hash, 'operator', 'old', '2026-01-01')"
            ),
            {"hash": hashlib.sha256(b"drs_old").hexdigest()},
        )
    _migrate(store, "head")
    assert current_revision(store.engine) == head_revision()
    with store.engine.connect() as conn:
        settings = dict(conn.execute(text("SELECT key, value FROM settings")).all())
        sessions = conn.execute(text("SELECT count(*) FROM web_sessions")).scalar_one()
    assert settings == {"other": "kept"}
    assert sessions == 0
    assert token_by_value(store, "drs_old") is not None
    (row,) = list_tokens(store)
    assert row.label == "old" and row.last_used_at is None
