"""The HTTP API over a real socket: every route, its validation and its errors."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.api import ROUTES
from tests.app_client import AUTH, MakeClient, create_user, send

Client = TestClient[Any, Any]

WEBPUSH = {
    "kind": "webpush",
    # A push service on loopback: registered with outbound.allow_private (the default
    # refuses it, tests/api/test_device_endpoints.py).
    "endpoint": "https://localhost:8443/send/abc123",
    "keys": {
        "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u"
        "-Ts1XbjhazAkj7I99e8QcYP7DkM",
        "auth": "tBHItJI5svbpez7KI4CCXg",
    },
}
FCM = {"kind": "fcm", "token": "fcm-token:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx"}
APNS = {"kind": "apns", "token": "a" * 64, "topic": "com.example.app"}


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    error: dict[str, Any] = (await response.json())["error"]
    assert error["code"]
    assert error["message"]
    return error


async def test_healthcheck_needs_no_key_and_reports_components(client: Client) -> None:
    response = await client.get("/api/healthcheck")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["storage"]["ok"] is True
    assert body["bus"]["ok"] is True


@pytest.mark.parametrize(
    "route", [r for r in ROUTES if not r.public], ids=lambda r: f"{r.method} {r.path}"
)
async def test_every_private_route_needs_an_api_key(client: Client, route: Any) -> None:
    path = re.sub(r"{\w+}", "x", route.path)
    for headers in ({}, {"Authorization": "Bearer pk_wrong"}, {"Authorization": "Basic abc"}):
        response = await client.request(route.method, path, headers=headers)
        error = await error_of(response, 401)
        assert error["code"] == "unauthorized"
        assert "WWW-Authenticate" in response.headers


async def test_create_and_get_user(client: Client) -> None:
    user = await create_user(
        client,
        external_id="app-42",
        name="Ada",
        email="ada@example.com",
        phone="+33612345678",
        locale="fr-FR",
        timezone="Europe/Paris",
    )
    assert user["id"].startswith("usr_")
    assert user["last_seq"] == 0
    response = await client.get(f"/api/users/{user['id']}", headers=AUTH)
    assert response.status == 200
    assert await response.json() == user


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"phone": "0612345678"}, "phone"),
        ({"phone": "+0612"}, "phone"),
        ({"email": "not-an-email"}, "email"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"locale": "english please"}, "locale"),
        ({"external_id": ""}, "external_id"),
        ({"name": 12}, "name"),
        ({"nickname": "x"}, "nickname"),
    ],
)
async def test_bad_user_fields_are_named(
    client: Client, fields: dict[str, Any], field: str
) -> None:
    error = await error_of(await client.post("/api/users", json=fields, headers=AUTH), 422)
    assert error["code"] == "validation_failed"
    assert error["field"] == field


async def test_duplicate_external_id_is_a_conflict(client: Client) -> None:
    await create_user(client, external_id="dup")
    error = await error_of(
        await client.post("/api/users", json={"external_id": "dup"}, headers=AUTH), 409
    )
    assert error["field"] == "external_id"


async def test_malformed_json_and_wrong_shapes(client: Client) -> None:
    bad_json = await client.post(
        "/api/users", data=b"{nope", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert (await error_of(bad_json, 400))["code"] == "invalid_json"
    not_object = await client.post("/api/users", json=[1, 2], headers=AUTH)
    assert (await error_of(not_object, 422))["code"] == "validation_failed"
    wrong_type = await client.post(
        "/api/users", data=b"a=b", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert (await error_of(wrong_type, 415))["code"] == "unsupported_media_type"
    empty = await client.post("/api/users", headers=AUTH)
    assert (await error_of(empty, 400))["code"] == "invalid_json"


async def test_list_users_paginates(client: Client) -> None:
    ids = [(await create_user(client, name=f"u{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/api/users", params=params, headers=AUTH)).json()
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids)
    bad = await client.get("/api/users", params={"limit": "0"}, headers=AUTH)
    assert (await error_of(bad, 400))["field"] == "limit"
    bad = await client.get("/api/users", params={"limit": "many"}, headers=AUTH)
    assert (await error_of(bad, 400))["field"] == "limit"


async def test_unknown_user_is_404(client: Client) -> None:
    error = await error_of(await client.get("/api/users/usr_nope", headers=AUTH), 404)
    assert error["code"] == "not_found"


async def test_devices_per_kind(make_client: MakeClient) -> None:
    client = await make_client(outbound={"allow_private": True})
    user = await create_user(client)
    base = f"/api/users/{user['id']}/devices"
    created = []
    for device in (WEBPUSH, FCM, APNS):
        response = await client.post(base, json=device, headers=AUTH)
        assert response.status == 201, await response.text()
        body = await response.json()
        assert body["kind"] == device["kind"]
        created.append(body)
    assert created[0]["keys"] == WEBPUSH["keys"]
    assert created[2]["topic"] == "com.example.app"
    again = await client.post(base, json=FCM, headers=AUTH)
    assert again.status == 200
    assert (await again.json())["id"] == created[1]["id"]
    listed = await (await client.get(base, headers=AUTH)).json()
    assert [d["id"] for d in listed["items"]] == [d["id"] for d in created]
    assert (await client.delete(f"{base}/{created[0]['id']}", headers=AUTH)).status == 204
    await error_of(await client.delete(f"{base}/{created[0]['id']}", headers=AUTH), 404)


@pytest.mark.parametrize(
    ("device", "field"),
    [
        ({"kind": "carrier-pigeon", "token": "x"}, "kind"),
        (
            {"kind": "webpush", "endpoint": "http://insecure.test/x", "keys": WEBPUSH["keys"]},
            "endpoint",
        ),
        ({"kind": "webpush", "endpoint": WEBPUSH["endpoint"]}, "keys"),
        (
            {
                "kind": "webpush",
                "endpoint": WEBPUSH["endpoint"],
                "keys": {"p256dh": "!!", "auth": "x"},
            },
            "keys.p256dh",
        ),
        ({"kind": "fcm"}, "token"),
        ({"kind": "apns", "token": "not-hex"}, "token"),
        ({"token": "abc"}, "kind"),
    ],
)
async def test_bad_devices_are_named(client: Client, device: dict[str, Any], field: str) -> None:
    user = await create_user(client)
    response = await client.post(f"/api/users/{user['id']}/devices", json=device, headers=AUTH)
    assert (await error_of(response, 422))["field"] == field


async def test_device_for_unknown_user_is_404(client: Client) -> None:
    response = await client.post("/api/users/usr_nope/devices", json=FCM, headers=AUTH)
    assert (await error_of(response, 404))["field"] == "userId"


async def test_send_and_read_notifications(client: Client) -> None:
    user = await create_user(client, external_id="reader")
    first = await send(
        client, user["id"], body="one", data={"k": [1, 2]}, category="billing", priority="high"
    )
    second_response = await client.post(
        "/api/notifications", json={"external_id": "reader", "body": "two"}, headers=AUTH
    )
    assert second_response.status == 202
    second = await second_response.json()
    assert (first["seq"], second["seq"]) == (1, 2)
    assert second_response.headers["Location"] == f"/api/notifications/{second['id']}"

    one = await (await client.get(f"/api/notifications/{first['id']}", headers=AUTH)).json()
    assert one["body"] == "one"
    assert one["data"] == {"k": [1, 2]}
    assert one["category"] == "billing"
    assert one["priority"] == "high"

    for i in range(3, 8):
        await send(client, user["id"], body=str(i))
    seqs: list[int] = []
    cursor: str | None = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await (
            await client.get(f"/api/notifications/user/{user['id']}", params=params, headers=AUTH)
        ).json()
        seqs += [n["seq"] for n in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seqs == [7, 6, 5, 4, 3, 2, 1]
    assert (await (await client.get(f"/api/users/{user['id']}", headers=AUTH)).json())[
        "last_seq"
    ] == 7


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"title": "no recipient"}, 422, "user_id"),
        ({"user_id": "USER", "external_id": "x", "title": "both"}, 422, "user_id"),
        ({"user_id": "USER"}, 422, "title"),
        ({"user_id": "USER", "title": "t", "priority": "urgent"}, 422, "priority"),
        ({"user_id": "USER", "title": "t", "data": [1]}, 422, "data"),
        ({"user_id": "USER", "title": "t", "category": "Has Spaces"}, 422, "category"),
        ({"user_id": "USER", "title": "t" * 2000}, 422, "title"),
        ({"user_id": "usr_nope", "title": "t"}, 404, "user_id"),
        ({"external_id": "nobody", "title": "t"}, 404, "external_id"),
    ],
)
async def test_bad_notifications_are_named(
    client: Client, payload: dict[str, Any], status: int, field: str
) -> None:
    user = await create_user(client)
    if payload.get("user_id") == "USER":
        payload = {**payload, "user_id": user["id"]}
    response = await client.post("/api/notifications", json=payload, headers=AUTH)
    assert (await error_of(response, status))["field"] == field


async def test_unknown_notification_and_bad_cursor(client: Client) -> None:
    await error_of(await client.get("/api/notifications/ntf_nope", headers=AUTH), 404)
    user = await create_user(client)
    response = await client.get(
        f"/api/notifications/user/{user['id']}", params={"cursor": "x"}, headers=AUTH
    )
    assert (await error_of(response, 400))["field"] == "cursor"


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    assert (await error_of(await client.get("/api/nothing-here", headers=AUTH), 404))[
        "code"
    ] == "route_not_found"
    response = await client.put("/api/users", headers=AUTH)
    assert (await error_of(response, 405))["code"] == "method_not_allowed"


async def test_body_size_is_capped(make_client: MakeClient) -> None:
    client = await make_client(server={"max_body_bytes": 1024})
    response = await client.post("/api/users", json={"name": "x" * 4096}, headers=AUTH)
    assert (await error_of(response, 413))["code"] == "payload_too_large"


async def test_tokens(client: Client) -> None:
    user = await create_user(client)
    response = await client.post(f"/api/users/{user['id']}/tokens", headers=AUTH)
    assert response.status == 201
    body = await response.json()
    assert body["token"].count(".") == 2
    assert body["expires_at"].endswith("Z") or "+00:00" in body["expires_at"]
    too_long = await client.post(
        f"/api/users/{user['id']}/tokens", json={"ttl": 10**9}, headers=AUTH
    )
    assert (await error_of(too_long, 422))["field"] == "ttl"
    await error_of(await client.post("/api/users/usr_nope/tokens", headers=AUTH), 404)


async def test_openapi_describes_exactly_the_served_routes(client: Client) -> None:
    doc = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert documented == served
    metrics = doc["paths"]["/metrics"]["get"]
    assert list(metrics["responses"]["200"]["content"]) == ["text/plain"]
    assert metrics["x-roles"] == ["admin", "publisher", "reader"]
    console = doc["paths"]["/console"]["get"]
    assert list(console["responses"]["200"]["content"]) == ["text/html"]
    assert console["security"] == []
    ws = doc["paths"]["/ws"]["get"]
    assert ws["security"] == []
    assert set(ws["responses"]) == {"101", "400"}
    upgrade = next(p for p in ws["parameters"] if p["name"] == "Upgrade")
    assert upgrade == {
        "name": "Upgrade",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "enum": ["websocket"]},
    }
    send_op = doc["paths"]["/api/notifications"]["post"]
    assert "202" in send_op["responses"]
    assert "422" in send_op["responses"]
    schema_ref = send_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema_ref.rsplit("/", 1)[-1] in doc["components"]["schemas"]


async def test_unknown_recipient_does_not_fail_its_batch_neighbours(client: Client) -> None:
    """The committer checks recipients inside the batch insert: one unknown user_id among
    concurrent requests must get its 404 while every other request still gets 202."""
    user = await create_user(client)

    async def post(user_id: str) -> int:
        body = {"user_id": user_id, "title": "t"}
        response = await client.post("/api/notifications", json=body, headers=AUTH)
        return response.status

    targets = [user["id"] if i % 3 else "usr_missing" for i in range(60)]
    statuses = await asyncio.gather(*(post(t) for t in targets))
    assert statuses == [202 if t == user["id"] else 404 for t in targets]
    last_seq = (await (await client.get(f"/api/users/{user['id']}", headers=AUTH)).json())[
        "last_seq"
    ]
    assert last_seq == targets.count(user["id"])


async def test_metrics_need_a_key_and_count_what_happened(client: Client) -> None:
    assert (await client.get("/metrics")).status == 401
    user = await create_user(client)
    for _ in range(3):
        await send(client, user["id"])
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    text = await response.text()
    assert "pushd_notifications_accepted_total 3" in text
    assert "pushd_websocket_connections" in text


async def test_stats_and_console(client: Client) -> None:
    assert (await client.get("/api/stats")).status == 401
    user = await create_user(client)
    await send(client, user["id"])
    stats = await (await client.get("/api/stats", headers=AUTH)).json()
    assert stats["notifications_accepted"] == 1
    assert stats["notifications_committed"] == 1
    assert stats["bus_healthy"] is True
    page = await client.get("/console")
    assert page.status == 200
    assert "/console/assets/console.js" in await page.text()


async def test_openapi_states_the_rules_handlers_check(client: Client) -> None:
    """Found by a schemathesis run: requests valid for the document were refused by the
    server. The document now carries those rules, so the two agree."""
    doc = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    schemas = doc["components"]["schemas"]
    assert "allOf" in schemas["SendNotification"]
    zones = next(o for o in schemas["CreateUser"]["properties"]["timezone"]["anyOf"] if "enum" in o)
    assert "Europe/Paris" in zones["enum"]
    ttl = next(o for o in schemas["IssueToken"]["properties"]["ttl"]["anyOf"] if "maximum" in o)
    assert ttl["maximum"] == 86400
    send = doc["paths"]["/api/notifications"]["post"]["responses"]
    assert "404" in send
    assert "409" in doc["paths"]["/api/users"]["post"]["responses"]
