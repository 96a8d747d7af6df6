"""drossel's configuration file (TOML) and the process-wide settings derived from it.

Precedence everywhere: command-line option, then environment (``DROSSEL_CONFIG``,
``DROSSEL_DB``, ``DROSSEL_NOW``), then the file, then the built-in default.  With no file at all
drossel runs with the default policy on ``sqlite:///drossel.db`` in the working directory.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drossel.core.policy import Policy

DEFAULT_DB_URL = "sqlite:///drossel.db"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageConfig(_Section):
    url: str | None = None
    refresh_seconds: float = Field(default=1.0, gt=0, le=60)
    flush_seconds: float = Field(default=1.0, gt=0, le=60)
    #: While the database is unreachable: ``cache`` keeps deciding from memory and accepts
    #: servers it has no record of (default); ``tempfail`` defers mail from such servers.
    fail_mode: Literal["cache", "tempfail"] = "cache"
    #: Local journal file for events kept during an outage beyond ``journal_memory_events``
    #: (and on shutdown); default ``drossel-journal.jsonl`` in the working directory.
    journal: str | None = None
    journal_memory_events: int = Field(default=10_000, ge=0)
    #: PostgreSQL only: LISTEN for pause/override/connector changes made on other nodes.
    listen: bool = True

    def journal_path(self) -> str:
        return self.journal or "drossel-journal.jsonl"


class MilterConfig(_Section):
    listen: str = "inet:127.0.0.1:8899"
    add_header: bool = True
    #: An RFC 5322 field name (printable ASCII without space or colon).
    header_name: str = Field(default="X-Drossel", pattern=r"^[\x21-\x39\x3b-\x7e]{1,76}$")
    early_refusal: bool = True
    read_timeout: float = Field(default=30.0, gt=0)
    on_policy_error: Literal["continue", "tempfail"] = "continue"
    #: Close a milter connection on which the MTA sent nothing for this long.  Above
    #: Postfix's smtpd_timeout (300 s), so a slow but live SMTP client is dropped by Postfix
    #: first, never by us; a dead MTA connection is still freed within minutes, not hours.
    idle_timeout: float = Field(default=330.0, gt=0, le=3600)
    #: Concurrent MTA connections; more are closed at once (Postfix then applies its
    #: milter default_action).  Postfix opens one per SMTP session (default_process_limit 100).
    max_connections: int = Field(default=512, ge=1)
    #: What is kept of a message's headers: the Received: lines only, at most this many ...
    max_received_headers: int = Field(default=200, ge=1)
    #: ... and at most this many characters of them in total (longer lines are cut).
    max_received_bytes: int = Field(default=65536, ge=1024)
    #: ``auto``: uvloop when it is installed (less CPU for socket work), else
    #: asyncio's own loop; ``asyncio`` or ``uvloop`` to choose (``uvloop`` must be installed).
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"


class GatewayConfig(_Section):
    listen: str = "127.0.0.1:2525"
    relay: str = "127.0.0.1:25"
    hostname: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    relay_tls: Literal["none", "opportunistic", "required"] = "opportunistic"
    max_message_size: int = Field(default=52_428_800, gt=0)
    max_recipients: int = Field(default=1000, gt=0)
    timeout: float = Field(default=60.0, gt=0)
    proxy_protocol_from: list[str] = Field(default_factory=list)
    tls_client_ca: str | None = None
    """CA bundle to verify client certificates; a verified name is matched to connectors."""
    early_refusal: bool = True


class WebConfig(_Section):
    listen: str = "127.0.0.1:8080"
    secure_cookies: bool | None = None
    login_attempts_per_minute: int = Field(default=10, ge=1)


class NotifyConfig(_Section):
    enabled: bool = False
    relay: str = "127.0.0.1:25"
    sender: str = "drossel@localhost"
    report_url: str = "http://127.0.0.1:8080/"
    interval_seconds: float = Field(default=60.0, gt=0)


class ServeConfig(_Section):
    milter: bool = True
    gateway: bool = False
    web: bool = True


class Config(_Section):
    policy: Policy = Policy()
    storage: StorageConfig = StorageConfig()
    milter: MilterConfig = MilterConfig()
    gateway: GatewayConfig = GatewayConfig()
    web: WebConfig = WebConfig()
    notify: NotifyConfig = NotifyConfig()
    serve: ServeConfig = ServeConfig()


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
    )


def config_from_dict(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def load_config(path: str | None = None) -> Config:
    """Load ``path`` (or ``$DROSSEL_CONFIG``); no file means all defaults."""
    path = path or os.environ.get("DROSSEL_CONFIG") or None
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def database_url(config: Config, override: str | None = None) -> str:
    return override or os.environ.get("DROSSEL_DB") or config.storage.url or DEFAULT_DB_URL


def parse_moment(text: str) -> datetime:
    """ISO 8601 date or timestamp; naive values are UTC."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"not an ISO 8601 date or time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


Clock = Callable[[], datetime]


def make_clock(at: str | None = None) -> Clock:
    """The process clock: fixed by ``--at``/``--now``; shifted by ``$DROSSEL_NOW`` (test/demo
    only: time then runs on from that moment); else the real UTC time."""
    if at:
        fixed = parse_moment(at)
        return lambda: fixed
    env = os.environ.get("DROSSEL_NOW")
    if env:
        start = parse_moment(env)
        real_start = datetime.now(UTC)
        return lambda: start + (datetime.now(UTC) - real_start)
    return lambda: datetime.now(UTC)
