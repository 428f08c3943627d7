"""Requests the OpenAPI document allows are accepted by the server (found by schemathesis:
tests/process/test_fuzz.py runs it over every operation)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.app_client import AUTH, create_user

Client = TestClient[Any, Any]


async def test_a_whole_float_ttl_is_a_valid_integer_number_of_seconds(client: Client) -> None:
    """JSON Schema counts 295.0 as a whole number; msgspec's int refused it with 422."""
    user = await create_user(client)
    url = f"/api/users/{user['id']}/tokens"
    assert (await client.post(url, json={"ttl": 295.0}, headers=AUTH)).status == 201
    assert (await client.post(url, json={"ttl": 295}, headers=AUTH)).status == 201
    fraction = await client.post(url, json={"ttl": 295.5}, headers=AUTH)
    assert fraction.status == 422
    assert (await fraction.json())["error"]["field"] == "ttl"
    doc = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    ttl = doc["components"]["schemas"]["IssueToken"]["properties"]["ttl"]
    number = next(option for option in ttl["anyOf"] if option.get("type") == "number")
    assert number["multipleOf"] == 1
    assert number["minimum"] == 1
