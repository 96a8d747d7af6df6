"""Listening side of the gateway: aiosmtpd sessions, STARTTLS, PROXY protocol, graceful stop.

:func:`serve_gateway` serves until its ``stop`` event is set and flushes the state on the way
out (the daemon); :func:`start_gateway` returns a :class:`GatewayHandle` with the bound
``host``/``port`` and an async ``close()`` (tests, the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP

from drossel.app.enforcer import Enforcer
from drossel.config import ConfigError, GatewayConfig
from drossel.gateway.handler import GatewayHandler, split_hostport
from drossel.gateway.relay import NextHop, NextHopUnavailable, clean
from drossel.runtime import run_flusher

log = logging.getLogger("drossel.gateway")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PROXY_TIMEOUT = 10.0

#: The common shape of a MAIL/RCPT address: ``<dot-atom@host.name>`` and the parameters after
#: it.  aiosmtpd parses every address with the RFC 5322 header parser (and builds a class per
#: call), about 130 µs each; this shape gives the same result as that parser (a property test
#: holds it to that) in a few µs.  Anything else (quoted local parts, comments, ``<>``, IP
#: literals, non-ASCII) still goes through aiosmtpd.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(
    rf"[ \t]*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>"
    r"(?:[ \t]+(?=[^ \t(])|(?=[^ \t(])|$)([^\r\n]*)"
)
DATA_TIMEOUT_FACTOR = 10


def parse_networks(values: list[str]) -> list[Network]:
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values]


def _in_networks(peer: Any, networks: list[Network]) -> bool:
    if not networks or not isinstance(peer, tuple | list) or not peer:
        return False
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


_COMMAND_NAMES: dict[type, list[str]] = {}


def _command_names(cls: type) -> list[str]:
    names = _COMMAND_NAMES.get(cls)
    if names is None:
        names = [name for name in dir(cls) if name.startswith(("smtp_", "auth_"))]
        _COMMAND_NAMES[cls] = names
    return names


class GatewaySMTP(SMTP):
    """One client connection.  Expects a PROXY header only from the configured load
    balancers (anyone else sending one gets ``500``, so it is never honoured), and tells the
    handler when the client goes away so the next-hop session is dropped with it."""

    def __init__(
        self,
        handler: GatewayHandler,
        *,
        proxy_from: list[Network],
        registry: set[GatewaySMTP],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.gateway_handler = handler
        self._proxy_from = proxy_from
        self._registry = registry
        self._pending_lines = b""

    def __dir__(self) -> list[str]:
        # aiosmtpd's __init__ looks up its ``smtp_*`` commands and ``auth_*`` mechanisms with
        # dir()/inspect.getmembers() on every connection, which also evaluates every other
        # attribute: listing only those names keeps that per-connection cost small
        return _command_names(type(self))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # the TCP connection, not the switch to TLS
        if first:
            peer = transport.get_extra_info("peername")
            self._proxy_timeout = PROXY_TIMEOUT if _in_networks(peer, self._proxy_from) else None
            self._registry.add(self)
        super().connection_made(transport)
        if first and self._proxy_timeout is None and self.session is not None:
            # the peer is the client: look its name up while it reads our greeting
            self.gateway_handler.start_lookup(self.session)

    async def _handle_client(self) -> None:
        # a client that hangs up right after QUIT (or mid-reply) is not an error
        with contextlib.suppress(ConnectionResetError):
            await super()._handle_client()

    async def push(self, status: Any) -> None:
        """One reply line.  aiosmtpd echoes client input in some replies ("502 Could not
        VRFY <arg>"): one line, no controls, undecodable bytes (surrogates) replaced, never an
        exception.  The lines of a multi-line reply (EHLO) go out in one write with the last
        line instead of one system call each."""
        if isinstance(status, str):
            status = clean(status.encode("utf-8", "replace").decode("utf-8")).encode("utf-8")
        line = bytes(status) + b"\r\n"
        if line[3:4] == b"-":
            self._pending_lines += line
            return
        data, self._pending_lines = self._pending_lines + line, b""
        self._writer.write(data)
        await self._writer.drain()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_ADDRESS.fullmatch(arg)
        if plain is not None:
            address, rest = plain.groups()
            local = address.rpartition("@")[0]
            if self.local_part_limit and len(local) > self.local_part_limit:
                return None, None
            return address, rest
        # aiosmtpd's address parser raises IndexError on e.g. "MAIL FROM: <" (found by the
        # fuzz test) and AttributeError on "," (found by the fast path's property test): that
        # is a malformed address (553), not a gateway error (451)
        try:
            return super()._getaddr(arg)
        except (IndexError, ValueError, AttributeError):
            return None, None

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's timer covers the whole transfer of the message: allow for big ones
        self._reset_timeout(self._timeout_duration * DATA_TIMEOUT_FACTOR)
        await super().smtp_DATA(arg)

    def connection_lost(self, error: Exception | None) -> None:
        self._registry.discard(self)
        self.gateway_handler.connection_closed(self.session)
        super().connection_lost(error)


def client_tls_context(
    cert: str | None, key: str | None, client_ca: str | None = None
) -> ssl.SSLContext | None:
    """Our STARTTLS certificate; with ``client_ca`` client certificates are requested and,
    when verified, their name is the connection's TLS name for connector matching."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key or None)
    if client_ca:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(client_ca)
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def is_loopback(host: str) -> bool:
    """Only a gateway listening on loopback cannot be reached by outside clients."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # "", "0.0.0.0", "::" and names: reachable from outside


NO_XCLIENT = (
    "the next hop {relay} does not offer XCLIENT to the gateway, so it would see every client "
    "as the gateway's own address (an open relay if it trusts that address). Allow the "
    "gateway's address in the next hop's smtpd_authorized_xclient_hosts (Postfix), or, if "
    "the next hop does not trust the gateway's address for relaying, set "
    "[gateway] allow_without_xclient = true"
)


async def check_next_hop(config: GatewayConfig, hostname: str) -> bool:
    """Ask the next hop at start-up whether it takes XCLIENT from us; raise ``ConfigError`` when
    it does not and outside clients could reach us.  Returns whether XCLIENT must be used on
    every relayed session (it is also enforced per session: the next hop may change)."""
    host, _ = split_hostport(config.listen, 2525)
    required = not config.allow_without_xclient and not is_loopback(host)
    if not required:
        return False
    relay_host, relay_port = split_hostport(config.relay)
    hop = NextHop(
        relay_host,
        relay_port,
        local_hostname=hostname,
        tls=config.relay_tls,
        timeout=min(config.timeout, 10.0),
    )
    try:
        refused = await hop.open()
    except NextHopUnavailable as exc:
        log.warning(
            "cannot ask the next hop about XCLIENT at start-up (%s); checked per session", exc
        )
        return True
    try:
        if refused is None and not hop.offers_xclient:
            raise ConfigError(NO_XCLIENT.format(relay=config.relay))
    finally:
        await hop.quit()
    return True


@dataclass
class GatewayHandle:
    host: str
    port: int
    handler: GatewayHandler
    server: asyncio.Server
    sessions: set[GatewaySMTP] = field(default_factory=set)

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; give open transactions up to ``grace`` seconds, then disconnect
        everyone (a transaction that did not finish was never confirmed: nothing is lost)."""
        self.server.close()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.handler.transactions_open:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
        await asyncio.sleep(0)
        await self.handler.pool.close()
        await self.server.wait_closed()


async def start_gateway(
    enforcer: Enforcer,
    config: GatewayConfig,
    *,
    tls_client_ca: str | None = None,
    reuse_port: bool = False,
) -> GatewayHandle:
    """Listen on ``config.listen`` (port 0 picks a free port) and return a handle."""
    host, port = split_hostport(config.listen, 2525)
    hostname = config.hostname or socket.getfqdn()
    client_ca = tls_client_ca or config.tls_client_ca
    tls = client_tls_context(config.tls_cert, config.tls_key, client_ca)
    require_xclient = await check_next_hop(config, hostname)
    handler = GatewayHandler(
        enforcer,
        config,
        hostname=hostname,
        require_xclient=require_xclient,
    )
    proxy_from = parse_networks(config.proxy_protocol_from)
    loop = asyncio.get_running_loop()
    sessions: set[GatewaySMTP] = set()

    def factory() -> GatewaySMTP:
        smtp = GatewaySMTP(
            handler,
            proxy_from=proxy_from,
            registry=sessions,
            hostname=hostname,
            ident="ESMTP drossel",
            data_size_limit=config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls,
            timeout=config.timeout,
            loop=loop,
        )
        return smtp

    server = await loop.create_server(
        factory, host=host or None, port=port, reuse_port=reuse_port or None
    )
    sockname = server.sockets[0].getsockname()
    handle = GatewayHandle(str(sockname[0]), int(sockname[1]), handler, server, sessions)
    log.info(
        "gateway listening on %s:%d, relaying to %s (tls %s)",
        handle.host,
        handle.port,
        config.relay,
        config.relay_tls,
    )
    return handle


async def serve_gateway(
    enforcer: Enforcer, config: GatewayConfig, stop: asyncio.Event, *, reuse_port: bool = False
) -> None:
    """Serve the gateway until ``stop`` is set; flush state on the way out."""
    handle = await start_gateway(enforcer, config, reuse_port=reuse_port)
    flusher = asyncio.create_task(run_flusher(enforcer, stop))
    try:
        await stop.wait()
    finally:
        await handle.close()
        stop.set()
        await flusher
        log.info("gateway stopped")
