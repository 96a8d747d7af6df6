"""One milter connection's state machine, independent of sockets.

:class:`MilterSession` receives parsed packets and returns the bytes to send
back, so the whole protocol logic can be tested without I/O.  Postfix opens
one milter connection per SMTP session, negotiates once, and may carry
several messages over it: a message ends with BODYEOB, with ABORT (RSET,
rejected DATA, ...), or silently when a final reply was given earlier (then
the next MAIL simply starts a new message).  All three reset the per-message
state here; connection data (CONNECT, HELO, connect/helo macros) survives.

Negotiation asks for as little traffic as possible, because every packet costs
the MTA and us a system call and every reply a round trip: no CONNECT, body,
DATA or unknown commands, no RCPT either when the policy does not refuse
recipients, and no replies expected for HELO, MAIL and each header
(SMFIP_NR_*): drossel decides only at RCPT and end of headers.  At end of
headers a final accept/reject ends the conversation for this message (Postfix
skips the end-of-message step); only when headers must be changed (ours added,
forged copies deleted, which is possible only at end of message) does it
answer "continue" and send the changes at end of message.  A policy that adds a
header to most messages asks for no reply at end of headers at all
(``answer_at_end_of_message``): its verdict then always goes out at end of
message, one round trip per message instead of two.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Generator, Iterable, Mapping
from types import CoroutineType
from typing import Any, Final, cast

from drossel.milter.commands import (
    ACCEPT,
    CONTINUE,
    MILTER_VERSION,
    REJECT,
    SMFIC_ABORT,
    SMFIC_BODY,
    SMFIC_CONNECT,
    SMFIC_DATA,
    SMFIC_EOH,
    SMFIC_HEADER,
    SMFIC_HELO,
    SMFIC_MACRO,
    SMFIC_MAIL,
    SMFIC_QUIT,
    SMFIC_QUIT_NC,
    SMFIC_RCPT,
    SMFIC_UNKNOWN,
    SMFIF_ADDHDRS,
    SMFIF_CHGHDRS,
    SMFIF_SETSYMLIST,
    SMFIM_CONNECT,
    SMFIM_DATA,
    SMFIM_ENVFROM,
    SMFIM_ENVRCPT,
    SMFIM_EOH,
    SMFIM_EOM,
    SMFIM_HELO,
    SMFIP_NOBODY,
    SMFIP_NOCONNECT,
    SMFIP_NODATA,
    SMFIP_NORCPT,
    SMFIP_NOUNKNOWN,
    SMFIP_NR_BODY,
    SMFIP_NR_CONN,
    SMFIP_NR_DATA,
    SMFIP_NR_EOH,
    SMFIP_NR_HDR,
    SMFIP_NR_HELO,
    SMFIP_NR_MAIL,
    SMFIP_NR_RCPT,
    SMFIP_NR_UNKN,
    TEMPFAIL,
    Abort,
    AddHeader,
    Body,
    Command,
    Connect,
    Data,
    DeleteHeader,
    EndOfBody,
    EndOfHeaders,
    Header,
    Helo,
    Macro,
    Mail,
    OptNeg,
    OptNegReply,
    Quit,
    QuitNewConnection,
    Rcpt,
    ReplyCode,
    Unknown,
    check_header_name,
    parse_command,
)
from drossel.milter.evidence import CLIENT_MACROS, TLS_MACROS
from drossel.milter.framing import Packet, ProtocolError
from drossel.milter.policy import (
    CONTINUE_VERDICT,
    MessageContext,
    MilterPolicy,
    MilterVerdict,
    OnPolicyError,
)

log = logging.getLogger("drossel.milter")

#: commands the filter never answers, whatever was negotiated
_NEVER_ANSWERED: Final = frozenset({SMFIC_MACRO, SMFIC_ABORT, SMFIC_QUIT, SMFIC_QUIT_NC})
#: commands the filter does not answer once their no-reply flag is negotiated
_NO_REPLY_FLAGS: Final = (
    (SMFIC_CONNECT, SMFIP_NR_CONN),
    (SMFIC_HELO, SMFIP_NR_HELO),
    (SMFIC_MAIL, SMFIP_NR_MAIL),
    (SMFIC_RCPT, SMFIP_NR_RCPT),
    (SMFIC_DATA, SMFIP_NR_DATA),
    (SMFIC_HEADER, SMFIP_NR_HDR),
    (SMFIC_EOH, SMFIP_NR_EOH),
    (SMFIC_BODY, SMFIP_NR_BODY),
    (SMFIC_UNKNOWN, SMFIP_NR_UNKN),
)

#: encoded added headers kept for reuse (see MilterSession._encode_headers)
_MAX_ENCODED_HEADERS: Final = 1024

#: version, actions, steps, the reply to a header, the commands not answered, OPTNEG reply
_Agreement = tuple[int, int, int, bytes, frozenset[bytes], bytes]

#: Oldest MTA protocol version we talk to (SMFIP_NR_* needs 6; older MTAs
#: simply get a reply for every event).
MIN_MTA_VERSION: Final = 2

WANTED_ACTIONS: Final = SMFIF_ADDHDRS | SMFIF_SETSYMLIST
WANTED_STEPS: Final = (
    SMFIP_NOCONNECT
    | SMFIP_NOBODY
    | SMFIP_NODATA
    | SMFIP_NOUNKNOWN
    | SMFIP_NR_CONN
    | SMFIP_NR_HELO
    | SMFIP_NR_MAIL
    | SMFIP_NR_DATA
    | SMFIP_NR_UNKN
    | SMFIP_NR_HDR
    | SMFIP_NR_BODY
)

#: A macro name no MTA defines, asked for at the stages drossel needs nothing from.
UNUSED_MACRO: Final = "{drossel_unused}"

#: Macros requested per stage (SMFIF_SETSYMLIST).  Postfix sends a stage's macros in a
#: packet of its own before that stage's command, also for steps negotiated away, and the
#: end-of-headers ones before *every* header.  For a stage the filter leaves out, or asks an
#: empty list for, Postfix falls back to its own ``milter_*_macros`` (its ``i`` queue id at
#: RCPT, DATA, every header and end of headers; nine connect macros), which the filter would
#: then parse per header.  So every stage gets a list: the client evidence (:mod:`.evidence`)
#: at MAIL, the stage every message passes (Postfix has all those macros there, the TLS ones
#: after STARTTLS too; CONNECT is negotiated away); the queue id (for log lines) once at DATA
#: (known there, and kept for the rest of the message) and at end of message, where Postfix
#: always knows it; and at the other stages a name nobody defines, so their macro packets
#: arrive empty and cost next to nothing.
DEFAULT_MACRO_REQUESTS: Final[Mapping[int, str]] = {
    SMFIM_CONNECT: UNUSED_MACRO,
    SMFIM_HELO: UNUSED_MACRO,
    SMFIM_ENVFROM: f"{CLIENT_MACROS} {TLS_MACROS}",
    SMFIM_ENVRCPT: UNUSED_MACRO,
    SMFIM_DATA: "i",
    SMFIM_EOH: UNUSED_MACRO,
    SMFIM_EOM: "i",
}

#: Headers kept for the policy: detection reads only ``Received:`` lines.
DEFAULT_KEEP_HEADERS: Final = ("Received",)
#: At most this many kept headers per message (detection stops at 200 hops anyway) ...
DEFAULT_MAX_KEPT_HEADERS: Final = 200
#: ... and at most this many characters of kept header names and values in total.
DEFAULT_MAX_KEPT_BYTES: Final = 64 * 1024

_CONNECTION_STAGES: Final = frozenset({b"C", b"H"})
_ACTIONS: Final = frozenset({"continue", "accept", "tempfail", "reject"})


class _Resumed:
    """Await the rest of a coroutine whose first step already ran and yielded ``first``."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, MilterVerdict], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, MilterVerdict]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation, timeout: pass it into the policy
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return cast(MilterVerdict, done.value)
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return cast(MilterVerdict, done.value)


