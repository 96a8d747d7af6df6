"""Session state machine, driven with the recorded byte fixtures (no sockets)."""

from __future__ import annotations

import asyncio
import struct

import milter_bytes as mb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from milter_helpers import (
    CONNECTION_START,
    EXCHANGE,
    EXCHANGE_REPLY,
    MESSAGE,
    RaisingPolicy,
    RecordingPolicy,
    grading_policy,
    replay,
)

from drossel.milter import ContinuePolicy, MessageContext, MilterVerdict
from drossel.milter.commands import parse_command
from drossel.milter.framing import Packet, ProtocolError
from drossel.milter.session import MilterSession

START = b"".join(CONNECTION_START)
ONE_MESSAGE = b"".join(MESSAGE)
QID = "4VwKq1Zx3Tz9"


async def test_full_exchange_exact_reply_bytes() -> None:
    policy = grading_policy()
    session = MilterSession(policy)
    for chunk in (1, 16, 128, 4096):
        session = MilterSession(policy)
        assert await replay(session, EXCHANGE, chunk) == EXCHANGE_REPLY
        assert session.closed


async def test_context_seen_by_policy() -> None:
    policy = grading_policy()
    everything = ("Received", "From", "Subject", "X-MS-Has-Attach")
    await replay(MilterSession(policy, keep_headers=everything), EXCHANGE)
    (rcpt_ctx,) = policy.rcpt_calls
    assert rcpt_ctx.recipients == ["<ops@example.net>"]
    assert rcpt_ctx.headers == []
    (ctx,) = policy.eoh_calls
    assert ctx.client_addr == "203.0.113.25"
    assert ctx.client_port == 49319
    assert ctx.client_name == "mail.contoso.example"
    assert ctx.helo == "mail.contoso.example"
    assert ctx.mail_from == "<alerts@contoso.example>"
    assert ctx.recipients == ["<ops@example.net>"]
    assert ctx.macros == {
        "j": "mx.example.net",
        "daemon_name": "mx.example.net",
        "client_addr": "203.0.113.25",
        "client_name": "mail.contoso.example",
        "tls_version": "TLSv1.2",
        "cert_subject": "CN=mail.contoso.example",
        "i": QID,
    }
    assert [name for name, _ in ctx.headers] == [
        "Received",
        "Received",
        "From",
        "Subject",
        "X-MS-Has-Attach",
    ]
    assert ctx.headers[1][1] == (
        "from EX02.contoso.example (10.0.0.6) by\n\tmail.contoso.example (203.0.113.25)"
        " with Microsoft SMTP Server id\n\t15.1.2507.39 via Frontend Transport;"
        " Tue, 4 Jun 2024 10:00:01 +0200"
    )
    assert ctx.headers[3] == ("Subject", "Disk C: 95% full on EX01")
    assert ctx.headers[4] == ("X-MS-Has-Attach", "")


async def test_policy_snapshot_is_isolated() -> None:
    class Mutating(RecordingPolicy):
        async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
            ctx.recipients.append("<evil@x>")
            ctx.macros["i"] = "changed"
            return await super().on_recipient(ctx)

    policy = Mutating()
    await replay(MilterSession(policy), EXCHANGE)
    assert policy.eoh_calls[0].recipients == ["<ops@example.net>"]
    assert policy.eoh_calls[0].macros["i"] == QID


EOH_VERDICTS = pytest.mark.parametrize(
    ("verdict", "eoh_reply", "eob_reply"),
    [
        (MilterVerdict("continue"), mb.R_CONTINUE, mb.R_CONTINUE),
        (MilterVerdict("accept"), mb.R_ACCEPT, mb.R_CONTINUE),
        (MilterVerdict("tempfail"), mb.R_TEMPFAIL, mb.R_CONTINUE),
        (MilterVerdict("reject"), mb.R_REJECT, mb.R_CONTINUE),
        (
            MilterVerdict("tempfail", 450, "4.7.230", "Exchange 15.1.2507 is 42% out\r\nof date"),
            mb.R_REPLY_450,
            mb.R_CONTINUE,
        ),
        (
            MilterVerdict("continue", add_headers=(("X-Drossel-Grade", "B (Exchange 2016 CU23)"),)),
            mb.R_CONTINUE,
            mb.R_ADDHEADER_GRADE + mb.R_CONTINUE,
        ),
        # A reply code is meaningless for continue/accept and ignored.
        (MilterVerdict("accept", 250, "2.0.0", "ok"), mb.R_ACCEPT, mb.R_CONTINUE),
        # Inconsistent or malformed codes fall back to the bare action.
        (MilterVerdict("tempfail", 550, "5.7.230", "x"), mb.R_TEMPFAIL, mb.R_CONTINUE),
        (MilterVerdict("reject", 550, "4.7.230", "x"), mb.R_REJECT, mb.R_CONTINUE),
        (MilterVerdict("reject", 250), mb.R_REJECT, mb.R_CONTINUE),
    ],
)


