"""Preferences over a real app (pushd/api/preferences.py): the API-key and user-token
doors, category-limited credentials, mandatory categories, and the plan honouring the
preferences and quiet hours (pushd/routing/)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from storage.records import ChannelDeliveryRecord
from tests.app_client import AUTH, MakeClient, create_key, create_user, send, user_token

Client = TestClient[Any, Any]
ORIGIN = "https://app.example.com"
# Never contacted: every email step below is skipped, deferred or planned for later.
RELAY = {
    "name": "relay",
    "host": "127.0.0.1",
    "port": 2,
    "security": "none",
    "from_address": "pushd@example.com",
}
EMAIL_LATER = {"default": [{"channel": "email", "delay": 600.0}]}


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        channels={"email": [RELAY], "plans": EMAIL_LATER},
        routing={"mandatory_categories": ["security"]},
        http={"cors_origins": [ORIGIN]},
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def email_row(client: Client, notification_id: str) -> ChannelDeliveryRecord:
    rows: list[ChannelDeliveryRecord] = await client.app[STORAGE].channel_deliveries_of(
        notification_id
    )
    [row] = rows
    return row


async def test_a_new_user_has_the_defaults(client: Client) -> None:
    user = await create_user(client)
    response = await client.get(f"/api/users/{user['id']}/preferences", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {
        "muted": False,
        "categories": {},
        "quiet_hours": None,
        "mandatory_categories": ["security"],
        "updated_at": None,
    }
    missing = await client.get("/api/users/usr_nobody/preferences", headers=AUTH)
    assert missing.status == 404


async def test_put_replaces_and_patch_changes(client: Client) -> None:
    user = await create_user(client)
    url = f"/api/users/{user['id']}/preferences"
    night = {"start": "22:00", "end": "07:00", "channels": ["push"]}
    body = {"muted": True, "categories": {"news": {"email": False}}, "quiet_hours": night}
    put = await (await client.put(url, json=body, headers=AUTH)).json()
    assert (put["muted"], put["categories"], put["quiet_hours"]) == (
        True,
        body["categories"],
        night,
    )
    patch = {"categories": {"news": {"email": None, "sms": False}}, "quiet_hours": "off"}
    changed = await (await client.patch(url, json=patch, headers=AUTH)).json()
    assert (changed["muted"], changed["categories"], changed["quiet_hours"]) == (
        True,
        {"news": {"sms": False}},
        "off",
    )
    # A PUT without a switch puts it back to its default.
    replaced = await (await client.put(url, json={}, headers=AUTH)).json()
    assert (replaced["muted"], replaced["categories"], replaced["quiet_hours"]) == (
        False,
        {},
        None,
    )


async def test_bad_bodies_are_422_naming_the_field(client: Client) -> None:
    user = await create_user(client)
    url = f"/api/users/{user['id']}/preferences"
    for body, field in [
        ({"categories": {"news": {"inapp": False}}}, "categories"),
        ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"muted": "yes"}, "muted"),
    ]:
        response = await client.patch(url, json=body, headers=AUTH)
        assert response.status == 422, body
        assert (await response.json())["error"]["field"].startswith(field), body


async def test_the_plan_skips_a_channel_turned_off_with_reason_preference(client: Client) -> None:
    user = await create_user(client, email="ada@example.com")
    patch = {"categories": {"news": {"email": False}}}
    response = await client.patch(f"/api/users/{user['id']}/preferences", json=patch, headers=AUTH)
    assert response.status == 200
    news = await send(client, user["id"], category="news")
    billing = await send(client, user["id"], category="billing")
    assert ((row := await email_row(client, news["id"])).status, row.reason) == (
        "skipped",
        "preference",
    )
    assert ((row := await email_row(client, billing["id"])).status, row.reason) == (
        "scheduled",
        None,
    )


async def test_mute_skips_everything_but_mandatory_categories(client: Client) -> None:
    user = await create_user(client, email="ada@example.com")
    url = f"/api/users/{user['id']}/preferences"
    assert (await client.patch(url, json={"muted": True}, headers=AUTH)).status == 200
    news = await send(client, user["id"], category="news")
    security = await send(client, user["id"], category="security")
    assert (await email_row(client, news["id"])).reason == "preference"
    assert (await email_row(client, security["id"])).status == "scheduled"
    # Still stored and delivered in-app: the mute is about channels beyond the socket.
    history = await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)
    assert len((await history.json())["items"]) == 2


async def test_a_mandatory_category_cannot_be_turned_off(client: Client) -> None:
    user = await create_user(client)
    body = {"categories": {"security": {"email": False}}}
    response = await client.patch(f"/api/users/{user['id']}/preferences", json=body, headers=AUTH)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["field"] == "categories.security"
    assert "mandatory_categories" in error["message"]


async def test_me_with_the_users_own_token_and_cors(client: Client) -> None:
    user = await create_user(client)
    token = await user_token(client, user["id"])
    headers = {**bearer(token), "Origin": ORIGIN}
    patch = {"categories": {"news": {"push": False}}, "muted": True}
    response = await client.patch("/api/me/preferences", json=patch, headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    mine = await (await client.get("/api/me/preferences", headers=headers)).json()
    assert (mine["muted"], mine["categories"]) == (True, {"news": {"push": False}})
    audit = await (await client.get("/api/audit?action=preferences.update", headers=AUTH)).json()
    [record] = audit["items"]
    assert (record["actor"], record["target"]) == (f"user:{user['id']}", f"user:{user['id']}")
    # The same preferences through the API key.
    theirs = await client.get(f"/api/users/{user['id']}/preferences", headers=AUTH)
    assert (await theirs.json())["categories"] == {"news": {"push": False}}
    preflight = await client.options(
        "/api/me/preferences",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status == 204
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]


async def test_me_refuses_no_token_an_api_key_and_a_revoked_token(client: Client) -> None:
    user = await create_user(client)
    token = await user_token(client, user["id"])
    for headers in ({}, AUTH, bearer("not.a.token")):
        response = await client.get("/api/me/preferences", headers=headers)
        assert response.status == 401, headers
        assert "WWW-Authenticate" in response.headers
    revoke = await client.post(f"/api/users/{user['id']}/tokens/revoke", headers=AUTH)
    assert revoke.status == 200, await revoke.text()
    response = await client.get("/api/me/preferences", headers=bearer(token))
    assert response.status == 401
    assert "revoked" in (await response.json())["error"]["message"]


async def test_a_category_limited_token_sees_and_changes_only_its_categories(
    client: Client,
) -> None:
    user = await create_user(client)
    url = f"/api/users/{user['id']}/preferences"
    both = {"categories": {"news": {"email": False}, "billing": {"sms": False}}}
    assert (await client.patch(url, json=both, headers=AUTH)).status == 200
    key, _ = await create_key(client, "publisher", categories=["news"])
    response = await client.post(f"/api/users/{user['id']}/tokens", headers=bearer(key))
    assert response.status == 201, await response.text()
    limited = bearer((await response.json())["token"])
    seen = await (await client.get("/api/me/preferences", headers=limited)).json()
    assert seen["categories"] == {"news": {"email": False}}
    for body in (
        {"categories": {"billing": {"sms": True}}},
        {"muted": True},
        {"quiet_hours": "off"},
    ):
        refused = await client.patch("/api/me/preferences", json=body, headers=limited)
        assert refused.status == 403, body
    ok = await client.patch(
        "/api/me/preferences", json={"categories": {"news": {"push": False}}}, headers=limited
    )
    assert (await ok.json())["categories"] == {"news": {"email": False, "push": False}}
    # The limited API key itself: the same rules, and no PUT.
    assert (await client.put(url, json={}, headers=bearer(key))).status == 403
    by_key = await (await client.get(url, headers=bearer(key))).json()
    assert by_key["categories"] == {"news": {"email": False, "push": False}}
    everything = await (await client.get(url, headers=AUTH)).json()
    assert everything["categories"]["billing"] == {"sms": False}


async def test_preferences_are_exported_and_erased(client: Client) -> None:
    user = await create_user(client)
    url = f"/api/users/{user['id']}/preferences"
    await client.patch(url, json={"muted": True}, headers=AUTH)
    export = await (await client.get(f"/api/users/{user['id']}/export", headers=AUTH)).json()
    assert export["preferences"]["muted"] is True
    assert (await client.delete(f"/api/users/{user['id']}", headers=AUTH)).status in (200, 204)
    assert await client.app[STORAGE].get_preferences(user["id"]) is None


# Quiet hours ---------------------------------------------------------------------------


def window_around_now(zone: dt.tzinfo) -> tuple[str, str, int]:
    """A quiet window from an hour ago to two hours from now on `zone`'s clock (crossing
    midnight when the clock says so), and the epoch ms of its end."""
    now = dt.datetime.now(zone).replace(second=0, microsecond=0)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(hours=2)
    return start.strftime("%H:%M"), end.strftime("%H:%M"), round(end.timestamp() * 1000)


async def test_server_quiet_hours_defer_a_step_for_a_user_without_a_zone(
    make_client: MakeClient,
) -> None:
    """A user with no `timezone` gets `routing.default_timezone` (UTC). The deferred
    step is `scheduled` with reason `quiet_hours`, due when the window ends; reading the
    notification before then cancels it (it is never sent)."""
    start, end, end_ms = window_around_now(dt.UTC)
    client = await make_client(
        channels={"email": [RELAY], "plans": {"default": [{"channel": "email"}]}},
        routing={"quiet_hours": {"start": start, "end": end, "channels": ["email"]}},
    )
    user = await create_user(client, email="ada@example.com")
    sent = await send(client, user["id"])
    row = await email_row(client, sent["id"])
    assert (row.status, row.reason, row.due_at) == ("scheduled", "quiet_hours", end_ms)
    read = await client.post(f"/api/notifications/{sent['id']}/read", headers=AUTH)
    assert read.status == 200
    row = await email_row(client, sent["id"])
    assert (row.status, row.reason) == ("cancelled", "read")


async def test_a_step_held_by_quiet_hours_is_not_sent_once_read_even_without_unless_read(
    make_client: MakeClient,
) -> None:
    """`unless_read: false` sends the step whether or not the notification was read, but
    a step held back by quiet hours that is read before they end is not sent then."""
    start, end, end_ms = window_around_now(dt.UTC)
    plan = [{"channel": "email", "unless_read": False}]
    client = await make_client(
        channels={"email": [RELAY], "plans": {"default": plan}},
        routing={"quiet_hours": {"start": start, "end": end, "channels": ["email"]}},
    )
    user = await create_user(client, email="ada@example.com")
    sent = await send(client, user["id"])
    row = await email_row(client, sent["id"])
    assert (row.status, row.reason, row.due_at) == ("scheduled", "quiet_hours", end_ms)
    read = await client.post(f"/api/notifications/{sent['id']}/read", headers=AUTH)
    assert read.status == 200
    row = await email_row(client, sent["id"])
    assert (row.status, row.reason) == ("cancelled", "read")


async def test_a_users_own_quiet_hours_in_their_zone(make_client: MakeClient) -> None:
    zone = "Asia/Tokyo"
    start, end, end_ms = window_around_now(dt.timezone(dt.timedelta(hours=9)))
    client = await make_client(
        channels={"email": [RELAY], "plans": {"default": [{"channel": "email"}]}}
    )
    user = await create_user(client, email="ada@example.com", timezone=zone)
    token = await user_token(client, user["id"])
    quiet = {"start": start, "end": end, "channels": ["email"]}
    response = await client.patch(
        "/api/me/preferences", json={"quiet_hours": quiet}, headers=bearer(token)
    )
    assert response.status == 200, await response.text()
    sent = await send(client, user["id"])
    row = await email_row(client, sent["id"])
    assert (row.status, row.reason, row.due_at) == ("scheduled", "quiet_hours", end_ms)
