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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TypeVar

from drossel.core.build import PRODUCT_ONLINE, Build, product_of
from drossel.core.catalog import Catalog
from drossel.core.frozen import fast_init, maker
from drossel.core.hosted import MICROSOFT_HOSTED, HostedRule, HostedServices

MAX_HEADER_BYTES = 1_048_576
"""Only this much of a header block is looked at; the rest of a huge block is ignored."""
MAX_RECEIVED = 200
"""At most this many ``Received:`` lines are parsed (real chains have fewer than 30)."""
MAX_RECEIVED_LENGTH = 8192


_SMTP_ID_RE = re.compile(
    r"\bwith\s+Microsoft\s+SMTP\s+Server(?:\s*\([^()]{0,400}\))?\s+id\s+(\d{1,4}(?:\.\d{1,6}){3})\b",
    re.IGNORECASE,
)
_MAPI_RE = re.compile(r"\bwith\s+mapi(?:\s+id\s+(\d{1,4}(?:\.\d{1,6}){3}))?\s*;", re.IGNORECASE)
_BY_RE = re.compile(r"(?:^|\s)by\s+([A-Za-z0-9._\-\[\]:]{1,255})", re.IGNORECASE)
_FROM_RE = re.compile(r"^\s*from\s+([^\s;()]{1,255})", re.IGNORECASE)
_COMMENT_RE = re.compile(r"\([^()]*\)")
# The RFC 5322 date that ends a Received line, strictly: only weekday and month names, digits,
# ":", "+"/"-" and single spaces (no parentheses, no "by"/"with"/"from"/"mapi"), so no pattern
# above can match inside it nor across the ";" before it (see _parse_prefix).
_DATE_TAIL_RE = re.compile(
    r";(?: ?(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),)? ?\d{1,2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}(?::\d{2})? "
    r"[+-]\d{4}\Z"
)
MAX_MEMO = 10_000
"""Bound on remembered Received prefixes (cleared when full; cheap to recompute)."""
MAX_MEMO_PREFIX = 512
"""Only prefixes up to this length are remembered (the text before the date as received,
folds included; real ones have 100-300 characters)."""


@fast_init
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


@fast_init
@dataclass(frozen=True, slots=True)
class DetectedServer:
    server: str
    build: Build
    product: str
    evidence: str  # the Received header the build came from

    def to_json(self) -> dict[str, object]:
        return {"server": self.server, "build": self.build.short, "product": self.product}


#: a remembered line of a message: its memo entry, its position among the Received lines, and
#: the text whose part after ``cut`` (the ``;`` before the date) follows the entry's prefix
_Line = tuple["_Remembered", int, str, int]


class Detection:
    """What detection found in one message: every Exchange-written hop, top-most first, and
    the connecting and originating on-premises servers.

    Immutable and compared by value, as a frozen dataclass would be.  The per-message path
    needs only the two servers, so a message whose lines all came from the memo keeps them as
    memo entries and builds its :class:`Hop` objects when ``hops`` is first read (CLI,
    reports, JSON): the same hops, at the price of the caller that wants them."""

    __slots__ = ("_catalog", "_hops", "_lines", "connecting", "origin")

    connecting: DetectedServer | None
    origin: DetectedServer | None
    _hops: tuple[Hop, ...] | None  # None until built from _lines
    _lines: list[_Line] | None
    _catalog: Catalog | None

    def __init__(
        self,
        hops: tuple[Hop, ...],
        connecting: DetectedServer | None,
        origin: DetectedServer | None,
    ) -> None:
        _set(self, "_hops", hops)
        _set(self, "_lines", None)
        _set(self, "_catalog", None)
        _set(self, "connecting", connecting)
        _set(self, "origin", origin)

    @property
    def hops(self) -> tuple[Hop, ...]:
        hops: tuple[Hop, ...] | None = self._hops
        if hops is None:  # built once; two threads building at once build the same
            lines = self._lines
            assert lines is not None  # set whenever _hops is not
            hops = tuple(_hop_of_line(line, self._catalog) for line in lines)
            _set(self, "_hops", hops)
        return hops

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Detection is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Detection is immutable: cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detection):
            return NotImplemented
        return (self.hops, self.connecting, self.origin) == (
            other.hops,
            other.connecting,
            other.origin,
        )

    def __hash__(self) -> int:
        return hash((self.hops, self.connecting, self.origin))

    def __repr__(self) -> str:
        return (
            f"Detection(hops={self.hops!r}, connecting={self.connecting!r}, origin={self.origin!r})"
        )

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return Detection, (self.hops, self.connecting, self.origin)

    def to_json(self) -> dict[str, object]:
        return {
            "hops": [h.to_json() for h in self.hops],
            "connecting": self.connecting.to_json() if self.connecting else None,
            "origin": self.origin.to_json() if self.origin else None,
        }