@EOH_VERDICTS
async def test_end_of_headers_verdicts(
    verdict: MilterVerdict, eoh_reply: bytes, eob_reply: bytes
) -> None:
    session = MilterSession(RecordingPolicy(eoh=verdict))
    out = await replay(session, EXCHANGE)
    assert out == mb.R_OPTNEG + mb.R_CONTINUE + eoh_reply + eob_reply


@EOH_VERDICTS
async def test_verdicts_answered_at_end_of_message(
    verdict: MilterVerdict, eoh_reply: bytes, eob_reply: bytes
) -> None:
    """With NR_EOH nothing is sent at end of headers, and the very verdict goes out at end of
    message: a refusal stays a refusal, header changes come with it."""
    session = MilterSession(RecordingPolicy(eoh=verdict), answer_at_end_of_message=True)
    out = await replay(session, START + ONE_MESSAGE[: ONE_MESSAGE.index(mb.BODYEOB)])
    assert out == mb.R_OPTNEG_NR_EOH + mb.R_CONTINUE  # OPTNEG, RCPT; nothing at EOH
    final = eob_reply if eoh_reply == mb.R_CONTINUE else eoh_reply
    assert await replay(session, mb.BODYEOB) == final
    # the next message starts clean: its verdict is its own
    session.policy = RecordingPolicy(eoh=MilterVerdict("accept"))
    assert await replay(session, ONE_MESSAGE) == mb.R_CONTINUE + mb.R_ACCEPT


async def test_answer_at_end_of_message_needs_the_mta_to_offer_it() -> None:
    session = MilterSession(grading_policy(), answer_at_end_of_message=True)
    no_nr_eoh = optneg(6, 0x1FF, 0x1FFFFF & ~0x40000)
    out = await replay(session, no_nr_eoh + b"".join(CONNECTION_START[1:]) + ONE_MESSAGE)
    assert not struct.unpack(">III", out[5:17])[2] & 0x40000
    # end of headers is answered (continue, a header is pending), the header at end of message
    assert out.endswith(mb.R_CONTINUE + mb.R_CONTINUE + mb.R_ADDHEADER_GRADE + mb.R_ACCEPT)


async def test_empty_macro_packets_clear_their_stage() -> None:
    """Empty macro packets (Postfix sends one per header) take a shortcut past the parser;
    they still mean what a parsed empty list means."""
    session = MilterSession(grading_policy())
    await replay(session, START + mb.MACRO_MAIL + mb.MAIL + mb.MACRO_EOH)
    assert session.macros()["i"] == QID
    assert session.handle_nowait(Packet(b"D", b"N")) == b""
    assert session.handle_nowait(Packet(b"D", b"M")) == b""  # a new message's MAIL stage
    assert session.context().mail_from is None
    assert "i" not in session.macros() and "j" in session.macros()
    fresh = MilterSession(grading_policy())
    with pytest.raises(ProtocolError, match="before OPTNEG"):
        fresh.handle_nowait(Packet(b"D", b"L"))
    await replay(session, mb.QUIT)
    with pytest.raises(ProtocolError, match="after QUIT"):
        session.handle_nowait(Packet(b"D", b"L"))


