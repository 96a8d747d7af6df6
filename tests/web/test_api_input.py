"""Hostile and invalid input to the API: validated, refused with 4xx, never a 500."""

from __future__ import annotations

from datetime import timedelta

import pytest
from drossel_seed import auth

PAUSES = "/api/v1/tenants/contoso/pauses"


@pytest.mark.parametrize(
    "days", [0, -1, 91, 367, "abc", "5", 10**9, 10**30, 2.5, True, None, [], {}]
)
def test_bad_pause_days(client, seeded, days):  # type: ignore[no-untyped-def]
    r = client.post(PAUSES, json={"days": days}, headers=auth("contoso"))
    assert r.status_code == 422, r.text
    assert seeded.store.list_pauses("contoso") == []


def test_pause_days_bounds_ok(client, seeded):  # type: ignore[no-untyped-def]
    r = client.post(PAUSES, json={"days": 1}, headers=auth("contoso"))
    assert r.status_code == 201
    assert r.json()["budget"]["left_days"] == 89
    r = client.post(PAUSES, json={"days": 89}, headers=auth("contoso"))
    assert r.status_code == 201
    assert r.json()["budget"]["left_days"] == 0
    r = client.post(PAUSES, json={"days": 1}, headers=auth("contoso"))
    assert r.status_code == 409
    assert "budget exceeded" in r.json()["detail"]


@pytest.mark.parametrize("start", ["2026-06-30", "2020-01-01", "0001-01-01"])
def test_pause_start_in_past(client, start):  # type: ignore[no-untyped-def]
    r = client.post(PAUSES, json={"days": 5, "start": start}, headers=auth("contoso"))
    assert r.status_code == 422
    assert "past" in r.text


@pytest.mark.parametrize("start", ["tomorrow", "2026-13-01", "9999-99-99", 20260701, ""])
def test_pause_start_not_a_date(client, start):  # type: ignore[no-untyped-def]
    r = client.post(PAUSES, json={"days": 5, "start": start}, headers=auth("contoso"))
    assert r.status_code == 422


def test_pause_start_far_future(client):  # type: ignore[no-untyped-def]
    r = client.post(PAUSES, json={"days": 5, "start": "9999-12-31"}, headers=auth("contoso"))
    assert r.status_code == 422


def test_pause_unknown_or_foreign_server(client, seeded):  # type: ignore[no-untyped-def]
    for server in ("nope.contoso.example", "mail.fabrikam.example"):
        r = client.post(PAUSES, json={"days": 5, "servers": [server]}, headers=auth("contoso"))
        assert r.status_code == 422, r.text
        assert "unknown server" in r.json()["detail"]
    assert seeded.store.list_pauses("contoso") == []


def test_pause_overlong_and_extra_fields(client):  # type: ignore[no-untyped-def]
    r = client.post(PAUSES, json={"days": 5, "servers": ["a" * 256]}, headers=auth("contoso"))
    assert r.status_code == 422
    r = client.post(PAUSES, json={"days": 5, "servers": ["x"] * 201}, headers=auth("contoso"))
    assert r.status_code == 422
    r = client.post(PAUSES, json={"days": 5, "tenant": "fabrikam"}, headers=auth("contoso"))
    assert r.status_code == 422
    r = client.post(
        PAUSES,
        content=b"{not json",
        headers={**auth("contoso"), "content-type": "application/json"},
    )
    assert r.status_code == 422


def test_unknown_things_answer_404(client):  # type: ignore[no-untyped-def]
    h = auth("operator")
    assert client.get("/api/v1/tenants/nobody", headers=h).status_code == 404
    assert client.get("/api/v1/tenants/contoso/servers/nope", headers=h).status_code == 404
    assert client.post(f"{PAUSES}/999/end", headers=h).status_code == 404
    assert client.post(f"{PAUSES}/0/end", headers=h).status_code == 422
    assert client.post(f"{PAUSES}/{10**30}/end", headers=h).status_code == 422
    assert client.delete("/api/v1/overrides/999", headers=h).status_code == 404
    assert client.get("/api/v1/tenants/" + "x" * 201, headers=h).status_code == 422


def test_end_pause_gives_days_back(client, seeded):  # type: ignore[no-untyped-def]
    h = auth("contoso")
    created = client.post(PAUSES, json={"days": 30}, headers=h).json()
    assert created["budget"]["used_days"] == 30
    # two days later it is ended early
    seeded.now = seeded.now + timedelta(days=2)
    ended = client.post(f"{PAUSES}/{created['id']}/end", headers=h)
    assert ended.status_code == 200
    assert ended.json()["budget"]["used_days"] == 3
    assert client.post(f"{PAUSES}/{created['id']}/end", headers=h).status_code == 409


