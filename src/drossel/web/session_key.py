"""The key that signs session cookies and CSRF tokens, kept outside the state database.

Sources, first match wins: ``$DROSSEL_SESSION_KEY``; the file ``[web] session_key_file``; else
``drossel-session.key`` beside the configuration file, beside the SQLite state file, or in the
working directory, created on first use with mode 0600.  Several keys (whitespace-separated in
the variable, one per line in the file) allow rotation: the first signs, all are accepted.
Several web nodes must share the key (same variable or a copy of the file).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url

from drossel.config import Config
from drossel.storage.files import create_private, warn_if_shared

log = logging.getLogger("drossel.web")

ENV = "DROSSEL_SESSION_KEY"
FILE_NAME = "drossel-session.key"
MIN_LENGTH = 32


class SessionKeyError(ValueError):
    """The configured key is missing or too short; the message says where it came from."""


def state_directory(config: Config, db_url: str) -> Path:
    """Where drossel keeps its own files: beside the configuration, else the SQLite file."""
    if config.source:
        return Path(config.source).resolve().parent
    try:
        url = make_url(db_url)
    except Exception:
        return Path.cwd()
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent
    return Path.cwd()


def key_file(config: Config, db_url: str) -> Path:
    if config.web.session_key_file:
        return Path(config.web.session_key_file)
    return state_directory(config, db_url) / FILE_NAME


def _parse(text: str, where: str) -> list[bytes]:
    keys = [
        key
        for line in text.splitlines()
        if not line.strip().startswith("#")
        for key in line.replace(",", " ").split()
    ]
    if not keys:
        raise SessionKeyError(f"{where}: no session key in it")
    short = [k for k in keys if len(k) < MIN_LENGTH]
    if short:
        raise SessionKeyError(f"{where}: a session key must be at least {MIN_LENGTH} characters")
    return [k.encode() for k in keys]


def session_keys(config: Config, db_url: str) -> list[bytes]:
    """The signing key first, then older keys still accepted."""
    env = os.environ.get(ENV)
    if env:
        return _parse(env, f"${ENV}")
    path = key_file(config, db_url)
    if create_private(path, secrets.token_hex(32) + "\n"):
        log.info(
            "created session key file %s (mode 0600); every web node must use the same key", path
        )
    else:
        warn_if_shared(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SessionKeyError(f"cannot read session key file {path}: {exc.strerror}") from None
    return _parse(text, str(path))
