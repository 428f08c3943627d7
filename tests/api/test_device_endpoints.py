"""Web push endpoints are outbound URLs (issue #10, "Also"): registering one that points
inside the network (`https://169.254.169.254/...`, loopback, private ranges) is a 422
naming `endpoint`, unless `outbound.allow_private` says otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from tests.app_client import AUTH, MakeClient, create_user

KEYS = {
    "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u"
    "-Ts1XbjhazAkj7I99e8QcYP7DkM",
    "auth": "tBHItJI5svbpez7KI4CCXg",
}


def webpush(endpoint: str) -> dict[str, Any]:
    return {"kind": "webpush", "endpoint": endpoint, "keys": KEYS}


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1:8443/push",
        "https://[::ffff:10.0.0.1]/push",
        "https://localhost/push",
        "https://push.example.invalid/push",
    ],
)
async def test_endpoints_inside_the_network_are_refused(
    make_client: MakeClient, endpoint: str
) -> None:
    client = await make_client()
    user = await create_user(client)
    response = await client.post(
        f"/api/users/{user['id']}/devices", json=webpush(endpoint), headers=AUTH
    )
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == ("validation_failed", "endpoint")
    listed = await client.get(f"/api/users/{user['id']}/devices", headers=AUTH)
    assert (await listed.json())["items"] == []


async def test_allow_private_lets_a_loopback_push_service_register(
    make_client: MakeClient,
) -> None:
    client = await make_client(outbound={"allow_private": True})
    user = await create_user(client)
    response = await client.post(
        f"/api/users/{user['id']}/devices",
        json=webpush("https://localhost:8443/push"),
        headers=AUTH,
    )
    assert response.status == 201, await response.text()
