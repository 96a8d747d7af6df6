"""API/web tokens and server-side web sessions.

A token is shown once and stored only as its SHA-256.  Revoking a token marks it and deletes its
sessions in one transaction; every check reads the database, so a revocation made by any process
(``drossel token revoke`` on another host, the API on another node) is refused by every web node
on its next request.  Sessions are rows keyed by the SHA-256 of a random id: logout deletes the
row, so a copied cookie stops working at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, insert, select, update

from drossel.app.records import TokenRow
from drossel.storage import schema as t
from drossel.storage.store import Store, StoreError, from_db, inserted_id, to_db

ROLES = ("operator", "tenant-admin")


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A valid token as the web layer needs it (who, for audit and sessions)."""

    id: int
    role: str  # "operator" or "tenant-admin"
    tenant: str | None
    label: str


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def add_token(
    store: Store, token: str, role: str, tenant: str | None, label: str, actor: str, now: datetime
) -> int:
    """Store ``token`` (its hash) and return its id."""
    if role not in ROLES:
        raise StoreError("role must be operator or tenant-admin")
    if role == "tenant-admin" and tenant is None:
        raise StoreError("a tenant-admin token needs --tenant")
    if role == "operator" and tenant is not None:
        raise StoreError("an operator token belongs to no tenant")
    if len(label) > 200 or any(not ch.isprintable() for ch in label):
        raise StoreError("a token label is at most 200 printable characters")
    with store.tx() as conn:
        tenant_id = store._tenant_id(conn, tenant) if tenant else None
        result = conn.execute(
            insert(t.tokens).values(
                token_hash=hash_secret(token),
                tenant_id=tenant_id,
                role=role,
                label=label,
                created_at=to_db(now),
            )
        )
        token_id = inserted_id(result)
        store.audit(
            conn, actor, "token.create", f"id={token_id} role={role} label={label}", now, tenant
        )
    return token_id


def _info_query() -> Select[Any]:
    return select(t.tokens.c.id, t.tokens.c.role, t.tokens.c.label, t.tenants.c.name).outerjoin(
        t.tenants, t.tenants.c.id == t.tokens.c.tenant_id
    )


def _info(row: object) -> TokenInfo:
    return TokenInfo(int(row.id), row.role, row.name, row.label or "")  # type: ignore[attr-defined]


def token_by_value(store: Store, token: str) -> TokenInfo | None:
    """The valid (not revoked) token with this value, or ``None``."""
    with store.engine.connect() as conn:
        row = conn.execute(
            _info_query().where(
                t.tokens.c.token_hash == hash_secret(token), t.tokens.c.revoked_at.is_(None)
            )
        ).first()
    return None if row is None else _info(row)


def token_by_id(store: Store, token_id: int) -> TokenInfo | None:
    with store.engine.connect() as conn:
        row = conn.execute(
            _info_query().where(t.tokens.c.id == token_id, t.tokens.c.revoked_at.is_(None))
        ).first()
    return None if row is None else _info(row)


def list_tokens(store: Store) -> list[TokenRow]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(t.tokens, t.tenants.c.name.label("tenant_name"))
            .outerjoin(t.tenants, t.tenants.c.id == t.tokens.c.tenant_id)
            .order_by(t.tokens.c.id)
        ).all()
    return [
        TokenRow(
            r.id,
            r.role,
            r.tenant_name,
            r.label or "",
            from_db(r.created_at),  # type: ignore[arg-type]
            from_db(r.last_used_at),
            from_db(r.revoked_at),
        )
        for r in rows
    ]


def get_token(store: Store, token_id: int) -> TokenRow | None:
    return next((r for r in list_tokens(store) if r.id == token_id), None)


def revoke_token(store: Store, token_id: int, actor: str, now: datetime) -> bool:
    """Revoke a token and end its sessions; ``False`` if it is unknown or already revoked."""
    with store.tx() as conn:
        row = conn.execute(
            select(t.tokens.c.role, t.tenants.c.name)
            .outerjoin(t.tenants, t.tenants.c.id == t.tokens.c.tenant_id)
            .where(t.tokens.c.id == token_id, t.tokens.c.revoked_at.is_(None))
        ).first()
        if row is None:
            return False
        conn.execute(
            update(t.tokens).where(t.tokens.c.id == token_id).values(revoked_at=to_db(now))
        )
        conn.execute(delete(t.web_sessions).where(t.web_sessions.c.token_id == token_id))
        store.audit(conn, actor, "token.revoke", f"id={token_id} role={row.role}", now, row.name)
    return True


def touch_token(store: Store, token_id: int, now: datetime) -> None:
    """Record that a token was used (callers throttle this; it is a write)."""
    with store.tx() as conn:
        conn.execute(
            update(t.tokens).where(t.tokens.c.id == token_id).values(last_used_at=to_db(now))
        )


# --- sessions -------------------------------------------------------------------------------


def create_session(store: Store, token_id: int, now: datetime, seconds: int) -> str:
    """A new session for ``token_id``; returns its secret id (only its hash is stored)."""
    session_id = secrets.token_urlsafe(32)
    with store.tx() as conn:
        conn.execute(
            delete(t.web_sessions).where(t.web_sessions.c.expires_at < to_db(now))
        )  # keep the table small: expired sessions go whenever someone logs in
        conn.execute(
            insert(t.web_sessions).values(
                id_hash=hash_secret(session_id),
                token_id=token_id,
                created_at=to_db(now),
                expires_at=to_db(now + timedelta(seconds=seconds)),
            )
        )
    return session_id


def session_token(store: Store, session_id: str, now: datetime) -> TokenInfo | None:
    """The still valid token behind a live session, or ``None`` (ended, expired, revoked)."""
    with store.engine.connect() as conn:
        row = conn.execute(
            _info_query()
            .join(t.web_sessions, t.web_sessions.c.token_id == t.tokens.c.id)
            .where(
                t.web_sessions.c.id_hash == hash_secret(session_id),
                t.web_sessions.c.expires_at > to_db(now),
                t.tokens.c.revoked_at.is_(None),
            )
        ).first()
    return None if row is None else _info(row)


def end_session(store: Store, session_id: str) -> None:
    with store.tx() as conn:
        conn.execute(
            delete(t.web_sessions).where(t.web_sessions.c.id_hash == hash_secret(session_id))
        )


class TokenTable:
    """The tokens of one SQL store, as :class:`drossel.app.tokens.TokenService` uses them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(
        self, value: str, role: str, tenant: str | None, label: str, actor: str, now: datetime
    ) -> int:
        return add_token(self.store, value, role, tenant, label, actor, now)

    def get(self, token_id: int) -> TokenRow | None:
        return get_token(self.store, token_id)

    def list(self) -> list[TokenRow]:
        return list_tokens(self.store)

    def revoke(self, token_id: int, actor: str, now: datetime) -> bool:
        return revoke_token(self.store, token_id, actor, now)
