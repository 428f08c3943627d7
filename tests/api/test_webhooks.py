"""`/api/webhooks` (pushd/api/webhooks.py) over a real app: registration with the
outbound URL check, listing, secret rotation, enabling, deletion, and who may call it.
The events themselves reaching an endpoint are tests/channels/test_webhook_events.py."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from pushd.channels.webhooks import SECRET_PREFIX
from tests.app_client import AUTH, create_key

Client = TestClient[Any, Any]
# An IP literal is its own address: the real outbound check passes it without DNS.
PUBLIC_URL = "https://93.184.216.34/hooks/pushd"
BOTH = ["notification.accepted", "delivery.updated"]


async def register(client: Client, **fields: Any) -> dict[str, Any]:
    body = {"url": PUBLIC_URL, "event_types": BOTH, **fields}
    response = await client.post("/api/webhooks", json=body, headers=AUTH)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def test_register_shows_the_secret_once(client: Client) -> None:
    created = await register(client, description="CRM")
    secret, webhook = created["secret"], created["webhook"]
    assert secret.startswith(SECRET_PREFIX)
    assert webhook["url"] == PUBLIC_URL
    assert webhook["event_types"] == BOTH
    assert (webhook["enabled"], webhook["disabled_reason"], webhook["consecutive_failures"]) == (
        True,
        None,
        0,
    )
    [current] = webhook["secrets"]
    assert current["expires_at"] is None
    response = await client.get(f"/api/webhooks/{webhook['id']}", headers=AUTH)
    assert response.status == 200
    fetched = await response.json()
    assert fetched == webhook
    assert secret not in await response.text()
    # Sealed at rest, handed to the sender as it is.
    addresses = await client.app[STORAGE].webhook_addresses([webhook["id"]], now=0)
    assert addresses[webhook["id"]]["secret"] == secret


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://93.184.216.34/hook", "https://"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://user:pw@93.184.216.34/hook", "user name or password"),
    ],
)
async def test_urls_pushd_must_not_call_are_422_naming_url(
    client: Client, url: str, said: str
) -> None:
    response = await client.post(
        "/api/webhooks", json={"url": url, "event_types": BOTH}, headers=AUTH
    )
    assert response.status == 422
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == ("validation_failed", "url")
    assert said in error["message"]
    assert (await (await client.get("/api/webhooks", headers=AUTH)).json())["items"] == []


async def test_unknown_event_type_is_422(client: Client) -> None:
    response = await client.post(
        "/api/webhooks", json={"url": PUBLIC_URL, "event_types": ["everything"]}, headers=AUTH
    )
    assert response.status == 422
    assert (await response.json())["error"]["field"] == "event_types[0]"


async def test_list_pages_by_id(client: Client) -> None:
    ids = [(await register(client))["webhook"]["id"] for _ in range(3)]
    first = await (await client.get("/api/webhooks?limit=2", headers=AUTH)).json()
    assert [w["id"] for w in first["items"]] == sorted(ids)[:2]
    rest = await (
        await client.get(f"/api/webhooks?limit=2&cursor={first['next_cursor']}", headers=AUTH)
    ).json()
    assert [w["id"] for w in rest["items"]] == sorted(ids)[2:]
    assert rest["next_cursor"] is None


async def test_rotation_keeps_the_old_secret_signing_for_the_overlap(make_client: Any) -> None:
    client = await make_client(channels={"webhook": {"secret_overlap": 3600.0}})
    created = await register(client)
    webhook_id = created["webhook"]["id"]
    response = await client.post(f"/api/webhooks/{webhook_id}/rotate-secret", headers=AUTH)
    assert response.status == 200, await response.text()
    rotated = await response.json()
    assert rotated["secret"].startswith(SECRET_PREFIX)
    assert rotated["secret"] != created["secret"]
    new, old = rotated["webhook"]["secrets"]
    assert new["expires_at"] is None
    assert old["id"] == created["webhook"]["secrets"][0]["id"]
    assert old["expires_at"] is not None
    addresses = await client.app[STORAGE].webhook_addresses([webhook_id], now=0)
    assert addresses[webhook_id]["secret"] == f"{rotated['secret']},{created['secret']}"


async def test_rotation_without_overlap_retires_the_old_secret(make_client: Any) -> None:
    client = await make_client(channels={"webhook": {"secret_overlap": 0.0}})
    webhook_id = (await register(client))["webhook"]["id"]
    rotated = await (
        await client.post(f"/api/webhooks/{webhook_id}/rotate-secret", headers=AUTH)
    ).json()
    assert [s["expires_at"] for s in rotated["webhook"]["secrets"]] == [None]


async def test_enable_and_delete(client: Client) -> None:
    webhook_id = (await register(client))["webhook"]["id"]
    response = await client.post(f"/api/webhooks/{webhook_id}/enable", headers=AUTH)
    assert response.status == 200
    assert (await response.json())["enabled"] is True
    response = await client.delete(f"/api/webhooks/{webhook_id}", headers=AUTH)
    assert response.status == 204
    for method, path in [
        ("GET", f"/api/webhooks/{webhook_id}"),
        ("DELETE", f"/api/webhooks/{webhook_id}"),
        ("POST", f"/api/webhooks/{webhook_id}/enable"),
        ("POST", f"/api/webhooks/{webhook_id}/rotate-secret"),
    ]:
        response = await client.request(method, path, headers=AUTH)
        assert response.status == 404, (method, path)
        assert (await response.json())["error"]["field"] == "webhookId"


async def test_only_admin_keys_manage_webhooks(client: Client) -> None:
    webhook_id = (await register(client))["webhook"]["id"]
    publisher, _ = await create_key(client, "publisher")
    as_publisher = {"Authorization": f"Bearer {publisher}"}
    for method, path in [
        ("GET", "/api/webhooks"),
        ("POST", "/api/webhooks"),
        ("GET", f"/api/webhooks/{webhook_id}"),
        ("POST", f"/api/webhooks/{webhook_id}/rotate-secret"),
    ]:
        response = await client.request(method, path, headers=as_publisher)
        assert response.status == 403, (method, path)
    response = await client.get("/api/webhooks")
    assert response.status == 401