_set = object.__setattr__


class _DetectionTwin:
    """:class:`Detection`'s layout without its ``__setattr__``: a detection is filled in as
    one of these with plain attribute stores and then given its real class (the trick of
    :mod:`drossel.core.frozen`, written out for this one class)."""

    __slots__ = Detection.__slots__


def _lazy_detection(
    lines: list[_Line],
    catalog: Catalog | None,
    connecting: DetectedServer | None,
    origin: DetectedServer | None,
) -> Detection:
    """A detection whose hops are built from ``lines`` when first read."""
    made = _DetectionTwin()
    made._hops = None  # type: ignore[attr-defined]
    made._lines = lines  # type: ignore[attr-defined]
    made._catalog = catalog  # type: ignore[attr-defined]
    made.connecting = connecting  # type: ignore[attr-defined]
    made.origin = origin  # type: ignore[attr-defined]
    made.__class__ = Detection  # type: ignore[assignment]
    return made  # type: ignore[return-value]


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
    """Undo header folding and collapse runs of white space to one space.

    ``str.split`` splits at exactly the white space that ``re``'s ``\\s`` matches, folds
    included, and drops it at both ends: one pass in C instead of two substitutions."""
    return " ".join(value.split())


def is_cloud_host(host: str | None, hosted: HostedServices = MICROSOFT_HOSTED) -> bool:
    """Whether ``host`` is a machine of Microsoft's hosted mail (any era)."""
    return hosted.host_rule(host) is not None


def _describe(rule: HostedRule) -> str:
    return f"{rule.service} ({rule.kind} {rule.match})"


def _host(token: str) -> str:
    return token.strip("[]").rstrip(".").lower()


def parse_hop(value: str, position: int, hosted: HostedServices = MICROSOFT_HOSTED) -> Hop | None:
    """Parse one unfolded ``Received:`` value; ``None`` unless Exchange wrote it.

    A server sends the same line again and again but for its date, so the shipped hosted data's
    result for the part before the date is remembered: every pattern here matches inside that
    part or not at all (the date is checked strictly), so the outcome is the same as parsing
    the whole line, only the position and the evidence text differ."""
    return _hop_of(value, position, hosted)


class _Remembered:
    """What the memo keeps of one line's text up to the ``;`` before its date: the unfolded
    text, the hop parsed from it (position 0) and whether its build line is impossible on
    premises by the catalog last asked about (a plain class: read per message)."""

    __slots__ = ("marked", "prefix", "template")

    def __init__(self, prefix: str, template: Hop | None) -> None:
        self.prefix = prefix
        self.template = template
        #: (catalog, impossible by it), replaced as one value: threads may share the memo
        self.marked: tuple[Catalog | None, bool] = _UNMARKED

    def impossible_in(self, catalog: Catalog) -> bool:
        marked = self.marked
        if marked[0] is catalog:
            return marked[1]
        template = self.template
        impossible = template is not None and _impossible(template, catalog)
        self.marked = (catalog, impossible)
        return impossible

    def hop(self, position: int, tail: str, catalog: Catalog | None) -> Hop | None:
        """The hop of a line with this text before its date: ``tail`` is the unfolded rest
        from the ``;`` on."""
        if self.template is None:
            return None
        return _hop_of_line((self, position, tail, 0), catalog)


def _remembered(raw: str, hosted: HostedServices) -> tuple[_Remembered, str] | None:
    """The memo entry of a (possibly folded) ``Received:`` value and the unfolded rest of the
    line from its last ``;`` on, or ``None`` when the line does not end in a plain date.

    Unfolding only touches white space, so the unfolded line's last ``;`` is the raw line's
    last ``;``: the part before it is looked up as it is (no unfolding per message), the
    short rest is unfolded here.  The rest of the unfolded line is ``;``, one space if white
    space followed the ``;``, and the words after it; a rest the strict date pattern matches
    as it is (single spaces only) is already unfolded."""
    if hosted is not MICROSOFT_HOSTED:
        return None
    cut = raw.rfind(";")
    if cut < 0 or cut >= MAX_MEMO_PREFIX:
        return None
    # the date pattern has no ";": it can only match from the last one on
    if _DATE_TAIL_RE.match(raw, cut) is not None:
        tail = raw[cut:]
    else:
        rest = raw[cut + 1 :]
        words = rest.split()
        tail = ("; " if words and rest[0].isspace() else ";") + " ".join(words)
        if _DATE_TAIL_RE.match(tail) is None:
            return None
    key = raw[: cut + 1]
    entry = _MEMO.get(key)
    if entry is None:
        if len(_MEMO) >= MAX_MEMO:
            _MEMO.clear()
            _PLANS.clear()
        prefix = unfold(key)
        if prefix == key:  # not folded: one string for both
            prefix = key
        entry = _MEMO[key] = _Remembered(prefix, _parse(prefix, 0, hosted))
    return entry, tail


