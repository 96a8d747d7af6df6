"""Typed errors of the application layer.

Adapters map the *type* to their own vocabulary (HTTP status, CLI exit and one-line message),
never the text.  The message is safe to show to the user who caused it.
"""

from __future__ import annotations


class AppError(Exception):
    """A request the application refuses; ``str(error)`` says why, for the user."""


class NotFound(AppError):
    """The thing named does not exist (or is not visible to the caller)."""


class Invalid(AppError):
    """The request is malformed or out of range."""


class Conflict(AppError):
    """The request contradicts the current state (duplicate, budget exceeded, already ended)."""


class Forbidden(AppError):
    """The caller may not do this."""


HTTP_STATUS: dict[type[AppError], int] = {
    NotFound: 404,
    Invalid: 422,
    Conflict: 409,
    Forbidden: 403,
}


def http_status(error: AppError) -> int:
    """The HTTP status for an application error (by type, most specific first)."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 400
