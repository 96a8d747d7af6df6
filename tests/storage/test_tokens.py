"""Tokens and server-side sessions in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from drossel.app.errors import NotFound
from drossel.storage import schema as t
from drossel.storage.store import Store, StoreError
from drossel.storage.tokens import (
    add_token,
    create_session,
    end_session,
    list_tokens,
    revoke_token,
    session_token,
    token_by_id,
    token_by_value,
    touch_token,
)

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def test_tokens_are_hashed(store: Store) -> None:
    store.add_tenant("contoso", [], "t", NOW)
    token_id = add_token(store, "drs_secret", "tenant-admin", "contoso", "admin", "t", NOW)
    info = token_by_value(store, "drs_secret")
    assert info is not None and (info.id, info.role, info.tenant) == (
        token_id,
        "tenant-admin",
        "contoso",
    )
    assert token_by_value(store, "drs_other") is None
    with store.engine.connect() as conn:
        stored = conn.execute(select(t.tokens.c.token_hash)).scalar_one()
    assert "drs_secret" not in stored


def test_token_roles_are_checked(store: Store) -> None:
    with pytest.raises(StoreError, match="needs --tenant"):
        add_token(store, "drs_x", "tenant-admin", None, "", "t", NOW)
    with pytest.raises(StoreError, match="role must be"):
        add_token(store, "drs_x", "root", None, "", "t", NOW)
    with pytest.raises(NotFound, match="unknown tenant"):
        add_token(store, "drs_x", "tenant-admin", "nobody", "", "t", NOW)


def test_list_shows_use_and_revocation(store: Store) -> None:
    op = add_token(store, "drs_op", "operator", None, "ops", "t", NOW)
    touch_token(store, op, NOW + timedelta(hours=1))
    assert revoke_token(store, op, "t", NOW + timedelta(hours=2))
    assert not revoke_token(store, op, "t", NOW + timedelta(hours=3))  # already revoked
    assert not revoke_token(store, 999, "t", NOW)  # unknown
    (row,) = list_tokens(store)
    assert (row.id, row.role, row.tenant, row.label) == (op, "operator", None, "ops")
    assert row.last_used_at == NOW + timedelta(hours=1)
    assert row.revoked_at == NOW + timedelta(hours=2)
    assert token_by_value(store, "drs_op") is None and token_by_id(store, op) is None
    assert store.list_audit()[0].action == "token.revoke"


def test_sessions_end_on_logout_expiry_and_revocation(store: Store) -> None:
    op = add_token(store, "drs_op", "operator", None, "ops", "t", NOW)
    first = create_session(store, op, NOW, 3600)
    second = create_session(store, op, NOW, 3600)
    assert session_token(store, first, NOW) is not None
    assert session_token(store, first, NOW + timedelta(seconds=3601)) is None  # expired
    end_session(store, first)
    assert session_token(store, first, NOW) is None  # logged out
    assert session_token(store, second, NOW) is not None  # the other session lives on
    revoke_token(store, op, "t", NOW)
    assert session_token(store, second, NOW) is None  # revocation ends every session
    with store.engine.connect() as conn:
        hashes = conn.execute(select(t.web_sessions.c.id_hash)).scalars().all()
    assert hashes == []  # and removes them
