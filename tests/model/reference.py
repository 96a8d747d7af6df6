"""An executable reference model of drossel's enforcement state machine (SPEC §3–§7).

Why it exists: the application layer caches, batches and stores its state in SQL; this model
does none of that.  It keeps plain dicts, dates and interval lists and recomputes everything
from them on every question, so that each rule can be read off in a few lines and checked
against the SPEC and the lead's interpretation decisions.  The Hypothesis state machine
(:mod:`tests.model.test_machine`) drives the real layer and this model side by side and compares
what they say.

Choices where the SPEC and the decisions leave room (the real layer may differ; then the
machine reports it):

* a record's evidence (and connector type) is that of the sighting that set its build: the
  latest trusted one, else the latest one; a later unverified sighting only moves last-seen;
* a paused interval that lies inside a forgiven remediation gap is not subtracted twice: the
  effective age is the clock's span minus the *union* of gaps and pauses;
* a report row is what a message with the record's build, evidence and connector type would
  get now; for a clock stopped by remediation that is its stage when it stopped if a
  regression now would resume it, else stage 1 (a regression now would start a new clock).

Only the pure core helpers are borrowed: :func:`drossel.core.assessment.assess` (status and
``persistently_vulnerable`` of a build on a date; ``Build.parse`` only to call it),
:class:`drossel.core.policy.Policy` (the numbers) and
:func:`drossel.core.schedule.hour_offset` (the stable minute offset of a server's windows).
Clock, stages, pause accounting, remediation, regression, evidence, overrides and rollout are
computed here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from drossel.core.assessment import assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog
from drossel.core.policy import Policy
from drossel.core.schedule import hour_offset

DAY = timedelta(days=1)
DEFAULT_TENANT = "default"
DEFAULT_CONNECTOR_TYPE = "Default"


class Refused(Exception):
    """The model refuses a request (the real layer raises an ``AppError``)."""


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def enforce_unverified(policy: Policy) -> bool:
    """The policy switch of SPEC §3 (absent from older policies: then off)."""
    return bool(getattr(policy, "enforce_unverified", False))


@dataclass(frozen=True)
class Client:
    """The SMTP client as the MTA describes it (mirrors ``drossel.app.enforcer.ClientInfo``)."""

    addr: str | None = None
    name: str | None = None  # forward-confirmed reverse DNS name
    helo: str | None = None
    tls_name: str | None = None  # name in a verified TLS client certificate
    ptr: str | None = None  # unconfirmed PTR name


@dataclass(frozen=True)
class Connector:
    tenant: str
    type: str
    ranges: tuple[str, ...]

    def matches(self, addr: str | None) -> bool:
        if not addr:
            return False
        address = ipaddress.ip_address(addr)
        return any(address in ipaddress.ip_network(r, strict=False) for r in self.ranges)


@dataclass
class Clock:
    """A running or stopped enforcement clock.

    ``gaps`` are the remediation gaps that were forgiven when the server regressed within the
    regression window; ``remediated_at`` is set while the clock is stopped.
    """

    start: datetime
    gaps: list[tuple[datetime, datetime]] = field(default_factory=list)
    remediated_at: datetime | None = None


@dataclass
class Record:
    tenant: str
    server: str
    first_detected: datetime
    last_seen: datetime
    build: str
    evidence: str
    via: str | None
    connector_type: str
    trusted: bool  # ever seen with trusted evidence
    clock: Clock | None = None


@dataclass
class PauseM:
    tenant: str
    start: date
    end: date
    servers: tuple[str, ...] = ()

    def covers(self, server: str) -> bool:
        return not self.servers or server in self.servers

    def interval(self) -> tuple[datetime, datetime]:
        return midnight(self.start), midnight(self.end)

    def in_force(self, now: datetime) -> bool:
        start, end = self.interval()
        return start <= now < end

    def days_in_year(self, year: int) -> int:
        start = max(self.start, date(year, 1, 1))
        end = min(self.end, date(year + 1, 1, 1))
        return max((end - start).days, 0)


@dataclass
class OverrideM:
    tenant: str
    server: str | None
    reason: str
    expires: datetime | None

    def applies(self, tenant: str, server: str, now: datetime) -> bool:
        if self.expires is not None and now >= self.expires:
            return False
        return self.tenant == tenant and (self.server is None or self.server == server)


@dataclass(frozen=True)
class Answer:
    """What the model says a message gets, or what a report row shows."""

    action: str  # accept / throttle / block
    code: int | None
    stage: int  # applied stage, 0 when nothing is applied
    throttle_minutes: int
    block_minutes: int
    scheduled_stage: int  # 0 when the server is not persistently vulnerable
    reason: bool  # an applied_reason is given (vulnerable, but nothing applied)


ACCEPT_NOTHING = Answer("accept", None, 0, 0, 0, 0, False)


def _measure(span: tuple[datetime, datetime], holes: list[tuple[datetime, datetime]]) -> timedelta:
    """Length of ``span`` minus the union of ``holes`` (each clipped to the span)."""
    lo, hi = span
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in holes if min(b, hi) > max(a, lo))
    covered = timedelta(0)
    cur_start: datetime | None = None
    cur_end: datetime | None = None
    for a, b in clipped:
        if cur_end is None or a > cur_end:
            if cur_start is not None and cur_end is not None:
                covered += cur_end - cur_start
            cur_start, cur_end = a, b
        else:
            cur_end = max(cur_end, b)
    if cur_start is not None and cur_end is not None:
        covered += cur_end - cur_start
    return max(hi - lo - covered, timedelta(0))


def _clip(
    intervals: list[tuple[datetime, datetime]], lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)]


#: Known differences between the real layer and this model's reading of the SPEC.  Each has a
#: strict-xfail example in ``test_sequences``; the state machine follows the real layer on them
#: (``Model(align=...)``) so that it can look for *other* differences.
KNOWN_DIFFERENCES: dict[str, str] = {}


class Model:
    """The whole enforcement state of one installation, as plain data."""

    def __init__(
        self, policy: Policy, catalog: Catalog, align: frozenset[str] = frozenset()
    ) -> None:
        unknown = align - set(KNOWN_DIFFERENCES)
        assert not unknown, unknown
        self.align = align
        self.policy = policy
        self.catalog = catalog
        self.connectors: list[Connector] = []
        self.tenants: set[str] = {DEFAULT_TENANT}
        self.records: dict[tuple[str, str], Record] = {}
        self.pauses: dict[int, PauseM] = {}
        self.overrides: dict[int, OverrideM] = {}
        self._next_id = 1
        self._grades: dict[tuple[str, date, int], tuple[str | None, str, bool]] = {}

    # --- facts --------------------------------------------------------------------------

    def grade(self, build: str, now: datetime) -> tuple[str | None, str, bool]:
        """(product, status, persistently vulnerable) of ``build`` on ``now``'s date.

        Memoised: ``assess`` is a pure function of the build, the day, the catalog and the
        policy's ``max_patch_lag_days`` (the only policy number it reads)."""
        key = (build, now.date(), self.policy.max_patch_lag_days)
        if key not in self._grades:
            parsed = Build.parse(build)
            assert parsed is not None, build
            a = assess(parsed, now.date(), self.catalog, self.policy)
            self._grades[key] = (a.product, a.status, a.persistently_vulnerable)
        return self._grades[key]

    def classify(self, client: Client) -> tuple[str, str]:
        """(tenant, connector type) of the connection."""
        for connector in self.connectors:
            if connector.matches(client.addr):
                return connector.tenant, connector.type
        return DEFAULT_TENANT, DEFAULT_CONNECTOR_TYPE

    @staticmethod
    def evidence(server: str, client: Client, by_connector: bool) -> tuple[str, str | None]:
        """(evidence, via) of a sighting of ``server`` from ``client`` (SPEC §3)."""
        if by_connector:
            return "connector", None
        names = {n.lower().rstrip(".") for n in (client.name, client.tls_name) if n}
        if server in names:
            return "verified", None
        via = client.name or client.ptr or client.helo or client.addr
        return "unverified", via

    def trusted(self, evidence: str) -> bool:
        return evidence in ("connector", "verified") or enforce_unverified(self.policy)

    def applies(self, status: str, product: str | None, connector_type: str, trusted: bool) -> bool:
        """Whether enforcement applies to a sighting (pauses and overrides do not matter)."""
        p = self.policy
        return (
            p.mode == "enforce"
            and status in p.enforced_statuses
            and (product is None or p.rollout_for(product) == "enforce")
            and connector_type in p.enforced_connector_types
            and trusted
        )

    def pauses_of(self, tenant: str, server: str) -> list[PauseM]:
        return [p for p in self.pauses.values() if p.tenant == tenant and p.covers(server)]

    # --- the clock ----------------------------------------------------------------------

    def scheduled_stage(self, record: Record | None, now: datetime) -> int:
        """The schedule's stage of a vulnerable server at ``now`` (1 without a clock; a clock
        stopped by remediation shows the stage it would resume at within the window)."""
        clock = record.clock if record else None
        if clock is None or record is None:
            return 1
        window = timedelta(days=self.policy.regression_window_days)
        holes = list(clock.gaps)
        if clock.remediated_at is not None:
            if now - clock.remediated_at > window:
                return 1  # a regression now would start a new clock
            holes.append((clock.remediated_at, now))
        pauses = [p.interval() for p in self.pauses_of(record.tenant, record.server)]
        age = _measure((clock.start, now), holes + pauses) if now > clock.start else DAY * 0
        days = age // DAY
        number = 1
        for index, stage in enumerate(self.policy.stages):
            if days >= stage.start_day:
                number = index + 1
        return number

    def _advance_clock(
        self, record: Record, vulnerable: bool, applies: bool, now: datetime
    ) -> None:
        """The clock rules at a trusted sighting (SPEC §4, §6)."""
        clock = record.clock
        window = timedelta(days=self.policy.regression_window_days)
        if vulnerable:
            if clock is None:
                if applies:
                    record.clock = Clock(start=now)
            elif clock.remediated_at is not None:
                if now - clock.remediated_at <= window:
                    clock.gaps.append((clock.remediated_at, now))
                    clock.remediated_at = None
                else:
                    record.clock = Clock(start=now) if applies else None
        elif clock is not None and clock.remediated_at is None:
            clock.remediated_at = now

    # --- a message ----------------------------------------------------------------------

    def message(
        self, server: str | None, build: str | None, client: Client, now: datetime
    ) -> Answer:
        """Record the sighting, then decide (SPEC §3–§6)."""
        if self.policy.mode == "off" or server is None or build is None:
            return ACCEPT_NOTHING
        tenant, connector_type = self.classify(client)
        evidence, via = self.evidence(server, client, tenant != DEFAULT_TENANT)
        trusted = self.trusted(evidence)
        product, status, vulnerable = self.grade(build, now)
        key = (tenant, server)
        record = self.records.get(key)
        if record is None:
            record = Record(tenant, server, now, now, build, evidence, via, connector_type, False)
            self.records[key] = record
        record.last_seen = max(record.last_seen, now)
        if trusted or not record.trusted:
            record.build, record.evidence, record.via = build, evidence, via
            record.connector_type = connector_type
        if trusted:
            record.trusted = True
            applies = self.applies(status, product, connector_type, trusted)
            self._advance_clock(record, vulnerable, applies, now)
        return self._decide(
            record, product, status, vulnerable, evidence, connector_type, now, window=True
        )

    def _decide(
        self,
        record: Record,
        product: str | None,
        status: str,
        vulnerable: bool,
        evidence: str,
        connector_type: str,
        now: datetime,
        window: bool,
    ) -> Answer:
        p = self.policy
        if not vulnerable:
            return ACCEPT_NOTHING
        scheduled = self.scheduled_stage(record, now)
        not_applied = Answer("accept", None, 0, 0, 0, scheduled, True)
        if p.mode == "off":
            return not_applied
        if any(o.applies(record.tenant, record.server, now) for o in self.overrides.values()):
            return not_applied
        if status not in p.enforced_statuses:
            return not_applied
        if p.mode == "report-only":
            return not_applied
        if product is not None and p.rollout_for(product) == "report-only":
            return not_applied
        if connector_type not in p.enforced_connector_types:
            return not_applied
        if evidence == "unverified" and not enforce_unverified(p):
            return not_applied
        if any(x.in_force(now) for x in self.pauses_of(record.tenant, record.server)):
            return not_applied
        stage = p.stages[scheduled - 1]
        action = "accept"
        if window:
            position = (now.minute - hour_offset(f"{record.tenant}/{record.server}")) % 60
            if position < stage.block_minutes:
                action = "block"
            elif position < stage.block_minutes + stage.throttle_minutes:
                action = "throttle"
        code = {"block": 550, "throttle": 450}.get(action)
        return Answer(
            action, code, scheduled, stage.throttle_minutes, stage.block_minutes, scheduled, False
        )

    # --- the report ---------------------------------------------------------------------

    def report(self, tenant: str, now: datetime) -> dict[str, dict[str, object]]:
        """Active servers of ``tenant``: what a message from each would get now (SPEC §7)."""
        rows: dict[str, dict[str, object]] = {}
        inactive = timedelta(days=self.policy.inactive_after_days)
        for (t, server), record in sorted(self.records.items()):
            if t != tenant or now - record.last_seen > inactive:
                continue
            product, status, vulnerable = self.grade(record.build, now)
            answer = self._decide(
                record,
                product,
                status,
                vulnerable,
                record.evidence,
                record.connector_type,
                now,
                window=False,
            )
            rows[server] = {
                "build": record.build,
                "status": status,
                "evidence": record.evidence,
                "via": record.via,
                "first_detected": record.first_detected,
                "last_seen": record.last_seen,
                "stage": answer.stage,
                "throttle_minutes": answer.throttle_minutes,
                "block_minutes": answer.block_minutes,
                "scheduled_stage": answer.scheduled_stage,
                "applied_reason": answer.reason,
                "paused": any(x.in_force(now) for x in self.pauses_of(tenant, server)),
                "remediated": record.clock is not None and record.clock.remediated_at is not None,
            }
        return rows

    # --- services -----------------------------------------------------------------------

    def add_tenant(self, name: str) -> None:
        self.tenants.add(name)

    def add_connector(self, tenant: str, type_: str, ranges: tuple[str, ...]) -> None:
        self.connectors.append(Connector(tenant, type_, ranges))

    def charged_days(self, tenant: str, year: int) -> int:
        return sum(p.days_in_year(year) for p in self.pauses.values() if p.tenant == tenant)

    def _fits(self, candidate: PauseM, replacing: int | None = None) -> bool:
        others = [
            p for k, p in self.pauses.items() if p.tenant == candidate.tenant and k != replacing
        ]
        for year in range(candidate.start.year, candidate.end.year + 1):
            used = sum(p.days_in_year(year) for p in others)
            if used + candidate.days_in_year(year) > self.policy.pause_budget_days:
                return False
        return True

    def add_pause(
        self, tenant: str, start: date, days: int, servers: tuple[str, ...], now: datetime
    ) -> int:
        if start < now.date() or days < 1:
            raise Refused("a pause must start today or later and last at least one day")
        candidate = PauseM(tenant, start, start + days * DAY, tuple(servers))
        if not self._fits(candidate):
            raise Refused("pause budget exceeded")
        key = self._next_id
        self._next_id += 1
        self.pauses[key] = candidate
        return key

    def is_over(self, key: int, now: datetime) -> bool:
        """Ended (its last day is past) or cancelled (0 days): it cannot change any more."""
        pause = self.pauses[key]
        return pause.end <= now.date() or pause.end == pause.start

    def end_pause(self, key: int, now: datetime) -> None:
        pause = self.pauses[key]
        today = now.date()
        if self.is_over(key, now):
            raise Refused("the pause is over")
        pause.end = today + DAY if pause.start <= today else pause.start

    def extend_pause(self, key: int, days: int, now: datetime) -> None:
        pause = self.pauses[key]
        if days < 1 or self.is_over(key, now):
            raise Refused("only a pause that is not over can be extended, by a day or more")
        candidate = PauseM(pause.tenant, pause.start, pause.end + days * DAY, pause.servers)
        if not self._fits(candidate, replacing=key):
            raise Refused("pause budget exceeded")
        pause.end = candidate.end

    def add_override(
        self, tenant: str, server: str | None, reason: str, expires: datetime | None
    ) -> int:
        key = self._next_id
        self._next_id += 1
        self.overrides[key] = OverrideM(tenant, server, reason, expires)
        return key

    def remove_override(self, key: int) -> None:
        del self.overrides[key]