def test_extend_pause(client, seeded):  # type: ignore[no-untyped-def]
    h = auth("contoso")
    created = client.post(
        PAUSES, json={"days": 10, "servers": ["ex01.contoso.example"]}, headers=h
    ).json()
    r = client.post(f"{PAUSES}/{created['id']}/extend", json={"days": 5}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == created["id"] and r.json()["start"] == created["start"]
    assert r.json()["days"] == 15
    assert r.json()["servers"] == ["ex01.contoso.example"]
    assert r.json()["budget"]["used_days"] == 15
    r = client.post(f"{PAUSES}/{created['id']}/extend", json={"days": 80}, headers=h)
    assert r.status_code == 422 and "at most 90 days" in r.text


def test_paused_server_report(client):  # type: ignore[no-untyped-def]
    h = auth("contoso")
    client.post(PAUSES, json={"days": 10, "servers": ["ex01.contoso.example"]}, headers=h)
    rows = {
        r["server_fqdn"]: r for r in client.get("/api/v1/tenants/contoso/servers", headers=h).json()
    }
    assert rows["ex01.contoso.example"]["paused_until"] == "2026-07-11"
    assert rows["ex02.contoso.example"]["paused_until"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"name": "ok", "contacts": ["not-an-address"]},
        {"name": "ok", "contacts": ["a@b.example\r\nBcc: x@y"]},
        {"name": "ok", "display_name": "y" * 201},
        {"name": "ok", "unexpected": 1},
    ],
)
def test_bad_tenant_bodies(client, body):  # type: ignore[no-untyped-def]
    assert client.post("/api/v1/tenants", json=body, headers=auth("operator")).status_code == 422


def test_control_characters_refused(client):  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/tenants", json={"name": "bad\x00name"}, headers=auth("operator"))
    assert r.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "x"},  # neither tenant nor server
        {"server": "a.example", "reason": ""},
        {"server": "a.example", "reason": "r" * 501},
        {"server": "a.example", "reason": "r", "expires": "2020-01-01T00:00:00Z"},
        {"server": "a.example", "reason": "r", "expires": "not a time"},
        {"tenant": "nobody", "reason": "r"},
    ],
)
def test_bad_overrides(client, body):  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/overrides", json=body, headers=auth("operator"))
    assert r.status_code in (400, 404, 422), r.text


def test_naive_override_expiry_is_utc(client):  # type: ignore[no-untyped-def]
    r = client.post(
        "/api/v1/overrides",
        json={"server": "a.example", "reason": "r", "expires": "2026-08-01T00:00:00"},
        headers=auth("operator"),
    )
    assert r.status_code == 201
    assert r.json()["expires"] == "2026-08-01T00:00:00+00:00"


def test_bad_connectors(client):  # type: ignore[no-untyped-def]
    h = auth("operator")
    base = {"tenant": "contoso", "name": "c9"}
    assert client.post("/api/v1/connectors", json=base, headers=h).status_code == 422
    assert (
        client.post(
            "/api/v1/connectors", json={**base, "ip_ranges": ["999.1.1.1"]}, headers=h
        ).status_code
        == 422
    )
    assert (
        client.post(
            "/api/v1/connectors", json={**base, "type": "Evil", "tls_name": "x"}, headers=h
        ).status_code
        == 422
    )
    ok = client.post(
        "/api/v1/connectors", json={**base, "tls_name": "mx.contoso.example"}, headers=h
    )
    assert ok.status_code == 201
    assert (
        client.post("/api/v1/connectors", json={**base, "tls_name": "x"}, headers=h).status_code
        == 409
    )


def test_report_fields_match_cli(client, seeded, capsys):  # type: ignore[no-untyped-def]
    import json

    from drossel.cli.main import main

    db = seeded.store.url
    assert main(["report", "--json", "--db", db, "--at", seeded.now.isoformat()]) == 0
    cli_rows = json.loads(capsys.readouterr().out)
    api_rows = client.get("/api/v1/report", headers=auth("operator")).json()
    assert api_rows == cli_rows
    assert set(api_rows[0]) == set(cli_rows[0])


def test_server_detail_has_90_days(client):  # type: ignore[no-untyped-def]
    d = client.get(
        "/api/v1/tenants/contoso/servers/ex01.contoso.example", headers=auth("contoso")
    ).json()
    assert len(d["daily_counts"]) == 90
    assert d["daily_counts"][-1] == {"day": "2026-07-01", "accept": 40, "throttle": 4, "block": 0}
    assert [s["stage"] for s in d["timeline"]] == list(range(1, 9))
    assert [s["current"] for s in d["timeline"]].index(True) == 1
    assert d["build_history"][0]["build"] == "15.1.2507.16"


def test_openapi_schema(client):  # type: ignore[no-untyped-def]
    schema = client.get("/openapi.json").json()
    assert "/api/v1/tenants/{tenant}/pauses" in schema["paths"]
    days = schema["components"]["schemas"]["PauseIn"]["properties"]["days"]
    assert days["minimum"] == 1
    assert not any(p.startswith("/t/") or p == "/login" for p in schema["paths"])


def test_metrics(client):  # type: ignore[no-untyped-def]
    text = client.get("/metrics").text
    assert 'drossel_servers{status="unsupported"} 3.0' in text
    assert 'drossel_servers{status="current"} 1.0' in text
