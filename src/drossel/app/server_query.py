"""The operator overview's query over every stored server: filters, sort and page as plain
values, evaluated *inside* the store (SQL on SQLite and PostgreSQL, dictionaries in
:class:`~drossel.app.memory.MemoryStore`), so a page of hundreds of thousands of servers never
loads them all.

Most filters are stored columns.  Two need the application's knowledge and arrive as data the
store only compares:

* the catalog status a server has *now* (:class:`StatusMatch`): the application grades each
  distinct build once and passes the builds with that status;
* the applied stage, paused and overridden (:class:`StageModel`): what
  :func:`~drossel.core.decision.applied_state` gives each server, reduced by
  :func:`drossel.app.report.stage_model` to sets of builds, tenants and clock-start limits, plus
  the servers it computed one by one (:attr:`StageModel.exceptions`).  How a store evaluates
  the model is :class:`StageModel`'s docstring (and :meth:`StageModel.compute`, which the
  memory store runs); ``tests/test_overview.py`` holds both stores to the report rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, get_args

from drossel.app.records import StoredServer

#: columns the overview sorts by (ties: by server name, then first stored first)
Sort = Literal[
    "server",
    "tenant",
    "product",
    "stage",
    "first_seen",
    "last_seen",
    "accepted",
    "throttled",
    "blocked",
]
SORTS: tuple[str, ...] = get_args(Sort)
EVIDENCE_KINDS = ("connector", "verified", "unverified")
#: the counter actions behind the "accepted", "throttled" and "blocked" columns
COUNT_SORTS = {"accepted": "accept", "throttled": "throttle", "blocked": "block"}


@dataclass(frozen=True, slots=True)
class Computed:
    """A server's applied stage, and whether a pause or an override is why nothing applies."""

    stage: int
    paused: bool
    overridden: bool


@dataclass(frozen=True, slots=True)
class Enforceable:
    """Servers with this product, connector type, evidence kind and one of ``builds`` are
    persistently vulnerable now and nothing in the policy exempts them."""

    product: str
    connector_type: str
    evidence: str
    builds: frozenset[str]


@dataclass(frozen=True, slots=True)
class StageModel:
    """The applied stage of every stored server at ``now``, as data a store evaluates.

    For a server row (``V``: its build is in :attr:`vulnerable_builds`):

    1. in :attr:`exceptions`: that value;
    2. *unmodelled* (``V`` and a forgiven clock credit, a remediation at or after
       :attr:`restart_before`, or named by a pause or override: :attr:`named`,
       :attr:`named_anywhere`): unknown (``None``); the application evaluates these rows
       one by one and passes them as exceptions;
    3. overridden: ``V`` and (:attr:`override_all` or its tenant in
       :attr:`overridden_tenants`): stage 0;
    4. enforced: ``V``, not overridden, its (product, connector type, evidence, build) in
       :attr:`enforceable`; paused if its tenant is in :attr:`paused_tenants` (stage 0),
       otherwise the stage of its clock start (``now`` when there is none or it was
       remediated before :attr:`restart_before`: the next sighting starts a new clock):
       1 + the number of its tenant's :attr:`limits` (:attr:`tenant_limits`) at or after it;
    5. anything else: stage 0.
    """

    now: datetime
    vulnerable_builds: frozenset[str] = frozenset()
    enforceable: tuple[Enforceable, ...] = ()
    override_all: bool = False
    overridden_tenants: frozenset[str] = frozenset()
    paused_tenants: frozenset[str] = frozenset()
    restart_before: datetime | None = None
    limits: tuple[datetime, ...] = ()
    tenant_limits: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)
    named: frozenset[tuple[str, str]] = frozenset()
    named_anywhere: frozenset[str] = frozenset()
    exceptions: Mapping[int, Computed] = field(default_factory=dict)

    def limits_of(self, tenant: str) -> tuple[datetime, ...]:
        return self.tenant_limits.get(tenant, self.limits)

    @staticmethod
    def band(clock: datetime, limits: tuple[datetime, ...]) -> int:
        """The stage of a clock start: limits are descending in time (stage 2, 3, ...)."""
        return 1 + sum(1 for limit in limits if clock <= limit)

    def compute(
        self,
        server_id: int,
        tenant: str,
        fqdn: str,
        build: str,
        product: str,
        connector_type: str,
        evidence: str,
        clock_start: datetime | None,
        credit_seconds: float,
        remediated_at: datetime | None,
    ) -> Computed | None:
        """The model for one row, in Python (the memory store; SQL stores build the same
        expression)."""
        if server_id in self.exceptions:
            return self.exceptions[server_id]
        if build not in self.vulnerable_builds:
            return Computed(0, False, False)
        if self.unmodelled(tenant, fqdn, credit_seconds, remediated_at):
            return None
        if self.override_all or tenant in self.overridden_tenants:
            return Computed(0, False, True)
        if not any(
            e.product == product
            and e.connector_type == connector_type
            and e.evidence == evidence
            and build in e.builds
            for e in self.enforceable
        ):
            return Computed(0, False, False)
        if tenant in self.paused_tenants:
            return Computed(0, True, False)
        clock = self.now if clock_start is None or remediated_at is not None else clock_start
        return Computed(self.band(clock, self.limits_of(tenant)), False, False)

    def unmodelled(
        self, tenant: str, fqdn: str, credit_seconds: float, remediated_at: datetime | None
    ) -> bool:
        """Without the build test (``V``), which the caller makes first."""
        return (
            credit_seconds != 0
            or (
                remediated_at is not None
                and self.restart_before is not None
                and remediated_at >= self.restart_before
            )
            or (tenant, fqdn) in self.named
            or fqdn in self.named_anywhere
        )


