"""``drossel demo``: the real gateway, a moving clock, numbers that add up."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from drossel.cli.main import main
from drossel.demo import SERVERS, run_demo


def test_demo_numbers_add_up() -> None:
    summary = run_demo(40, start=datetime(2026, 11, 23, tzinfo=UTC), show=False)
    servers = {s["server"]: s for s in summary["servers"]}
    assert set(servers) == {s.fqdn for s in SERVERS}
    delivered = 0
    for s in servers.values():
        assert s["sent"] == s["accepted"] + s["throttled"] + s["blocked"] + s["deferred"]
        assert s["deferred"] == 0
        assert sum(d["accepted"] for d in s["days"]) == s["accepted"]
        delivered += s["accepted"]
        for day in s["days"][:30]:  # report-only stage: nobody is refused
            assert day["throttled"] == day["blocked"] == 0
    assert summary["delivered_to_next_hop"] == delivered
    for old in ("EX2013.contoso.example", "EX2016.contoso.example"):
        s = servers[old]
        assert sum(d["throttled"] for d in s["days"][30:]) > 0
        assert s["blocked"] == 0  # blocking starts at day 60
        assert s["final_stage"] == 2
    se = servers["MAIL.fabrikam.example"]
    assert se["throttled"] == se["blocked"] == 0 and se["accepted"] == se["sent"]
    statuses = {r["server_fqdn"].lower(): r["status"] for r in summary["report"]}
    assert statuses["mail.fabrikam.example"] == "current"
    assert statuses["ex2013.contoso.example"] == "unsupported"


def test_demo_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--days", "3", "--json", "--at", "2026-11-23T00:00:00Z"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["days"] == 3
    assert all(s["sent"] == s["accepted"] for s in summary["servers"])
