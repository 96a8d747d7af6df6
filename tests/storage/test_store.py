"""State store behaviour on every backend."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest

from drossel.app.errors import AppError
from drossel.app.services import Services
from drossel.core.decision import ServerRecord
from drossel.core.policy import Policy
from drossel.core.schedule import budget_used
from drossel.storage.store import Store

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def record(
    first: datetime,
    server: str = "ex01.contoso.example",
    tenant: str = "contoso",
    build: str = "15.1.2507.6",
) -> ServerRecord:
    return ServerRecord(
        tenant=tenant,
        server=server,
        first_detected=first,
        last_seen=first,
        build=build,
        product="Exchange 2016",
        status="unsupported",
        clock_start=first,
    )


def test_tenants_contacts_connectors(store: Store) -> None:
    store.add_tenant("contoso", ["a@contoso.example", "b@contoso.example"], "t", NOW)
    with pytest.raises(AppError, match="exists already"):
        store.add_tenant("contoso", [], "t", NOW)
    with pytest.raises(AppError, match="not a mail address"):
        store.add_tenant("x", ["bad\r\naddress"], "t", NOW)
    connector = store.add_connector(
        "contoso",
        "onprem",
        "OnPremises",
        ["192.0.2.0/24", "2001:db8::/32"],
        "mx.contoso.example",
        "t",
        NOW,
    )
    assert connector.matches("192.0.2.7", "mx.contoso.example")
    assert connector.matches("2001:db8::5", "MX.CONTOSO.EXAMPLE")
    assert not connector.matches("192.0.2.7", None)
    assert not connector.matches("198.51.100.1", "mx.contoso.example")
    ip_only = store.add_connector("contoso", "ips", "OnPremises", ["192.0.2.0/24"], None, "t", NOW)
    assert ip_only.matches("192.0.2.7", None) and not ip_only.matches("garbage", None)
    with pytest.raises(AppError, match="not an IP"):
        store.add_connector("contoso", "bad", "OnPremises", ["300.1.1.1/8"], None, "t", NOW)
    with pytest.raises(AppError, match="connector type"):
        store.add_connector("contoso", "bad", "Weird", ["192.0.2.0/24"], None, "t", NOW)
    with pytest.raises(AppError, match="unknown tenant"):
        store.add_connector("nobody", "c", "Partner", ["192.0.2.0/24"], None, "t", NOW)
    assert [t.contacts for t in store.list_tenants()] == [
        ("a@contoso.example", "b@contoso.example")
    ]


def test_first_detection_keeps_the_earliest_time(store: Store) -> None:
    later = store.save_server(record(NOW), "evidence", NOW)
    earlier = store.save_server(record(NOW - timedelta(seconds=1)), "", NOW)
    assert later.id == earlier.id
    assert earlier.record.first_detected == NOW - timedelta(seconds=1)
    assert earlier.record.clock_start == NOW - timedelta(seconds=1)
    assert earlier.record.last_seen == NOW
    assert [b for b, _, _ in store.build_history(earlier.id)] == ["15.1.2507.6"]


def test_concurrent_first_detection_gives_one_record(store: Store) -> None:
    moments = [NOW + timedelta(milliseconds=i) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda m: store.save_server(record(m), "", NOW), moments))
    servers = store.list_servers("contoso")
    assert len(servers) == 1
    assert servers[0].record.first_detected == NOW


def test_counts_accumulate(store: Store) -> None:
    stored = store.save_server(record(NOW), "", NOW)
    day = NOW.date()
    store.add_counts({("contoso", stored.record.server, day, "accept"): 3}, NOW)
    store.add_counts(
        {
            ("contoso", stored.record.server, day, "accept"): 2,
            ("contoso", stored.record.server, day, "block"): 1,
        },
        NOW,
    )
    assert store.total_counts(stored.id) == {"accept": 5, "block": 1}
    assert store.daily_counts(stored.id, day) == {day: {"accept": 5, "block": 1}}
    # counters of a server or tenant nobody recorded are dropped, and make no tenant
    store.add_counts(
        {
            ("contoso", "unknown.contoso.example", day, "accept"): 7,
            ("nobody", stored.record.server, day, "accept"): 7,
        },
        NOW,
    )
    assert store.total_counts(stored.id) == {"accept": 5, "block": 1}
    assert [t.name for t in store.list_tenants()] == ["contoso"]


def test_concurrent_counts_from_several_flushers_add_up(store: Store) -> None:
    """Several nodes flush counters for the same new day at once: each row is made once and
    every increment lands (no lost update, no duplicate row)."""
    names = [f"ex{i:02d}.contoso.example" for i in range(20)]
    ids = [store.save_server(record(NOW, server=n), "", NOW).id for n in names]
    day = NOW.date() + timedelta(days=1)
    batch = {("contoso", n, day, a): 1 for n in names for a in ("accept", "throttle")}
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: store.add_counts(batch, NOW), range(8)))
    for server_id in ids:
        assert store.daily_counts(server_id, day) == {day: {"accept": 8, "throttle": 8}}


def test_pause_budget_rules(store: Store) -> None:
    store.add_tenant("contoso", [], "t", NOW)
    today = NOW.date()
    for bad, message in [(0, "at least 1"), (-1, "at least 1"), (400, "budget exceeded")]:
        with pytest.raises(AppError, match=message):
            Services(store, Policy()).add_pause("contoso", today, bad, [], "t", NOW)
    with pytest.raises(AppError, match="past"):
        Services(store, Policy()).add_pause("contoso", today - timedelta(days=1), 5, [], "t", NOW)
    with pytest.raises(AppError, match="unknown server"):
        Services(store, Policy()).add_pause("contoso", today, 5, ["nope.example"], "t", NOW)
    first = Services(store, Policy()).add_pause(
        "contoso", today, 20, [], "t", NOW
    )  # 2026-11-23..12-13
    assert first.days == 20
    # 2026: 20 + 18 (12-14..12-31) = 38; 2027: 50 days
    spanning = Services(store, Policy()).add_pause("contoso", date(2026, 12, 14), 68, [], "t", NOW)
    assert spanning.end == date(2027, 2, 20)
    with pytest.raises(AppError, match="2027"):
        Services(store, Policy()).add_pause("contoso", date(2027, 3, 1), 41, [], "t", NOW)
    Services(store, Policy()).add_pause("contoso", date(2027, 3, 1), 40, [], "t", NOW)


def test_ending_a_pause_early_gives_days_back(store: Store) -> None:
    store.add_tenant("contoso", [], "t", NOW)
    start = date(2027, 1, 5)
    pause = Services(store, Policy()).add_pause("contoso", start, 90, [], "t", NOW)
    with pytest.raises(AppError, match="budget exceeded for 2027"):
        Services(store, Policy()).add_pause("contoso", start + timedelta(days=91), 1, [], "t", NOW)
    later = datetime(2027, 1, 15, 9, tzinfo=UTC)
    ended = Services(store, Policy()).end_pause(pause.id or 0, "t", later)
    # every day on which the pause was in force counts, the day it is ended on included
    assert ended.days == 11 and ended.ended_early and ended.end == date(2027, 1, 16)
    Services(store, Policy()).add_pause("contoso", later.date(), 20, [], "t", later)
    again = Services(store, Policy()).end_pause(pause.id or 0, "t", later)
    assert again.end == ended.end  # ending it again the same day changes nothing
    with pytest.raises(AppError, match="already ended"):  # once its last day is past
        Services(store, Policy()).end_pause(pause.id or 0, "t", later + timedelta(days=1))
    actions = [e.action for e in store.list_audit("contoso")]
    assert actions.count("pause.add") == 2 and "pause.end" in actions


def test_a_pause_ended_on_its_first_day_costs_one_day(store: Store) -> None:
    """SPEC §5: "pause at 00:01, end at 23:59" every day cannot pause for free."""
    store.add_tenant("contoso", [], "t", NOW)
    services = Services(store, Policy(pause_budget_days=7))
    day = datetime(2027, 2, 1, 0, 1, tzinfo=UTC)
    for n in range(5):
        moment = day + timedelta(days=n)
        pause = services.add_pause("contoso", moment.date(), 3, [], "t", moment)
        ended = services.end_pause(pause.id or 0, "t", moment + timedelta(hours=23))
        assert ended.days == 1 and ended.start == moment.date()
    assert services.charged_days("contoso", 2027) == 5
    with pytest.raises(AppError, match="budget exceeded"):
        services.add_pause("contoso", (day + timedelta(days=5)).date(), 3, [], "t", day)


def test_a_pause_across_new_year_fits_each_years_budget(store: Store) -> None:
    """The budget is per calendar year (SPEC §5): 31 days of 2026 and 69 of 2027 both fit."""
    store.add_tenant("contoso", [], "t", NOW)
    services = Services(store, Policy())
    pause = services.add_pause("contoso", date(2026, 12, 1), 100, [], "t", NOW)
    assert pause.days == 100
    assert (services.charged_days("contoso", 2026), services.charged_days("contoso", 2027)) == (
        31,
        69,
    )


def test_a_planned_pause_ended_before_it_starts_costs_nothing(store: Store) -> None:
    store.add_tenant("contoso", [], "t", NOW)
    services = Services(store, Policy())
    pause = services.add_pause("contoso", NOW.date() + timedelta(days=10), 30, [], "t", NOW)
    cancelled = services.end_pause(pause.id or 0, "t", NOW)
    assert cancelled.days == 0 and services.charged_days("contoso", NOW.year) == 0


def test_extending_a_pause_stays_within_the_budget(store: Store) -> None:
    store.add_tenant("contoso", [], "t", NOW)
    services = Services(store, Policy(pause_budget_days=20))
    start = date(2027, 3, 1)
    pause = services.add_pause("contoso", start, 10, [], "t", NOW)
    services.add_pause("contoso", date(2027, 6, 1), 5, [], "t", NOW)
    longer = services.extend_pause(pause.id or 0, 5, "t", NOW)
    assert (longer.id, longer.end) == (pause.id, start + timedelta(days=15))
    with pytest.raises(AppError, match="budget exceeded"):
        services.extend_pause(pause.id or 0, 1, "t", NOW)


def test_concurrent_pauses_never_overspend(store: Store) -> None:
    store.add_tenant("contoso", [], "t", NOW)

    def attempt(i: int) -> bool:
        try:
            start = date(2027, 1, 5) + timedelta(days=i * 10)
            Services(store, Policy()).add_pause("contoso", start, 10, [], f"n{i}", NOW)
            return True
        except AppError:
            return False

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(attempt, range(20)))
    pauses = store.list_pauses("contoso")
    assert sum(results) == len(pauses) == 9
    assert budget_used(pauses, 2027) == 90


def test_overrides(store: Store) -> None:
    store.add_tenant("contoso", [], "t", NOW)
    o = store.add_override(
        "contoso", "EX01.contoso.example", "wrong build stamp", NOW + timedelta(days=1), "t", NOW
    )
    assert o.server == "ex01.contoso.example"
    assert [x.id for x in store.list_overrides(NOW)] == [o.id]
    assert store.list_overrides(NOW + timedelta(days=2)) == []
    with pytest.raises(AppError, match="future"):
        Services(store, Policy()).add_override(
            "contoso", None, "r", NOW - timedelta(days=1), "t", NOW
        )
    with pytest.raises(AppError, match="empty"):
        store.add_override("contoso", None, "  ", None, "t", NOW)
    store.remove_override(o.id or 0, "t", NOW)
    assert store.list_overrides() == []
    with pytest.raises(AppError, match="unknown override"):
        store.remove_override(o.id or 0, "t", NOW)


def test_notifications_are_claimed_once(store: Store) -> None:
    store.add_tenant("contoso", [], "t", NOW)
    assert store.claim_notification("k1", "contoso", "ex", "first_detected", "body", NOW)
    assert not store.claim_notification("k1", "contoso", "ex", "first_detected", "body", NOW)


def test_an_open_read_does_not_hold_up_writers(store: Store) -> None:
    """A long read (the operator overview over 100,000 servers) runs while nodes write: on
    SQLite a read begins deferred and reads a WAL snapshot, only writers lock."""
    from sqlalchemy import text

    store.save_server(record(NOW), "", NOW)
    other = Store(store.url)
    other.engine.dispose()
    try:
        with store.engine.connect() as reader:
            before = reader.execute(text("SELECT count(*) FROM servers")).scalar_one()
            # the read transaction is still open; another node writes and commits meanwhile
            with ThreadPoolExecutor(1) as pool:
                pool.submit(
                    other.save_server, record(NOW, server="ex02.contoso.example"), "", NOW
                ).result(timeout=5)
            if store.is_sqlite:  # the reader's snapshot (PostgreSQL reads committed rows)
                assert reader.execute(text("SELECT count(*) FROM servers")).scalar_one() == before
        assert len(store.list_servers()) == before + 1
    finally:
        other.dispose()


def test_touch_servers_advances_last_seen_in_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last-seen times move forward only, unknown servers are skipped, and a batch larger than
    one transaction's share is written whole (the flusher hands over every server at once)."""
    monkeypatch.setattr(Store, "TOUCH_BATCH", 3)
    names = [f"ex{i:02d}.contoso.example" for i in range(8)]
    for name in names:
        store.save_server(record(NOW, server=name), "evidence", NOW)
    later = NOW + timedelta(hours=2)
    seen = {("contoso", name): later + timedelta(minutes=i) for i, name in enumerate(names)}
    seen[("contoso", names[0])] = NOW - timedelta(days=1)  # backwards: ignored
    seen[("contoso", "unknown.contoso.example")] = later  # never recorded: skipped
    seen[("nobody", names[1])] = later  # another tenant's: skipped
    store.touch_servers(seen)
    got = {s.record.server: s.record.last_seen for s in store.list_servers("contoso")}
    assert got[names[0]] == NOW
    for i, name in enumerate(names[1:], start=1):
        assert got[name] == later + timedelta(minutes=i)
    assert "unknown.contoso.example" not in got
    assert store.list_servers("nobody") == []
    history = store.build_history(store.get_server("contoso", names[5]).id)  # type: ignore[union-attr]
    assert history == [("15.1.2507.6", NOW, later + timedelta(minutes=5))]
    unmoved = store.build_history(store.get_server("contoso", names[0]).id)  # type: ignore[union-attr]
    assert unmoved == [("15.1.2507.6", NOW, NOW)]
