"""Keep database passwords out of everything drossel prints or logs.

Every URL shown to a person goes through :func:`display_url` (SQLAlchemy's
``render_as_string(hide_password=True)``).  Text drossel does not compose itself, such as a
driver's error message or a traceback, goes through :func:`redact`, which blanks every password
drossel has seen in a database URL (:func:`remember_url` is called where URLs are resolved), and
:class:`RedactingFilter` does the same for every log record.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
_secrets: set[str] = set()
#: what :func:`redact` blanks, longest first (a password may contain a shorter one); replaced
#: whole under ``_lock`` and read without it, so a log line costs no lock and no sort, and
#: nothing at all while no URL with a password has been seen (SQLite, peer authentication)
_ordered: tuple[str, ...] = ()
_lock = threading.Lock()


def _password(url: str) -> str | None:
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return None
    return None if password is None else str(password)


def _raw_password(url: str) -> str | None:
    """The password exactly as written in ``url`` (``scheme://user:PASSWORD@host/...``)."""
    _, _, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    credentials, at, _ = authority.rpartition("@")
    _, colon, password = credentials.partition(":")
    return password if at and colon else None


def remember_url(url: str) -> None:
    """Note the password of ``url`` (as written, decoded and re-quoted) for :func:`redact`."""
    forms = {_raw_password(url), _password(url)}
    decoded = _password(url)
    if decoded:
        forms.update({quote(decoded, safe=""), quote_plus(decoded)})
    global _ordered
    with _lock:
        _secrets.update(f for f in forms if f)
        _ordered = tuple(sorted((f for f in _secrets if len(f) >= 3), key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def display_url(url: str) -> str:
    """``url`` as it may be shown: the password replaced by ``***``."""
    remember_url(url)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return redact(url)


class RedactingFilter(logging.Filter):
    """Blanks remembered passwords in a record's message and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _ordered:
            return True  # no password seen yet: nothing to blank (every decision line)
        # the message is formatted here once and kept so: the formatter need not do it again
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = redact(text).rstrip("\n")
            record.exc_info = None
        return True
