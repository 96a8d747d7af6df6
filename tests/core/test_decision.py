"""The pure decision: exact replies, switches, overrides, pauses, remediation and regression."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from drossel.core.assessment import assess
from drossel.core.catalog import Catalog
from drossel.core.decision import (
    ConnectionFacts,
    Override,
    ServerRecord,
    Snapshot,
    Verdict,
    can_pause,
    decide,
    observe,
)
from drossel.core.detection import detect
from drossel.core.policy import Policy
from drossel.core.schedule import Pause, hour_offset

T0 = datetime(2026, 3, 2, tzinfo=UTC)
SERVER = "ex01.contoso.example"
OLD = "15.1.2507.6"  # Exchange 2016 CU23 without SUs: unsupported by 2026
NEW = "15.2.2562.53"  # Exchange SE RTM Sep26SUv2
FACTS = ConnectionFacts(tenant="contoso", connector_type="OnPremises", client_addr="192.0.2.1")


def message(build: str, host: str = SERVER) -> str:
    return (
        f"Received: from mbx.contoso.local (10.0.0.2) by {host} (10.0.0.1) with Microsoft "
        f"SMTP Server (version=TLS1_2, cipher=X) id {build}; Mon, 2 Mar 2026 10:00:00 +0000\n"
    )


def minute_for(action_index: int, tenant: str = "contoso", server: str = SERVER) -> int:
    """The minute of the hour that is ``action_index`` minutes into the server's window."""
    return (hour_offset(f"{tenant}/{server}") + action_index) % 60


def at_day(day: int, minute_in_window: int = 0) -> datetime:
    moment = T0 + timedelta(days=day)
    return moment.replace(hour=12, minute=minute_for(minute_in_window))


def run(
    catalog: Catalog,
    policy: Policy,
    now: datetime,
    build: str = OLD,
    first_seen: datetime = T0,
    pauses: list[Pause] | None = None,
    overrides: list[Override] | None = None,
    facts: ConnectionFacts = FACTS,
) -> Verdict:
    detection = detect(message(build))
    server = detection.connecting
    assert server is not None
    first = observe(
        None,
        facts,
        server,
        assess(server.build, first_seen.date(), catalog, policy),
        first_seen,
        policy,
    )
    record = observe(
        first, facts, server, assess(server.build, now.date(), catalog, policy), now, policy
    )
    snapshot = Snapshot(record=record, pauses=pauses or [], overrides=overrides or [])
    return decide(detection, facts, snapshot, now, policy, catalog)


def test_stage_one_is_report_only(catalog: Catalog, policy: Policy) -> None:
    for day in (0, 10, 29):
        for minute in range(0, 60, 7):
            verdict = run(catalog, policy, at_day(day).replace(minute=minute))
            assert verdict.action == "accept"
            assert verdict.stage == 1


def test_throttle_reply_text_exact(catalog: Catalog, policy: Policy) -> None:
    verdict = run(catalog, policy, at_day(30, 0))
    assert (verdict.action, verdict.code, verdict.enhanced_code) == ("throttle", 450, "4.7.230")
    assert verdict.text == (
        "Connecting Exchange server version is out-of-date; connection to this mail service "
        "throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange"
    )
    assert verdict.stage == 2
    assert run(catalog, policy, at_day(30, 5)).action == "accept"


def test_block_window_then_throttle_window_in_stage_5(catalog: Catalog, policy: Policy) -> None:
    assert run(catalog, policy, at_day(60, 4)).action == "block"
    assert run(catalog, policy, at_day(60, 5)).action == "throttle"
    assert run(catalog, policy, at_day(60, 34)).action == "throttle"
    assert run(catalog, policy, at_day(60, 35)).action == "accept"
    verdict = run(catalog, policy, at_day(60, 0))
    assert (verdict.code, verdict.enhanced_code) == (550, "5.7.230")
    assert verdict.text is not None and "blocked for 5 mins/hr" in verdict.text


def test_stage_8_blocks_every_minute(catalog: Catalog, policy: Policy) -> None:
    for minute in range(60):
        verdict = run(catalog, policy, (T0 + timedelta(days=90)).replace(minute=minute))
        assert verdict.action == "block" and verdict.stage == 8
        assert verdict.text is not None and "blocked for 60 mins/hr" in verdict.text


def test_current_server_is_never_refused(catalog: Catalog, policy: Policy) -> None:
    verdict = run(catalog, policy, at_day(95), build=NEW, first_seen=at_day(95))
    assert verdict.action == "accept"
    assert verdict.assessment is not None and verdict.assessment.status == "current"


def test_switches(catalog: Catalog, policy: Policy) -> None:
    now = at_day(95)
    assert run(catalog, policy.model_copy(update={"mode": "off"}), now).action == "accept"
    report_only = run(catalog, policy.model_copy(update={"mode": "report-only"}), now)
    # nothing is applied, and the clock never started: the schedule would begin at stage 1
    assert (report_only.action, report_only.stage, report_only.scheduled_stage) == ("accept", 0, 1)
    assert report_only.applied_reason == "global report-only mode"
    rollout = policy.model_copy(update={"rollout": {"Exchange 2016": "report-only"}})
    by_rollout = run(catalog, rollout, now)
    assert by_rollout.action == "accept" and by_rollout.stage == 0
    assert by_rollout.applied_reason == "Exchange 2016 is report-only by rollout"
    partner_only = policy.model_copy(update={"enforced_connector_types": ("Partner",)})
    assert run(catalog, partner_only, now).action == "accept"
    unsupported_only = policy.model_copy(update={"enforced_statuses": ("behind",)})
    assert run(catalog, unsupported_only, now).action == "accept"


