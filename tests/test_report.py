"""The per-server report (drossel report --json, the API and the web pages share it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from drossel.app.catalog_source import packaged_catalog
from drossel.app.report import pause_budget, tenant_report
from drossel.app.services import Services
from drossel.core.decision import ServerRecord
from drossel.core.policy import Policy
from drossel.runtime import open_store

T0 = datetime(2026, 3, 2, tzinfo=UTC)
FIELDS = {
    "server_fqdn",
    "product",
    "build",
    "update_name",
    "status",
    "first_detected",
    "last_seen",
    "stage",
    "throttle_minutes",
    "block_minutes",
    "throttle_start",
    "block_start",
    "full_block_start",
    "next_stage",
    "next_stage_start",
    "recommended_builds",
    "paused_until",
    "counts",
}


def seeded(tmp_path: Path, now: datetime):  # type: ignore[no-untyped-def]
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    store.add_tenant("contoso", ["it@contoso.example"], "t", T0)
    record = ServerRecord(
        tenant="contoso",
        server="ex01.contoso.example",
        first_detected=T0,
        last_seen=now,
        build="15.1.2507.6",
        product="Exchange 2016",
        status="unsupported",
        clock_start=T0,
    )
    stored = store.save_server(record, "evidence", now)
    store.add_counts(
        {
            ("contoso", "ex01.contoso.example", now.date(), "throttle"): 4,
            ("contoso", "ex01.contoso.example", now.date(), "accept"): 9,
        },
        now,
    )
    return store, stored


def test_report_fields_and_dates(tmp_path: Path) -> None:
    now = T0 + timedelta(days=45)
    store, _ = seeded(tmp_path, now)
    [row] = tenant_report(store, Policy(), packaged_catalog(), now, tenant="contoso")
    assert set(row) >= FIELDS
    assert row["stage"] == 3 and (row["throttle_minutes"], row["block_minutes"]) == (10, 0)
    assert row["throttle_start"] == (T0 + timedelta(days=30)).isoformat()
    assert row["block_start"] == (T0 + timedelta(days=60)).isoformat()
    assert row["full_block_start"] == (T0 + timedelta(days=90)).isoformat()
    assert row["next_stage"] == 4
    assert row["next_stage_start"] == (T0 + timedelta(days=50)).isoformat()
    assert row["counts"] == {"accept": 9, "throttle": 4, "block": 0}
    assert row["status"] == "unsupported" and row["recommended_builds"]
    assert row["paused_until"] is None


def test_pause_shifts_dates_and_shows_until(tmp_path: Path) -> None:
    now = T0 + timedelta(days=45)
    store, _ = seeded(tmp_path, now)
    Services(store, Policy()).add_pause("contoso", now.date(), 10, [], "t", now)
    [row] = tenant_report(store, Policy(), packaged_catalog(), now, tenant="contoso")
    assert row["paused_until"] == (now.date() + timedelta(days=10)).isoformat()
    assert (
        row["next_stage_start"]
        == datetime.combine(now.date() + timedelta(days=15), datetime.min.time(), UTC).isoformat()
    )
    budget = pause_budget(store, Policy(), "contoso", now)
    assert (budget.used, budget.left) == (10, 80)


def test_inactive_servers_leave_the_active_report(tmp_path: Path) -> None:
    store, _ = seeded(tmp_path, T0)
    later = T0 + timedelta(days=61)
    assert tenant_report(store, Policy(), packaged_catalog(), later) == []
    assert (
        len(tenant_report(store, Policy(), packaged_catalog(), later, include_inactive=True)) == 1
    )


def test_with_drossel_off_the_row_says_why_nothing_is_applied(tmp_path: Path) -> None:
    """SPEC §7: the report shows what is applied now and why that differs from the schedule;
    with the global mode ``off`` a vulnerable server's row says so, as its verdicts do."""
    now = T0 + timedelta(days=45)
    store, _ = seeded(tmp_path, now)
    off = Policy(mode="off")
    [row] = tenant_report(store, off, packaged_catalog(), now, tenant="contoso")
    assert (row["stage"], row["throttle_minutes"], row["block_minutes"]) == (0, 0, 0)
    assert row["applied_reason"] == "drossel is off"
    [enforcing] = tenant_report(store, Policy(), packaged_catalog(), now, tenant="contoso")
    assert enforcing["applied_reason"] is None and enforcing["stage"] == 3
