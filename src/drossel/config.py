"""drossel's configuration file (TOML) and the process-wide settings derived from it.

Precedence everywhere: command-line option, then environment (``DROSSEL_CONFIG``,
``DROSSEL_DB``, ``DROSSEL_NOW``), then the file, then the built-in default.  With no file at all
drossel runs with the default policy on ``sqlite:///drossel.db`` in the working directory.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from drossel.core.policy import Policy
from drossel.redact import remember_url

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
    #: How long an SMTP session waits for the database to read a server not in memory;
    #: slower counts as unreachable for that message (``fail_mode``), never a stalled session.
    read_timeout: float = Field(default=2.0, gt=0, le=60)

    def journal_path(self) -> str:
        return self.journal or "drossel-journal.jsonl"


class MilterConfig(_Section):
    listen: str = "inet:127.0.0.1:8899"
    add_header: bool = True
    #: An RFC 5322 field name (printable ASCII without space or colon).
    header_name: str = Field(default="X-Drossel", pattern=r"^[\x21-\x39\x3b-\x7e]{1,76}$")
    early_refusal: bool = False
    """Ignored (kept so old configuration files load): refusing at RCPT before the headers
    are read could refuse a server that has just been patched (SPEC §4)."""
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
    early_refusal: bool = False
    """Ignored (kept so old configuration files load): refusing at RCPT before the headers
    are read could refuse a server that has just been patched (SPEC §4)."""
    #: Relay through a next hop that does not offer XCLIENT to us although we listen on a
    #: non-loopback address.  The next hop then sees every client as the gateway's address:
    #: only safe when it does not trust that address for relaying (see docs/postfix.md).
    allow_without_xclient: bool = False
    #: Idle next-hop connections kept for the next client session (0: a new one each time),
    #: how long one may stay idle, and how many transactions one carries before it is closed.
    relay_pool_size: int = Field(default=32, ge=0, le=10_000)
    relay_idle_seconds: float = Field(default=5.0, gt=0, le=300)
    relay_reuse_limit: int = Field(default=100, ge=1)
    #: Gateway processes sharing the listening socket (SO_REUSEPORT); ``--workers`` overrides.
    workers: int = Field(default=1, ge=1, le=64)
    #: Forward-confirmed reverse lookup of each client (its name is evidence, SPEC §3).
    reverse_lookup: bool = True
    #: DNS server for that lookup, ``host`` or ``host:port`` (``[v6]:port``); default: the
    #: system's resolv.conf.
    dns_resolver: str | None = None
    dns_timeout: float = Field(default=2.0, gt=0, le=30)
    #: Our verdict header on relayed mail; copies arriving from outside are always removed.
    add_header: bool = True
    header_name: str = Field(default="X-Drossel", pattern=r"^[!-9;-~]{1,76}$")
    #: as ``[milter] event_loop``
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"


class WebConfig(_Section):
    listen: str = "127.0.0.1:8080"
    secure_cookies: bool | None = None
    login_attempts_per_minute: int = Field(default=10, ge=1)
    #: Failed attempts with one token (its first characters) per minute before that token is
    #: refused for the rest of the minute: guessing one token is slow from any number of
    #: addresses, and wrong guesses never lock out other tokens.
    token_attempts_per_minute: int = Field(default=5, ge=1)
    #: Proxies (CIDRs) whose ``X-Forwarded-For`` names the real client for the login limits;
    #: from any other peer the header is ignored.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: ``/metrics`` needs an operator token (``Authorization: Bearer``) or operator session.
    metrics_auth: bool = False
    #: ``/api/docs`` and ``/openapi.json`` need a token or a logged-in session.
    docs_auth: bool = False
    #: File with the session-signing key(s): first line signs, further lines are still accepted
    #: (rotation).  Default ``drossel-session.key`` beside the configuration file, else beside
    #: the SQLite file, else in the working directory.  ``DROSSEL_SESSION_KEY`` overrides it.
    session_key_file: str | None = None

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"not an IP network: {item!r}") from None
        return [item.strip() for item in value]


class NotifyConfig(_Section):
    enabled: bool = False
    relay: str = "127.0.0.1:25"
    sender: str = "drossel@localhost"
    report_url: str = "http://127.0.0.1:8080/"
    interval_seconds: float = Field(default=60.0, gt=0)
    #: ``starttls``: upgrade the relay connection (fail if the relay cannot); ``tls``: TLS from
    #: the first byte (port 465); ``none``: plain SMTP (a relay on the same host or network).
    tls: Literal["none", "starttls", "tls"] = "none"
    #: CA bundle to verify the relay's certificate (default: the system's); ``tls_verify =
    #: false`` accepts any certificate (lab use only).
    tls_ca: str | None = None
    tls_verify: bool = True
    #: SMTP AUTH at the relay; only over TLS, so the password never crosses the wire in clear.
    username: str | None = None
    password: str | None = None
    #: Read the password from this file instead (keeps it out of the configuration file).
    password_file: str | None = None

    @model_validator(mode="after")
    def _auth_needs_tls(self) -> NotifyConfig:
        if self.username and self.tls == "none":
            raise ValueError('username (SMTP AUTH) needs tls = "starttls" or "tls"')
        if self.username and not (self.password or self.password_file):
            raise ValueError("username needs password or password_file")
        if (self.password or self.password_file) and not self.username:
            raise ValueError("password without username")
        return self

    def secret(self) -> str | None:
        """The relay password (from ``password_file`` when set)."""
        if self.password_file:
            try:
                return Path(self.password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"notify.password_file {self.password_file}: {exc.strerror}"
                ) from None
        return self.password


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
    #: the file this configuration was read from (``None``: built-in defaults)
    _source: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        return self._source


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
        config = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    config._source = str(path)
    return config


def database_url(config: Config, override: str | None = None) -> str:
    url = override or os.environ.get("DROSSEL_DB") or config.storage.url or DEFAULT_DB_URL
    remember_url(url)  # its password never appears in output or logs (drossel.redact)
    return url


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