def test_override_for_server_or_tenant_until_expiry(catalog: Catalog, policy: Policy) -> None:
    now = at_day(95)
    server_override = Override(1, "contoso", SERVER, "stamps a wrong build", now + timedelta(1))
    assert run(catalog, policy, now, overrides=[server_override]).action == "accept"
    tenant_override = Override(2, "contoso", None, "migration", None)
    assert run(catalog, policy, now, overrides=[tenant_override]).action == "accept"
    other = Override(3, "fabrikam", None, "other tenant", None)
    assert run(catalog, policy, now, overrides=[other]).action == "block"
    expired = replace(server_override, expires=now - timedelta(seconds=1))
    assert run(catalog, policy, now, overrides=[expired]).action == "block"


def test_active_pause_accepts_and_freezes(catalog: Catalog, policy: Policy) -> None:
    pause = Pause(1, "contoso", date(2026, 5, 30), date(2026, 6, 20))
    during = datetime(2026, 6, 5, 12, tzinfo=UTC)
    verdict = run(catalog, policy, during, pauses=[pause])
    assert verdict.action == "accept" and verdict.paused
    other_server = Pause(2, "contoso", date(2026, 5, 30), date(2026, 6, 20), ("ex99.example",))
    assert not run(catalog, policy, during, pauses=[other_server]).paused


def test_no_server_detected_is_accepted(catalog: Catalog, policy: Policy) -> None:
    verdict = decide(detect("Subject: hi\n"), FACTS, Snapshot(), T0, policy, catalog)
    assert verdict.action == "accept" and verdict.server is None


def _server(build: str):  # type: ignore[no-untyped-def]
    server = detect(message(build)).connecting
    assert server is not None
    return server


def _observe(
    catalog: Catalog, policy: Policy, record: ServerRecord | None, build: str, now: datetime
) -> ServerRecord:
    server = _server(build)
    return observe(
        record, FACTS, server, assess(server.build, now.date(), catalog, policy), now, policy
    )


def test_remediation_stops_enforcement_and_regression_within_30_days_resumes(
    catalog: Catalog, policy: Policy
) -> None:
    record = _observe(catalog, policy, None, OLD, T0)
    assert record.clock_start == T0
    fixed = _observe(catalog, policy, record, NEW, T0 + timedelta(days=45))
    assert fixed.remediated_at == T0 + timedelta(days=45)
    assert fixed.status == "current"
    back = _observe(catalog, policy, fixed, OLD, T0 + timedelta(days=65))
    assert back.remediated_at is None
    assert back.clock_start == T0 and back.clock_credit == timedelta(days=20)
    assert back.clock is not None
    from drossel.core.schedule import stage_at

    assert stage_at(policy, back.clock, T0 + timedelta(days=65), []).number == 3  # day 45


def test_regression_after_30_days_starts_a_new_clock(catalog: Catalog, policy: Policy) -> None:
    record = _observe(catalog, policy, None, OLD, T0)
    fixed = _observe(catalog, policy, record, NEW, T0 + timedelta(days=45))
    late = _observe(catalog, policy, fixed, OLD, T0 + timedelta(days=76))
    assert late.clock_start == T0 + timedelta(days=76)
    assert late.clock_credit == timedelta(0)
    assert late.first_detected == T0


def test_reply_never_contains_header_text(catalog: Catalog, policy: Policy) -> None:
    evil = "ex01.contoso.example\r\n250 OK %s%n"
    detection = detect(message(OLD, host=evil))
    verdict = decide(detection, FACTS, Snapshot(), at_day(0), policy, catalog)
    assert verdict.text is None or ("\r" not in verdict.text and "%" not in verdict.text)
    hostile = policy.model_copy(
        update={"replies": policy.replies.model_copy(update={"service": "mx"})}
    )
    blocked = run(catalog, hostile, at_day(95))
    assert blocked.text is not None and "\n" not in blocked.text


@pytest.mark.parametrize(
    ("existing_days", "new_days", "ok"), [(30, 60, True), (30, 61, False), (90, 1, False)]
)
def test_pause_budget(existing_days: int, new_days: int, ok: bool) -> None:
    existing = [Pause(1, "t", date(2026, 1, 10), date(2026, 1, 10) + timedelta(existing_days))]
    new = Pause(None, "t", date(2026, 6, 1), date(2026, 6, 1) + timedelta(new_days))
    assert (can_pause(existing, new, 90) is None) == ok


def test_pause_budget_across_new_year() -> None:
    existing = [Pause(1, "t", date(2026, 1, 1), date(2026, 3, 21))]  # 79 days of 2026
    spanning = Pause(None, "t", date(2026, 12, 20), date(2027, 1, 20))  # 12 + 19 days
    message_ = can_pause(existing, spanning, 90)
    assert message_ is not None and "2026" in message_ and "only 11 of 90 days are left" in message_
    fits = Pause(None, "t", date(2026, 12, 21), date(2027, 1, 30))  # 11 + 29 days
    assert can_pause(existing, fits, 90) is None
    other_tenant = [Pause(1, "u", date(2026, 1, 1), date(2026, 3, 31))]
    assert can_pause(other_tenant, spanning, 90) is None
