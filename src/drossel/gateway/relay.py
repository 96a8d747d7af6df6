"""The next-hop SMTP session of one gateway client session (aiosmtplib underneath).

Every command returns the next hop's own :class:`Reply` (also refusals); only a next hop that
cannot be reached, drops the connection or does not answer in time raises
:class:`NextHopUnavailable`, which the handler turns into ``451 4.4.1`` so the sender retries.
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

from drossel.app.enforcer import ClientInfo
from drossel.gateway.xclient import helo_for_next_hop, xclient_commands

log = logging.getLogger("drossel.gateway")

RelayTls = Literal["none", "opportunistic", "required"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def clean(text: str) -> str:
    """One safe reply line: CR, LF and other controls become a space."""
    return _UNSAFE.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def __str__(self) -> str:
        """The reply line for our client (a multi-line reply is joined into one line)."""
        text = clean(self.text)
        return f"{self.code} {text}" if text else str(self.code)


class NextHopUnavailable(Exception):
    """The next hop could not be reached, went away, or timed out."""


def relay_tls_context() -> ssl.SSLContext:
    """Like Postfix's ``may``/``encrypt`` levels: encrypt, do not authenticate the next hop."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _address(address: str) -> bytes:
    """``<addr>`` as sent by the client (the null sender stays ``<>``)."""
    if address in ("", "<>"):
        return b"<>"
    return b"<" + address.encode("utf-8", "surrogateescape") + b">"


Identity = tuple[str | None, str | None, str | None, bool]


def identity_key(client: ClientInfo, esmtp: bool) -> Identity:
    """What XCLIENT told the next hop: a pooled connection serves only the same client."""
    return (client.addr, client.name, client.helo, esmtp)