def _hop_of(
    raw: str, position: int, hosted: HostedServices, catalog: Catalog | None = None
) -> Hop | None:
    """:func:`parse_hop` of the unfolded ``raw`` value (and, with a catalog, its build line
    checked by :func:`_mark_impossible`), from the memo when the line ends in a date."""
    raw = raw[:MAX_RECEIVED_LENGTH]
    found = _remembered(raw, hosted)
    if found is None:
        hop = _parse(unfold(raw), position, hosted)
        return hop if hop is None or catalog is None else _mark_impossible(hop, catalog)
    entry, tail = found
    return entry.hop(position, tail, catalog)


_MEMO: dict[str, _Remembered] = {}
_UNMARKED: tuple[Catalog | None, bool] = (None, False)


def _parse(value: str, position: int, hosted: HostedServices) -> Hop | None:
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
    best = _best(anchor, hops)
    assert best.build is not None and best.product is not None
    return DetectedServer(
        server=anchor.by, build=best.build, product=best.product, evidence=best.header
    )


def _best(anchor: Hop, hops: Sequence[Hop]) -> Hop:
    """The hop whose build :func:`_server_of` takes for ``anchor`` (the first of the highest)."""
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
    return best


def _impossible(hop: Hop, catalog: Catalog) -> bool:
    """A 15.x build whose CU line no on-premises release ever had (e.g. 15.0.1010.x, which
    Exchange Online stamped in 2014): it is not an on-premises server."""
    if hop.cloud or hop.build is None or hop.product is None:
        return False
    return not catalog.is_on_premises_line(hop.build)


def _mark_impossible(hop: Hop, catalog: Catalog) -> Hop:
    """The hop, flagged when :func:`_impossible` says so."""
    return replace(hop, impossible=True) if _impossible(hop, catalog) else hop


@lru_cache(maxsize=64)
def _trusted_set(trusted_hosts: tuple[str, ...]) -> frozenset[str]:
    """The policy's trusted hosts, normalised once per distinct policy rather than per message."""
    return frozenset(h.strip().lower().rstrip(".") for h in trusted_hosts if h.strip())


def detect_in_headers(
    headers: Iterable[tuple[str, str]],
    trusted_hosts: Iterable[str] = (),
    hosted: HostedServices = MICROSOFT_HOSTED,
    catalog: Catalog | None = None,
) -> Detection:
    """Run detection on already split headers (name, value); values may still be folded.

    ``hosted`` is the knowledge of Microsoft's hosted mail (the shipped data by default);
    ``catalog``, when given, also rules out 15.x builds of CU lines no release ever had.

    Per message this is the per-message path of the milter and the gateway, so what does not
    depend on the dates is remembered: the hop of each line's text before its date (see
    :func:`parse_hop`), and, for a sequence of such lines, which hops make the connecting and
    the originating server (bounded, cleared when full; the same result as working it out)."""
    if not trusted_hosts:
        trusted: frozenset[str] = _NO_HOSTS
    elif isinstance(trusted_hosts, tuple):
        trusted = _trusted_set(trusted_hosts)
    else:
        trusted = _trusted_set(tuple(trusted_hosts))
    #: the hops, as memo lines (built when read) while every hop comes from the memo
    items: list[_Line | Hop] = []
    #: the memo entries of the hops, while every hop comes from the memo
    entries: list[_Remembered] | None = []
    position = 0
    for name, value in headers:
        # only "received" in any case; lower() never makes a name shorter
        if len(name) != 8 or (name != "Received" and name.lower() != "received"):
            continue
        if position >= MAX_RECEIVED:
            break
        raw = value[:MAX_RECEIVED_LENGTH]
        position += 1
        # A hop needs "Microsoft" or "mapi"; unfolding only touches white space, so an ASCII
        # value without either word (in any case) is skipped before any unfolding or regex
        # work (non-ASCII takes the full path: re.IGNORECASE also folds e.g. U+017F to "s").
        lowered = raw.lower()
        if "microsoft" not in lowered and "mapi" not in lowered and raw.isascii():
            continue
        # a remembered line ending in an already unfolded date: _remembered written out
        # here (the usual case, once or twice per message)
        cut = raw.rfind(";")
        if (
            hosted is MICROSOFT_HOSTED
            and 0 <= cut < MAX_MEMO_PREFIX
            and _DATE_TAIL_RE.match(raw, cut) is not None
        ):
            entry = _MEMO.get(raw[: cut + 1])
            if entry is not None:
                if entry.template is not None:
                    items.append((entry, position - 1, raw, cut))
                    if entries is not None:
                        entries.append(entry)
                continue
        found = _remembered(raw, hosted)
        if found is None:
            hop = _parse(unfold(raw), position - 1, hosted)
            if hop is not None:
                items.append(hop if catalog is None else _mark_impossible(hop, catalog))
                entries = None
        else:
            entry, tail = found
            if entry.template is not None:
                items.append((entry, position - 1, tail, 0))
                if entries is not None:
                    entries.append(entry)
    if not items:
        return NO_DETECTION
    if entries is not None:
        # which hops are candidates and whose build each end takes depends only on the
        # lines' text before their dates (and the trusted hosts and the catalog)
        key = (trusted, *entries)
        known = _PLANS.get(key)
        if known is not None and known[0] is catalog:
            lines: list[_Line] = items  # type: ignore[assignment]  # all from the memo
            return _lazy_detection(lines, catalog, *_ends(known[1], _server_of_lines, lines))
    hops = [
        item if item.__class__ is Hop else _hop_of_line(item, catalog)  # type: ignore[arg-type]
        for item in items
    ]
    plan = _plan(hops, trusted)
    if entries is not None:
        if len(_PLANS) >= MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = (catalog, plan)
    return Detection(tuple(hops), *_ends(plan, _server_of_hops, hops))


