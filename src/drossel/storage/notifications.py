"""The notification outbox in the state database: claimed once across nodes, attempted, sent
or failed (used by :mod:`drossel.notify.service`).  Nothing here changes enforcement state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update

from drossel.storage import schema as t
from drossel.storage.store import Store, from_db, to_db

# --- notifications -------------------------------------------------------------------------

IN_PROGRESS = "in progress since "


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: int
    event_key: str
    tenant: str
    server: str | None
    event: str
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    last_error: str | None
    body: str


def _row(r: object) -> NotificationRow:
    return NotificationRow(
        r.id,  # type: ignore[attr-defined]
        r.event_key,  # type: ignore[attr-defined]
        r.tenant_name,  # type: ignore[attr-defined]
        r.server,  # type: ignore[attr-defined]
        r.event,  # type: ignore[attr-defined]
        from_db(r.created_at),  # type: ignore[attr-defined,arg-type]
        from_db(r.sent_at),  # type: ignore[attr-defined]
        int(r.attempts),  # type: ignore[attr-defined]
        r.last_error,  # type: ignore[attr-defined]
        r.body,  # type: ignore[attr-defined]
    )


def _notification_query() -> Select[Any]:
    return select(t.notifications, t.tenants.c.name.label("tenant_name")).join(
        t.tenants, t.tenants.c.id == t.notifications.c.tenant_id
    )


def get_notification(store: Store, event_key: str) -> NotificationRow | None:
    with store.engine.connect() as conn:
        row = conn.execute(
            _notification_query().where(t.notifications.c.event_key == event_key)
        ).first()
    return None if row is None else _row(row)


def list_notifications(store: Store, tenant: str | None = None) -> list[NotificationRow]:
    query = _notification_query().order_by(t.notifications.c.id)
    if tenant is not None:
        query = query.where(t.tenants.c.name == tenant)
    with store.engine.connect() as conn:
        return [_row(r) for r in conn.execute(query).all()]


def _stamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.split(" ", 1)[0])
    except ValueError:
        return None


def retryable_notifications(
    store: Store, now: datetime, max_attempts: int, stale_seconds: float, backoff_seconds: float
) -> list[NotificationRow]:
    """Unsent notifications whose last attempt failed long enough ago (exponential backoff),
    or whose sender vanished mid-send or between claiming and sending (``stale_seconds``)."""
    result = []
    for row in list_notifications(store):
        if row.sent_at is not None or row.attempts >= max_attempts:
            continue
        error = row.last_error or ""
        if error.startswith(IN_PROGRESS):
            since = _stamp(error.removeprefix(IN_PROGRESS)) or row.created_at
            if (now - since).total_seconds() < stale_seconds:
                continue  # another sender is on it right now
        elif row.attempts:
            failed = _stamp(error) or row.created_at
            wait = min(backoff_seconds * 2 ** (row.attempts - 1), 3600.0)
            if (now - failed).total_seconds() < wait:
                continue
        elif (now - row.created_at).total_seconds() < stale_seconds:
            continue  # just claimed: its claimer is about to send it
        result.append(row)
    return result


def begin_attempt(store: Store, row_id: int, attempts: int, now: datetime) -> bool:
    """Take the right to send (optimistic: exactly one node moves ``attempts`` on)."""
    with store.tx() as conn:
        changed = conn.execute(
            update(t.notifications)
            .where(
                t.notifications.c.id == row_id,
                t.notifications.c.attempts == attempts,
                t.notifications.c.sent_at.is_(None),
            )
            .values(attempts=attempts + 1, last_error=IN_PROGRESS + now.isoformat())
        ).rowcount
    return bool(changed)


def mark_sent(store: Store, row_id: int, now: datetime) -> None:
    with store.tx() as conn:
        conn.execute(
            update(t.notifications)
            .where(t.notifications.c.id == row_id)
            .values(sent_at=to_db(now), last_error=None)
        )


def mark_failed(store: Store, row_id: int, error: str, now: datetime) -> None:
    """Record a failed attempt: ``<ISO time> <error>`` (the time drives the retry backoff)."""
    with store.tx() as conn:
        conn.execute(
            update(t.notifications)
            .where(t.notifications.c.id == row_id)
            .values(last_error=f"{now.isoformat()} {error or 'failed'}"[:2000])
        )
