"""The engine on a real SQLite state: first detection written before the verdict, counters
batched, pauses and overrides picked up on refresh, evidence, and the defects of issue 9."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drossel.app.enforcer import ClientInfo, Enforcer
from drossel.app.services import Services
from drossel.config import Config
from drossel.core.detection import parse_headers
from drossel.core.policy import Policy
from drossel.runtime import open_store

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
HEADERS = parse_headers(
    "Received: from mbx (10.0.0.2) by ex01.contoso.example (10.0.0.1) with Microsoft SMTP "
    "Server id 15.1.2507.6; Mon, 2 Mar 2026 10:00:00 +0000\n"
)
# the client's forward-confirmed name is the Exchange server's: verified evidence (SPEC §3)
CLIENT = ClientInfo(addr="192.0.2.10", name="ex01.contoso.example", helo="ex01.contoso.example")
# a relay in front of it, or anyone who only claims the name: unverified
RELAY = ClientInfo(addr="198.51.100.7", name="mx.relay.example", helo="ex01.contoso.example")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(tmp_path: Path) -> Enforcer:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    return Enforcer(store, Config(), Clock(T0))


def test_first_detection_is_written_by_flush_off_the_message_path(engine: Enforcer) -> None:
    outcome = engine.process(HEADERS, CLIENT)
    assert outcome.verdict.action == "accept" and outcome.verdict.stage == 1
    assert engine.store.get_server("default", "ex01.contoso.example") is None
    engine.flush()
    stored = engine.store.get_server("default", "ex01.contoso.example")
    assert stored is not None and stored.record.first_detected == T0
    assert "15.1.2507.6" in stored.evidence
    assert engine.store.total_counts(stored.id) == {"accept": 1}
    engine.process(HEADERS, CLIENT)
    assert engine.store.total_counts(stored.id) == {"accept": 1}  # counters are batched
    engine.flush()
    assert engine.store.total_counts(stored.id) == {"accept": 2}


def test_steady_state_makes_no_database_round_trip(engine: Enforcer) -> None:
    engine.process(HEADERS, CLIENT)
    statements: list[str] = []
    from sqlalchemy import event

    event.listen(
        engine.store.engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    for _ in range(50):
        engine.process(HEADERS, CLIENT)
    assert statements == []


def test_verdicts_follow_the_clock_and_a_pause_elsewhere(engine: Enforcer) -> None:
    clock = engine.clock
    assert isinstance(clock, Clock)
    engine.process(HEADERS, CLIENT)
    clock.now = T0 + timedelta(days=95)
    assert engine.process(HEADERS, CLIENT).verdict.action == "block"
    engine.flush()  # the default tenant exists once the first detection is written
    # another process (the CLI) pauses the tenant; the engine sees it after refresh_seconds
    Services(engine.store, Policy()).add_pause(
        "default", clock.now.date(), 10, [], "test", clock.now
    )
    clock.now += timedelta(seconds=2)
    verdict = engine.process(HEADERS, CLIENT).verdict
    assert verdict.action == "accept" and verdict.paused


def test_a_blocked_server_is_accepted_on_its_first_patched_message(engine: Enforcer) -> None:
    clock = engine.clock
    assert isinstance(clock, Clock)
    engine.process(HEADERS, CLIENT)
    clock.now = T0 + timedelta(days=95)
    blocked = engine.process(HEADERS, CLIENT).verdict
    assert (blocked.action, blocked.code, blocked.stage) == ("block", 550, 8)
    patched = parse_headers(
        "Received: from mbx by ex01.contoso.example with Microsoft SMTP Server id 15.2.2562.53;\n"
    )
    accepted = engine.process(patched, CLIENT).verdict
    assert accepted.action == "accept" and accepted.stage == 0
    engine.flush()
    stored = engine.store.get_server("default", "ex01.contoso.example")
    assert stored is not None and stored.record.remediated_at == clock.now


def test_unverified_sightings_never_age_a_record(engine: Enforcer) -> None:
    clock = engine.clock
    assert isinstance(clock, Clock)
    forged = engine.process(HEADERS, RELAY).verdict
    assert forged.action == "accept" and forged.evidence == "unverified"
    assert forged.applied_reason == "unverified: seen via mx.relay.example"
    clock.now = T0 + timedelta(days=120)
    assert engine.process(HEADERS, RELAY).verdict.stage == 0
    real = engine.process(HEADERS, CLIENT).verdict
    assert (real.action, real.stage, real.evidence) == ("accept", 1, "verified")
    engine.flush()
    stored = engine.store.get_server("default", "ex01.contoso.example")
    assert stored is not None
    assert stored.record.first_detected == T0 and stored.record.clock_start == clock.now


def test_connector_assigns_tenant(engine: Enforcer) -> None:
    engine.store.add_tenant("contoso", [], "t", T0)
    engine.store.add_connector("contoso", "c", "OnPremises", ["192.0.2.0/24"], None, "t", T0)
    engine.refresh()
    outcome = engine.process(HEADERS, CLIENT)
    assert outcome.facts.tenant == "contoso" and outcome.facts.connector_type == "OnPremises"
    engine.flush()
    assert engine.store.get_server("contoso", "ex01.contoso.example") is not None


def test_remediation_is_written(engine: Enforcer) -> None:
    clock = engine.clock
    assert isinstance(clock, Clock)
    engine.process(HEADERS, CLIENT)
    clock.now = T0 + timedelta(days=40)
    fixed = parse_headers(
        "Received: from mbx by ex01.contoso.example with Microsoft SMTP Server id 15.2.2562.53;\n"
    )
    assert engine.process(fixed, CLIENT).verdict.action == "accept"
    engine.flush()
    stored = engine.store.get_server("default", "ex01.contoso.example")
    assert stored is not None and stored.record.remediated_at == clock.now
    history = [b for b, _, _ in engine.store.build_history(stored.id)]
    assert history == ["15.1.2507.6", "15.2.2562.53"]