_T = TypeVar("_T")
_Ends = tuple[DetectedServer | None, DetectedServer | None]


def _ends(
    plan: _Plan | None,
    server_of: Callable[[list[_T], int, int], DetectedServer],
    found: list[_T],
) -> _Ends:
    """The connecting and the originating server a plan picks among ``found`` (hops, or
    memo lines), one object when both ends are the same."""
    if plan is None:
        return None, None
    anchor, best, origin_anchor, origin_best = plan
    connecting = server_of(found, anchor, best)
    if origin_anchor == anchor and origin_best == best:
        return connecting, connecting
    return connecting, server_of(found, origin_anchor, origin_best)


def _server_of_hops(hops: list[Hop], anchor: int, best: int) -> DetectedServer:
    """The server the plan's ``anchor`` hop names, with the build of its ``best`` hop."""
    found_by, found_in = hops[anchor], hops[best]
    return _make_server(found_by.by, found_in.build, found_in.product, found_in.header)


def _hop_of_line(line: _Line, catalog: Catalog | None) -> Hop:
    """The hop of a remembered line (see :data:`_Line`), its build line checked against
    ``catalog`` when one is given."""
    entry, position, text, cut = line
    t = entry.template
    assert t is not None  # only lines with a hop are kept
    return _make_hop(
        t.by,
        t.from_,
        t.build,
        t.product,
        t.kind,
        t.cloud,
        position,
        entry.prefix + text[cut + 1 :],
        t.hosted,
        catalog is not None and entry.impossible_in(catalog),
    )


def _server_of_lines(lines: list[_Line], anchor: int, best: int) -> DetectedServer:
    """The server the plan's ``anchor`` line names, with the build of its ``best`` line (what
    :func:`_server_of` gives for the hops of these lines)."""
    found_in, _, text, cut = lines[best]
    t = found_in.template
    by = lines[anchor][0].template
    assert t is not None and by is not None
    return _make_server(by.by, t.build, t.product, found_in.prefix + text[cut + 1 :])


MAX_PLANS = 4096
"""Bound on remembered hop sequences (cleared when full, and with the line memo)."""
_Plan = tuple[int, int, int, int]
_PLANS: dict[tuple[object, ...], tuple[Catalog | None, _Plan | None]] = {}


def _plan(hops: list[Hop], trusted: frozenset[str]) -> _Plan | None:
    """Indices in ``hops`` of the connecting server's anchor and best hop, and the origin's
    (see :func:`_server_of`), or ``None`` when no hop is an on-premises server."""
    candidates = [h for h in hops if _on_premises(h, trusted)]
    if not candidates:
        return None
    first, last = candidates[0], candidates[-1]
    index = {id(h): i for i, h in enumerate(hops)}
    return (
        index[id(first)],
        index[id(_best(first, candidates))],
        index[id(last)],
        index[id(_best(last, candidates))],
    )


_make_hop = maker(Hop)
_make_server = maker(DetectedServer)


_NO_HOSTS: frozenset[str] = frozenset()


def detect(
    message: bytes | str,
    trusted_hosts: Iterable[str] = (),
    hosted: HostedServices = MICROSOFT_HOSTED,
    catalog: Catalog | None = None,
) -> Detection:
    """Run detection on a whole message or a bare header block."""
    return detect_in_headers(parse_headers(header_block(message)), trusted_hosts, hosted, catalog)
