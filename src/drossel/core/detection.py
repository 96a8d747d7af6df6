"""Find the sending Exchange server and its build in a message's ``Received:`` headers.

Exchange stamps its build into the ``Received:`` lines it writes (``with Microsoft SMTP Server ...
id 15.1.2507.16`` on transport hops, ``with mapi id 15.01.2507.016`` on mailbox submission).
Headers are hostile input: they can be folded anywhere, huge, duplicated, forged or not UTF-8.
Everything here is bounded and total: unparseable input yields "no server", never an exception.

Two servers are reported:

* ``connecting``: the top-most on-premises Exchange hop once our own/trusted hosts and
  Microsoft-hosted hops are skipped.  This is the server that hands mail to us, and the one
  enforced.
* ``origin``: the bottom-most on-premises Exchange hop, where the message entered Exchange.

When the SMTP id and the mapi id written by the same host disagree, the higher one wins: Exchange
2013 security updates often left the transport id behind (see docs/configuration.md).

Microsoft-hosted means Exchange Online and its filtering layers of every era (``core.hosted``):
their hops carried 8.x, 14.x, 15.0 and 15.1 ids that look like on-premises builds, so a hop is
skipped by its host family or machine name whatever it stamps, and by its build when no
on-premises product ever had that build.  Given a catalog, a 15.x build whose CU line no
on-premises release ever had is not an on-premises server either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from drossel.core.build import PRODUCT_ONLINE, Build, product_of
from drossel.core.catalog import Catalog
from drossel.core.hosted import MICROSOFT_HOSTED, HostedRule, HostedServices

MAX_HEADER_BYTES = 1_048_576
"""Only this much of a header block is looked at; the rest of a huge block is ignored."""
MAX_RECEIVED = 200
"""At most this many ``Received:`` lines are parsed (real chains have fewer than 30)."""
MAX_RECEIVED_LENGTH = 8192


_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_WS_RE = re.compile(r"\s+")
_SMTP_ID_RE = re.compile(
    r"\bwith\s+Microsoft\s+SMTP\s+Server(?:\s*\([^()]{0,400}\))?\s+id\s+(\d{1,4}(?:\.\d{1,6}){3})\b",
    re.IGNORECASE,
)
_MAPI_RE = re.compile(r"\bwith\s+mapi(?:\s+id\s+(\d{1,4}(?:\.\d{1,6}){3}))?\s*;", re.IGNORECASE)
_BY_RE = re.compile(r"(?:^|\s)by\s+([A-Za-z0-9._\-\[\]:]{1,255})", re.IGNORECASE)
_FROM_RE = re.compile(r"^\s*from\s+([^\s;()]{1,255})", re.IGNORECASE)
_COMMENT_RE = re.compile(r"\([^()]*\)")


@dataclass(frozen=True, slots=True)
class Hop:
    """One Exchange-written ``Received:`` line."""

    by: str | None
    from_: str | None
    build: Build | None
    product: str | None
    kind: str  # "smtp" or "mapi"
    cloud: bool
    position: int  # index among all Received lines, 0 = top-most (newest)
    header: str  # the unfolded header value, for evidence
    hosted: str | None = None  # why the hop is Microsoft-hosted (service and matched rule)
    impossible: bool = False  # a build no on-premises release ever had (catalog check)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "by": self.by,
            "from": self.from_,
            "build": self.build.short if self.build else None,
            "product": self.product,
            "kind": self.kind,
            "cloud": self.cloud,
        }
        if self.hosted is not None:
            out["hosted"] = self.hosted
        if self.impossible:
            out["not_on_premises"] = "no on-premises Exchange release has this build line"
        return out


@dataclass(frozen=True, slots=True)
class DetectedServer:
    server: str
    build: Build
    product: str
    evidence: str  # the Received header the build came from

    def to_json(self) -> dict[str, object]:
        return {"server": self.server, "build": self.build.short, "product": self.product}


@dataclass(frozen=True, slots=True)
class Detection:
    hops: tuple[Hop, ...]
    connecting: DetectedServer | None
    origin: DetectedServer | None

    def to_json(self) -> dict[str, object]:
        return {
            "hops": [h.to_json() for h in self.hops],
            "connecting": self.connecting.to_json() if self.connecting else None,
            "origin": self.origin.to_json() if self.origin else None,
        }


NO_DETECTION = Detection(hops=(), connecting=None, origin=None)


def to_text(raw: bytes | str) -> str:
    """Decode header bytes without ever failing: UTF-8 where valid, Latin-1 for the rest."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_block(message: bytes | str) -> str:
    """The header part of a message (or a bare header block), bounded in size."""
    text = to_text(message[: MAX_HEADER_BYTES + 4] if len(message) > MAX_HEADER_BYTES else message)
    text = text.replace("\r\n", "\n")
    end = text.find("\n\n")
    if end >= 0:
        text = text[:end]
    return text[:MAX_HEADER_BYTES]