class NextHop:
    """One SMTP session to the next hop, opened lazily and reused for the client's next
    transactions."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        local_hostname: str,
        tls: RelayTls = "opportunistic",
        timeout: float = 60.0,
        require_xclient: bool = False,
    ) -> None:
        self.host = host
        self.require_xclient = require_xclient
        self.port = port
        self.local_hostname = local_hostname
        self.tls = tls
        self.timeout = timeout
        self._smtp: aiosmtplib.SMTP | None = None
        self.in_transaction = False
        self.encrypted = False
        #: the client this connection was handed over for (XCLIENT); None: speaks for us
        self.identity: Identity | None = None
        #: mail transactions started on this connection (for the pool's reuse limit)
        self.uses = 0

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    def supports(self, extension: str) -> bool:
        return self._smtp is not None and self._smtp.supports_extension(extension)

    @property
    def offers_xclient(self) -> bool:
        """XCLIENT with ``ADDR``: without the address the next hop cannot judge the client
        (Postfix's smtp-sink, for one, offers only ``NAME HELO``)."""
        if self._smtp is None or not self.supports("xclient"):
            return False
        return "ADDR" in self._smtp.esmtp_extensions.get("xclient", "").upper().split()

    async def open(self, client: ClientInfo | None = None, *, esmtp: bool = True) -> Reply | None:
        """Connect, EHLO and STARTTLS as configured, then tell the next hop who the client is
        (XCLIENT, when it offers it).  Returns a refusal by the next hop (its greeting, EHLO or
        XCLIENT answer) or ``None`` when the session is ready."""
        key = identity_key(client, esmtp) if client is not None else None
        if self.connected and self.identity is not None and self.identity != key:
            # this connection was handed over to another client, and a next hop takes
            # XCLIENT only from the gateway itself (Postfix): never reuse it for this one
            await self.quit()
        if not self.connected:
            reply = await self._connect()
            if reply is not None:
                return reply
        if client is None or self.identity == key:
            return None  # (a pooled connection already speaks for this very client)
        return await self.identify(client, esmtp=esmtp)

    async def identify(self, client: ClientInfo, *, esmtp: bool = True) -> Reply | None:
        """XCLIENT with the client's address, confirmed name, HELO and protocol, then EHLO again
        (the next hop restarts the session).  A next hop without XCLIENT is refused when
        ``require_xclient`` (it would take our address for the client's)."""
        smtp = self._smtp
        if smtp is None:
            raise NextHopUnavailable("not connected")
        if not self.offers_xclient:
            if self.require_xclient:
                self.close()
                log.error(
                    "next hop %s:%d does not offer XCLIENT to us: not relaying (it would see "
                    "every client as the gateway); see [gateway] allow_without_xclient",
                    self.host,
                    self.port,
                )
                return Reply(451, "4.7.0 Next hop cannot be told the client, try again later")
            return None
        supported = set(smtp.esmtp_extensions.get("xclient", "").upper().split())
        try:
            for line in xclient_commands(client, esmtp=esmtp, supported=supported):
                response = await smtp.execute_command(line.encode("ascii"))
                # Postfix answers with a new 220 greeting; older servers (and smtp-sink) 250
                if not 200 <= response.code < 300:
                    log.error("next hop refused XCLIENT: %s %s", response.code, response.message)
                    self.close()
                    return Reply(451, "4.7.0 Next hop refused the client hand-over, try again")
            self.identity = identity_key(client, esmtp)
            helo = helo_for_next_hop(client.helo) or self.local_hostname
            await smtp.ehlo(hostname=helo)
        except aiosmtplib.SMTPHeloError as exc:
            self.close()
            return Reply(451 if exc.code == 421 else exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self.close()
            raise NextHopUnavailable(f"{self.host}:{self.port}: {exc}") from exc
        return None

    async def _connect(self) -> Reply | None:
        self.close()
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            start_tls=False,
            use_tls=False,
        )
        try:
            await smtp.connect()
            self._smtp = smtp
            reply = await self._ehlo()
            if reply is not None:
                return reply
            if self.tls != "none" and smtp.supports_extension("starttls"):
                await smtp.starttls(tls_context=relay_tls_context())
                self.encrypted = True
                reply = await self._ehlo()
                if reply is not None:
                    return reply
            elif self.tls == "required":
                self.close()
                return Reply(451, "4.7.5 Next hop does not offer STARTTLS, try again later")
        except aiosmtplib.SMTPConnectResponseError as exc:
            self.close()
            return Reply(451 if exc.code == 421 else exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self.close()
            raise NextHopUnavailable(f"{self.host}:{self.port}: {exc}") from exc
        self.in_transaction = False
        return None

    async def _ehlo(self) -> Reply | None:
        assert self._smtp is not None
        try:
            await self._smtp.ehlo()
        except aiosmtplib.SMTPHeloError as exc:
            self.close()
            return Reply(451 if exc.code == 421 else exc.code, exc.message)
        return None

    async def _command(self, *args: bytes) -> Reply:
        if self._smtp is None:
            raise NextHopUnavailable("not connected")
        try:
            response = await self._smtp.execute_command(*args)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self.close()
            raise NextHopUnavailable(f"{self.host}:{self.port}: {exc}") from exc
        if response.code == 421:
            # the next hop is closing; our client keeps its session and retries later
            self.close()
            return Reply(451, response.message or "4.4.2 Next hop closed the connection")
        return Reply(response.code, response.message)

    async def mail(self, sender: str, options: list[str]) -> Reply:
        if self.in_transaction:
            await self.rset()
        self.uses += 1
        reply = await self._command(b"MAIL", b"FROM:" + _address(sender), *_opts(options))
        self.in_transaction = reply.ok
        return reply

    async def rcpt(self, recipient: str, options: list[str]) -> Reply:
        return await self._command(b"RCPT", b"TO:" + _address(recipient), *_opts(options))

    async def data(self, message: bytes) -> Reply:
        """DATA, then the message (dot-stuffed by aiosmtplib); the final reply.  Until that
        reply the transaction counts as open: a connection dropped meanwhile is closed, never
        pooled, so the next hop discards the half-sent message."""
        if self._smtp is None:
            raise NextHopUnavailable("not connected")
        try:
            response = await self._smtp.data(message)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:
                self.close()
                return Reply(451, exc.message)
            # refused at DATA (the transaction is still open there) or after the message:
            # either way the next MAIL on this connection is preceded by RSET
            return Reply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self.close()
            raise NextHopUnavailable(f"{self.host}:{self.port}: {exc}") from exc
        self.in_transaction = False
        return Reply(response.code, response.message)

    async def rset(self) -> None:
        """Abort the open transaction (after a verdict refused the message, or client RSET)."""
        if not self.connected:
            return
        self.in_transaction = False
        try:
            reply = await self._command(b"RSET")
        except NextHopUnavailable:
            return
        if not reply.ok:
            self.close()

    async def quit(self) -> None:
        smtp, self._smtp = self._smtp, None
        self.in_transaction = False
        self.identity = None
        self.uses = 0
        if smtp is None or not smtp.is_connected:
            return
        try:
            await smtp.quit(timeout=min(self.timeout, 5.0))
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()

    def close(self) -> None:
        """Drop the connection at once (an open transaction is discarded by the next hop)."""
        smtp, self._smtp = self._smtp, None
        self.in_transaction = False
        self.encrypted = False
        self.identity = None
        self.uses = 0
        if smtp is not None:
            smtp.close()


def _opts(options: list[str]) -> list[bytes]:
    return [o.encode("ascii", "replace") for o in options]