@dataclass(frozen=True, slots=True)
class StatusMatch:
    """Servers whose build is graded ``status`` now; builds that cannot be graded match by
    their stored status (as the report row shows it)."""

    status: str
    builds: frozenset[str]
    ungraded: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ServerFilter:
    """Which servers; ``None`` means any."""

    tenants: frozenset[str] | None = None
    products: frozenset[str] | None = None
    status: StatusMatch | None = None
    evidence: str | None = None
    #: substring of the server name, case-insensitive (ASCII)
    search: str | None = None
    #: leave out servers last seen before this (the report's inactive servers)
    seen_since: datetime | None = None
    stage: int | None = None
    paused: bool | None = None
    overridden: bool | None = None
    #: only the rows the stage model cannot place (see :class:`StageModel`)
    unmodelled: bool = False

    @property
    def needs_model(self) -> bool:
        return (
            self.stage is not None
            or self.paused is not None
            or self.overridden is not None
            or self.unmodelled
        )


@dataclass(frozen=True, slots=True)
class ServerQuery:
    filter: ServerFilter
    #: the day of the counters shown and summed
    today: date
    sort: str = "server"
    descending: bool = False
    page: int = 1
    per_page: int = 50
    model: StageModel | None = None

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        if self.page < 1 or self.per_page < 1:
            raise ValueError("page and per_page start at 1")
        if self.model is None and (self.filter.needs_model or self.sort == "stage"):
            raise ValueError("filtering or sorting by stage needs a stage model")

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


@dataclass(frozen=True, slots=True)
class PageRow:
    server: StoredServer
    #: today's counters: accept, throttle, block
    today: dict[str, int]
    #: the model's stage (``None`` without a model)
    stage: int | None = None


@dataclass(frozen=True, slots=True)
class ServerPage:
    #: servers matching the filter (all pages)
    total: int
    rows: list[PageRow]
    #: today's counters summed over every matching server
    today: dict[str, int]


@dataclass(frozen=True, slots=True)
class ClockGroup:
    """Servers that share what the stage history needs of them (see
    :meth:`~drossel.app.storage.StateStore.clock_groups`)."""

    tenant: str | None
    server: str | None
    first_day: date
    clock_day: date | None
    credit_seconds: int
    remediated_day: date | None
    count: int


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as SQLite's ``lower()`` does."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
