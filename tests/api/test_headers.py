"""Security headers on every response, and CORS for configured origins only."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.api.headers import API_CSP
from tests.app_client import AUTH, MakeClient

Client = TestClient[Any, Any]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/stats", AUTH, 200),
        ("GET", "/api/healthcheck", {}, 200),
        ("GET", "/api/stats", {}, 401),
        ("POST", "/api/users", {**AUTH, "Content-Type": "application/json"}, 400),
        ("GET", "/api/nothing-here", AUTH, 404),
        ("PUT", "/api/users", AUTH, 405),
        ("GET", "/metrics", AUTH, 200),
        ("GET", "/ws", {}, 400),  # not an upgrade request
    ],
)
async def test_every_response_carries_the_security_headers(
    client: Client, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = await client.request(method, path, headers=headers)
    assert response.status == status
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert response.headers["Content-Security-Policy"] == API_CSP
    assert response.headers["Cache-Control"] == "no-store"
    # Plain HTTP: HSTS is only sent over TLS (tests/process/test_tls.py).
    assert "Strict-Transport-Security" not in response.headers
    assert "Access-Control-Allow-Origin" not in response.headers


ORIGIN = "https://app.example.test"


def preflight(method: str = "POST") -> dict[str, str]:
    return {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_preflight_from_an_allowed_origin_is_answered_without_a_key(
    make_client: MakeClient,
) -> None:
    client = await make_client(http={"cors_origins": [ORIGIN, "https://other.test"]})
    response = await client.options("/api/notifications", headers=preflight())
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers
    assert "Origin" in response.headers.getall("Vary")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # With a path parameter, and for a GET route.
    response = await client.options("/api/users/usr_x/devices", headers=preflight("GET"))
    assert response.status == 204
    assert "GET" in response.headers["Access-Control-Allow-Methods"]


async def test_responses_name_allowed_origins_only(make_client: MakeClient) -> None:
    client = await make_client(http={"cors_origins": [ORIGIN]})
    allowed = await client.get("/api/stats", headers={**AUTH, "Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Retry-After" in allowed.headers["Access-Control-Expose-Headers"]
    # Errors too: a page must be able to read why its call failed.
    denied_key = await client.get("/api/stats", headers={"Origin": ORIGIN})
    assert denied_key.status == 401
    assert denied_key.headers["Access-Control-Allow-Origin"] == ORIGIN

    stranger = {"Origin": "https://evil.test"}
    response = await client.get("/api/stats", headers={**AUTH, **stranger})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await client.options("/api/notifications", headers={**preflight(), **stranger})
    assert response.status == 204
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers


async def test_a_wildcard_allows_any_origin(make_client: MakeClient) -> None:
    client = await make_client(http={"cors_origins": ["*"]})
    response = await client.get("/api/stats", headers={**AUTH, "Origin": "https://any.test"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    response = await client.options(
        "/api/users", headers={**preflight(), "Origin": "https://any.test"}
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_options_that_is_not_a_preflight_stays_an_error(make_client: MakeClient) -> None:
    client = await make_client(http={"cors_origins": [ORIGIN]})
    plain = await client.options("/api/users")
    assert plain.status == 405
    assert (await plain.json())["error"]["code"] == "method_not_allowed"
    unknown = await client.options("/api/nothing-here", headers=preflight())
    assert unknown.status == 404
    assert (await unknown.json())["error"]["code"] == "route_not_found"
