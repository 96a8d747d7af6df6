"""drossel's milter policy: the glue between the milter protocol and the enforcement engine.

The protocol layer hands over connection facts, macros and headers; this module turns them into
an :class:`~drossel.app.enforcer.Enforcer` call and the verdict into milter replies (SPEC §4).
The enforcer answers from memory for known servers without suspending; it never writes to the
database on the message path, and reads a server it has not in memory in a worker thread with
a timeout (``[storage] read_timeout``), so a slow database never stalls the milter.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from drossel.app.enforcer import ClientInfo, Enforcer
from drossel.config import MilterConfig
from drossel.core.decision import Verdict
from drossel.milter import evidence
from drossel.milter.policy import CONTINUE_VERDICT, Action, MessageContext, MilterVerdict
from drossel.milter.server import start_milter_server
from drossel.runtime import run_flusher

log = logging.getLogger("drossel.milter")


def client_info(ctx: MessageContext) -> ClientInfo:
    """The evidence the MTA gave about the client (see :mod:`drossel.milter.evidence`)."""
    return evidence.client_info(ctx.macros, connect_addr=ctx.client_addr, helo=ctx.helo)


def to_milter(verdict: Verdict) -> MilterVerdict:
    if verdict.action == "accept" or verdict.code is None:
        return MilterVerdict("accept")
    action: Action = "tempfail" if verdict.action == "throttle" else "reject"
    return MilterVerdict(action, verdict.code, verdict.enhanced_code, verdict.text)


class EnforcementPolicy:
    """Implements :class:`drossel.milter.policy.MilterPolicy` with the engine."""

    #: Distinct clients whose evidence is remembered (cleared when full).
    CLIENT_CACHE = 4096

    def __init__(self, enforcer: Enforcer, config: MilterConfig) -> None:
        self.enforcer = enforcer
        self.config = config
        self._clients: dict[tuple[str | None, ...], ClientInfo] = {}

    def client(self, ctx: MessageContext) -> ClientInfo:
        """:func:`client_info`, remembered: the same clients come back all day, and parsing
        their macros is per-message work that can be skipped."""
        macros = ctx.macros
        key = (
            macros.get("client_addr"),
            macros.get("client_name"),
            macros.get("client_ptr"),
            macros.get("cert_subject"),
            macros.get("verify"),
            ctx.client_addr,
            ctx.helo,
        )
        info = self._clients.get(key)
        if info is None:
            if len(self._clients) >= self.CLIENT_CACHE:
                self._clients.clear()
            info = self._clients[key] = client_info(ctx)
        return info

    async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
        # No refusal before the headers are read: a patched server must be accepted on the
        # first message it sends with its new build (SPEC §4), and only the headers show it.
        return CONTINUE_VERDICT

    async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
        outcome = await self.enforcer.process_async(ctx.headers, self.client(ctx))
        verdict = outcome.verdict
        reply = to_milter(verdict)
        if reply.action == "accept" and self.config.add_header and verdict.server is not None:
            status = verdict.assessment.status if verdict.assessment else "unknown"
            value = (
                f"server={verdict.server.server}; build={verdict.server.build}; "
                f"status={status}; stage={verdict.stage or 0}"
            )
            return MilterVerdict("accept", add_headers=((self.config.header_name, value),))
        return reply


async def serve_milter(
    enforcer: Enforcer,
    config: MilterConfig,
    stop: asyncio.Event,
    sock: socket.socket | None = None,
) -> None:
    """Serve the milter on ``config.listen`` (or the listening ``sock`` a worker was given)
    until ``stop`` is set; flush state on the way out."""
    server = await start_milter_server(
        EnforcementPolicy(enforcer, config),
        config.listen,
        read_timeout=config.read_timeout,
        idle_timeout=config.idle_timeout,
        max_connections=config.max_connections,
        max_kept_headers=config.max_received_headers,
        max_kept_bytes=config.max_received_bytes,
        on_policy_error=config.on_policy_error,
        # Only drossel writes its verdict header: forged copies go, with or without ours.
        strip_headers=(config.header_name,),
        # on_recipient never refuses (SPEC §4: nothing is decided before the headers), so
        # the RCPT step is negotiated away: one milter round trip less per message.
        recipient_step=False,
        # With add_header most messages get a header, which only end of message can add:
        # the verdict waits for it instead of costing a "continue" round trip at end of headers.
        answer_at_end_of_message=config.add_header,
        sock=sock,
    )
    flusher = asyncio.create_task(run_flusher(enforcer, stop))
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        stop.set()
        await flusher
        log.info("milter stopped")
