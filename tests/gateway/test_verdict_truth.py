"""Verdict truth over time through the real gateway (issue 9): the six sequences that gave wrong
results, each as a sending organisation's admin would see it over simulated months.

The sending servers are real SMTP clients on loopback addresses; a real dnsmasq gives
127.0.0.2 the forward-confirmed name of the Exchange server it runs (verified evidence, SPEC
§3), while 127.0.0.3 has no name at all (anyone on the Internet).  Each sequence runs on its
own SQLite state; a policy change is a restart (a fresh enforcer on the same database).
"""

from __future__ import annotations

import email
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from drossel.app.report import report_rows
from drossel.app.services import Services
from drossel.config import Config
from drossel.core.policy import Policy
from drossel.core.schedule import hour_offset
from drossel.gateway.server import GatewayHandle, start_gateway
from drossel.runtime import build_enforcer

from .conftest import (
    CURRENT_SE,
    OLD_2013,
    T0,
    MutableClock,
    NextHopSink,
    exchange_message,
    gateway_config,
)

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from harness.dns import DnsServer, dns_unavailable_reason  # noqa: E402

SERVER = "ex01.victim.drossel.test"
REAL, STRANGER = "127.0.0.2", "127.0.0.3"
OK = "250 2.0.0 Ok: queued as XYZ"


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    reason = dns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with DnsServer(hosts={SERVER: REAL}) as server:
        yield server


class Site:
    """One receiving site: the gateway, its state and clock, restartable with a new policy."""

    def __init__(self, tmp: Path, sink: NextHopSink, dns: DnsServer, clock: MutableClock) -> None:
        self.url = f"sqlite:///{tmp / 'drossel.db'}"
        self.sink, self.dns, self.clock = sink, dns, clock
        self.gateway: GatewayHandle | None = None
        self.config = Config()

    async def start(self, policy: Policy | None = None) -> Site:
        await self.stop()
        self.config = Config(policy=policy or Policy())
        self.enforcer = build_enforcer(self.config, self.clock, self.url)
        settings = gateway_config(
            self.sink.relay, reverse_lookup=True, dns_resolver=self.dns.address
        )
        self.gateway = await start_gateway(self.enforcer, settings)
        return self

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.close(grace=0.5)
            self.enforcer.shutdown()
            self.enforcer.store.dispose()
            self.gateway = None

    async def send(self, source: str, build: str, subject: str = "hello") -> str:
        assert self.gateway is not None
        try:
            _, text = await aiosmtplib.send(
                exchange_message(build=build, server=SERVER, subject=subject),
                sender="alice@victim.drossel.test",
                recipients=["bob@fabrikam.example"],
                hostname=self.gateway.host,
                port=self.gateway.port,
                source_address=(source, 0),
                local_hostname=SERVER,
                start_tls=False,
                timeout=10,
            )
        except aiosmtplib.SMTPResponseException as exc:
            return f"{exc.code} {exc.message}"
        return f"250 {text}"

    def verdict_header(self) -> str:
        """Our X-Drossel header on the last message the next hop received."""
        parsed = email.message_from_bytes(self.sink.messages[-1].data)
        values = parsed.get_all("X-Drossel") or []
        assert len(values) == 1, values
        return str(values[0])

    def row(self) -> dict[str, Any]:
        self.enforcer.flush()
        store = self.enforcer.store
        rows = report_rows(store, self.config, self.enforcer.catalog, "default", self.clock())
        (row,) = [r for r in rows if r["server_fqdn"] == SERVER]
        return row

    def at(self, days: float, minute_of_window: int = 0) -> None:
        """Day ``days`` after T0, at the given minute of this server's hourly windows."""
        moment = T0 + timedelta(days=days)
        offset = hour_offset(f"default/{SERVER}")
        self.clock.now = moment.replace(minute=(offset + minute_of_window) % 60)


@pytest.fixture
async def site(tmp_path: Path, sink: NextHopSink, dns_server: DnsServer) -> AsyncIterator[Site]:
    s = Site(tmp_path, sink, dns_server, MutableClock(T0))
    yield s
    await s.stop()


async def test_1_a_blocked_server_is_accepted_on_its_first_patched_message(site: Site) -> None:
    await site.start()
    site.at(0)
    assert await site.send(REAL, OLD_2013) == OK
    site.at(95)
    assert (await site.send(REAL, OLD_2013)).startswith("550 5.7.230")
    assert (await site.send(REAL, OLD_2013)).startswith("550 5.7.230")
    assert await site.send(REAL, CURRENT_SE) == OK  # same address, same EHLO, new build
    assert "status=current" in site.verdict_header()
    row = site.row()
    assert row["remediated"] and (row["stage"], row["throttle_minutes"], row["block_minutes"]) == (
        0,
        0,
        0,
    )


