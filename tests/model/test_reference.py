"""The reference model on its own, against numbers worked out by hand from SPEC §3–§7.

Why: the state machine trusts the model; these tests are what the model is trusted on.  Each
one states a rule, the hand-computed expectation and nothing else.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from drossel.core.policy import Policy
from drossel.core.schedule import hour_offset
from tests.model.drivers import ModelDriver
from tests.model.reference import Refused
from tests.model.world import (
    CURRENT,
    OLD,
    START,
    connector_client,
    forged_client,
    set_up_tenants,
    verified_client,
)

EX01 = "ex01.t1.example"
DAY = timedelta(days=1)


@pytest.fixture
def model() -> ModelDriver:
    driver = ModelDriver()
    set_up_tenants(driver)
    return driver


def window_start(moment: datetime, tenant: str = "t1", server: str = EX01) -> datetime:
    """``moment`` moved to the first minute of the server's hour windows."""
    return moment.replace(minute=hour_offset(f"{tenant}/{server}"))


def test_stage_table_boundaries(model: ModelDriver) -> None:
    model.message(EX01, OLD, connector_client("t1"), START)
    expected = {0: 1, 29: 1, 30: 2, 39: 2, 40: 3, 50: 4, 60: 5, 70: 6, 80: 7, 89: 7, 90: 8, 400: 8}
    for day, stage in expected.items():
        answer = model.message(EX01, OLD, connector_client("t1"), START + day * DAY)
        assert answer.scheduled_stage == answer.stage == stage, day


def test_block_minutes_come_first_then_throttle(model: ModelDriver) -> None:
    model.message(EX01, OLD, connector_client("t1"), START)
    stage5 = window_start(START + 61 * DAY)  # stage 5: 5 block, 30 throttle
    actions = [
        model.message(EX01, OLD, connector_client("t1"), stage5 + timedelta(minutes=m)).action
        for m in (0, 4, 5, 34, 35, 59)
    ]
    assert actions == ["block", "block", "throttle", "throttle", "accept", "accept"]


def test_regression_within_window_resumes_without_counting_the_gap(model: ModelDriver) -> None:
    model.message(EX01, OLD, connector_client("t1"), START)
    model.message(EX01, CURRENT, connector_client("t1"), START + 35 * DAY)  # stage 2 then
    back = START + 60 * DAY  # 25 days later: within 30
    assert model.message(EX01, OLD, connector_client("t1"), back).scheduled_stage == 2
    # 35 days on the clock at resumption; stage 3 from day 40, i.e. 5 days later
    assert model.report("t1", back + 4 * DAY)[EX01]["stage"] == 2
    assert model.report("t1", back + 5 * DAY)[EX01]["stage"] == 3


def test_pause_and_forgiven_gap_overlapping_count_once(model: ModelDriver) -> None:
    model.message(EX01, OLD, connector_client("t1"), START)  # 2026-09-01 10:00
    patched = START + 20 * DAY
    model.message(EX01, CURRENT, connector_client("t1"), patched)
    # a 10-day pause inside the remediation gap
    model.add_pause("t1", (patched + DAY).date(), 10, (), patched)
    back = patched + 25 * DAY
    model.message(EX01, OLD, connector_client("t1"), back)
    # on the clock: 20 days before the gap, nothing during it (pause or not), then 10 more
    assert model.report("t1", back + 9 * DAY)[EX01]["stage"] == 1
    assert model.report("t1", back + 10 * DAY)[EX01]["stage"] == 2


def test_paused_days_do_not_advance_and_enforcement_is_lifted(model: ModelDriver) -> None:
    model.message(EX01, OLD, connector_client("t1"), START)
    day95 = START + 95 * DAY
    key = model.add_pause("t1", day95.date(), 10, (EX01,), day95)
    paused = model.message(EX01, OLD, connector_client("t1"), window_start(day95))
    assert (paused.action, paused.stage, paused.scheduled_stage, paused.reason) == (
        "accept",
        0,
        8,
        True,
    )
    model.end_pause(key, "t1", day95 + timedelta(hours=2))  # still paused until midnight
    assert model.report("t1", day95 + timedelta(hours=3))[EX01]["paused"] is True
    next_day = START + 96 * DAY
    assert model.report("t1", next_day)[EX01]["paused"] is False
    assert model.charged_days("t1", 2026) == 1
    # the paused day (from midnight) does not count: 95 days and 14 hours minus 1 day
    row = model.report("t1", START + 96 * DAY)[EX01]
    assert (row["stage"], row["block_minutes"]) == (8, 60)


def test_pause_across_new_year_is_charged_to_each_year(model: ModelDriver) -> None:
    now = START.replace(month=12, day=20)
    key = model.add_pause("t1", date(2026, 12, 25), 20, (), now)
    assert (model.charged_days("t1", 2026), model.charged_days("t1", 2027)) == (7, 13)
    with pytest.raises(Refused):
        model.extend_pause(key, "t1", 80, now)  # 2027: 93 days > 90
    assert (model.charged_days("t1", 2026), model.charged_days("t1", 2027)) == (7, 13)
    with pytest.raises(Refused):
        model.extend_pause(key, "t1", 78, now)
    model.extend_pause(key, "t1", 77, now)
    assert model.charged_days("t1", 2027) == 90


