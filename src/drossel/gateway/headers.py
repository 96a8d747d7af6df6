"""Our verdict header on relayed mail, and removal of every copy that arrived from outside.

SPEC §3: ``X-Drossel`` is only ever written by us.  A sender who adds its own copy (folded,
odd case, space before the colon) must not be able to make a downstream filter or admin read
a verdict we never gave, so every copy in the header section is removed before ours is added.
"""

from __future__ import annotations

from drossel.core.decision import Verdict
from drossel.gateway.relay import clean


def _field_name(line: bytes) -> bytes | None:
    name, colon, _ = line.partition(b":")
    if not colon:
        return None
    return name.rstrip(b" \t").lower()


def strip_header(message: bytes, name: str) -> bytes:
    """``message`` without any ``name:`` field (and its continuation lines) in the header
    section; the body, which starts after the first empty line, is never touched."""
    wanted = name.encode("ascii").lower()
    lines = message.splitlines(keepends=True)
    kept: list[bytes] = []
    dropping = False
    for index, line in enumerate(lines):
        if line in (b"\r\n", b"\n"):
            kept.extend(lines[index:])
            break
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = _field_name(line) == wanted
        if not dropping:
            kept.append(line)
    return b"".join(kept)


def verdict_header_value(verdict: Verdict) -> str | None:
    """``server=...; build=...; status=...; stage=N`` for a detected server (as the milter
    writes it), ``None`` when no server was detected.  Controls are removed: the server name
    comes from a header."""
    if verdict.server is None:
        return None
    status = verdict.assessment.status if verdict.assessment else "unknown"
    return clean(
        f"server={verdict.server.server}; build={verdict.server.build}; "
        f"status={status}; stage={verdict.stage or 0}"
    )


def verdict_header(name: str, verdict: Verdict | None) -> bytes:
    """The header line to prepend (empty when there is nothing to say)."""
    value = verdict_header_value(verdict) if verdict is not None else None
    if value is None:
        return b""
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")
