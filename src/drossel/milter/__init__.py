"""Postfix milter (protocol version 6) for drossel, written on asyncio.

Why hand-written: there is no maintained, asyncio-native milter library to
build on.  ``pymilter`` wraps sendmail's C libmilter, which runs callbacks in
its own threads, so async policy code would need a thread/loop bridge per
event.  The pure-Python asyncio implementations are young, one-person
projects: ``purepythonmilter`` (asyncio, Postfix-first) is on PyPI as 0.0.x
classified "Development Status :: 3 - Alpha", and ``kilter.service``
(asyncio/trio) is pre-1.0 (0.x).  drossel needs only a small part of the
protocol (negotiate, collect envelope and headers, answer at RCPT and end of
headers, add headers), so owning a few hundred lines of logic that are
tested byte-for-byte is cheaper than putting an alpha framework in the mail
path.

Layers, each in its own module and tested the same way:

* :mod:`.framing`  - length-prefixed packets, incremental decoder.
* :mod:`.commands` - typed commands and responses, strict parsing.
* :mod:`.session`  - one connection's state machine, calls the policy.
* :mod:`.server`   - asyncio listener, timeouts, error isolation.
* :mod:`.policy`   - the interface the rest of drossel implements.

Protocol references: sendmail ``libmilter/mfdef.h`` and ``mfapi.h``,
Postfix ``MILTER_README`` and ``src/milter/milter8.c``.
"""

from drossel.milter.framing import DEFAULT_MAX_PACKET, FramingError, ProtocolError
from drossel.milter.policy import (
    ContinuePolicy,
    MessageContext,
    MilterPolicy,
    MilterVerdict,
    OnPolicyError,
)
from drossel.milter.server import MilterServer, parse_listen, start_milter_server
from drossel.milter.session import MilterSession

__all__ = [
    "DEFAULT_MAX_PACKET",
    "ContinuePolicy",
    "FramingError",
    "MessageContext",
    "MilterPolicy",
    "MilterServer",
    "MilterSession",
    "MilterVerdict",
    "OnPolicyError",
    "ProtocolError",
    "parse_listen",
    "start_milter_server",
]