async def test_2_regression_long_after_remediation_starts_a_new_clock(site: Site) -> None:
    await site.start()
    site.at(0)
    assert await site.send(REAL, OLD_2013) == OK
    site.at(40)
    assert await site.send(REAL, CURRENT_SE) == OK  # patched on day 40
    site.at(80, minute_of_window=0)  # regressed on day 80: 40 days after remediation
    assert await site.send(REAL, OLD_2013) == OK  # report stage again, not stage 7
    assert "stage=1" in site.verdict_header()
    row = site.row()
    assert (row["stage"], row["scheduled_stage"], row["applied_reason"]) == (1, 1, None)
    site.at(80 + 31, minute_of_window=0)
    assert (await site.send(REAL, OLD_2013)).startswith("450 4.7.230")  # stage 2 a month later


async def test_3_the_report_shows_what_is_applied(site: Site) -> None:
    await site.start(Policy(rollout={"Exchange 2013": "report-only"}))
    site.at(0)
    assert await site.send(REAL, OLD_2013) == OK
    site.at(120)
    assert await site.send(REAL, OLD_2013) == OK
    assert "stage=0" in site.verdict_header()
    row = site.row()
    assert (row["stage"], row["throttle_minutes"], row["block_minutes"]) == (0, 0, 0)
    assert row["applied_reason"] == "Exchange 2013 is report-only by rollout"
    assert row["scheduled_stage"] == 1  # its clock never ran
    # an override: applied nothing, and says so
    await site.start()
    Services(site.enforcer.store, site.config).add_override(
        None, SERVER, "migration booked", None, "test", site.clock()
    )
    site.enforcer.refresh()
    assert await site.send(REAL, OLD_2013) == OK
    row = site.row()
    assert row["stage"] == 0 and row["applied_reason"] == "override: migration booked"


async def test_4_the_clock_starts_when_enforcement_applies(site: Site) -> None:
    await site.start(Policy(rollout={"Exchange 2013": "report-only"}))
    site.at(0)
    assert await site.send(REAL, OLD_2013) == OK
    site.at(100)
    assert await site.send(REAL, OLD_2013) == OK
    await site.start()  # the product is switched to enforce
    site.at(100.5, minute_of_window=0)
    assert await site.send(REAL, OLD_2013) == OK
    assert "stage=1" in site.verdict_header()
    site.at(100.5 + 30, minute_of_window=0)
    assert (await site.send(REAL, OLD_2013)).startswith("450 4.7.230")  # 30 days later


async def test_5_a_pause_ended_on_its_first_day_costs_that_day(site: Site) -> None:
    await site.start()
    site.at(0)
    assert await site.send(REAL, OLD_2013) == OK
    site.at(95)
    services = Services(site.enforcer.store, site.config)
    pause = services.add_pause("default", site.clock().date(), 10, [], "admin", site.clock())
    ended = services.end_pause(pause.id or 0, "admin", site.clock() + timedelta(hours=1))
    assert ended.days == 1 and services.charged_days("default", site.clock().year) == 1
    site.enforcer.refresh()
    assert await site.send(REAL, OLD_2013) == OK  # paused until midnight
    assert site.row()["applied_reason"] == f"paused until {ended.end.isoformat()}"
    site.at(96)
    site.enforcer.refresh()
    assert (await site.send(REAL, OLD_2013)).startswith("550 5.7.230")


async def test_6_a_forged_header_never_ages_the_real_servers_record(site: Site) -> None:
    await site.start()
    site.at(0)
    forged_at = site.clock()
    # anyone (no confirmed name) claims to be the victim's Exchange server
    assert await site.send(STRANGER, OLD_2013, "forged") == OK
    assert "stage=0" in site.verdict_header()
    row = site.row()
    assert row["evidence"] == "unverified" and row["applied_reason"].startswith("unverified")
    site.at(120, minute_of_window=0)
    assert await site.send(STRANGER, OLD_2013, "forged again") == OK
    # months later the real server's first message: the 30-day report stage, not a block
    assert await site.send(REAL, OLD_2013, "the real one") == OK
    assert "stage=1" in site.verdict_header()
    row = site.row()
    assert (row["evidence"], row["stage"], row["scheduled_stage"]) == ("verified", 1, 1)
    assert row["first_detected"] == forged_at.isoformat()  # the sighting stays history
