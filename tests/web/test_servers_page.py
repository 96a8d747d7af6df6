"""The operator overview page ``/operator/servers`` and ``/api/v1/report``'s filters, sort and
pages: every tenant's servers (the default tenant's too), filters, sorting, paging, today's
counters, hostile parameters, and what a tenant admin may see."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from drossel_seed import ACTOR, Seeded, auth, server
from fastapi.testclient import TestClient
from test_pages import login

from drossel.app.services import Services
from drossel.core.policy import Policy


@pytest.fixture
def more(seeded: Seeded) -> Seeded:
    """The seed (contoso: ex01 stage 2, ex02 stage 1, ex03 current; fabrikam: mail, stage 5)
    plus mail from the whole Internet in the default tenant: an unverified 2013 server, a
    verified 2019 server at stage 8, and one unseen for 90 days."""
    store, now = seeded.store, seeded.now
    store.add_tenant("default", [], ACTOR, now)
    for fqdn, build, product, days, evidence in [
        ("mx.internet.example", "15.0.1497.2", "Exchange 2013", None, "unverified"),
        ("relay.verified.example", "15.2.1748.36", "Exchange 2019", 95, "verified"),
    ]:
        record = server("default", fqdn, days, build=build, product=product)
        store.save_server(replace(record, evidence=evidence), "", now)
    gone = server("default", "gone.example", 120)
    store.save_server(replace(gone, last_seen=now - timedelta(days=90)), "", now)
    store.add_counts({("default", "mx.internet.example", now.date(), "accept"): 500}, now)
    return seeded


def _rows(html: str) -> list[str]:
    """The server names of the table, in order."""
    body = html.split('<table class="servers overview">', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<td class="server"><a href="[^"]*">([^<]+)</a>', body)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def _page(client: TestClient, query: str = "") -> tuple[int, list[str], str]:
    r = client.get("/operator/servers" + (f"?{query}" if query else ""))
    return r.status_code, _rows(r.text) if r.status_code == 200 else [], r.text


ACTIVE = [
    "ex01.contoso.example",
    "ex02.contoso.example",
    "ex03.contoso.example",
    "mail.fabrikam.example",
    "mx.internet.example",
    "relay.verified.example",
]


def test_operators_land_on_every_server_of_every_tenant(client, more):  # type: ignore[no-untyped-def]
    login(client, "operator")
    assert client.get("/", follow_redirects=False).headers["location"] == "/operator/servers"
    status, rows, html = _page(client)
    assert status == 200
    assert rows == ACTIVE  # by name; the default tenant's servers too, not the inactive one
    assert '<a href="/operator/servers">Servers</a>' in html
    text = _text(html)
    # today's counters summed over the matching servers: 40 + 10 + 500 accepted, 4, 2
    assert "6 servers" in text
    assert "550 accepted" in text and "4 throttled (450)" in text and "2 blocked (550)" in text
    assert _page(client, "include_inactive=yes")[1] == sorted([*ACTIVE, "gone.example"])
    # the stage history: bars and a legend, numbers only
    chart = html.split('<svg class="chart stages"', 1)[1].split("</svg>", 1)[0]
    assert chart.count("<rect") > 30 and "stage 8" in chart


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "tenant=contoso",
            ["ex01.contoso.example", "ex02.contoso.example", "ex03.contoso.example"],
        ),
        ("tenant=default", ["mx.internet.example", "relay.verified.example"]),
        ("product=Exchange+SE", ["ex03.contoso.example"]),
        ("product=Exchange+2013", ["mx.internet.example"]),
        ("status=current", ["ex03.contoso.example"]),
        ("stage=8", ["relay.verified.example"]),
        ("stage=2", ["ex01.contoso.example"]),
        ("stage=0", ["ex03.contoso.example", "mx.internet.example"]),
        ("evidence=unverified", ["mx.internet.example"]),
        ("evidence=verified", ["relay.verified.example"]),
        (
            "search=CONTOSO",
            ["ex01.contoso.example", "ex02.contoso.example", "ex03.contoso.example"],
        ),
        ("search=fabrikam.example", ["mail.fabrikam.example"]),
        ("search=%25", []),  # "%" is a character, not a wildcard
        ("paused=yes", []),
        ("overridden=no&evidence=connector&stage=5", ["mail.fabrikam.example"]),
        ("stage=&product=&search=", ACTIVE),  # the form's "all" choices
        ("utm_source=x&page_size=9", ACTIVE),  # unknown parameters are ignored
    ],
)
def test_filters(client, more, query, expected):  # type: ignore[no-untyped-def]
    login(client, "operator")
    status, rows, _ = _page(client, query)
    assert status == 200
    assert rows == expected


def test_paused_and_overridden_filters(client, more):  # type: ignore[no-untyped-def]
    store, now = more.store, more.now
    Services(store, Policy()).add_pause(
        "contoso", now.date(), 5, ["ex01.contoso.example"], ACTOR, now
    )
    store.add_override("fabrikam", None, "migration planned", None, ACTOR, now)
    login(client, "operator")
    assert _page(client, "paused=yes")[1] == ["ex01.contoso.example"]
    assert _page(client, "overridden=yes")[1] == ["mail.fabrikam.example"]
    assert _page(client, "stage=0&tenant=contoso")[1] == [
        "ex01.contoso.example",
        "ex03.contoso.example",
    ]
    assert "ex01.contoso.example" not in _page(client, "paused=no")[1]


def test_sort_and_pages(client, more):  # type: ignore[no-untyped-def]
    login(client, "operator")
    _, rows, html = _page(client, "sort=stage&order=desc")
    assert rows == [
        "relay.verified.example",  # 8
        "mail.fabrikam.example",  # 5
        "ex01.contoso.example",  # 2
        "ex02.contoso.example",  # 1
        "ex03.contoso.example",  # 0, then by name
        "mx.internet.example",
    ]
    # the sorted column's link turns the order round; the others start ascending
    assert 'aria-sort="descending"' in html
    assert 'href="/operator/servers?sort=stage"' in html
    assert _page(client, "sort=accepted&order=desc")[1][:3] == [
        "mx.internet.example",
        "ex01.contoso.example",
        "mail.fabrikam.example",
    ]
    assert _page(client, "sort=tenant")[1][0] == "ex01.contoso.example"
    assert _page(client, "sort=first_seen")[1][0] == "relay.verified.example"
    assert _page(client, "sort=last_seen&include_inactive=yes")[1][0] == "gone.example"
    # pages of 2, in the same order, with the same total
    seen = []
    for number in (1, 2, 3):
        _, rows, html = _page(client, f"sort=stage&order=desc&per_page=2&page={number}")
        assert len(rows) == 2 and "6 servers" in _text(html)
        assert f"page {number} of 3" in html
        seen += rows
    assert seen == _page(client, "sort=stage&order=desc")[1]
    _, rows, html = _page(client, "per_page=2&page=2&tenant=contoso")
    assert rows == ["ex03.contoso.example"]
    assert 'href="/operator/servers?tenant=contoso&amp;per_page=2" rel="prev"' in html
    assert 'rel="next"' not in html
    assert _page(client, "page=9")[1] == []  # past the end: an empty page, no error


@pytest.mark.parametrize(
    "query",
    [
        "stage=9",
        "stage=-1",
        "stage=two",
        "page=0",
        "page=99999999999999999999999",
        "per_page=0",
        "per_page=100000",
        "sort=fqdn;DROP TABLE servers",
        "order=sideways",
        "status=awful",
        "evidence=trust-me",
        "paused=perhaps",
        "search=%00",
        "search=a%0d%0aSet-Cookie:x",
        "tenant=" + "t" * 201,
        "search=" + "s" * 256,
    ],
)
def test_hostile_parameters_are_refused(client, more, query):  # type: ignore[no-untyped-def]
    login(client, "operator")
    r = client.get(f"/operator/servers?{query}")
    assert r.status_code == 422
    assert "Set-Cookie" not in r.text and "DROP TABLE" not in r.text  # never echoed
    api = client.get(f"/api/v1/report?{query}", headers=auth("operator"))
    assert api.status_code == 422


def test_output_is_escaped(client, more):  # type: ignore[no-untyped-def]
    login(client, "operator")
    hostile = "<script>alert(1)</script>"
    _, rows, html = _page(client, "search=" + hostile.replace("<", "%3C").replace(">", "%3E"))
    assert rows == [] and "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # kept in the search box, as text
    record = server("contoso", "<b>x</b>.example", 40)
    more.store.save_server(record, "", more.now)
    _, rows, html = _page(client, "search=example")
    assert "&lt;b&gt;x&lt;/b&gt;.example" in rows and "<b>x</b>" not in html


def test_api_report_stays_a_list_without_paging(client, more):  # type: ignore[no-untyped-def]
    rows = client.get("/api/v1/report", headers=auth("operator")).json()
    assert isinstance(rows, list) and {r["server_fqdn"] for r in rows} == set(ACTIVE)
    assert "today" not in rows[0]
    blank = client.get("/api/v1/report?stage=&search=&page=1", headers=auth("operator")).json()
    assert blank["total"] == 6  # empty values count as absent
    filtered = client.get("/api/v1/report?stage=0&sort=tenant", headers=auth("operator")).json()
    assert [r["server_fqdn"] for r in filtered] == ["ex03.contoso.example", "mx.internet.example"]


def test_api_report_pages(client, more):  # type: ignore[no-untyped-def]
    def get(query: str, who: str = "operator") -> Any:
        r = client.get(f"/api/v1/report?{query}", headers=auth(who))
        assert r.status_code == 200, r.text
        return r.json()

    first = get("page=1&per_page=4&sort=stage&order=desc")
    assert {k: first[k] for k in ("total", "page", "per_page", "pages")} == {
        "total": 6,
        "page": 1,
        "per_page": 4,
        "pages": 2,
    }
    assert first["today"] == {"accept": 550, "throttle": 4, "block": 2}
    assert [r["stage"] for r in first["servers"]] == [8, 5, 2, 1]
    second = get("page=2&per_page=4&sort=stage&order=desc")
    assert [r["server_fqdn"] for r in second["servers"]] == [
        "ex03.contoso.example",
        "mx.internet.example",
    ]
    assert second["servers"][1]["today"] == {"accept": 500, "throttle": 0, "block": 0}
    assert get("per_page=50&evidence=verified")["total"] == 1
    # a tenant admin: its own tenant only, whatever it asks for
    own = get("page=1&include_inactive=true", "contoso")
    assert own["total"] == 3 and {r["tenant"] for r in own["servers"]} == {"contoso"}
    assert own["today"] == {"accept": 40, "throttle": 4, "block": 0}
    assert get("page=1&search=fabrikam", "contoso")["total"] == 0
    r = client.get("/api/v1/report?tenant=fabrikam&page=1", headers=auth("contoso"))
    assert r.status_code == 404 and "mail.fabrikam" not in r.text
    r = client.get("/api/v1/report?tenant=default&stage=8", headers=auth("contoso"))
    assert r.status_code == 404
