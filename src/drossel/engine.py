"""Compatibility name: the enforcer lives in :mod:`drossel.app.enforcer`."""

from drossel.app.enforcer import ClientInfo, Enforcer, Outcome

__all__ = ["ClientInfo", "Enforcer", "Outcome"]
