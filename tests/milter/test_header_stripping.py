"""Forged copies of drossel's verdict header are deleted before ours is added (issue 10)."""

from __future__ import annotations

import milter_bytes as mb
from milter_helpers import RecordingPolicy, replay

from drossel.milter import MilterVerdict
from drossel.milter.commands import SMFIF_ADDHDRS, SMFIF_CHGHDRS, SMFIF_SETSYMLIST
from drossel.milter.session import MilterSession

OURS = MilterVerdict("accept", add_headers=(("X-Drossel", "server=ex01; stage=1"),))
# Postfix offers every action except CHGHDRS (0x1ff minus 0x10)
OPTNEG_NO_CHGHDRS = b"\x00\x00\x00\rO\x00\x00\x00\x06\x00\x00\x01\xef\x00\x1f\xff\xff"


def _message(*headers: bytes) -> bytes:
    return b"".join((mb.MACRO_MAIL, mb.MAIL, mb.RCPT, *headers, mb.EOH, mb.BODYEOB))


async def test_forged_copies_deleted_highest_index_first_then_ours_added() -> None:
    session = MilterSession(RecordingPolicy(eoh=OURS), strip_headers=["X-Drossel"])
    out = await replay(session, mb.OPTNEG)
    assert session.actions & SMFIF_CHGHDRS
    message = _message(mb.HDR_FORGED_DROSSEL, mb.HDR_RECEIVED_1, mb.HDR_FORGED_DROSSEL_LOWER)
    out = await replay(session, message)
    # EOH must continue (changes are only possible at end of message), then at EOM:
    assert out == (
        mb.R_CONTINUE  # RCPT
        + mb.R_CONTINUE  # EOH
        + mb.R_DELETE_DROSSEL_2
        + mb.R_DELETE_DROSSEL_1
        + mb.R_ADDHEADER_DROSSEL
        + mb.R_ACCEPT
    )


async def test_forged_copies_deleted_even_without_our_header() -> None:
    session = MilterSession(
        RecordingPolicy(eoh=MilterVerdict("accept")), strip_headers=["x-drossel"]
    )
    await replay(session, mb.OPTNEG)
    out = await replay(session, _message(mb.HDR_FORGED_DROSSEL))
    delete_1 = mb.R_DELETE_DROSSEL_1.replace(b"X-Drossel", b"x-drossel")
    assert out == mb.R_CONTINUE + mb.R_CONTINUE + delete_1 + mb.R_ACCEPT


async def test_counts_are_per_message() -> None:
    session = MilterSession(RecordingPolicy(eoh=OURS), strip_headers=["X-Drossel"])
    await replay(session, mb.OPTNEG)
    await replay(session, _message(mb.HDR_FORGED_DROSSEL, mb.HDR_FORGED_DROSSEL))
    out = await replay(session, _message(mb.HDR_FORGED_DROSSEL))
    assert out == (
        mb.R_CONTINUE + mb.R_CONTINUE + mb.R_DELETE_DROSSEL_1 + mb.R_ADDHEADER_DROSSEL + mb.R_ACCEPT
    )


async def test_clean_message_without_header_is_decided_at_end_of_headers() -> None:
    """Nothing to add or remove: accept at EOH, so Postfix skips the rest for this milter."""
    session = MilterSession(
        RecordingPolicy(eoh=MilterVerdict("accept")), strip_headers=["X-Drossel"]
    )
    await replay(session, mb.OPTNEG)
    out = await replay(session, _message(mb.HDR_RECEIVED_1, mb.HDR_FROM))
    assert out == mb.R_CONTINUE + mb.R_ACCEPT + mb.R_CONTINUE


async def test_rejected_message_needs_no_deletion() -> None:
    session = MilterSession(
        RecordingPolicy(eoh=MilterVerdict("reject")), strip_headers=["X-Drossel"]
    )
    await replay(session, mb.OPTNEG)
    out = await replay(session, _message(mb.HDR_FORGED_DROSSEL))
    assert out == mb.R_CONTINUE + mb.R_REJECT + mb.R_CONTINUE


async def test_mta_without_chghdrs_still_gets_our_header() -> None:
    session = MilterSession(RecordingPolicy(eoh=OURS), strip_headers=["X-Drossel"])
    await replay(session, OPTNEG_NO_CHGHDRS)
    assert session.actions == SMFIF_ADDHDRS | SMFIF_SETSYMLIST
    out = await replay(session, _message(mb.HDR_FORGED_DROSSEL))
    assert out == mb.R_CONTINUE + mb.R_CONTINUE + mb.R_ADDHEADER_DROSSEL + mb.R_ACCEPT


async def test_no_stripping_means_no_chghdrs_requested() -> None:
    session = MilterSession(RecordingPolicy())
    await replay(session, mb.OPTNEG)
    assert session.actions == SMFIF_ADDHDRS | SMFIF_SETSYMLIST