def normalise_macro_name(name: str) -> str:
    """``{client_addr}`` -> ``client_addr``; single-letter names unchanged."""
    if len(name) >= 2 and name.startswith("{") and name.endswith("}"):
        return name[1:-1]
    return name


class MilterSession:
    """Protocol state for one MTA connection."""

    def __init__(
        self,
        policy: MilterPolicy,
        *,
        on_policy_error: OnPolicyError = "continue",
        policy_timeout: float | None = 20.0,
        macro_requests: Mapping[int, str] = DEFAULT_MACRO_REQUESTS,
        peer: object = "-",
        strip_headers: Iterable[str] = (),
        keep_headers: Iterable[str] = DEFAULT_KEEP_HEADERS,
        max_kept_headers: int = DEFAULT_MAX_KEPT_HEADERS,
        max_kept_bytes: int = DEFAULT_MAX_KEPT_BYTES,
        recipient_step: bool = True,
        answer_at_end_of_message: bool = False,
    ) -> None:
        """``strip_headers``: header names (any case) whose copies in incoming mail are
        deleted at end of message, e.g. drossel's own verdict header, which only drossel
        may write (SPEC §3); needs the MTA to allow SMFIF_CHGHDRS.

        Memory per message is bounded whatever the sender writes: of all headers only the
        ``keep_headers`` names are kept for the policy, the first ``max_kept_headers`` of
        them and no more than ``max_kept_bytes`` characters in total (a longer value is cut,
        later ones are dropped).  Of the ``strip_headers`` only a count is kept.

        ``recipient_step=False`` negotiates RCPT away (SMFIP_NORCPT): one round trip less
        per message for a policy whose ``on_recipient`` never refuses; it is then not called.

        ``answer_at_end_of_message=True`` asks for no reply at end of headers (SMFIP_NR_EOH):
        the verdict is still made there, but goes out at end of message, together with any
        header changes.  Headers can only be changed at end of message, so for a policy that
        adds a header to most messages, answering "continue" at end of headers first is one
        round trip per message for nothing.  (Without header changes the two ways cost the
        same: one reply, at end of headers or at end of message.)
        """
        if max_kept_headers < 0 or max_kept_bytes < 0:
            raise ValueError("header limits must not be negative")
        if on_policy_error not in ("continue", "tempfail"):
            raise ValueError(f"on_policy_error must be continue or tempfail: {on_policy_error!r}")
        self.policy = policy
        self.on_policy_error: OnPolicyError = on_policy_error
        self.policy_timeout = policy_timeout
        self.macro_requests = dict(macro_requests)
        self.peer = peer
        #: lower-case name -> the name as configured (used in the delete request)
        self.strip_headers = {check_header_name(n).lower(): n for n in strip_headers}
        self.keep_headers = frozenset(check_header_name(n).lower() for n in keep_headers)
        #: the same names as bytes (header names are ASCII), for the header shortcut
        self._watched_names = frozenset(
            n.encode() for n in (*self.keep_headers, *self.strip_headers)
        )
        #: the reply to a header: none once SMFIP_NR_HDR is negotiated
        self._header_reply = CONTINUE
        self.max_kept_headers = max_kept_headers
        self.max_kept_bytes = max_kept_bytes
        self.wanted_steps = (
            WANTED_STEPS
            | (0 if recipient_step else SMFIP_NORCPT)
            | (SMFIP_NR_EOH if answer_at_end_of_message else 0)
        )
        self.closed = False
        self.negotiated = False
        #: commands that get no reply in this conversation (none before the negotiation:
        #: the MTA waits for the OPTNEG reply)
        self.unanswered: frozenset[bytes] = frozenset()
        #: a policy call that suspended: (command, hook name, awaitable rest of the call)
        self._suspended: tuple[Rcpt | EndOfHeaders, str, Awaitable[Any]] | None = None
        self.version = 0
        self.actions = 0
        self.steps = 0
        #: OPTNEG replies by what the MTA offered (the same offer on every connection of an
        #: MTA), shared by the sessions :meth:`spawn` makes
        self._negotiated: dict[tuple[int, int, int], _Agreement] = {}
        #: added headers as encoded (a server's messages mostly get the same verdict header),
        #: shared like ``_negotiated``
        self._encoded_headers: dict[tuple[str, str], bytes] = {}
        self._reset_connection()
        #: what a new session starts from (see :meth:`spawn`)
        self._initial = dict(vars(self))

    def spawn(self, peer: object) -> MilterSession:
        """A new session with this one's settings, for the next connection.

        The server makes one session per MTA connection, and the MTA opens one per SMTP
        session: the settings are checked and worked out once, in ``__init__``, and only the
        per-connection state is made anew here.  The settings are never changed after
        ``__init__``, so sharing them is safe."""
        session = MilterSession.__new__(MilterSession)
        vars(session).update(self._initial)
        session.peer = peer
        session._reset_connection()
        return session

    # -- state -----------------------------------------------------------------

    def _reset_connection(self) -> None:
        self._client_addr: str | None = None
        self._client_port: int | None = None
        self._client_name: str | None = None
        self._helo: str | None = None
        self._conn_macros: dict[bytes, dict[str, str]] = {}
        self._reset_message()

    def _reset_message(self) -> None:
        self._msg_macros: dict[bytes, dict[str, str]] = {}
        self._mail_from: str | None = None
        self._recipients: list[str] = []
        self._headers: list[tuple[str, str]] = []
        self._kept_bytes = 0
        self._dropped_headers = 0
        self._pending_headers: list[bytes] = []
        self._eob_reply = CONTINUE
        #: incoming copies of each ``strip_headers`` name (lower case) in this message
        self._strip_counts: dict[str, int] = {}

    def macros(self) -> dict[str, str]:
        """All macros of the connection and current message, latest wins."""
        merged: dict[str, str] = {}
        for stage in (*self._conn_macros.values(), *self._msg_macros.values()):
            merged.update(stage)
        return merged

    def context(self) -> MessageContext:
        """A snapshot of the current state for the policy."""
        return MessageContext(
            client_addr=self._client_addr,
            client_port=self._client_port,
            client_name=self._client_name,
            helo=self._helo,
            macros=self.macros(),
            mail_from=self._mail_from,
            recipients=list(self._recipients),
            headers=list(self._headers),
        )

    def _unless(self, no_reply_flag: int, reply: bytes) -> bytes:
        return b"" if self.steps & no_reply_flag else reply

    # -- dispatch ----------------------------------------------------------------

    async def handle(self, packet: Packet) -> bytes:
        """Process one packet; return the (possibly empty) bytes to send."""
        return await self.handle_command(parse_command(packet))

    def handle_nowait(self, packet: Packet) -> bytes | Rcpt | EndOfHeaders:
        """Process one packet without the policy.

        Returns the reply bytes, or the parsed RCPT / end-of-headers command, which needs the
        policy: pass it on to :meth:`decide_now`.  Lets the server answer packets straight
        from its read callback without a task switch.
        """
        command, payload = packet
        if self.negotiated and not self.closed:
            if command == SMFIC_MACRO and len(payload) == 1:
                # The most frequent packet (Postfix sends one before every header, empty as
                # asked in the negotiation): it only clears its stage, nothing to parse.
                self._clear_stage(payload)
                return b""
            if command == SMFIC_HEADER:
                # The next most frequent: a header drossel neither keeps nor strips.  Only
                # the packet's shape is checked (as the parser would), nothing is decoded.
                # A non-ASCII name takes the full path: str.lower() may map it to ASCII.
                nul = payload.find(b"\0")
                if nul > 0:
                    name = payload[:nul]
                    if (
                        name.isascii()
                        and name.lower() not in self._watched_names
                        and payload.find(b"\0", nul + 1) == len(payload) - 1
                    ):
                        return self._header_reply
        return self._dispatch(parse_command(packet))

    async def handle_command(self, cmd: Command) -> bytes:
        result = self._dispatch(cmd)
        if isinstance(result, bytes):
            return result
        reply = self.decide_now(result)
        return await self.resume() if reply is None else reply

    def _dispatch(self, cmd: Command) -> bytes | Rcpt | EndOfHeaders:
        """Everything except the policy calls, which are left to :meth:`handle_command`."""
        if self.closed:
            raise ProtocolError("command received after QUIT")
        # Most frequent first: a macro packet precedes nearly every command.
        if isinstance(cmd, Macro):
            if not self.negotiated:
                raise ProtocolError("Macro received before OPTNEG")
            self._store_macros(cmd)
            return b""
        if isinstance(cmd, Header):
            if not self.negotiated:
                raise ProtocolError("Header received before OPTNEG")
            lower = cmd.name.lower()
            if lower in self.keep_headers:
                self._keep(cmd)
            elif lower in self.strip_headers:
                self._strip_counts[lower] = self._strip_counts.get(lower, 0) + 1
            return self._header_reply
        if isinstance(cmd, OptNeg):
            return self._negotiate(cmd)
        if not self.negotiated:
            raise ProtocolError(f"{type(cmd).__name__} received before OPTNEG")
        match cmd:
            case Connect():
                # No reset here: the connect macros arrived just before.
                self._client_name = cmd.hostname
                self._client_addr = cmd.address
                self._client_port = cmd.port
                return self._unless(SMFIP_NR_CONN, CONTINUE)
            case Helo():
                self._helo = cmd.name
                return self._unless(SMFIP_NR_HELO, CONTINUE)
            case Mail():
                if self._mail_from is not None:
                    self._reset_message()  # previous message ended without ABORT
                self._mail_from = cmd.sender
                return self._unless(SMFIP_NR_MAIL, CONTINUE)
            case Rcpt() | EndOfHeaders():
                return cmd
            case EndOfBody():
                reply = b"".join(self._pending_headers) + self._eob_reply
                self._reset_message()
                return reply
            case Abort():
                self._reset_message()
                return b""
            case Quit():
                self.closed = True
                return b""
            case QuitNewConnection():
                self._reset_connection()
                return b""
            case Data():
                return self._unless(SMFIP_NR_DATA, CONTINUE)
            case Body():
                return self._unless(SMFIP_NR_BODY, CONTINUE)
            case Unknown():
                return self._unless(SMFIP_NR_UNKN, CONTINUE)
        raise ProtocolError(f"unhandled command {cmd!r}")  # pragma: no cover

    def _keep(self, header: Header) -> None:
        room = self.max_kept_bytes - self._kept_bytes - len(header.name)
        if len(self._headers) >= self.max_kept_headers or room <= 0:
            if not self._dropped_headers:
                log.info(
                    "milter %s: header limit reached (%d headers, %d characters); "
                    "ignoring further %s headers of this message",
                    self.peer,
                    len(self._headers),
                    self._kept_bytes,
                    header.name,
                )
            self._dropped_headers += 1
            return
        value = header.value if len(header.value) <= room else header.value[:room]
        self._kept_bytes += len(header.name) + len(value)
        self._headers.append((header.name, value))

    # -- negotiation -------------------------------------------------------------

    def _negotiate(self, cmd: OptNeg) -> bytes:
        if cmd.version < MIN_MTA_VERSION:
            raise ProtocolError(f"OPTNEG: unsupported MTA protocol version {cmd.version}")
        offer = (cmd.version, cmd.actions, cmd.protocol)
        agreed = self._negotiated.get(offer)
        if agreed is None:
            agreed = self._agree(*offer)
            if len(self._negotiated) < 16:  # an MTA makes one offer; bounded all the same
                self._negotiated[offer] = agreed
        self.version, self.actions, self.steps, self._header_reply, self.unanswered, reply = agreed
        self.negotiated = True
        self._reset_connection()
        return reply

    def _agree(self, version: int, actions: int, protocol: int) -> _Agreement:
        """What is agreed for what the MTA offers, with the OPTNEG reply."""
        version = min(version, MILTER_VERSION)
        actions &= WANTED_ACTIONS | (SMFIF_CHGHDRS if self.strip_headers else 0)
        steps = self.wanted_steps & protocol
        macros = self.macro_requests if actions & SMFIF_SETSYMLIST else {}
        if not macros:
            actions &= ~SMFIF_SETSYMLIST
        header_reply = b"" if steps & SMFIP_NR_HDR else CONTINUE
        unanswered = _NEVER_ANSWERED | {c for c, flag in _NO_REPLY_FLAGS if steps & flag}
        reply = OptNegReply(version, actions, steps, macros).encode()
        return version, actions, steps, header_reply, unanswered, reply

    def _clear_stage(self, stage: bytes) -> dict[bytes, dict[str, str]]:
        """An empty macro packet: the stage's earlier macros no longer apply.  Returns the
        connection's or the message's macros, where the stage's belong."""
        if stage == SMFIC_MAIL and self._mail_from is not None:
            self._reset_message()  # MAIL macros of a new message
        target = self._conn_macros if stage in _CONNECTION_STAGES else self._msg_macros
        if stage in target:
            del target[stage]
        return target

    def _store_macros(self, cmd: Macro) -> None:
        stage = cmd.stage
        target = self._clear_stage(stage)
        if not cmd.macros:
            return
        target[stage] = {
            k[1:-1] if k[:1] == "{" and k[-1:] == "}" and len(k) >= 2 else k: v
            for k, v in cmd.macros.items()
        }  # normalise_macro_name, inlined; after the clear: the latest stage comes last

    # -- policy ------------------------------------------------------------------

    def decide_now(self, cmd: Rcpt | EndOfHeaders) -> bytes | None:
        """Ask the policy about ``cmd`` (as returned by :meth:`handle_nowait`) synchronously.

        A policy that answers from memory never suspends: its coroutine is run to the end
        here and the reply bytes are returned, so the server can answer straight from its
        read callback (no task switch, no timeout machinery: a timeout cannot fire without an
        await).  If the policy does suspend, None is returned and the suspended call is kept:
        finish it with :meth:`resume` inside a task.
        """
        if self._suspended is not None:
            raise ProtocolError("a policy call is still pending")
        if isinstance(cmd, Rcpt):
            self._recipients.append(cmd.recipient)
            what, hook = "on_recipient", self.policy.on_recipient
        else:
            what, hook = "on_end_of_headers", self.policy.on_end_of_headers
        try:
            awaitable = hook(self.context())
            if isinstance(awaitable, CoroutineType):
                try:
                    first = awaitable.send(None)
                except StopIteration as done:
                    return self._reply(cmd, self._checked(done.value))
                self._suspended = (cmd, what, _Resumed(awaitable, first))
            else:
                self._suspended = (cmd, what, awaitable)
        except Exception:
            return self._reply(cmd, self._failed(what))
        return None

    async def resume(self) -> bytes:
        """Finish the policy call :meth:`decide_now` left suspended, under ``policy_timeout``."""
        if self._suspended is None:
            raise ProtocolError("no policy call is pending")
        cmd, what, awaitable = self._suspended
        self._suspended = None
        try:
            async with asyncio.timeout(self.policy_timeout):
                verdict = self._checked(await awaitable)
        except Exception:
            verdict = self._failed(what)
        return self._reply(cmd, verdict)

    @staticmethod
    def _checked(verdict: object) -> MilterVerdict:
        if not isinstance(verdict, MilterVerdict) or verdict.action not in _ACTIONS:
            raise TypeError(f"policy returned {verdict!r}, not a MilterVerdict")
        return verdict

    def _failed(self, what: str) -> MilterVerdict:
        """Log the current exception; the verdict ``on_policy_error`` asks for."""
        log.exception(
            "milter %s queue_id=%s: policy %s failed; answering %s",
            self.peer,
            self.macros().get("i", "-"),
            what,
            self.on_policy_error,
        )
        if self.on_policy_error == "tempfail":
            return MilterVerdict("tempfail")
        return CONTINUE_VERDICT

    def _reply(self, cmd: Rcpt | EndOfHeaders, verdict: MilterVerdict) -> bytes:
        if isinstance(cmd, Rcpt):
            return self._on_rcpt(verdict)
        return self._on_eoh(verdict)

    def _final_reply(self, verdict: MilterVerdict) -> bytes:
        """Reply for a verdict, ignoring add_headers."""
        if verdict.action == "continue":
            return CONTINUE
        if verdict.action == "accept":
            return ACCEPT
        bare = TEMPFAIL if verdict.action == "tempfail" else REJECT
        if verdict.code is None:
            return bare
        try:
            reply = ReplyCode(verdict.code, verdict.enhanced, verdict.text)
            if (verdict.code >= 500) != (verdict.action == "reject"):
                raise ValueError(f"code {verdict.code} contradicts action {verdict.action}")
            return reply.encode()
        except ValueError as exc:
            log.warning(
                "milter %s: unusable policy reply (%s); sending bare %s",
                self.peer,
                exc,
                verdict.action,
            )
            return bare

    def _on_rcpt(self, verdict: MilterVerdict) -> bytes:
        if verdict.action in ("tempfail", "reject"):
            self._recipients.pop()  # the MTA refuses this recipient only
        return self._unless(SMFIP_NR_RCPT, self._final_reply(verdict))

    def _on_eoh(self, verdict: MilterVerdict) -> bytes:
        reply = self._final_reply(verdict)
        pending: list[bytes] = []
        if verdict.action in ("continue", "accept"):
            # Deletions first: our own header must never be taken for a forged one.
            pending = self._encode_deletions() + self._encode_headers(verdict.add_headers)
        if pending or self.steps & SMFIP_NR_EOH:
            # Headers can only be changed at end of body, and with NR_EOH nothing is answered
            # now: the verdict goes out at end of message ("continue" now, if a reply is due).
            self._pending_headers = pending
            self._eob_reply = reply
            return self._unless(SMFIP_NR_EOH, CONTINUE)
        return reply

    def _encode_deletions(self) -> list[bytes]:
        if not self._strip_counts:
            return []
        if not self.actions & SMFIF_CHGHDRS:
            log.warning(
                "milter %s: MTA did not allow changing headers; cannot remove forged %s",
                self.peer,
                ", ".join(self.strip_headers[n] for n in self._strip_counts),
            )
            return []
        return [
            DeleteHeader(index, self.strip_headers[lower]).encode()
            for lower, count in self._strip_counts.items()
            for index in range(count, 0, -1)
        ]

    def _encode_headers(self, headers: tuple[tuple[str, str], ...]) -> list[bytes]:
        if not headers:
            return []
        if not self.actions & SMFIF_ADDHDRS:
            log.warning(
                "milter %s: MTA did not allow adding headers; dropping %d", self.peer, len(headers)
            )
            return []
        encoded: list[bytes] = []
        known = self._encoded_headers
        for header in headers:
            packet = known.get(header)
            if packet is None:
                try:
                    packet = AddHeader(*header).encode()
                except ValueError as exc:
                    log.warning("milter %s: not adding header: %s", self.peer, exc)
                    continue
                if len(known) >= _MAX_ENCODED_HEADERS:
                    known.clear()
                known[header] = packet
            encoded.append(packet)
        return encoded