_HEADER_NAMES = st.sampled_from(
    [b"Received", b"rECEIVED", b"X-Drossel", b"x-drossel", b"From", b"Subject", b"",
     "X-Chec\u212a".encode(), b"Receiv\xc3", b"X-CHECK", b"Re\0ceived"]
)  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=_HEADER_NAMES,
    value=st.binary(max_size=12),
    tail=st.sampled_from([b"\0", b"", b"\0\0", b"\0x\0"]),
    no_reply=st.booleans(),
)
def test_header_shortcut_means_what_the_parser_means(
    name: bytes, value: bytes, tail: bytes, no_reply: bool
) -> None:
    """Headers drossel neither keeps nor strips skip the parser: same reply, same error, same
    state as the full path, for well-formed and broken packets alike."""
    steps = 0x1FFFFF if no_reply else 0x1FFFFF & ~0x80  # with or without SMFIP_NR_HDR
    payload = name + b"\0" + value.replace(b"\0", b"") + tail
    outcomes = []
    for shortcut in (True, False):
        # "X-Chec\u212a" (Kelvin sign) is "x-check" to str.lower(), not to bytes.lower()
        session = MilterSession(ContinuePolicy(), strip_headers=("X-Drossel", "X-Check"))
        session.handle_nowait(Packet(b"O", optneg(6, 0x1FF, steps)[5:]))
        packet = Packet(b"L", payload)
        try:
            if shortcut:
                result: object = session.handle_nowait(packet)
            else:
                result = asyncio.run(session.handle_command(parse_command(packet)))
        except ProtocolError as exc:
            result = ("error", type(exc))
        outcomes.append((result, session.context().headers, session._strip_counts))
    assert outcomes[0] == outcomes[1]


async def test_exact_sanitised_450_reply() -> None:
    verdict = MilterVerdict("tempfail", 450, "4.7.230", "Exchange 15.1.2507 is 42% out\r\nof date")
    session = MilterSession(RecordingPolicy(eoh=verdict))
    await replay(session, START + ONE_MESSAGE[: ONE_MESSAGE.index(mb.MACRO_EOH)])
    assert await replay(session, mb.EOH) == (
        b"\x00\x00\x004y450 4.7.230 Exchange 15.1.2507 is 42%% out of date\x00"
    )


async def test_reject_at_rcpt_drops_that_recipient() -> None:
    second_rcpt = b"\x00\x00\x00\x12R<cc@example.net>\x00"
    rejected = MilterVerdict("reject", 550, "5.7.230", "Exchange too old")

    class FirstRejected(RecordingPolicy):
        async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
            await super().on_recipient(ctx)
            return rejected if len(self.rcpt_calls) == 1 else MilterVerdict("continue")

    policy = FirstRejected()
    session = MilterSession(policy)
    await replay(session, START + mb.MACRO_MAIL + mb.MAIL)
    assert await replay(session, mb.RCPT) == b"\x00\x00\x00\x1ey550 5.7.230 Exchange too old\x00"
    assert await replay(session, second_rcpt) == mb.R_CONTINUE
    assert await replay(session, mb.EOH) == mb.R_CONTINUE
    assert policy.eoh_calls[0].recipients == ["<cc@example.net>"]


async def test_two_messages_with_abort_between() -> None:
    policy = grading_policy()
    second = ONE_MESSAGE.replace(b"<ops@example.net>", b"<it1@example.net>")
    data = START + ONE_MESSAGE[: ONE_MESSAGE.index(mb.MACRO_EOH)] + mb.ABORT + second + mb.QUIT
    out = await replay(MilterSession(policy), data)
    assert out == (
        mb.R_OPTNEG
        + mb.R_CONTINUE  # RCPT, message 1 (then aborted before EOH)
        + mb.R_CONTINUE  # RCPT, message 2
        + mb.R_CONTINUE  # EOH: headers pending
        + mb.R_ADDHEADER_GRADE
        + mb.R_ACCEPT
    )
    (ctx,) = policy.eoh_calls
    assert ctx.recipients == ["<it1@example.net>"]
    assert len(ctx.headers) == 2  # not 4: message 1's Received lines were dropped
    assert ctx.client_addr == "203.0.113.25"
    assert ctx.macros["tls_version"] == "TLSv1.2"


async def test_abort_drops_message_macros_keeps_connection_macros() -> None:
    session = MilterSession(ContinuePolicy())
    await replay(session, START + mb.MACRO_MAIL + mb.MAIL + mb.ABORT)
    macros = session.context().macros
    assert "i" not in macros
    assert macros["client_addr"] == "203.0.113.25"
    assert session.context().mail_from is None


