"""User tags and attributes over the real app: set on create, replaced with PATCH, read
back and exported, refused with a 422 naming the field."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.app_client import AUTH, create_user

Client = TestClient[Any, Any]


async def test_tags_and_attributes_on_create_patch_get_and_export(client: Client) -> None:
    user = await create_user(
        client, tags=["beta", "plan:pro", "beta"], attributes={"seats": 3, "vip": True}
    )
    assert user["tags"] == ["beta", "plan:pro"]  # a set: repeats dropped, sorted
    assert user["attributes"] == {"seats": 3, "vip": True}
    patched = await client.patch(
        f"/api/users/{user['id']}", json={"attributes": {"plan": "team"}}, headers=AUTH
    )
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["tags"] == ["beta", "plan:pro"]  # left out: kept
    read = await (await client.get(f"/api/users/{user['id']}", headers=AUTH)).json()
    assert (read["tags"], read["attributes"]) == (["beta", "plan:pro"], {"plan": "team"})
    export = await (await client.get(f"/api/users/{user['id']}/export", headers=AUTH)).json()
    assert export["user"]["attributes"] == {"plan": "team"}
    plain = await create_user(client)
    assert (plain["tags"], plain["attributes"]) == ([], {})
    missing = await client.patch("/api/users/usr_ghost", json={"tags": []}, headers=AUTH)
    assert missing.status == 404


async def test_invalid_tags_and_attributes_are_named(client: Client) -> None:
    user = await create_user(client)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tags": ["has space"]}, "tags[0]"),
        ({"tags": ["x" * 65]}, "tags[0]"),
        ({"tags": [f"t{i}" for i in range(65)]}, "tags"),
        ({"attributes": {"nested": {"a": 1}}}, "attributes"),
        ({"attributes": {"list": [1]}}, "attributes"),
        ({"attributes": {f"k{i}": i for i in range(65)}}, "attributes"),
        ({"attributes": {f"k{i}": "v" * 1000 for i in range(5)}}, "attributes"),
        ({"attributes": {"bad key": 1}}, "attributes"),
    ]
    for body, field in cases:
        for method, path in (("POST", "/api/users"), ("PATCH", f"/api/users/{user['id']}")):
            response = await client.request(method, path, json=body, headers=AUTH)
            assert response.status == 422, (method, body)
            error = (await response.json())["error"]
            assert error["field"] == field, (method, body, error)
