"""The interface between the milter protocol and drossel's grading logic.

The protocol layer knows nothing about Exchange builds; it collects what
Postfix tells it into a :class:`MessageContext`, asks a :class:`MilterPolicy`
at the two points where drossel can decide (each recipient, end of headers)
and turns the :class:`MilterVerdict` into milter replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Action = Literal["continue", "accept", "tempfail", "reject"]
#: What to do when the policy raises or times out: "continue" never loses
#: mail, "tempfail" makes the sender retry later.
OnPolicyError = Literal["continue", "tempfail"]


@dataclass
class MessageContext:
    """Everything known about the connection and current message.

    ``macros`` keys are normalised without braces (``{client_addr}`` becomes
    ``client_addr``; ``j`` stays ``j``).  ``mail_from`` and ``recipients`` are
    as Postfix sends them, normally with angle brackets (``<a@b>``, ``<>``).
    ``headers`` holds only the headers the session keeps (by default the
    ``Received:`` lines, bounded in number and size, see
    :class:`~drossel.milter.session.MilterSession`), in message order.
    Header values are raw: folded lines joined by ``\\n`` plus the original
    leading whitespace, and the single space after the colon removed, as
    Postfix does for milters.  The policy gets a snapshot; mutating it has
    no effect on the session.
    """

    client_addr: str | None = None
    client_port: int | None = None
    client_name: str | None = None
    helo: str | None = None
    macros: dict[str, str] = field(default_factory=dict)
    mail_from: str | None = None
    recipients: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class MilterVerdict:
    """What the policy wants.

    With ``code`` (e.g. 450 + ``enhanced`` "4.7.230") a tempfail/reject is
    sent as SMFIR_REPLYCODE ``"450 4.7.230 text"``; without it as a bare
    SMFIR_TEMPFAIL/SMFIR_REJECT (Postfix picks the text).  ``add_headers``
    is honoured for "continue" and "accept" at end of headers.
    """

    action: Action
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    add_headers: tuple[tuple[str, str], ...] = ()


CONTINUE_VERDICT = MilterVerdict("continue")


class MilterPolicy(Protocol):
    """Implemented by drossel's grading code."""

    async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
        """Called for each RCPT; ``ctx.recipients[-1]`` is the new one."""
        ...

    async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
        """Called once all headers of the message are known."""
        ...


class ContinuePolicy:
    """A policy that never interferes (useful default and for tests)."""

    async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
        return CONTINUE_VERDICT

    async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
        return CONTINUE_VERDICT