async def test_next_message_without_abort_resets_state() -> None:
    # Postfix sends no ABORT after a complete message or a final reply.
    policy = RecordingPolicy(eoh=MilterVerdict("reject"))
    second_mail_macro = struct.pack(">I", 16) + b"DMi\x00SECONDQUEUE\x00"
    rest = ONE_MESSAGE[ONE_MESSAGE.index(mb.MAIL) :].replace(mb.MACRO_EOB + mb.BODYEOB, b"")
    data = START + ONE_MESSAGE.replace(mb.MACRO_EOB + mb.BODYEOB, b"") + second_mail_macro + rest
    await replay(MilterSession(policy), data)
    first, second = policy.eoh_calls
    assert len(first.headers) == len(second.headers) == 2
    assert second.recipients == ["<ops@example.net>"]
    # MACRO 'M' started the new message and must survive the MAIL that follows.
    assert second.macros["i"] == QID  # later stages repeat the original id
    assert "tls_version" in second.macros


async def test_mail_macros_of_new_message_survive() -> None:
    session = MilterSession(ContinuePolicy())
    new_macro = struct.pack(">I", 16) + b"DMi\x00SECONDQUEUE\x00"
    await replay(session, START + ONE_MESSAGE[: ONE_MESSAGE.index(mb.MACRO_EOH)])
    await replay(session, new_macro + mb.MAIL)
    ctx = session.context()
    assert ctx.macros["i"] == "SECONDQUEUE"
    assert ctx.headers == []
    assert ctx.recipients == []


async def test_policy_exception_continues_by_default(caplog: pytest.LogCaptureFixture) -> None:
    out = await replay(MilterSession(RaisingPolicy()), EXCHANGE)
    assert out == mb.R_OPTNEG + mb.R_CONTINUE + mb.R_CONTINUE + mb.R_CONTINUE
    assert "database is down" in caplog.text
    assert f"queue_id={QID}" in caplog.text


async def test_policy_exception_tempfail_when_configured() -> None:
    session = MilterSession(RaisingPolicy(), on_policy_error="tempfail")
    out = await replay(session, EXCHANGE)
    assert out == mb.R_OPTNEG + mb.R_TEMPFAIL + mb.R_TEMPFAIL + mb.R_CONTINUE


async def test_slow_policy_times_out_to_continue() -> None:
    class Slow(RecordingPolicy):
        async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
            await asyncio.sleep(10)
            return MilterVerdict("reject")

    session = MilterSession(Slow(), policy_timeout=0.05)
    out = await replay(session, EXCHANGE)
    assert out == mb.R_OPTNEG + mb.R_CONTINUE + mb.R_CONTINUE + mb.R_CONTINUE


async def test_policy_returning_garbage_is_a_policy_error() -> None:
    class Garbage(RecordingPolicy):
        async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
            return "reject"  # type: ignore[return-value]

    session = MilterSession(Garbage(), on_policy_error="tempfail")
    await replay(session, START + mb.MACRO_MAIL + mb.MAIL)
    assert await replay(session, mb.RCPT) == mb.R_TEMPFAIL


def optneg(version: int, actions: int, protocol: int) -> bytes:
    return struct.pack(">IcIII", 13, b"O", version, actions, protocol)


async def test_old_mta_without_noreply_gets_a_reply_for_everything() -> None:
    session = MilterSession(grading_policy())
    data = optneg(2, 0x3F, 0x7F) + b"".join(CONNECTION_START[1:]) + ONE_MESSAGE + mb.QUIT
    out = await replay(session, data)
    # version 2, ADDHDRS only (no SETSYMLIST offered), NOCONNECT|NOBODY only (no NR_*).
    assert out == (
        b"\x00\x00\x00\x0dO\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x11"
        + mb.R_CONTINUE * 3  # CONNECT (sent anyway here), HELO, MAIL
        + mb.R_CONTINUE  # RCPT
        + mb.R_CONTINUE * 5  # five headers
        + mb.R_CONTINUE  # EOH, header pending
        + mb.R_ADDHEADER_GRADE
        + mb.R_ACCEPT
    )


