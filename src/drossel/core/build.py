"""Exchange build numbers.

Exchange writes its build in two spellings: the short form on SMTP hops (``15.1.2507.16``) and a
zero-padded long form on mailbox hops (``with mapi id 15.01.2507.016``).  Both must compare equal,
so a build is kept as four integers and printed in either spelling on demand.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

_BUILD_RE = re.compile(r"^\s*(\d{1,4})\.(\d{1,4})\.(\d{1,6})\.(\d{1,6})\s*$")

EXO_MIN_MINOR = 20
"""Builds with major 15 and minor >= 20 are Exchange Online itself, never an on-premises server."""

SE_MIN_BUILD = 2562
"""Exchange SE shares 15.2 with Exchange 2019; its builds start at 15.2.2562."""


@dataclass(frozen=True, order=True, slots=True)
class Build:
    """A four-part Exchange build number, ordered numerically.

    Its hash and short form are worked out once, when it is made: a build is a dictionary key
    (catalog, assessments) and is spelt out for every message, far more often than made; the
    short form is interned, so the records of many servers on one build share one string."""

    major: int
    minor: int
    build: int
    revision: int
    #: the short form, ``15.1.2507.16``
    short: str = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        short = sys.intern(f"{self.major}.{self.minor}.{self.build}.{self.revision}")
        object.__setattr__(self, "short", short)
        object.__setattr__(self, "_hash", hash((self.major, self.minor, self.build, self.revision)))

    def __hash__(self) -> int:  # the dataclass's own hash, remembered
        return self._hash

    def __eq__(self, other: object) -> bool:
        """The dataclass's equality (all four numbers), compared as the short form: four
        integers joined by dots spell exactly one build."""
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.short == other.short

    @classmethod
    def parse(cls, text: str) -> Build | None:
        """Parse the short or long form; anything else gives ``None`` rather than an exception."""
        match = _BUILD_RE.match(text) if isinstance(text, str) else None
        if match is None:
            return None
        major, minor, build, revision = (int(part) for part in match.groups())
        return cls(major, minor, build, revision)

    @classmethod
    def from_text(cls, text: str) -> Build:
        """Parse or raise ``ValueError`` with a message fit for an operator."""
        parsed = cls.parse(text)
        if parsed is None:
            raise ValueError(f"not an Exchange build number: {text!r} (expected e.g. 15.2.1748.39)")
        return parsed

    @property
    def long(self) -> str:
        return f"{self.major}.{self.minor:02d}.{self.build:04d}.{self.revision:03d}"

    @property
    def is_exchange_online(self) -> bool:
        return self.major == 15 and self.minor >= EXO_MIN_MINOR

    def __str__(self) -> str:
        return self.short

    @property
    def cu_key(self) -> tuple[int, int, int]:
        """major.minor.build: equal for every revision of one CU (or RU/SP) line."""
        return (self.major, self.minor, self.build)


PRODUCT_2007 = "Exchange 2007"
PRODUCT_2010 = "Exchange 2010"
PRODUCT_2013 = "Exchange 2013"
PRODUCT_2016 = "Exchange 2016"
PRODUCT_2019 = "Exchange 2019"
PRODUCT_SE = "Exchange SE"
PRODUCT_ONLINE = "Exchange Online"

ON_PREMISES_PRODUCTS = (
    PRODUCT_2007,
    PRODUCT_2010,
    PRODUCT_2013,
    PRODUCT_2016,
    PRODUCT_2019,
    PRODUCT_SE,
)


LAST_SERVICE_PACK_MINOR = 3
"""Exchange 2007 (8.x) and 2010 (14.x) put the service pack in the minor: RTM 0 to SP3 3.
Both products are finished, so a higher minor (Exchange Online's 14.16.x) is no on-premises
server."""


def product_of(build: Build) -> str | None:
    """Name the product a build belongs to, or ``None`` for numbers no Exchange ever stamped
    on-premises (and Exchange Online for its own 15.20+ builds)."""
    if build.major in (8, 14) and build.minor > LAST_SERVICE_PACK_MINOR:
        return None
    if build.major == 8:
        return PRODUCT_2007
    if build.major == 14:
        return PRODUCT_2010
    if build.major != 15:
        return None
    if build.minor >= EXO_MIN_MINOR:
        return PRODUCT_ONLINE
    if build.minor == 0:
        return PRODUCT_2013
    if build.minor == 1:
        return PRODUCT_2016
    if build.minor == 2:
        return PRODUCT_SE if build.build >= SE_MIN_BUILD else PRODUCT_2019
    return None
