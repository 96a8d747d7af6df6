"""Tokens: create (the value is shown once), list, revoke.

Shared by ``drossel token ...`` and the operator API (``/api/v1/tokens``), so both refuse the
same things with the same typed errors (:mod:`drossel.app.errors`).  The token table itself is
a storage adapter (:class:`drossel.storage.tokens.TokenTable`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from drossel.app.errors import Conflict, NotFound
from drossel.app.records import TokenRow, new_token_value


class TokenBackend(Protocol):
    def add(
        self, value: str, role: str, tenant: str | None, label: str, actor: str, now: datetime
    ) -> int: ...
    def get(self, token_id: int) -> TokenRow | None: ...
    def list(self) -> list[TokenRow]: ...
    def revoke(self, token_id: int, actor: str, now: datetime) -> bool: ...


class TokenService:
    def __init__(self, tokens: TokenBackend) -> None:
        self.tokens = tokens

    def create(
        self, role: str, tenant: str | None, label: str, actor: str, now: datetime
    ) -> tuple[str, TokenRow]:
        """A new token: its value (to show once) and its listing row.  An unknown tenant is
        :class:`NotFound`, a bad role :class:`Invalid` (raised by the table)."""
        value = new_token_value()
        token_id = self.tokens.add(value, role, tenant, label.strip(), actor, now)
        row = self.tokens.get(token_id)
        assert row is not None
        return value, row

    def list(self) -> list[TokenRow]:
        return self.tokens.list()

    def revoke(self, token_id: int, actor: str, now: datetime) -> TokenRow:
        """Revoke a token; its bearer use and every session made from it end at once."""
        if not self.tokens.revoke(token_id, actor, now):
            row = self.tokens.get(token_id)
            if row is None:
                raise NotFound(f"unknown token {token_id}")
            raise Conflict(f"token {token_id} is already revoked")
        row = self.tokens.get(token_id)
        assert row is not None
        return row
