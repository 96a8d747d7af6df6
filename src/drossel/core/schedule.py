"""The per-server enforcement clock: stages, pauses, remediation and the windows inside the hour.

A server's clock starts at its first detection as persistently vulnerable.  Its *effective age*
is the time since then, minus paused time and minus any remediation gap it was forgiven
(SPEC §5, §6).  The stage follows from the effective age in whole days; inside each hour the
block minutes come first, then the throttle minutes, starting at an offset derived from a stable
hash of the server so that servers are not all refused in the same minutes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from drossel.core.frozen import fast_init
from drossel.core.policy import Policy, Stage

DAY = timedelta(days=1)
_NO_TIME = timedelta(0)


@dataclass(frozen=True, slots=True)
class Pause:
    """A pause of throttling and blocking: whole UTC days ``[start, end)``.

    ``servers`` empty means every server of the tenant.
    """

    id: int | None
    tenant: str
    start: date
    end: date
    servers: tuple[str, ...] = ()
    ended_early: bool = False

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def covers(self, server: str) -> bool:
        return not self.servers or server in self.servers

    def interval(self) -> tuple[datetime, datetime]:
        return (midnight(self.start), midnight(self.end))

    def active_at(self, now: datetime) -> bool:
        start, end = self.interval()
        return start <= now < end


@fast_init
@dataclass(frozen=True, slots=True)
class EnforcementClock:
    """What the schedule needs to know of a server record."""

    clock_start: datetime
    credit: timedelta = timedelta(0)
    remediated_at: datetime | None = None


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _overlap(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> timedelta:
    start, end = max(a[0], b[0]), min(a[1], b[1])
    return max(end - start, timedelta(0))


def paused_time(span: tuple[datetime, datetime], pauses: Iterable[Pause]) -> timedelta:
    """How much of ``span`` some pause covers: overlapping pauses count once."""
    intervals = sorted(
        (max(a, span[0]), min(b, span[1]))
        for a, b in (p.interval() for p in pauses)
        if min(b, span[1]) > max(a, span[0])
    )
    total, reach = timedelta(0), span[0]
    for start, end in intervals:
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total


def effective_age(clock: EnforcementClock, now: datetime, pauses: Iterable[Pause]) -> timedelta:
    """Time on the clock at ``now``: paused time and forgiven gaps do not count (a forgiven
    gap never includes paused time, see :func:`forgiven_gap`)."""
    end = min(now, clock.remediated_at) if clock.remediated_at else now
    if end <= clock.clock_start:
        return timedelta(0)
    paused = paused_time((clock.clock_start, end), pauses) if pauses else _NO_TIME
    return max(end - clock.clock_start - clock.credit - paused, timedelta(0))


def forgiven_gap(remediated_at: datetime, now: datetime, pauses: Iterable[Pause]) -> timedelta:
    """The part of a remediation gap that is forgiven on regression: the time no pause
    already took off the clock (so a pause inside the gap is not subtracted twice)."""
    return now - remediated_at - paused_time((remediated_at, now), pauses)


@fast_init
@dataclass(frozen=True, slots=True)
class StageInfo:
    number: int  # 1-based
    stage: Stage
    day: int  # effective day since detection


def stage_for_day(policy: Policy, day: int) -> StageInfo:
    """The stage of effective day ``day`` (remembered per stage table and day: every message
    of a vulnerable server asks)."""
    stages = policy.stages
    key = (id(stages), day)
    known = _STAGE_MEMO.get(key)
    if known is not None:  # the entry holds the table, so its id cannot have been reused
        return known[1]
    number = 1
    for index, stage in enumerate(stages):
        if day >= stage.start_day:
            number = index + 1
    info = StageInfo(number=number, stage=stages[number - 1], day=day)
    if len(_STAGE_MEMO) >= MAX_STAGE_MEMO:
        _STAGE_MEMO.clear()
    _STAGE_MEMO[key] = (stages, info)
    return info


MAX_STAGE_MEMO = 4096
_STAGE_MEMO: dict[tuple[int, int], tuple[tuple[Stage, ...], StageInfo]] = {}


def stage_at(
    policy: Policy, clock: EnforcementClock, now: datetime, pauses: Iterable[Pause]
) -> StageInfo:
    age = effective_age(clock, now, pauses)
    return stage_for_day(policy, age // DAY)


@lru_cache(maxsize=16384)
def hour_offset(key: str) -> int:
    """Stable minute offset (0–59) of a server's windows; the same on every node and restart."""
    digest = hashlib.sha256(key.lower().encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big") % 60


def window_action(stage: Stage, key: str, now: datetime) -> str:
    """ "block", "throttle" or "accept" for this minute of the hour."""
    position = (now.minute - hour_offset(key)) % 60
    if position < stage.block_minutes:
        return "block"
    if position < stage.block_minutes + stage.throttle_minutes:
        return "throttle"
    return "accept"


def stage_start(
    policy: Policy,
    clock: EnforcementClock,
    number: int,
    now: datetime,
    pauses: Iterable[Pause],
) -> datetime | None:
    """When stage ``number`` starts (or started), assuming no further pauses.

    Past starts are found by stepping over paused days; future ones are projected from now.
    """
    if number < 1 or number > len(policy.stages):
        return None
    target = timedelta(days=policy.stages[number - 1].start_day)
    pause_list = list(pauses)
    age_now = effective_age(clock, now, pause_list)
    if target >= age_now:
        if clock.remediated_at is not None:
            return None
        paused_until = max((p.interval()[1] for p in pause_list if p.active_at(now)), default=now)
        return paused_until + (target - age_now)
    # It started in the past: walk forward from the clock start by whole days (bounded).
    running = replace(clock, remediated_at=None)
    moment = clock.clock_start
    limit = now
    step = DAY
    while moment < limit:
        if effective_age(running, moment, pause_list) >= target:
            break
        moment += step
    # refine to the hour
    while (
        moment - timedelta(hours=1) > clock.clock_start
        and effective_age(running, moment - timedelta(hours=1), pause_list) >= target
    ):
        moment -= timedelta(hours=1)
    return moment


def pause_days_in_year(pause: Pause, year: int) -> int:
    start = max(pause.start, date(year, 1, 1))
    end = min(pause.end, date(year + 1, 1, 1))
    return max((end - start).days, 0)


def budget_used(pauses: Iterable[Pause], year: int) -> int:
    return sum(pause_days_in_year(p, year) for p in pauses)


def years_of(start: date, end: date) -> range:
    return range(start.year, (end - DAY).year + 1)


def ended_pause(pause: Pause, today: date) -> Pause:
    """The pause after its tenant ended it on ``today`` (SPEC §5).

    Every calendar day on which the pause was in force counts, the day it is ended on included
    (it stays in force until midnight); the days after today go back to the budget.  A pause
    that has not started yet is cancelled and costs nothing."""
    if today < pause.start:
        return replace(pause, end=pause.start, ended_early=True)
    return replace(pause, end=min(pause.end, today + DAY), ended_early=True)


def extended_pause(pause: Pause, days: int) -> Pause:
    """The pause with ``days`` more at its end (the budget is checked by the caller)."""
    return replace(pause, end=pause.end + timedelta(days=days))