async def test_headers_dropped_when_mta_forbids_adding(caplog: pytest.LogCaptureFixture) -> None:
    session = MilterSession(grading_policy())
    data = optneg(6, 0x100, 0x1FFFFF) + EXCHANGE[len(mb.OPTNEG) :]
    out = await replay(session, data)
    assert out[len(out) - 2 * len(mb.R_CONTINUE) :] == mb.R_ACCEPT + mb.R_CONTINUE
    assert b"X-Drossel" not in out
    assert "did not allow adding headers" in caplog.text


async def test_invalid_policy_header_name_is_skipped() -> None:
    verdict = MilterVerdict("accept", add_headers=(("Bad Name", "x"), ("X-Ok", "1\r\n2")))
    out = await replay(MilterSession(RecordingPolicy(eoh=verdict)), EXCHANGE)
    assert out.endswith(mb.R_CONTINUE + b"\x00\x00\x00\x0ahX-Ok\x001 2\x00" + mb.R_ACCEPT)


async def test_quit_nc_resets_connection_but_keeps_negotiation() -> None:
    session = MilterSession(ContinuePolicy())
    await replay(session, START + b"\x00\x00\x00\x01K")
    assert session.negotiated
    assert session.context().client_addr is None
    assert session.context().macros == {}
    assert await replay(session, mb.CONNECT + mb.MACRO_MAIL + mb.MAIL + mb.RCPT) == mb.R_CONTINUE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (mb.HELO, "before OPTNEG"),
        (optneg(1, 0x1FF, 0x1FFFFF), "unsupported MTA protocol version 1"),
        (mb.OPTNEG + mb.QUIT + mb.HELO, "after QUIT"),
    ],
)
async def test_protocol_violations(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        await replay(MilterSession(ContinuePolicy()), data)


def test_on_policy_error_is_validated() -> None:
    with pytest.raises(ValueError):
        MilterSession(ContinuePolicy(), on_policy_error="accept")  # type: ignore[arg-type]


commands = st.sampled_from([*list(b"ABCDEHKLMNOQRTU"), 0, 127, 255])


@settings(max_examples=300, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(commands, st.binary(max_size=40)), max_size=30))
def test_random_packets_only_raise_protocol_errors(packets: list[tuple[int, bytes]]) -> None:
    async def run() -> None:
        session = MilterSession(grading_policy())
        await session.handle(Packet(b"O", mb.OPTNEG[5:]))
        for cmd, payload in packets:
            try:
                await session.handle(Packet(bytes([cmd]), payload))
            except ProtocolError:
                return

    asyncio.run(run())


async def test_without_recipient_step_rcpt_is_negotiated_away() -> None:
    policy = grading_policy()
    session = MilterSession(policy, recipient_step=False)
    out = await replay(session, mb.OPTNEG)
    steps = struct.unpack(">III", out[5:17])[2]
    assert steps & 0x08  # SMFIP_NORCPT
    # an MTA honouring NORCPT sends no RCPT; the message is decided at end of headers
    without_rcpt = [p for p in MESSAGE if p not in (mb.MACRO_RCPT, mb.RCPT)]
    assert await replay(session, b"".join(without_rcpt)) == (
        mb.R_CONTINUE + mb.R_ADDHEADER_GRADE + mb.R_ACCEPT
    )
    assert policy.rcpt_calls == []
    assert len(policy.eoh_calls) == 1


async def test_policy_answering_from_memory_is_decided_synchronously() -> None:
    policy = grading_policy()
    session = MilterSession(policy)
    await replay(session, START + mb.MACRO_MAIL + mb.MAIL)
    command = session.handle_nowait(Packet(b"R", b"<ops@example.net>\0"))
    assert not isinstance(command, bytes)
    assert session.decide_now(command) == mb.R_CONTINUE  # no event loop involved
    assert policy.rcpt_calls[0].recipients == ["<ops@example.net>"]


async def test_suspending_policy_is_finished_by_resume() -> None:
    class Suspending(RecordingPolicy):
        async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
            await asyncio.sleep(0)
            return MilterVerdict("tempfail")

    session = MilterSession(Suspending())
    await replay(session, START + mb.MACRO_MAIL + mb.MAIL)
    command = session.handle_nowait(Packet(b"R", b"<ops@example.net>\0"))
    assert not isinstance(command, bytes)
    assert session.decide_now(command) is None
    with pytest.raises(ProtocolError):
        session.decide_now(command)  # one policy call at a time
    assert await session.resume() == mb.R_TEMPFAIL
    assert session.context().recipients == []  # refused recipient not kept


