"""The gateway's aiosmtpd handler: in-line relay with drossel's verdict at end of DATA.

The next-hop session opens at the client's MAIL FROM; MAIL and every RCPT are passed on and the
next hop's own reply goes back to the client.  At the end of DATA the engine grades the headers:
a throttle or block verdict answers ``450 4.7.230``/``550 5.7.230`` and the next-hop transaction
is reset (nothing sent on); otherwise the message, with our ``Received:`` line on top, goes to
the next hop and the client gets the next hop's final reply, never a 250 of our own.  A next hop
that is down, drops the connection or times out gives ``451 4.4.1`` so the sender retries.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import format_datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from drossel.app.enforcer import ClientInfo, Enforcer
from drossel.config import GatewayConfig
from drossel.core.decision import Verdict
from drossel.core.detection import header_block, parse_headers
from drossel.gateway.headers import strip_header, verdict_header
from drossel.gateway.pool import NextHopPool
from drossel.gateway.relay import NextHop, NextHopUnavailable, RelayTls, clean, identity_key
from drossel.gateway.reverse_dns import ReverseLookup, ReverseName

log = logging.getLogger("drossel.gateway")

NEXT_HOP_DOWN = "451 4.4.1 Next hop not reachable, try again later"
INTERNAL_ERROR = "451 4.3.0 Temporary gateway error, try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
BAD_SENDER = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
BAD_OPTION = "501 5.5.4 Invalid command parameters"
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def has_controls(*values: str) -> bool:
    """Controls (also in options) cannot be passed on to the next hop: refuse them here."""
    return any(_CONTROLS.search(value) for value in values)


def verdict_reply(verdict: Verdict) -> str | None:
    """``code enhanced text`` for a throttle/block verdict (one clean line), else ``None``."""
    if verdict.action not in ("throttle", "block") or verdict.code is None:
        return None
    parts = [str(verdict.code), verdict.enhanced_code or "", verdict.text or verdict.reason]
    return clean(" ".join(p for p in parts if p))


def split_hostport(text: str, default_port: int = 25) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``host`` (default port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
        return host, int(port) if port else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def peer_tls_name(session: Session) -> str | None:
    """Subject CN (else first DNS name) of the client certificate, when one was verified."""
    info = session.ssl or {}
    ssl_object = info.get("ssl_object")
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            return str(value)
    return None


def client_address(session: Session) -> str | None:
    """The client's IP: from the PROXY header when one was accepted, else the peer."""
    proxy = session.proxy_data
    if proxy is not None and proxy.src_addr is not None:
        return str(proxy.src_addr)
    peer = session.peer
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return None


def reverse_lookup(config: GatewayConfig) -> ReverseLookup | None:
    """The configured reverse lookup (``None`` when switched off)."""
    if not config.reverse_lookup:
        return None
    if not config.dns_resolver:
        return ReverseLookup(timeout=config.dns_timeout)
    host, port = split_hostport(config.dns_resolver, 53)
    return ReverseLookup([host], port, config.dns_timeout)


