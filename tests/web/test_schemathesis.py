"""Property-based API test from the OpenAPI schema: no input makes the API fail (5xx), for an
operator and a tenant admin.  Small and deterministic (derandomised, few examples)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from drossel_seed import auth  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402


@pytest.fixture
def api_schema(app):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=6,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_fails(case):  # type: ignore[no-untyped-def]
    for who in ("operator", "contoso", "anonymous"):
        response = case.call(headers=auth(who))
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500
