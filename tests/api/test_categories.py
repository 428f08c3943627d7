"""Categories over a real app (pushd/api/categories.py): the routes, config-defined
categories being read-only, unknown categories refused when the server says so, and a
category's plan, opt-out and per-channel defaults taking effect on the next send."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from storage.records import ChannelDeliveryRecord
from tests.app_client import AUTH, MakeClient, create_key, create_user, send

Client = TestClient[Any, Any]
# Never contacted: every email and SMS step below is skipped or planned for later.
RELAY = {
    "name": "relay",
    "host": "127.0.0.1",
    "port": 2,
    "security": "none",
    "from_address": "pushd@example.com",
}
SMS = {
    "name": "sms",
    "kind": "http",
    "url": "https://sms.example.com/send",
    "from_number": "+15550000000",
}
LATER = 600.0
SECURITY = {
    "name": "Security",
    "opt_out": False,
    "plan": [{"channel": "email", "delay": LATER}],
}


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        channels={"email": [RELAY]},
        routing={"categories": {"security": SECURITY}},
    )


async def deliveries(client: Client, notification_id: str) -> dict[str, ChannelDeliveryRecord]:
    rows: list[ChannelDeliveryRecord] = await client.app[STORAGE].channel_deliveries_of(
        notification_id
    )
    return {row.channel: row for row in rows}


async def put(client: Client, slug: str, body: dict[str, Any], headers: Any = None) -> Any:
    return await client.put(f"/api/categories/{slug}", json=body, headers=headers or AUTH)


async def test_put_get_list_and_delete(client: Client) -> None:
    body = {"name": "News", "channels": {"sms": False}, "digest_window": 3600, "retention": 86400}
    created = await put(client, "news", body)
    assert created.status == 201
    view = await created.json()
    assert view["slug"] == "news"
    assert view["source"] == "api"
    assert (view["channels"], view["digest_window"], view["retention"]) == (
        {"sms": False},
        3600,
        86400,
    )
    assert view["opt_out"] is True
    assert view["updated_at"] is not None
    replaced = await put(client, "news", {"name": "Newsletter"})
    assert replaced.status == 200
    assert (await replaced.json())["channels"] == {}  # a PUT replaces the whole definition

    listed = await (await client.get("/api/categories", headers=AUTH)).json()
    assert [(c["slug"], c["source"]) for c in listed["items"]] == [
        ("news", "api"),
        ("security", "config"),
    ]
    got = await client.get("/api/categories/news", headers=AUTH)
    assert (await got.json())["name"] == "Newsletter"

    assert (await client.delete("/api/categories/news", headers=AUTH)).status == 204
    assert (await client.get("/api/categories/news", headers=AUTH)).status == 404
    assert (await client.delete("/api/categories/news", headers=AUTH)).status == 404
    # A slug that cannot be one is simply not there.
    assert (await client.get("/api/categories/Not%20A%20Slug", headers=AUTH)).status == 404


async def test_config_categories_are_read_only(client: Client) -> None:
    got = await (await client.get("/api/categories/security", headers=AUTH)).json()
    assert (got["source"], got["opt_out"], got["updated_at"]) == ("config", False, None)
    for response in (
        await put(client, "security", {"name": "Mine now"}),
        await client.delete("/api/categories/security", headers=AUTH),
    ):
        assert response.status == 409
        assert (await response.json())["error"]["field"] == "slug"


async def test_only_admins_change_categories_and_any_key_reads(client: Client) -> None:
    publisher, _ = await create_key(client, "publisher")
    reader, _ = await create_key(client, "reader")
    bearer = {"Authorization": f"Bearer {publisher}"}
    assert (await put(client, "news", {"name": "News"}, bearer)).status == 403
    reading = {"Authorization": f"Bearer {reader}"}
    assert (await client.get("/api/categories/security", headers=reading)).status == 200


@pytest.mark.parametrize(
    ("slug", "body", "field"),
    [
        ("news", {}, "name"),
        ("news", {"name": "News", "channels": {"fax": True}}, "channels"),
        ("news", {"name": "News", "digest_window": -1}, "digest_window"),
        ("news", {"name": "News", "plan": [{"channel": "pigeon"}]}, "plan[0].channel"),
        (
            "alerts",
            {"name": "Alerts", "opt_out": False, "channels": {"sms": False}},
            "channels.sms",
        ),
        ("Not-A-Slug", {"name": "News"}, "slug"),
        ("default", {"name": "Default"}, "slug"),
    ],
)
async def test_bad_definitions_are_422_naming_the_field(
    client: Client, slug: str, body: dict[str, Any], field: str
) -> None:
    response = await put(client, slug, body)
    assert response.status == 422
    assert (await response.json())["error"]["field"] == field


async def test_the_category_plan_and_opt_out_take_effect(client: Client) -> None:
    user = await create_user(client, email="ada@example.com")
    muted = await client.patch(
        f"/api/users/{user['id']}/preferences", json={"muted": True}, headers=AUTH
    )
    assert muted.status == 200
    # The category's own plan, and its opt_out = false beats the mute.
    security = await send(client, user["id"], category="security")
    email = (await deliveries(client, security["id"]))["email"]
    assert (email.status, email.reason) == ("scheduled", None)
    # The same user's other categories are muted.
    await put(client, "news", {"name": "News", "plan": [{"channel": "email", "delay": LATER}]})
    news = await send(client, user["id"], category="news")
    email = (await deliveries(client, news["id"]))["email"]
    assert (email.status, email.reason) == ("skipped", "preference")


async def test_a_channel_default_off_skips_until_the_user_turns_it_on(
    make_client: MakeClient,
) -> None:
    client = await make_client(channels={"email": [RELAY], "sms": [SMS]})
    plan = [{"channel": "email", "delay": LATER}, {"channel": "sms", "delay": LATER}]
    assert (
        await put(client, "news", {"name": "News", "plan": plan, "channels": {"sms": False}})
    ).status == 201
    user = await create_user(client, email="ada@example.com", phone="+15551234567")
    first = await deliveries(client, (await send(client, user["id"], category="news"))["id"])
    assert (first["sms"].status, first["sms"].reason) == ("skipped", "preference")
    assert first["email"].status == "scheduled"
    turned_on = {"categories": {"news": {"sms": True}}}
    response = await client.patch(
        f"/api/users/{user['id']}/preferences", json=turned_on, headers=AUTH
    )
    assert response.status == 200
    second = await deliveries(client, (await send(client, user["id"], category="news"))["id"])
    assert second["sms"].status == "scheduled"


async def test_unknown_categories_are_refused_when_the_server_says_so(
    make_client: MakeClient,
) -> None:
    client = await make_client(
        channels={"email": [RELAY]},
        routing={"allow_unknown_categories": False, "categories": {"security": SECURITY}},
    )
    user = await create_user(client)
    single = await client.post(
        "/api/notifications",
        json={"user_id": user["id"], "title": "Hi", "category": "nonsense"},
        headers=AUTH,
    )
    assert single.status == 422
    error = (await single.json())["error"]
    assert error["field"] == "category"
    assert "nonsense" in error["message"]
    batch = await client.post(
        "/api/notifications/batch",
        json={"items": [{"user_id": user["id"], "title": "Hi", "category": "nonsense"}]},
        headers=AUTH,
    )
    [item] = (await batch.json())["results"]
    assert item["status"] == 422
    assert item["error"]["field"] == "items[0].category"
    topic = await client.post("/api/topics", json={"slug": "watchers", "name": "W"}, headers=AUTH)
    assert topic.status == 201
    to_topic = await client.post(
        "/api/notifications",
        json={"topic": "watchers", "title": "Hi", "category": "nonsense"},
        headers=AUTH,
    )
    assert to_topic.status == 422
    assert (await to_topic.json())["error"]["field"] == "category"
    # Defined ones, and no category at all, still go through.
    await send(client, user["id"], category="security")
    await send(client, user["id"])
    assert (await put(client, "nonsense", {"name": "Now defined"})).status == 201
    await send(client, user["id"], category="nonsense")


async def test_unknown_categories_are_accepted_by_default(client: Client) -> None:
    user = await create_user(client)
    await send(client, user["id"], category="never-defined")


async def test_a_category_without_opt_out_is_mandatory_in_the_preferences_api(
    client: Client,
) -> None:
    user = await create_user(client)
    url = f"/api/users/{user['id']}/preferences"
    view = await (await client.get(url, headers=AUTH)).json()
    assert view["mandatory_categories"] == ["security"]
    refused = await client.patch(
        url, json={"categories": {"security": {"email": False}}}, headers=AUTH
    )
    assert refused.status == 422
    assert (await refused.json())["error"]["field"] == "categories.security"
