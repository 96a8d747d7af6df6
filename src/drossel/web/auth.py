"""Who is asking: bearer tokens for the API, server-side sessions for the pages, CSRF tokens
bound to the session, and limits on failed logins per client address and per token.

A session cookie is ``<random id>.<signature>``: the id names a row in ``web_sessions`` (only
its hash is stored), the signature is an HMAC with a key kept outside the database
(:mod:`drossel.web.session_key`).  Every request reads the session and its token from the
database, so logout, expiry and token revocation take effect at once on every node.  The CSRF
token is an HMAC of the session id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from drossel.storage.store import Store
from drossel.storage.tokens import (
    TokenInfo,
    create_session,
    end_session,
    session_token,
    token_by_value,
    touch_token,
)

SESSION_COOKIE = "drossel_session"
LOGIN_CSRF_COOKIE = "drossel_login_csrf"
SESSION_SECONDS = 8 * 3600
TOKEN_MAX_LENGTH = 200
#: how many leading characters of a presented token name it for the per-token limit
TOKEN_KEY_LENGTH = 12
#: "last used" is written at most this often per token and process
TOUCH_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    role: str
    tenant: str | None
    label: str
    nonce: str = ""  # the session id for page sessions (binds CSRF tokens), "" for bearer

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


def bearer_value(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; ``""`` if malformed, ``None`` if absent."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > TOKEN_MAX_LENGTH:
        return ""
    return value


def token_key(value: str) -> str:
    """What the per-token failure limit counts: the token's first characters (a real token is
    random, so they name one token; guesses at other tokens count elsewhere)."""
    return value[:TOKEN_KEY_LENGTH]


class UsageRecorder:
    """Writes a token's "last used" time at most every :data:`TOUCH_SECONDS` per process."""

    def __init__(self) -> None:
        self._written: dict[int, float] = {}
        self._lock = threading.Lock()

    def used(self, store: Store, token_id: int, now: datetime) -> None:
        moment = time.monotonic()
        with self._lock:
            if moment - self._written.get(token_id, -TOUCH_SECONDS) < TOUCH_SECONDS:
                return
            self._written[token_id] = moment
        try:
            touch_token(store, token_id, now)
        except Exception:  # a busy or unreachable database must not refuse the request
            with self._lock:
                self._written.pop(token_id, None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Sessions:
    """Issues and checks session cookies; ``keys[0]`` signs, every key in ``keys`` verifies."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one session key is needed")
        self.keys = list(keys)
        self.usage = UsageRecorder()

    def _sign(self, payload: str, key: bytes | None = None) -> str:
        return _b64(hmac.new(key or self.keys[0], payload.encode(), hashlib.sha256).digest())

    def _verify(self, payload: str, signature: str) -> bool:
        return any(hmac.compare_digest(self._sign(payload, k), signature) for k in self.keys)

    def issue(self, store: Store, info: TokenInfo, now: datetime) -> str:
        session_id = create_session(store, info.id, now, SESSION_SECONDS)
        self.usage.used(store, info.id, now)
        return f"{session_id}.{self._sign('session:' + session_id)}"

    def _session_id(self, cookie: str | None) -> str | None:
        if not cookie or len(cookie) > 200 or "." not in cookie:
            return None
        session_id, _, signature = cookie.partition(".")
        if not session_id or not self._verify("session:" + session_id, signature):
            return None
        return session_id

    def read(self, store: Store, cookie: str | None, now: datetime) -> Principal | None:
        session_id = self._session_id(cookie)
        if session_id is None:
            return None
        info = session_token(store, session_id, now)
        if info is None:
            return None
        self.usage.used(store, info.id, now)
        return principal_of(info, session_id)

    def end(self, store: Store, cookie: str | None) -> None:
        """Logout: the session row goes, so the same cookie (or a copy) no longer works."""
        session_id = self._session_id(cookie)
        if session_id is not None:
            end_session(store, session_id)

    def csrf_for(self, nonce: str) -> str:
        return self._sign("csrf:" + nonce)

    def check_csrf(self, nonce: str, value: str | None) -> bool:
        return bool(nonce) and bool(value) and self._verify("csrf:" + nonce, value or "")


def lookup_bearer(store: Store, sessions: Sessions, value: str, now: datetime) -> Principal | None:
    info = token_by_value(store, value)
    if info is None:
        return None
    sessions.usage.used(store, info.id, now)
    return principal_of(info)


class FailureLimiter:
    """At most ``per_minute`` failures per key (client address, token) in any 60 seconds."""

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._monotonic = monotonic
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and now - q[0] >= 60:
            q.popleft()
        if not q:
            self._failures.pop(key, None)
        return q

    def blocked(self, key: str) -> bool:
        with self._lock:
            return len(self._prune(key, self._monotonic())) >= self.per_minute

    def fail(self, key: str) -> None:
        with self._lock:
            now = self._monotonic()
            q = self._prune(key, now)
            q.append(now)
            self._failures[key] = q
            if len(self._failures) > 100_000:  # bounded memory under a spray of keys
                self._failures.clear()


#: the per-address limiter (kept under its old name for callers)
LoginLimiter = FailureLimiter


class ClientAddress:
    """The client address the login limits count: the peer, or, when the peer is one of the
    trusted proxies, the nearest address in ``X-Forwarded-For`` that is not a trusted proxy."""

    def __init__(self, trusted: Sequence[str]) -> None:
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def of(self, peer: str, forwarded_for: Sequence[str]) -> str:
        if not self.trusted or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for value in forwarded_for for h in value.split(",")]
        client = peer
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return client  # garbage from beyond the trusted chain: stop at the last hop
            client = hop
            if not self._is_trusted(hop):
                return hop
        return client
