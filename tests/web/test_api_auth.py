"""Authorisation matrix: every API endpoint × operator / tenant admin / anonymous × own / other
tenant.  A tenant admin must get 404 for anything of another tenant, 403 for operator-only
changes of its own; anonymous callers 401."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from drossel_seed import ACTOR, Seeded, auth

from drossel.app.services import Services
from drossel.core.policy import Policy

# (method, path, body, operator_only)
TENANT_ENDPOINTS: list[tuple[str, str, Any, bool]] = [
    ("GET", "/api/v1/tenants/{tenant}", None, False),
    ("GET", "/api/v1/tenants/{tenant}/servers", None, False),
    ("GET", "/api/v1/tenants/{tenant}/servers/{server}", None, False),
    ("GET", "/api/v1/tenants/{tenant}/pauses", None, False),
    ("GET", "/api/v1/tenants/{tenant}/budget", None, False),
    ("GET", "/api/v1/report?tenant={tenant}", None, False),
    ("GET", "/api/v1/report?tenant={tenant}&page=1&sort=stage&order=desc", None, False),
    ("GET", "/api/v1/report?tenant={tenant}&stage=2&include_inactive=yes", None, False),
    ("GET", "/api/v1/audit?tenant={tenant}", None, False),
    ("POST", "/api/v1/tenants/{tenant}/pauses", {"days": 3}, False),
    ("POST", "/api/v1/tenants/{tenant}/pauses/{pause}/end", None, False),
    ("POST", "/api/v1/tenants/{tenant}/pauses/{pause}/extend", {"days": 2}, False),
    ("POST", "/api/v1/tenants/{tenant}/contacts", {"email": "new@x.example"}, True),
    (
        "POST",
        "/api/v1/connectors",
        {"tenant": "{tenant}", "name": "c2", "ip_ranges": ["203.0.113.0/24"]},
        True,
    ),
    ("POST", "/api/v1/overrides", {"tenant": "{tenant}", "reason": "false positive"}, True),
    ("DELETE", "/api/v1/overrides/{override}", None, True),
]

SERVERS = {"contoso": "ex01.contoso.example", "fabrikam": "mail.fabrikam.example"}


def _prepare(seeded: Seeded) -> dict[str, dict[str, int]]:
    """A planned pause and an override per tenant, so end/extend/delete have targets."""
    ids: dict[str, dict[str, int]] = {}
    start = seeded.now.date() + timedelta(days=10)
    for tenant in ("contoso", "fabrikam"):
        pause = Services(seeded.store, Policy()).add_pause(tenant, start, 5, [], ACTOR, seeded.now)
        override = seeded.store.add_override(tenant, None, "test", None, ACTOR, seeded.now)
        assert pause.id and override.id
        ids[tenant] = {"pause": pause.id, "override": override.id}
    return ids


def _fill(value: Any, tenant: str, ids: dict[str, int]) -> Any:
    if isinstance(value, str):
        return value.format(
            tenant=tenant, server=SERVERS[tenant], pause=ids["pause"], override=ids["override"]
        )
    if isinstance(value, dict):
        return {k: _fill(v, tenant, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, tenant, ids) for v in value]
    return value


@pytest.mark.parametrize("who", ["operator", "contoso", "anonymous"])
@pytest.mark.parametrize("target", ["contoso", "fabrikam"])
@pytest.mark.parametrize(("method", "path", "body", "operator_only"), TENANT_ENDPOINTS)
def test_tenant_scoped_matrix(client, seeded, who, target, method, path, body, operator_only):  # type: ignore[no-untyped-def]
    ids = _prepare(seeded)
    url = _fill(path, target, ids[target])
    response = client.request(
        method, url, json=_fill(body, target, ids[target]) if body else None, headers=auth(who)
    )
    if who == "anonymous":
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    elif who == "operator":
        assert response.status_code in (200, 201), response.text
    elif operator_only and "{tenant}" not in path:  # operator-only endpoint as such
        assert response.status_code == 403, response.text
    elif target != who:  # a tenant admin asking about another tenant
        assert response.status_code == 404, response.text
        assert "fabrikam" not in response.text.lower() or "unknown" in response.text.lower()
    elif operator_only:
        assert response.status_code == 403, response.text
    else:
        assert response.status_code in (200, 201), response.text


GLOBAL_READS = [
    "/api/v1/me",
    "/api/v1/tenants",
    "/api/v1/report",
    "/api/v1/report?page=1&per_page=200&include_inactive=true",
    "/api/v1/report?sort=tenant&order=desc&search=example",
    "/api/v1/connectors",
    "/api/v1/overrides",
    "/api/v1/audit",
    "/api/v1/catalog",
]


@pytest.mark.parametrize("path", GLOBAL_READS)
def test_global_reads_are_filtered(client, seeded, path):  # type: ignore[no-untyped-def]
    _prepare(seeded)
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer drs_wrong"}).status_code == 401
    operator = client.get(path, headers=auth("operator"))
    tenant = client.get(path, headers=auth("contoso"))
    assert operator.status_code == tenant.status_code == 200
    if path not in ("/api/v1/catalog", "/api/v1/me"):
        assert "fabrikam" in operator.text
        assert "fabrikam" not in tenant.text
    assert "contoso" in tenant.text or path == "/api/v1/catalog"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/tenants", {"name": "newco"}),
        ("POST", "/api/v1/overrides", {"server": "x.example", "reason": "r"}),
        ("DELETE", "/api/v1/overrides/1", None),
    ],
)
def test_operator_only_global_changes(client, method, path, body):  # type: ignore[no-untyped-def]
    assert client.request(method, path, json=body).status_code == 401
    assert client.request(method, path, json=body, headers=auth("contoso")).status_code == 403
    assert client.request(method, path, json=body, headers=auth("operator")).status_code in (
        200,
        201,
        404,  # no override 1 unless created before
    )


def test_changes_are_audited_with_who(client, seeded):  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/tenants/contoso/pauses", json={"days": 4}, headers=auth("contoso"))
    assert r.status_code == 201
    entry = seeded.store.list_audit("contoso")[0]
    assert entry.action == "pause.add"
    assert entry.actor == "web:contoso-admin (tenant-admin of contoso)"
    assert entry.at == seeded.now
    r = client.post(
        "/api/v1/overrides",
        json={"tenant": "contoso", "reason": "wrong build stamp"},
        headers=auth("operator"),
    )
    assert r.status_code == 201
    entry = seeded.store.list_audit("contoso")[0]
    assert (entry.action, entry.actor) == ("override.add", "web:ops-team (operator)")


def test_failed_bearer_logins_are_rate_limited_per_address(client, seeded):  # type: ignore[no-untyped-def]
    limit = seeded.config.web.login_attempts_per_minute
    for i in range(limit):  # different wrong tokens: only the address limit applies
        bad = {"Authorization": f"Bearer drs_guess{i:03d}_xxxxxxxx"}
        assert client.get("/api/v1/me", headers=bad).status_code == 401
    bad = {"Authorization": "Bearer drs_guess999_xxxxxxxx"}
    assert client.get("/api/v1/me", headers=bad).status_code == 429
    # even a good token from that address waits out the minute
    assert client.get("/api/v1/me", headers=auth("operator")).status_code == 429


def test_guessing_one_token_is_limited_without_locking_out_others(client, seeded):  # type: ignore[no-untyped-def]
    """Guesses at one token (same first characters) stop after the per-token limit, from any
    address; other tokens keep working from the same address (behind a proxy, everyone's)."""
    limit = seeded.config.web.token_attempts_per_minute
    target = auth("contoso")["Authorization"].removeprefix("Bearer ")
    for i in range(limit):
        guess = {"Authorization": f"Bearer {target[:12]}wrong{i}"}
        assert client.get("/api/v1/me", headers=guess).status_code == 401
    guess = {"Authorization": f"Bearer {target[:12]}wrongagain"}
    assert client.get("/api/v1/me", headers=guess).status_code == 429
    assert client.get("/api/v1/me", headers=auth("operator")).status_code == 200
    assert client.get("/api/v1/me", headers=auth("fabrikam")).status_code == 200


def test_tokens_are_listed_and_revoked_by_operators_only(client, seeded):  # type: ignore[no-untyped-def]
    assert client.get("/api/v1/tokens").status_code == 401
    assert client.get("/api/v1/tokens", headers=auth("contoso")).status_code == 403
    listed = client.get("/api/v1/tokens", headers=auth("operator"))
    assert listed.status_code == 200
    rows = {row["label"]: row for row in listed.json()}
    assert set(rows) == {"ops-team", "contoso-admin", "fabrikam-admin"}
    assert rows["contoso-admin"]["tenant"] == "contoso"
    assert rows["ops-team"]["last_used"] is not None  # this very request used it
    assert all(row["revoked"] is None for row in rows.values())
    assert "drs_" not in listed.text  # never a token value
    fabrikam = rows["fabrikam-admin"]["id"]
    path = f"/api/v1/tokens/{fabrikam}/revoke"
    assert client.post(path, headers=auth("contoso")).status_code == 403
    assert client.get("/api/v1/me", headers=auth("fabrikam")).status_code == 200
    revoked = client.post(path, headers=auth("operator"))
    assert revoked.status_code == 200 and revoked.json()["revoked"] is not None
    assert client.get("/api/v1/me", headers=auth("fabrikam")).status_code == 401
    assert client.post(path, headers=auth("operator")).status_code == 409
    assert client.post("/api/v1/tokens/4242/revoke", headers=auth("operator")).status_code == 404
    entry = seeded.store.list_audit("fabrikam")[0]
    assert (entry.action, entry.actor) == ("token.revoke", "web:ops-team (operator)")