def test_extend_refused_beyond_budget_leaves_pause_unchanged(model: ModelDriver) -> None:
    key = model.add_pause("t1", START.date(), 60, (), START)
    with pytest.raises(Refused):
        model.extend_pause(key, "t1", 31, START)
    assert model.charged_days("t1", 2026) == 60


def test_ending_a_future_pause_cancels_it(model: ModelDriver) -> None:
    key = model.add_pause("t1", (START + 5 * DAY).date(), 30, (), START)
    model.end_pause(key, "t1", START)
    assert model.charged_days("t1", 2026) == 0
    with pytest.raises(Refused):
        model.add_pause("t1", (START - DAY).date(), 1, (), START)  # in the past
    with pytest.raises(Refused):
        model.add_pause("t1", START.date(), 0, (), START)


def test_pause_budget_is_per_tenant(model: ModelDriver) -> None:
    model.add_pause("t1", START.date(), 90, (), START)
    model.add_pause("t2", START.date(), 90, (), START)
    with pytest.raises(Refused):
        model.add_pause("t1", START.date(), 1, ("ex02.t1.example",), START)


def test_override_lifts_enforcement_until_it_expires(model: ModelDriver) -> None:
    model.message(EX01, OLD, connector_client("t1"), START)
    day95 = window_start(START + 95 * DAY)
    model.add_override("t1", EX01, "wrong build stamp", day95 + timedelta(hours=1), day95)
    lifted = model.message(EX01, OLD, connector_client("t1"), day95)
    assert (lifted.action, lifted.stage, lifted.reason) == ("accept", 0, True)
    after = model.message(EX01, OLD, connector_client("t1"), day95 + timedelta(hours=1))
    assert (after.action, after.stage) == ("block", 8)


def test_tenant_override_covers_every_server_of_that_tenant_only(model: ModelDriver) -> None:
    model.add_override("t1", None, "migration", None, START)
    model.message("ex02.t1.example", OLD, connector_client("t1"), START)
    model.message("mail.t2.example", OLD, connector_client("t2"), START)
    assert model.report("t1", START)["ex02.t1.example"]["stage"] == 0
    assert model.report("t2", START)["mail.t2.example"]["stage"] == 1


def test_unverified_sighting_never_ages_or_changes_a_trusted_record(model: ModelDriver) -> None:
    model.message(EX01, OLD, verified_client(EX01), START)
    forged = model.message(EX01, CURRENT, forged_client(EX01), START + 10 * DAY)
    assert forged.stage == 0
    row = model.report("default", START + 35 * DAY)[EX01]
    assert (row["build"], row["evidence"], row["stage"], row["remediated"]) == (
        OLD,
        "verified",
        2,
        False,
    )


def test_connector_type_not_enforced_starts_no_clock(model: ModelDriver) -> None:
    model.set_policy(Policy(enforced_connector_types=("OnPremises",)), START)
    partner = model.message("ex.t3.example", OLD, connector_client("t3"), START)
    assert (partner.stage, partner.scheduled_stage, partner.reason) == (0, 1, True)
    model.set_policy(Policy(), START + 50 * DAY)
    assert model.report("t3", START + 50 * DAY)["ex.t3.example"]["stage"] == 1


def test_clock_keeps_running_when_rollout_turns_report_only(model: ModelDriver) -> None:
    model.message(EX01, OLD, connector_client("t1"), START)
    model.set_policy(Policy(rollout={"Exchange 2013": "report-only"}), START + 10 * DAY)
    row = model.report("t1", START + 45 * DAY)[EX01]
    assert (row["stage"], row["scheduled_stage"], row["applied_reason"]) == (0, 3, True)
    model.set_policy(Policy(), START + 45 * DAY)
    assert model.report("t1", START + 45 * DAY)[EX01]["stage"] == 3


def test_mode_off_records_nothing(model: ModelDriver) -> None:
    model.set_policy(Policy(mode="off"), START)
    assert model.message(EX01, OLD, connector_client("t1"), START).action == "accept"
    assert model.report("t1", START) == {}


def test_behind_build_is_enforced_only_once_persistently_vulnerable(model: ModelDriver) -> None:
    feb26 = "15.2.2562.37"  # first missing update Jun26SU (2026-06-09): vulnerable after 90 days
    early = model.message(EX01, feb26, connector_client("t1"), START)
    assert (early.stage, early.scheduled_stage) == (0, 0)
    late = model.message(EX01, feb26, connector_client("t1"), START + 10 * DAY)
    assert (late.stage, late.scheduled_stage) == (1, 1)


def test_report_leaves_out_servers_unseen_for_60_days(model: ModelDriver) -> None:
    model.message(EX01, OLD, connector_client("t1"), START)
    assert EX01 in model.report("t1", START + 60 * DAY)
    assert EX01 not in model.report("t1", START + 60 * DAY + timedelta(minutes=1))
