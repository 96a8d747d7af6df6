"""Bounded fuzzing of the milter codec (issue 10): framing, command parsing, session dispatch.

Random and mutated byte streams (the mutations start from a recorded Postfix exchange, so
they reach deep into the parsers) must only ever produce packets, typed commands, or the
codec's own :class:`ProtocolError` (``FramingError`` is one): no other exception, no hang.
Every example runs under an interval timer that turns a hang into a failure.

The normal suite runs a small number of examples; set ``DROSSEL_FUZZ_EXAMPLES`` for more,
e.g. ``DROSSEL_FUZZ_EXAMPLES=20000 pytest tests/milter/test_fuzz_codec.py``.
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import milter_bytes as mb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from milter_helpers import EXCHANGE, RecordingPolicy

from drossel.milter.commands import Command, parse_command
from drossel.milter.framing import Packet, PacketDecoder, ProtocolError
from drossel.milter.session import MilterSession

EXAMPLES = int(os.environ.get("DROSSEL_FUZZ_EXAMPLES", "150"))
#: Seconds one example may take before it counts as a hang (generous: shared machine).
HANG = 10.0
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # slowness is not failure here; the timer below catches hangs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

COMMAND_BYTES = b"ABCDEHKLMNOQRTU"
SMALL_MAX_PACKET = 4096


class Hang(BaseException):
    """Raised by the timer; a BaseException so no ``except Exception`` can swallow it."""


@contextmanager
def no_hang(seconds: float = HANG) -> Iterator[None]:
    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"example still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def decode_all(stream: bytes, cuts: list[int], max_packet: int) -> list[Packet]:
    """Feed ``stream`` split at ``cuts``; the packets, or ProtocolError."""
    decoder = PacketDecoder(max_packet)
    packets: list[Packet] = []
    start = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        packets += decoder.feed(stream[start:cut])
        start = max(start, cut)
    return packets


@st.composite
def mutated(draw: st.DrawFn, seed: bytes = EXCHANGE) -> bytes:
    """``seed`` with a few random flips, deletions, insertions and duplications."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "length"]))
        if kind == "flip" and pos < len(data):
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=40))
        elif kind == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 200))]
        elif kind == "length":  # a plausible but wrong length prefix
            data[pos:pos] = struct.pack(">I", draw(st.integers(0, 2 * SMALL_MAX_PACKET)))
    return bytes(data)


streams = st.one_of(st.binary(max_size=2000), mutated())
cut_points = st.lists(st.integers(0, 5000), max_size=8)


@FUZZ
@given(stream=streams, cuts=cut_points, other_cuts=cut_points)
def test_framing_only_raises_its_own_error_and_ignores_chunking(
    stream: bytes, cuts: list[int], other_cuts: list[int]
) -> None:
    with no_hang():
        try:
            packets = decode_all(stream, cuts, SMALL_MAX_PACKET)
        except ProtocolError:
            packets = None
        try:
            again = decode_all(stream, other_cuts, SMALL_MAX_PACKET)
        except ProtocolError:
            again = None
    # A good stream gives the same packets however it is sliced; a bad one fails both ways.
    if packets is not None and again is not None:
        assert packets == again
    assert (packets is None) == (again is None)


@FUZZ
@given(
    command=st.one_of(st.sampled_from(list(COMMAND_BYTES)), st.integers(0, 255)),
    payload=st.one_of(st.binary(max_size=300), mutated(mb.MACRO_CONNECT[5:])),
)
def test_command_parser_only_raises_protocol_error(command: int, payload: bytes) -> None:
    with no_hang():
        try:
            parsed = parse_command(Packet(bytes([command]), payload))
        except ProtocolError:
            return
    assert isinstance(parsed, Command)


@FUZZ
@given(stream=mutated(), cuts=cut_points)
def test_session_dispatch_only_raises_protocol_error(stream: bytes, cuts: list[int]) -> None:
    """Whole mutated conversations through framing, parsing and the state machine."""
    session = MilterSession(RecordingPolicy(), strip_headers=["X-Drossel"])
    with no_hang():
        try:
            for packet in decode_all(stream, cuts, SMALL_MAX_PACKET):
                result = session.handle_nowait(packet)
                assert isinstance(result, bytes) or result is not None
                if session.closed:
                    break
        except ProtocolError:
            pass