async def test_spawned_sessions_share_settings_but_not_state() -> None:
    policy = grading_policy()
    template = MilterSession(policy, strip_headers=("X-Drossel",), answer_at_end_of_message=True)
    first, second = template.spawn("first"), template.spawn("second")
    assert (first.peer, second.peer) == ("first", "second")
    assert first.strip_headers == {"x-drossel": "X-Drossel"}
    # the same bytes as a session made the long way, on every buffer size
    direct = MilterSession(policy, strip_headers=("X-Drossel",), answer_at_end_of_message=True)
    expected = await replay(direct, EXCHANGE)
    assert await replay(first, EXCHANGE, 16) == expected
    assert first.closed and not second.closed and not second.negotiated
    await replay(second, START)
    assert second.context().recipients == [] and second.context().headers == []
    assert template.spawn("third").context().macros == {}


async def test_negotiation_is_worked_out_once_per_offer_and_bounded() -> None:
    template = MilterSession(ContinuePolicy())
    offers = [optneg(6, 0x1FF, 0x1FFFFF), optneg(2, 0x3F, 0x7F)]
    replies = [await replay(template.spawn("-"), offer) for offer in offers]
    again = [await replay(template.spawn("-"), offer) for offer in offers]
    fresh = [await replay(MilterSession(ContinuePolicy()), offer) for offer in offers]
    assert replies == again == fresh and replies[0] != replies[1]
    for protocol in range(40):  # an MTA making ever new offers cannot grow the table
        await replay(template.spawn("-"), optneg(6, 0x1FF, protocol))
    assert len(template._negotiated) == 16


@pytest.mark.parametrize(
    ("protocol", "answered"),
    [
        (0x1FFFFF, {b"O", b"R", b"N", b"E"}),  # Postfix 3.x offers every no-reply flag
        (0x7F, {b"O", b"C", b"H", b"M", b"R", b"T", b"L", b"N", b"B", b"E", b"U"}),
    ],
)
async def test_unanswered_commands_follow_the_negotiation(
    protocol: int, answered: set[bytes]
) -> None:
    """The server acknowledges a read at once when it ends with a command that gets no reply:
    the set must match what the session really answers."""
    session = MilterSession(grading_policy())
    assert session.unanswered == frozenset()  # before OPTNEG everything waits for a reply
    await replay(session, optneg(6, 0x1FF, protocol))
    every = {bytes([c]) for c in b"ABCDEHKLMNOQRTU"}
    assert session.unanswered == frozenset(every - answered)
    # and the session indeed answers nothing to each of them (a fresh session per command)
    for command in sorted(session.unanswered - {b"Q", b"K", b"A", b"O"}):
        probe = MilterSession(grading_policy())
        await replay(probe, optneg(6, 0x1FF, protocol) + START[len(mb.OPTNEG) :])
        payload = {
            b"D": b"L",
            b"L": b"Subject\0x\0",
            b"H": b"h.example\0",
            b"M": b"<a@b.example>\0",
            b"C": b"h.example\x004\x00\x19127.0.0.1\0",
            b"U": b"VRFY x\0",
            b"B": b"body text",
        }.get(command, b"")
        assert await probe.handle(Packet(command, payload)) == b"", command


async def test_added_header_packets_are_reused_and_the_table_is_bounded() -> None:
    verdict = MilterVerdict("accept", add_headers=(("X-Grade", "server=s0; stage=0"),))
    template = MilterSession(RecordingPolicy(eoh=verdict), answer_at_end_of_message=True)
    outs = [await replay(template.spawn("-"), EXCHANGE) for _ in range(2)]
    assert outs[0] == outs[1]
    assert b"hX-Grade\x00server=s0; stage=0\x00" in outs[0]
    assert len(template._encoded_headers) == 1
    session = template.spawn("-")
    await replay(session, START)
    many = tuple((f"X-N{i}", "v") for i in range(1100))
    encoded = session._encode_headers(many)
    assert len(encoded) == 1100 and len(template._encoded_headers) <= 1024
    assert encoded[-1] == b"\x00\x00\x00\x0bhX-N1099\x00v\x00"