def parse_headers(block: str) -> list[tuple[str, str]]:
    """Split a header block into (name, unfolded value) pairs; lines that are not headers are
    skipped (mbox ``From `` lines, our own ``# source:`` comments, garbage)."""
    headers: list[tuple[str, str]] = []
    current: list[str] | None = None
    for line in block.split("\n"):
        if line[:1] in (" ", "\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            headers.append(_finish(current))
            current = None
        name, sep, _ = line.partition(":")
        if sep and name and len(name) <= 76 and " " not in name and name.isprintable():
            current = [line]
    if current is not None:
        headers.append(_finish(current))
    return headers


def _finish(lines: list[str]) -> tuple[str, str]:
    name, _, value = lines[0].partition(":")
    return name.strip(), unfold("\n".join([value, *lines[1:]]))


def unfold(value: str) -> str:
    """Undo header folding and collapse runs of white space to one space."""
    return _WS_RE.sub(" ", _FOLD_RE.sub(" ", value)).strip()


def is_cloud_host(host: str | None, hosted: HostedServices = MICROSOFT_HOSTED) -> bool:
    """Whether ``host`` is a machine of Microsoft's hosted mail (any era)."""
    return hosted.host_rule(host) is not None


def _describe(rule: HostedRule) -> str:
    return f"{rule.service} ({rule.kind} {rule.match})"


def _host(token: str) -> str:
    return token.strip("[]").rstrip(".").lower()


def parse_hop(value: str, position: int, hosted: HostedServices = MICROSOFT_HOSTED) -> Hop | None:
    """Parse one unfolded ``Received:`` value; ``None`` unless Exchange wrote it."""
    value = value[:MAX_RECEIVED_LENGTH]
    smtp = _SMTP_ID_RE.search(value)
    mapi = None if smtp else _MAPI_RE.search(value)
    if smtp is None and mapi is None:
        return None
    kind = "smtp" if smtp else "mapi"
    build_text = smtp.group(1) if smtp else (mapi.group(1) if mapi else None)
    build = Build.parse(build_text) if build_text else None
    # Comments may contain "by" (e.g. "(authenticated by ...)"); drop them before looking.
    bare = value
    for _ in range(5 if "(" in bare else 0):
        stripped = _COMMENT_RE.sub(" ", bare)
        if stripped == bare:
            break
        bare = stripped
    by_match = _BY_RE.search(bare)
    from_match = _FROM_RE.search(bare)
    by = _host(by_match.group(1)) if by_match else None
    from_ = _host(from_match.group(1)) if from_match else None
    product = product_of(build) if build else None
    rule = hosted.classify(by, build)
    cloud = product == PRODUCT_ONLINE or rule is not None
    if cloud:
        product = PRODUCT_ONLINE
    return Hop(
        by=by,
        from_=from_,
        build=build,
        product=product,
        kind=kind,
        cloud=cloud,
        position=position,
        header=value,
        hosted=_describe(rule) if rule is not None else None,
    )


def _on_premises(hop: Hop, trusted: frozenset[str]) -> bool:
    return (
        not hop.cloud
        and not hop.impossible
        and hop.build is not None
        and hop.product is not None
        and hop.by is not None
        and not _is_trusted(hop.by, trusted)
    )


def _is_trusted(host: str, trusted: frozenset[str]) -> bool:
    if host in trusted:
        return True
    return any(t.startswith(".") and host.endswith(t) for t in trusted)


def _server_of(anchor: Hop, hops: Sequence[Hop]) -> DetectedServer:
    """Combine every hop the anchor's host wrote into one server, taking the highest build of
    the anchor's product (SMTP and mapi ids of one host can disagree).

    A host seen only through its ``with mapi id`` line (mail written in Outlook, handed to the
    next server) also gets the SMTP id that the next server stamped on the line ``from`` it, when
    both are of the same CU (same major.minor.build): a mapi id is often a non-release revision.
    """
    assert anchor.by is not None
    same_host = [h for h in hops if h.by == anchor.by and h.product == anchor.product]
    if all(h.kind == "mapi" for h in same_host):
        same_host += [
            h
            for h in hops
            if h.from_ == anchor.by
            and h.kind == "smtp"
            and h.build is not None
            and anchor.build is not None
            and h.build.cu_key == anchor.build.cu_key
        ]
    best = anchor
    for hop in same_host:
        if hop.build is not None and best.build is not None and hop.build > best.build:
            best = hop
    assert best.build is not None and best.product is not None
    return DetectedServer(
        server=anchor.by, build=best.build, product=best.product, evidence=best.header
    )


def _mark_impossible(hop: Hop, catalog: Catalog) -> Hop:
    """Flag a 15.x build whose CU line no on-premises release ever had (e.g. 15.0.1010.x,
    which Exchange Online stamped in 2014): it is not an on-premises server."""
    if hop.cloud or hop.build is None or hop.product is None:
        return hop
    if catalog.is_on_premises_line(hop.build):
        return hop
    return replace(hop, impossible=True)


def detect_in_headers(
    headers: Iterable[tuple[str, str]],
    trusted_hosts: Iterable[str] = (),
    hosted: HostedServices = MICROSOFT_HOSTED,
    catalog: Catalog | None = None,
) -> Detection:
    """Run detection on already split headers (name, value); values may still be folded.

    ``hosted`` is the knowledge of Microsoft's hosted mail (the shipped data by default);
    ``catalog``, when given, also rules out 15.x builds of CU lines no release ever had."""
    trusted = frozenset(h.strip().lower().rstrip(".") for h in trusted_hosts if h.strip())
    hops: list[Hop] = []
    position = 0
    for name, value in headers:
        if name.lower() != "received":
            continue
        if position >= MAX_RECEIVED:
            break
        raw = value[:MAX_RECEIVED_LENGTH]
        # parse_hop needs "Microsoft" or "mapi"; unfolding only touches white space, so an
        # ASCII value without either word is skipped before any unfolding or regex work
        # (non-ASCII takes the full path: re.IGNORECASE also folds e.g. U+017F to "s").
        lowered = raw.lower()
        skip = raw.isascii() and "microsoft" not in lowered and "mapi" not in lowered
        hop = None if skip else parse_hop(unfold(raw), position, hosted)
        position += 1
        if hop is not None:
            hops.append(hop if catalog is None else _mark_impossible(hop, catalog))
    candidates = [h for h in hops if _on_premises(h, trusted)]
    if not candidates:
        return Detection(hops=tuple(hops), connecting=None, origin=None)
    return Detection(
        hops=tuple(hops),
        connecting=_server_of(candidates[0], candidates),
        origin=_server_of(candidates[-1], candidates),
    )


def detect(
    message: bytes | str,
    trusted_hosts: Iterable[str] = (),
    hosted: HostedServices = MICROSOFT_HOSTED,
    catalog: Catalog | None = None,
) -> Detection:
    """Run detection on a whole message or a bare header block."""
    return detect_in_headers(parse_headers(header_block(message)), trusted_hosts, hosted, catalog)
