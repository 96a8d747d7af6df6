"""Who is asking: bearer tokens for the API, signed session cookies for the pages, CSRF tokens
bound to the session, and a per-IP limit on failed logins.

A session cookie carries only the token's row id, an expiry and a random nonce, signed with a
key kept in the database (so every web node accepts it); the token is re-checked on every
request, so revoking it ends its sessions.  The CSRF token is an HMAC of the session nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from drossel.storage.store import Store
from drossel.web.queries import TokenInfo, token_by_id, token_info

SESSION_COOKIE = "drossel_session"
LOGIN_CSRF_COOKIE = "drossel_login_csrf"
SESSION_SECONDS = 8 * 3600
TOKEN_MAX_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    role: str
    tenant: str | None
    label: str
    nonce: str = ""

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        name = self.label or f"token#{self.token_id}"
        if self.is_operator:
            return f"web:{name} (operator)"
        return f"web:{name} (tenant-admin of {self.tenant})"

    def can_see(self, tenant: str | None) -> bool:
        return self.is_operator or (tenant is not None and tenant == self.tenant)


def principal_of(info: TokenInfo, nonce: str = "") -> Principal:
    return Principal(info.id, info.role, info.tenant, info.label, nonce)


def bearer_principal(store: Store, header: str | None) -> Principal | bool | None:
    """``None`` if no bearer header, ``False`` if invalid, else the principal."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > TOKEN_MAX_LENGTH:
        return False
    info = token_info(store, value)
    return False if info is None else principal_of(info)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, info: TokenInfo, now: datetime) -> str:
        payload = _b64(
            json.dumps(
                {
                    "t": info.id,
                    "e": int(now.timestamp()) + SESSION_SECONDS,
                    "n": secrets.token_urlsafe(16),
                },
                separators=(",", ":"),
            ).encode()
        )
        return f"{payload}.{self._sign(payload)}"

    def read(self, store: Store, cookie: str | None, now: datetime) -> Principal | None:
        if not cookie or len(cookie) > 1000 or "." not in cookie:
            return None
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = json.loads(_unb64(payload))
            token_id, expires, nonce = int(data["t"]), int(data["e"]), str(data["n"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < now.timestamp():
            return None
        info = token_by_id(store, token_id)
        return None if info is None else principal_of(info, nonce)

    def csrf_for(self, nonce: str) -> str:
        return self._sign("csrf:" + nonce)

    def check_csrf(self, nonce: str, value: str | None) -> bool:
        return (
            bool(nonce) and bool(value) and hmac.compare_digest(self.csrf_for(nonce), value or "")
        )


class LoginLimiter:
    """At most ``per_minute`` failed logins per client IP in any 60 seconds."""

    def __init__(self, per_minute: int, monotonic: object = time.monotonic) -> None:
        self.per_minute = per_minute
        self._monotonic = monotonic
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return float(self._monotonic())  # type: ignore[operator]

    def _prune(self, ip: str, now: float) -> deque[float]:
        q = self._failures.setdefault(ip, deque())
        while q and now - q[0] >= 60:
            q.popleft()
        if not q:
            self._failures.pop(ip, None)
            q = deque()
        return q

    def blocked(self, ip: str) -> bool:
        with self._lock:
            return len(self._prune(ip, self._now())) >= self.per_minute

    def fail(self, ip: str) -> None:
        with self._lock:
            now = self._now()
            q = self._prune(ip, now)
            q.append(now)
            self._failures[ip] = q
            if len(self._failures) > 100_000:  # bounded memory under a spray of addresses
                self._failures.clear()