class GatewayHandler:
    """aiosmtpd handler (shared by all connections; per-connection state keyed by session)."""

    def __init__(
        self,
        enforcer: Enforcer,
        config: GatewayConfig,
        *,
        hostname: str,
        require_xclient: bool = False,
    ) -> None:
        self.enforcer = enforcer
        self.config = config
        self.hostname = hostname
        self.relay_host, self.relay_port = split_hostport(config.relay)
        self.relay_tls: RelayTls = config.relay_tls
        self.require_xclient = require_xclient
        self._hops: dict[Session, NextHop] = {}
        self.pool = NextHopPool(
            self._new_hop,
            max_idle=config.relay_pool_size,
            idle_seconds=config.relay_idle_seconds,
            max_uses=config.relay_reuse_limit,
        )
        self._names: dict[Session, tuple[str | None, asyncio.Task[ReverseName]]] = {}
        self.reverse = reverse_lookup(config)

    # --- per-connection state -------------------------------------------------------------

    def __dir__(self) -> list[str]:
        # aiosmtpd finds the ``handle_*`` hooks with dir() on every connection (and evaluates
        # every listed attribute): list only the hooks, found once per class
        cls = type(self)
        names: list[str] | None = cls.__dict__.get("_hook_names")
        if names is None:
            names = [name for name in dir(cls) if name.startswith("handle_")]
            cls._hook_names = names  # type: ignore[attr-defined]
        return names

    def _new_hop(self) -> NextHop:
        return NextHop(
            self.relay_host,
            self.relay_port,
            local_hostname=self.hostname,
            tls=self.relay_tls,
            timeout=self.config.timeout,
            require_xclient=self.require_xclient,
        )

    def _hop(self, session: Session, client: ClientInfo) -> NextHop:
        hop = self._hops.get(session)
        if hop is None:
            key = identity_key(client, session.extended_smtp)
            hop = self._hops[session] = self.pool.acquire(key)
        return hop

    def connection_closed(self, session: Session | None) -> None:
        """The client went away (also mid-DATA): drop the next-hop session, so an open
        transaction there is discarded and nothing half-sent is delivered."""
        if session is None:
            return
        hop = self._hops.pop(session, None)
        if hop is not None:
            self.pool.release(hop)  # closed instead when a transaction is open
        lookup = self._names.pop(session, None)
        if lookup is not None:
            lookup[1].cancel()

    def start_lookup(self, session: Session) -> None:
        """Start the client's reverse lookup in the background (at connect, or once a PROXY
        header named the real client), so it overlaps the client's own greeting."""
        if self.reverse is None:
            return
        addr = client_address(session)
        current = self._names.get(session)
        if current is not None and current[0] == addr:
            return
        if current is not None:
            current[1].cancel()
        self._names[session] = (addr, asyncio.ensure_future(self.reverse.lookup(addr)))

    async def client_info(self, session: Session) -> ClientInfo:
        """What we know of the client: address, forward-confirmed name and PTR name (waiting
        at most ``dns_timeout`` for the lookup), HELO, and a verified certificate's name."""
        names = ReverseName()
        if self.reverse is not None:
            self.start_lookup(session)
            try:
                names = await self._names[session][1]
            except Exception:
                log.exception("reverse lookup failed; the client has no name")
        return ClientInfo(
            addr=client_address(session),
            name=names.name,
            ptr=names.ptr,
            helo=session.host_name,
            tls_name=peer_tls_name(session),
        )

    @property
    def open_sessions(self) -> int:
        return len(self._hops)

    @property
    def transactions_open(self) -> int:
        return sum(1 for hop in self._hops.values() if hop.in_transaction)

    @contextmanager
    def waiting_for_next_hop(self, server: SMTP) -> Iterator[None]:
        """aiosmtpd's client timer runs from one command to the next, also while we wait for
        the next hop: give it room for the relay's own timeouts, then re-arm it."""
        server._reset_timeout(self.config.timeout * 4 + 5)
        try:
            yield
        finally:
            if server.transport is not None:
                server._reset_timeout()

    # --- aiosmtpd hooks -------------------------------------------------------------------

    async def handle_PROXY(
        self, server: SMTP, session: Session, envelope: Envelope, proxy_data: Any
    ) -> bool:
        # only called for connections from configured load balancers (see server.py)
        return bool(proxy_data)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        self.start_lookup(session)
        # we offer no AUTH (relay permission is the next hop's business)
        return [r for r in responses if not r[4:].upper().startswith("AUTH")]

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if has_controls(address):
            return BAD_SENDER
        if has_controls(*mail_options):
            return BAD_OPTION
        with self.waiting_for_next_hop(server):
            client = await self.client_info(session)
            hop = self._hop(session, client)
            return await self._mail(hop, session, client, envelope, address, mail_options)

    async def _mail(
        self,
        hop: NextHop,
        session: Session,
        client: ClientInfo,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        reused = hop.connected
        for attempt in (1, 2):
            try:
                return await self._mail_once(hop, session, client, envelope, address, mail_options)
            except NextHopUnavailable as exc:
                if reused and attempt == 1:
                    # the next hop closed the pooled connection meanwhile: nothing was
                    # committed yet, so try once more on a new connection
                    log.info("pooled next-hop connection went stale (%s); reconnecting", exc)
                    continue
                log.warning("next hop unavailable at MAIL: %s", exc)
        return NEXT_HOP_DOWN

    async def _mail_once(
        self,
        hop: NextHop,
        session: Session,
        client: ClientInfo,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        refused = await hop.open(client, esmtp=session.extended_smtp)
        if refused is not None:
            return str(refused)
        options: list[str] = []
        for option in mail_options:
            name = option.split("=", 1)[0]
            if name == "SMTPUTF8":
                if not hop.supports("smtputf8"):
                    return "553 5.6.7 Next hop does not support SMTPUTF8"
                options.append(option)
            elif name == "BODY":
                if option == "BODY=8BITMIME" and not hop.supports("8bitmime"):
                    return "554 5.6.3 Next hop does not support 8BITMIME"
                if hop.supports("8bitmime"):
                    options.append(option)
            elif name == "SIZE":
                if hop.supports("size"):
                    options.append(option)
            else:
                options.append(option)
        reply = await hop.mail(address, options)
        if reply.ok:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return str(reply)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return TOO_MANY_RECIPIENTS
        if has_controls(address):
            return BAD_RECIPIENT
        if has_controls(*rcpt_options):
            return BAD_OPTION
        hop = self._hops.get(session)
        if hop is None or not hop.in_transaction:
            return NEXT_HOP_DOWN
        try:
            with self.waiting_for_next_hop(server):
                answer = await hop.rcpt(address, rcpt_options)
        except NextHopUnavailable as exc:
            log.warning("next hop unavailable at RCPT: %s", exc)
            return NEXT_HOP_DOWN
        if answer.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return str(answer)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if isinstance(content, str):  # pragma: no cover - decode_data is off
            content = content.encode("utf-8", "surrogateescape")
        hop = self._hops.get(session)
        client = await self.client_info(session)
        try:
            headers = parse_headers(header_block(content))
            verdict: Verdict | None = (await self.enforcer.process_async(headers, client)).verdict
        except Exception:
            # fail open: the state is the problem, not the mail (SPEC §9)
            log.exception("policy failed; relaying the message unchanged")
            verdict = None
        reply = verdict_reply(verdict) if verdict is not None else None
        if reply is not None:
            if hop is not None:
                with self.waiting_for_next_hop(server):
                    await hop.rset()
            return reply
        if hop is None or not hop.in_transaction:
            return NEXT_HOP_DOWN
        message = self.received_line(session, envelope, client)
        if self.config.add_header:
            message += verdict_header(self.config.header_name, verdict)
        message += strip_header(content, self.config.header_name)
        try:
            with self.waiting_for_next_hop(server):
                answer = await hop.data(message)
        except NextHopUnavailable as exc:
            log.warning("next hop unavailable at DATA: %s", exc)
            return NEXT_HOP_DOWN
        return str(answer)

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        hop = self._hops.get(session)
        if hop is not None and hop.in_transaction:
            with self.waiting_for_next_hop(server):
                await hop.rset()
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        hop = self._hops.pop(session, None)
        if hop is not None:
            self.pool.release(hop)
        return "221 2.0.0 Bye"

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s: %s", type(error).__name__, error)
        return INTERNAL_ERROR

    # --- our trace header -----------------------------------------------------------------

    def received_line(self, session: Session, envelope: Envelope, client: ClientInfo) -> bytes:
        helo = clean(session.host_name or "unknown")[:255]
        protocol = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP"
        if not session.extended_smtp:
            protocol = "SMTP"
        if session.ssl is not None:
            protocol += "S"
        tls = ""
        if session.ssl is not None:
            ssl_object = session.ssl.get("ssl_object")
            cipher = ssl_object.cipher() if ssl_object is not None else None
            if cipher:
                tls = f"\r\n\t(using {cipher[1]} with cipher {cipher[0]})"
        recipient = ""
        if len(envelope.rcpt_tos) == 1:
            recipient = f"\r\n\tfor <{clean(envelope.rcpt_tos[0])}>"
        stamp = format_datetime(self.enforcer.clock())
        name = clean(client.name or "unknown")
        line = (
            f"Received: from {helo} ({name} [{client.addr or 'unknown'}]){tls}\r\n"
            f"\tby {self.hostname} (drossel) with {protocol} id {secrets.token_hex(6).upper()}"
            f"{recipient}; {stamp}\r\n"
        )
        return line.encode("utf-8", "surrogateescape")
