"""Stage boundaries, pauses (also across New Year), windows inside the hour."""

from datetime import UTC, date, datetime, timedelta

import pytest

from drossel.core.policy import Policy
from drossel.core.schedule import (
    EnforcementClock,
    Pause,
    budget_used,
    effective_age,
    hour_offset,
    midnight,
    pause_days_in_year,
    stage_at,
    stage_for_day,
    stage_start,
    window_action,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "stage"),
    [
        (0, 1),
        (29, 1),
        (30, 2),
        (39, 2),
        (40, 3),
        (49, 3),
        (50, 4),
        (59, 4),
        (60, 5),
        (69, 5),
        (70, 6),
        (79, 6),
        (80, 7),
        (89, 7),
        (90, 8),
        (400, 8),
    ],
)
def test_stage_boundaries(policy: Policy, day: int, stage: int) -> None:
    assert stage_for_day(policy, day).number == stage
    clock = EnforcementClock(T0)
    just_before = T0 + timedelta(days=day) - timedelta(seconds=1)
    at = T0 + timedelta(days=day)
    assert stage_at(policy, clock, at, []).number == stage
    if day > 0 and stage_for_day(policy, day - 1).number != stage:
        assert stage_at(policy, clock, just_before, []).number == stage - 1


def test_paused_days_do_not_advance_the_schedule(policy: Policy) -> None:
    clock = EnforcementClock(T0)
    pause = Pause(None, "t", (T0 + timedelta(days=35)).date(), (T0 + timedelta(days=45)).date())
    assert stage_at(policy, clock, T0 + timedelta(days=44), [pause]).number == 2
    # resumes where it was paused: day 45 is effective day 35
    assert effective_age(clock, T0 + timedelta(days=45), [pause]) == timedelta(days=35)
    assert stage_at(policy, clock, T0 + timedelta(days=50), [pause]).number == 3
    assert stage_at(policy, clock, T0 + timedelta(days=100), [pause]).number == 8
    assert stage_at(policy, clock, T0 + timedelta(days=99), [pause]).number == 7


def test_remediated_clock_is_frozen(policy: Policy) -> None:
    clock = EnforcementClock(T0, remediated_at=T0 + timedelta(days=42))
    assert stage_at(policy, clock, T0 + timedelta(days=300), []).number == 3


def test_credit_from_forgiven_gap(policy: Policy) -> None:
    clock = EnforcementClock(T0, credit=timedelta(days=10))
    assert stage_at(policy, clock, T0 + timedelta(days=40), []).number == 2


def test_windows_block_first_then_throttle(policy: Policy) -> None:
    key = "default/ex01.contoso.example"
    offset = hour_offset(key)
    stage5 = policy.stages[4]  # 30 throttle, 5 block
    base = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    actions = [
        window_action(stage5, key, base + timedelta(minutes=(offset + m) % 60)) for m in range(60)
    ]
    assert actions[:5] == ["block"] * 5
    assert actions[5:35] == ["throttle"] * 30
    assert actions[35:] == ["accept"] * 25
    assert all(
        window_action(policy.stages[7], key, base + timedelta(minutes=m)) == "block"
        for m in range(60)
    )
    assert all(
        window_action(policy.stages[0], key, base + timedelta(minutes=m)) == "accept"
        for m in range(60)
    )


def test_offsets_are_stable_and_spread() -> None:
    assert hour_offset("a/ex1") == hour_offset("A/EX1")
    offsets = {hour_offset(f"t/ex{i}.example") for i in range(200)}
    assert len(offsets) > 40


def test_pause_across_new_year_counts_in_each_year() -> None:
    pause = Pause(None, "t", date(2026, 12, 20), date(2027, 1, 10))
    assert pause.days == 21
    assert pause_days_in_year(pause, 2026) == 12
    assert pause_days_in_year(pause, 2027) == 9
    assert budget_used([pause], 2027) == 9


def test_stage_start_dates(policy: Policy) -> None:
    clock = EnforcementClock(T0)
    now = T0 + timedelta(days=45)
    assert stage_start(policy, clock, 2, now, []) == T0 + timedelta(days=30)
    assert stage_start(policy, clock, 5, now, []) == T0 + timedelta(days=60)
    assert stage_start(policy, clock, 8, now, []) == T0 + timedelta(days=90)
    pause = Pause(None, "t", (T0 + timedelta(days=46)).date(), (T0 + timedelta(days=56)).date())
    # a pause in the future is not assumed; once active, it shifts what follows
    during = midnight((T0 + timedelta(days=50)).date())
    assert stage_start(policy, clock, 8, during, [pause]) == T0 + timedelta(days=100)
    assert stage_start(policy, clock, 9, now, []) is None
