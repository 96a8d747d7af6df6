"""Tokens: create (the value is shown once), list, revoke.

Shared by ``drossel token ...`` and the operator API (``/api/v1/tokens``), so both refuse the
same things with the same typed errors (:mod:`drossel.app.errors`).
"""

from __future__ import annotations

from datetime import datetime

from drossel.app.errors import Conflict, Invalid, NotFound
from drossel.storage import tokens as store_tokens
from drossel.storage.store import Store, StoreError
from drossel.storage.tokens import TokenRow


class TokenService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(
        self, role: str, tenant: str | None, label: str, actor: str, now: datetime
    ) -> tuple[str, TokenRow]:
        """A new token: its value (to show once) and its listing row."""
        value = store_tokens.new_token_value()
        try:
            token_id = store_tokens.add_token(
                self.store, value, role, tenant, label.strip(), actor, now
            )
        except StoreError as exc:
            if str(exc).startswith("unknown tenant"):
                raise NotFound(str(exc)) from None
            raise Invalid(str(exc)) from None
        row = store_tokens.get_token(self.store, token_id)
        assert row is not None
        return value, row

    def list(self) -> list[TokenRow]:
        return store_tokens.list_tokens(self.store)

    def revoke(self, token_id: int, actor: str, now: datetime) -> TokenRow:
        """Revoke a token; its bearer use and every session made from it end at once."""
        if not store_tokens.revoke_token(self.store, token_id, actor, now):
            row = store_tokens.get_token(self.store, token_id)
            if row is None:
                raise NotFound(f"unknown token {token_id}")
            raise Conflict(f"token {token_id} is already revoked")
        row = store_tokens.get_token(self.store, token_id)
        assert row is not None
        return row
