"""The web pages: login, session cookie flags, CSRF, isolation, escaping, pause flow."""

from __future__ import annotations

import re

import pytest
from drossel_seed import ACTOR, TOKENS
from fastapi.testclient import TestClient

from drossel.config import Config, WebConfig
from drossel.core.decision import ServerRecord
from drossel.web.app import create_app


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def login(client: TestClient, who: str) -> None:
    page = client.get("/login")
    r = client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "token": TOKENS[who], "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def test_anonymous_is_sent_to_login(client):  # type: ignore[no-untyped-def]
    for path in ("/", "/t/contoso", "/t/contoso/pauses", "/operator/tenants", "/operator/servers"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/login?next=")


def test_session_cookie_flags(client):  # type: ignore[no-untyped-def]
    page = client.get("/login")
    r = client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "token": TOKENS["contoso"]},
        follow_redirects=False,
    )
    cookie = r.headers["set-cookie"]
    assert "drossel_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http test server, not configured


def test_secure_cookie_when_configured(seeded):  # type: ignore[no-untyped-def]
    config = Config(web=WebConfig(secure_cookies=True))
    with TestClient(
        create_app(seeded.store, config, seeded.clock), base_url="https://testserver"
    ) as c:
        page = c.get("/login")
        r = c.post(
            "/login",
            data={"csrf": csrf_of(page.text), "token": TOKENS["contoso"]},
            follow_redirects=False,
        )
        assert "Secure" in r.headers["set-cookie"].split("drossel_session=")[1].split(",")[0]


def test_login_needs_login_csrf(client):  # type: ignore[no-untyped-def]
    r = client.post("/login", data={"csrf": "forged", "token": TOKENS["contoso"]})
    assert r.status_code == 403
    assert "drossel_session" not in r.headers.get("set-cookie", "")


def test_login_rate_limited_per_ip(client, seeded):  # type: ignore[no-untyped-def]
    for i in range(seeded.config.web.login_attempts_per_minute):
        page = client.get("/login")
        r = client.post("/login", data={"csrf": csrf_of(page.text), "token": f"drs_{i:04d}wrong"})
        assert r.status_code == 401
        assert "not valid" in r.text
    page = client.get("/login")
    r = client.post("/login", data={"csrf": csrf_of(page.text), "token": TOKENS["contoso"]})
    assert r.status_code == 429
    assert "Too many failed logins from your address" in r.text


def test_login_guesses_at_one_token_are_limited(client, seeded):  # type: ignore[no-untyped-def]
    prefix = TOKENS["contoso"][:12]
    for i in range(seeded.config.web.token_attempts_per_minute):
        page = client.get("/login")
        r = client.post("/login", data={"csrf": csrf_of(page.text), "token": f"{prefix}x{i}"})
        assert r.status_code == 401
    page = client.get("/login")
    r = client.post("/login", data={"csrf": csrf_of(page.text), "token": f"{prefix}again"})
    assert r.status_code == 429
    assert "Too many failed logins with this token" in r.text
    login(client, "fabrikam")  # other tokens still log in from the same address


def test_open_redirect_refused(client):  # type: ignore[no-untyped-def]
    page = client.get("/login?next=//evil.example/")
    assert 'value="/"' in page.text
    r = client.post(
        "/login",
        data={
            "csrf": csrf_of(page.text),
            "token": TOKENS["contoso"],
            "next": "https://evil.example",
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/"


def test_tenant_admin_isolation(client):  # type: ignore[no-untyped-def]
    login(client, "contoso")
    assert client.get("/", follow_redirects=False).headers["location"] == "/t/contoso"
    assert client.get("/t/contoso").status_code == 200
    for path in (
        "/t/fabrikam",
        "/t/fabrikam/pauses",
        "/t/fabrikam/audit",
        "/t/fabrikam/servers/mail.fabrikam.example",
        "/t/contoso/servers/mail.fabrikam.example",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "fabrikam.example" not in r.text
    assert client.get("/operator/tenants").status_code == 403
    for path in ("/operator/servers", "/operator/servers?tenant=fabrikam&search=fabrikam"):
        r = client.get(path)
        assert r.status_code == 403 and "fabrikam.example" not in r.text
    r = client.post("/t/fabrikam/pauses", data={"csrf": "x", "days": "5"})
    assert r.status_code == 404


def test_overview_explains_what_happens(client):  # type: ignore[no-untyped-def]
    login(client, "contoso")
    text = re.sub(r"\s+", " ", client.get("/t/contoso").text)
    assert "ex01.contoso.example" in text
    assert "throttled" in text
    assert "Exchange 2016 reached end of extended support" in text  # why
    assert "Migrate to Exchange Server SE" in text  # what to install
    assert "2026-07-06" in text  # next stage date
    assert "90</strong> of 90 pause days left" in text
    assert "fabrikam" not in text


def test_server_page_escapes_evidence(client):  # type: ignore[no-untyped-def]
    login(client, "contoso")
    r = client.get("/t/contoso/servers/ex01.contoso.example")
    assert r.status_code == 200
    assert "<script>alert" not in r.text
    assert "&lt;script&gt;alert(&#39;evidence&#39;)&lt;/script&gt;" in r.text
    assert r.text.count("<svg") >= 2  # timeline and chart
    assert "today" in r.text
    assert "Content-Security-Policy" in r.headers


def test_hostile_names_rendered_escaped(client, seeded):  # type: ignore[no-untyped-def]
    evil = "<img src=x onerror=alert(1)>.evil.example"
    seeded.store.save_server(
        ServerRecord(
            tenant="contoso",
            server=evil,
            first_detected=seeded.now,
            last_seen=seeded.now,
            build="15.1.2507.16",
            product="Exchange 2016",
            status="unsupported",
            clock_start=seeded.now,
        ),
        '"><script>alert(2)</script>',
        seeded.now,
    )
    seeded.store.add_tenant("<b>bold</b>", [], ACTOR, seeded.now, "<script>alert(3)</script>")
    login(client, "operator")
    for path in ("/t/contoso", "/operator/tenants", "/operator/audit"):
        r = client.get(path)
        assert r.status_code == 200
        assert "<img src=x" not in r.text and "<script>alert" not in r.text
        assert "<b>bold" not in r.text
    r = client.get("/t/contoso")
    assert "&lt;img src=x onerror=alert(1)&gt;.evil.example" in r.text


def test_pause_flow_with_csrf(client, seeded):  # type: ignore[no-untyped-def]
    login(client, "contoso")
    page = client.get("/t/contoso/pauses")
    token = csrf_of(page.text)
    # no / wrong CSRF: refused, nothing created
    assert client.post("/t/contoso/pauses", data={"days": "5"}).status_code == 403
    assert (
        client.post("/t/contoso/pauses", data={"days": "5", "csrf": "x" + token}).status_code == 403
    )
    assert seeded.store.list_pauses("contoso") == []
    # hostile values
    for days, expect in (
        ("0", "1 to 90"),
        ("-1", "1 to 90"),
        ("91", "1 to 90"),
        ("abc", "whole number"),
        ("1" * 30, "longer than"),
    ):
        r = client.post("/t/contoso/pauses", data={"csrf": token, "days": days, "scope": "all"})
        assert r.status_code == 400, days
        assert expect in r.text
    r = client.post("/t/contoso/pauses", data={"csrf": token, "days": "5", "start": "2026-06-01"})
    assert r.status_code == 400 and "past" in r.text
    r = client.post("/t/contoso/pauses", data={"csrf": token, "days": "5", "scope": "chosen"})
    assert r.status_code == 400 and "Tick at least one server" in r.text
    r = client.post(
        "/t/contoso/pauses",
        data={"csrf": token, "days": "5", "scope": "chosen", "server": "mail.fabrikam.example"},
    )
    assert r.status_code == 422 and "unknown server" in r.text
    # a good one
    r = client.post(
        "/t/contoso/pauses",
        data={"csrf": token, "days": "60", "scope": "chosen", "server": "ex01.contoso.example"},
    )
    assert r.status_code == 200 and "The pause was created." in r.text
    assert re.search(r'left-days">30<', r.text)
    # over budget: a clear message
    r = client.post("/t/contoso/pauses", data={"csrf": token, "days": "31", "scope": "all"})
    assert r.status_code == 409
    assert "only 30 of 90 days are left for 2026" in r.text
    # end it on the day it started
    pause_id = seeded.store.list_pauses("contoso")[0].id
    r = client.post(f"/t/contoso/pauses/{pause_id}/end", data={"csrf": token})
    # the day it is ended on counts: 89 of 90 days come back
    assert r.status_code == 200 and re.search(r'left-days">89<', r.text)
    audit = seeded.store.list_audit("contoso")
    assert audit[0].action == "pause.end"
    assert audit[0].actor == "web:contoso-admin (tenant-admin of contoso)"


def test_logout(client):  # type: ignore[no-untyped-def]
    login(client, "contoso")
    token = csrf_of(client.get("/t/contoso").text)
    assert client.post("/logout", data={"csrf": "bad"}).status_code == 403
    r = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    client.cookies.clear()
    assert client.get("/t/contoso", follow_redirects=False).status_code == 303


def test_a_copied_cookie_stops_working_after_logout(client, app):  # type: ignore[no-untyped-def]
    login(client, "contoso")
    copied = client.cookies.get("drossel_session")
    assert copied
    with TestClient(app) as thief:
        thief.cookies.set("drossel_session", copied)
        assert thief.get("/t/contoso", follow_redirects=False).status_code == 200
        token = csrf_of(client.get("/t/contoso").text)
        assert (
            client.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
        )
        assert thief.get("/t/contoso", follow_redirects=False).status_code == 303
        assert (
            thief.get("/t/contoso", follow_redirects=False).headers["location"].startswith("/login")
        )


def test_forged_session_cookie(client):  # type: ignore[no-untyped-def]
    client.cookies.set("drossel_session", "eyJ0IjoxLCJlIjo5OTk5OTk5OTk5LCJuIjoieCJ9.forged")
    assert client.get("/t/contoso", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    "path",
    [
        "/operator/servers",
        "/operator/servers?sort=stage&order=desc&stage=2&evidence=connector&paused=no",
        "/operator/tenants",
        "/operator/connectors",
        "/operator/overrides",
        "/operator/catalog",
        "/operator/audit",
        "/operator/catalog?search=CU14",
        "/t/fabrikam",
        "/t/fabrikam/servers/mail.fabrikam.example",
    ],
)
def test_operator_pages(client, path):  # type: ignore[no-untyped-def]
    login(client, "operator")
    assert client.get(path).status_code == 200


def test_tenant_list_counts_what_the_report_shows(client, seeded):  # type: ignore[no-untyped-def]
    """Each tenant's active servers and throttled/blocked servers on the operators' tenant
    list are the counts of its report rows (the list counts them in the store)."""
    from drossel.app.catalog_source import packaged_catalog
    from drossel.app.report import tenant_report

    login(client, "operator")
    text = client.get("/operator/tenants").text
    rows = tenant_report(
        seeded.store, seeded.config.policy, packaged_catalog(), seeded.clock(), None
    )
    assert any(r["throttle_minutes"] or r["block_minutes"] for r in rows)
    for tenant in {r["tenant"] for r in rows}:
        mine = [r for r in rows if r["tenant"] == tenant]
        enforced = sum(1 for r in mine if r["throttle_minutes"] or r["block_minutes"])
        cells = re.search(
            rf'<a href="/t/{tenant}">{tenant}</a></td>(?:\s*<td>[^<]*</td>){{2}}'
            r"\s*<td>(\d+)</td>\s*<td>(\d+)</td>",
            text,
        )
        assert cells, tenant
        assert (int(cells[1]), int(cells[2])) == (len(mine), enforced), tenant


def test_operator_forms(client, seeded):  # type: ignore[no-untyped-def]
    login(client, "operator")
    token = csrf_of(client.get("/operator/tenants").text)
    r = client.post(
        "/operator/tenants",
        data={"csrf": token, "name": "northwind", "contacts": "a@nw.example, b@nw.example"},
    )
    assert "The tenant was added." in r.text
    r = client.post(
        "/operator/tenants/northwind/contacts", data={"csrf": token, "email": "c@nw.example"}
    )
    assert "The contact was added." in r.text
    r = client.post("/operator/tenants/northwind/contacts", data={"csrf": token, "email": "bad"})
    assert r.status_code == 400 and "not a mail address" in r.text
    r = client.post(
        "/operator/connectors",
        data={
            "csrf": token,
            "tenant": "northwind",
            "name": "nw",
            "type": "OnPremises",
            "ip_ranges": "203.0.113.0/24",
        },
    )
    assert "The connector was added." in r.text
    r = client.post(
        "/operator/connectors",
        data={
            "csrf": token,
            "tenant": "northwind",
            "name": "nw2",
            "type": "OnPremises",
            "ip_ranges": "nonsense",
        },
    )
    assert r.status_code == 400
    r = client.post(
        "/operator/overrides",
        data={
            "csrf": token,
            "tenant": "contoso",
            "server": "ex01.contoso.example",
            "reason": "stamps a wrong build",
            "expires": "2026-08-01",
        },
    )
    assert "The override was added." in r.text and "stamps a wrong build" in r.text
    r = client.post(
        "/operator/overrides",
        data={"csrf": token, "server": "x", "reason": "r", "expires": "yesterday"},
    )
    assert r.status_code == 400
    override_id = seeded.store.list_overrides()[0].id
    r = client.post(f"/operator/overrides/{override_id}/remove", data={"csrf": token})
    assert "The override was removed." in r.text
    actions = [e.action for e in seeded.store.list_audit()]
    for action in ("tenant.add", "contact.add", "connector.add", "override.add", "override.remove"):
        assert action in actions
    assert all(e.actor == "web:ops-team (operator)" for e in seeded.store.list_audit()[:5])


def test_pages_show_what_is_applied_and_why(client, seeded):  # type: ignore[no-untyped-def]
    """SPEC §7: an override stops enforcement; the pages say so and what the schedule says."""
    from drossel.app.services import Services

    page = "/t/contoso/servers/ex01.contoso.example"
    login(client, "contoso")
    before = client.get(page).text
    assert "stage 2 of 8" in before and "not enforced" not in before
    Services(seeded.store, seeded.config).add_override(
        "contoso", "ex01.contoso.example", "<b>known false positive</b>", None, ACTOR, seeded.now
    )
    after = client.get(page).text
    assert "not enforced" in after
    assert "nothing: override: &lt;b&gt;known false positive&lt;/b&gt; (schedule: stage 2" in after
    assert "Nothing is throttled or blocked now" in after
    overview = client.get("/t/contoso").text
    assert "override: &lt;b&gt;known false positive&lt;/b&gt;; schedule: stage 2" in overview
