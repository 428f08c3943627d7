"""Every route of the API, called with no key, a revoked key and a key of each role,
checked against the roles table of docs/security.md (which must be exactly the table
generated from the route table: the documentation cannot drift from the server).
`/metrics`, `/console` and `/ws` are routes of the table like the others."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ec

from actors.transport import CloseCode
from pushd.access.roles import ROLES
from pushd.api import ROUTES
from pushd.api.roles_table import ALLOWED, END_USER, PUBLIC, REFUSED, render_roles_table
from pushd.appkeys import PREFERENCE_LINKS, UNSUBSCRIBE_LINKS
from pushd.channels.sms_twilio import twilio_signature
from pushd.channels.unsubscribe import UnsubscribeLinks
from tests.app_client import (
    ADMIN_KEY,
    AUTH,
    MakeClient,
    create_key,
    create_user,
    send,
    user_token,
)
from tests.channels.harness import pkcs8_pem

Client = TestClient[Any, Any]

SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
_TABLE = re.compile(
    r"<!-- roles table: generated, do not edit by hand -->\n"
    r"(?P<table>.*?)<!-- end of roles table -->",
    re.DOTALL,
)
_ROW = re.compile(r"^\| (?P<method>[A-Z]+) \| `(?P<path>[^`]+)` \| (?P<cells>.*) \|$")


def documented_table() -> str:
    found = _TABLE.search(SECURITY_DOC.read_text(encoding="utf-8"))
    assert found is not None, "docs/security.md lost its roles table markers"
    return found["table"]


def documented_rows() -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, {role: cell}) for every row of the documented table."""
    rows = []
    for line in documented_table().splitlines():
        row = _ROW.match(line)
        if row:
            cells = [cell.strip() for cell in row["cells"].split("|")]
            rows.append((row["method"], row["path"], dict(zip(ROLES, cells, strict=True))))
    return rows


def test_documented_roles_table_is_the_route_table() -> None:
    """Guards the documentation drifting from the server: regenerate the table with
    `python -m pushd.api.roles_table` when a route or its roles change."""
    assert documented_table() == render_roles_table(ROUTES)


# A request for each route that succeeds when the caller may make it: (path, JSON body).
# Each call prepares its own resources (as admin), so that one call cannot spoil the next
# (a device deleted twice, a key revoked twice).
Request = tuple[str, Any]
Prepare = Callable[[Client], Awaitable[Request]]


async def _user(client: Client) -> str:
    user_id: str = (await create_user(client))["id"]
    return user_id


async def _device(client: Client) -> tuple[str, str]:
    user_id = await _user(client)
    device = {"kind": "fcm", "token": "fcm-token:" + "x" * 20}
    response = await client.post(f"/api/users/{user_id}/devices", json=device, headers=AUTH)
    assert response.status == 201
    return user_id, (await response.json())["id"]


async def _key(client: Client) -> str:
    _, record = await create_key(client, "reader")
    key_id: str = record["id"]
    return key_id


async def healthcheck(_client: Client) -> Request:
    return "/api/healthcheck", None


async def openapi(_client: Client) -> Request:
    return "/api/openapi.json", None


async def create_user_route(_client: Client) -> Request:
    return "/api/users", {"name": "Ada"}


async def list_users(_client: Client) -> Request:
    return "/api/users", None


async def get_user(client: Client) -> Request:
    return f"/api/users/{await _user(client)}", None


async def add_device(client: Client) -> Request:
    return f"/api/users/{await _user(client)}/devices", {"kind": "fcm", "token": "f" * 20}


async def list_devices(client: Client) -> Request:
    return f"/api/users/{await _user(client)}/devices", None


async def delete_device(client: Client) -> Request:
    user_id, device_id = await _device(client)
    return f"/api/users/{user_id}/devices/{device_id}", None


async def export_user(client: Client) -> Request:
    return f"/api/users/{await _user(client)}/export", None


async def erase_user(client: Client) -> Request:
    return f"/api/users/{await _user(client)}", None


async def user_preferences(client: Client) -> Request:
    return f"/api/users/{await _user(client)}/preferences", None


async def replace_preferences(client: Client) -> Request:
    return f"/api/users/{await _user(client)}/preferences", {"muted": True}


async def change_preferences(client: Client) -> Request:
    body = {"categories": {"news": {"email": False}}}
    return f"/api/users/{await _user(client)}/preferences", body


async def my_preferences(_client: Client) -> Request:
    return "/api/me/preferences", None


async def change_my_preferences(_client: Client) -> Request:
    return "/api/me/preferences", {"categories": {"news": {"push": False}}}


async def issue_token(client: Client) -> Request:
    return f"/api/users/{await _user(client)}/tokens", None


async def revoke_tokens(client: Client) -> Request:
    return f"/api/users/{await _user(client)}/tokens/revoke", None


async def send_notification(client: Client) -> Request:
    return "/api/notifications", {"user_id": await _user(client), "title": "hi"}


async def user_notifications(client: Client) -> Request:
    return f"/api/notifications/user/{await _user(client)}", None


async def get_notification(client: Client) -> Request:
    accepted = await send(client, await _user(client))
    return f"/api/notifications/{accepted['id']}", None


async def notification_events(client: Client) -> Request:
    accepted = await send(client, await _user(client))
    return f"/api/notifications/{accepted['id']}/events", None


async def mark_notification_read(client: Client) -> Request:
    accepted = await send(client, await _user(client))
    return f"/api/notifications/{accepted['id']}/read", None


async def cancel_scheduled(client: Client) -> Request:
    accepted = await send(client, await _user(client), delay=3600)
    return f"/api/notifications/{accepted['id']}", None


async def edit_notification(client: Client) -> Request:
    accepted = await send(client, await _user(client))
    return f"/api/notifications/{accepted['id']}", {"title": "edited"}


async def user_scheduled(client: Client) -> Request:
    return f"/api/notifications/user/{await _user(client)}/scheduled", None


async def mark_all_read(client: Client) -> Request:
    return f"/api/users/{await _user(client)}/notifications/read-all", None


async def stats(_client: Client) -> Request:
    return "/api/stats", None


async def metrics(_client: Client) -> Request:
    return "/metrics", None


async def console(_client: Client) -> Request:
    return "/console", None


async def failed_deliveries(_client: Client) -> Request:
    return "/api/channel-deliveries/failed", None


async def console_inbox(_client: Client) -> Request:
    return "/console/inbox", None


async def console_asset(_client: Client) -> Request:
    return "/console/assets/console.js", None


async def api_reference(_client: Client) -> Request:
    return "/docs", None


async def websocket(client: Client) -> Request:
    # The "body" of a WebSocket route is its first frame.
    return "/ws", {"type": "auth", "token": await user_token(client, await _user(client))}


async def server_sent_events(_client: Client) -> Request:
    return "/sse", None


async def create_api_key(_client: Client) -> Request:
    return "/api/keys", {"name": "made by the roles test", "role": "reader"}


async def list_api_keys(_client: Client) -> Request:
    return "/api/keys", None


async def get_api_key(client: Client) -> Request:
    return f"/api/keys/{await _key(client)}", None


async def revoke_api_key(client: Client) -> Request:
    return f"/api/keys/{await _key(client)}", None


async def audit(_client: Client) -> Request:
    return "/api/audit?action=user.create", None


async def vapid_public_key(_client: Client) -> Request:
    return "/api/webpush/vapid-public-key", None


async def update_user(client: Client) -> Request:
    return f"/api/users/{await _user(client)}", {"tags": ["beta"]}


async def send_batch(client: Client) -> Request:
    return "/api/notifications/batch", {"items": [{"user_id": await _user(client), "title": "hi"}]}


async def _topic(client: Client, *, self_subscribe: bool = False) -> str:
    slug = f"t{secrets.token_hex(6)}"
    body = {"slug": slug, "name": "Roles", "self_subscribe": self_subscribe}
    response = await client.post("/api/topics", json=body, headers=AUTH)
    assert response.status == 201
    return slug


async def create_topic(_client: Client) -> Request:
    return "/api/topics", {"slug": f"t{secrets.token_hex(6)}", "name": "Roles"}


async def list_topics(_client: Client) -> Request:
    return "/api/topics", None


async def topic(client: Client) -> Request:
    return f"/api/topics/{await _topic(client)}", None


async def topic_subscriber(client: Client) -> Request:
    return f"/api/topics/{await _topic(client)}/subscribers/{await _user(client)}", None


async def subscribe_many(client: Client) -> Request:
    body = {"user_ids": [await _user(client)]}
    return f"/api/topics/{await _topic(client)}/subscribers", body


async def topic_subscribers(client: Client) -> Request:
    return f"/api/topics/{await _topic(client)}/subscribers", None


async def user_topics(client: Client) -> Request:
    return f"/api/users/{await _user(client)}/topics", None


async def my_topic(client: Client) -> Request:
    return f"/api/me/topics/{await _topic(client, self_subscribe=True)}", None


TEMPLATE = {"locales": {"en": {"inapp": {"title": "Hi {{ user.id }}"}}}}


async def _template(client: Client) -> str:
    template_id = f"t{secrets.token_hex(6)}"
    response = await client.put(f"/api/templates/{template_id}", json=TEMPLATE, headers=AUTH)
    assert response.status == 200
    return template_id


async def save_template(_client: Client) -> Request:
    return f"/api/templates/t{secrets.token_hex(6)}", TEMPLATE


async def list_templates(_client: Client) -> Request:
    return "/api/templates", None


async def template(client: Client) -> Request:
    return f"/api/templates/{await _template(client)}", None


async def preview_template(client: Client) -> Request:
    body = {"user_id": await _user(client)}
    return f"/api/templates/{await _template(client)}/preview", body


# A webhook URL the real outbound check passes without DNS (an IP literal).
WEBHOOK_URL = "https://93.184.216.34/hook"
TWILIO = {
    "kind": "twilio",
    "name": "twilio",
    "account_sid": "AC" + "0" * 32,
    "auth_token": "twilio-auth-token",
    "from_number": "+14155550100",
}
PUBLIC_URL = "https://push.example.com"


@dataclass(frozen=True)
class Form:
    """A request body that is not JSON: a public route's form, with its own headers."""

    data: Any
    headers: dict[str, str]


async def _webhook(client: Client) -> str:
    body = {"url": WEBHOOK_URL, "event_types": ["delivery.updated"]}
    response = await client.post("/api/webhooks", json=body, headers=AUTH)
    assert response.status == 201
    webhook_id: str = (await response.json())["webhook"]["id"]
    return webhook_id


async def create_webhook(_client: Client) -> Request:
    return "/api/webhooks", {"url": WEBHOOK_URL, "event_types": ["notification.accepted"]}


async def list_webhooks(_client: Client) -> Request:
    return "/api/webhooks", None


async def webhook(client: Client) -> Request:
    return f"/api/webhooks/{await _webhook(client)}", None


async def rotate_webhook_secret(client: Client) -> Request:
    return f"/api/webhooks/{await _webhook(client)}/rotate-secret", None


async def enable_webhook(client: Client) -> Request:
    return f"/api/webhooks/{await _webhook(client)}/enable", None


def _unsubscribe_link(client: Client, user_id: str) -> str:
    links: UnsubscribeLinks | None = client.app[UNSUBSCRIBE_LINKS]
    assert links is not None
    return links.url(user_id, "news").removeprefix(PUBLIC_URL)


async def unsubscribe_page(client: Client) -> Request:
    return _unsubscribe_link(client, await _user(client)), None


async def unsubscribe(client: Client) -> Request:
    form = Form("List-Unsubscribe=One-Click", {"Content-Type": "application/x-www-form-urlencoded"})
    return _unsubscribe_link(client, await _user(client)), form


async def _category(client: Client) -> str:
    slug = f"c{secrets.token_hex(6)}"
    response = await client.put(f"/api/categories/{slug}", json={"name": "Roles"}, headers=AUTH)
    assert response.status == 201
    return slug


async def put_category(_client: Client) -> Request:
    return f"/api/categories/c{secrets.token_hex(6)}", {"name": "Roles"}


async def list_categories(_client: Client) -> Request:
    return "/api/categories", None


async def category(client: Client) -> Request:
    return f"/api/categories/{await _category(client)}", None


async def preference_center_page(_client: Client) -> Request:
    return "/preferences", None


async def preference_center_script(_client: Client) -> Request:
    return "/preferences/preference_center.js", None


async def client_script(_client: Client) -> Request:
    return "/client.js", None


async def preference_center(client: Client) -> Request:
    links = client.app[PREFERENCE_LINKS]
    assert links is not None
    return "/api/preference-center", {"token": links.token(await _user(client))}


async def sms_status(_client: Client) -> Request:
    path = "/api/channels/sms/twilio/status"
    params = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
    signature = twilio_signature(TWILIO["auth_token"], PUBLIC_URL + path, params)
    return path, Form(params, {"X-Twilio-Signature": signature})


async def _segment(client: Client) -> str:
    body = {"name": "Roles", "filter": {"tag": "roles"}}
    response = await client.post("/api/segments", json=body, headers=AUTH)
    assert response.status == 201
    segment_id: str = (await response.json())["id"]
    return segment_id


async def create_segment(_client: Client) -> Request:
    return "/api/segments", {"name": "Roles", "filter": {"tag": "roles"}}


async def list_segments(_client: Client) -> Request:
    return "/api/segments", None


async def segment(client: Client) -> Request:
    return f"/api/segments/{await _segment(client)}", None


async def segment_count(client: Client) -> Request:
    return f"/api/segments/{await _segment(client)}/count", None


async def audience_send(client: Client) -> Request:
    body = {"broadcast": True, "title": "Roles"}
    response = await client.post("/api/notifications", json=body, headers=AUTH)
    assert response.status == 202
    return f"/api/sends/{(await response.json())['send_id']}", None


# Configuration a route needs to answer 2xx (sections of `make_client`).
ROUTE_CONFIG: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/unsubscribe"): {"channels": {"public_url": PUBLIC_URL}},
    ("POST", "/unsubscribe"): {"channels": {"public_url": PUBLIC_URL}},
    ("POST", "/api/preference-center"): {"channels": {"public_url": PUBLIC_URL}},
    ("PUT", "/api/preference-center"): {"channels": {"public_url": PUBLIC_URL}},
    ("POST", "/api/channels/sms/{provider}/status"): {
        "channels": {"public_url": PUBLIC_URL, "sms": [TWILIO]}
    },
    ("GET", "/api/webpush/vapid-public-key"): {
        "channels": {
            "webpush": [
                {
                    "name": "vapid",
                    "vapid_private_key": pkcs8_pem(ec.generate_private_key(ec.SECP256R1())),
                    "vapid_subject": "mailto:ops@example.com",
                }
            ]
        }
    },
}


PREPARE: dict[tuple[str, str], Prepare] = {
    ("GET", "/api/healthcheck"): healthcheck,
    ("GET", "/api/openapi.json"): openapi,
    ("POST", "/api/users"): create_user_route,
    ("GET", "/api/users"): list_users,
    ("GET", "/api/users/{userId}"): get_user,
    ("POST", "/api/users/{userId}/devices"): add_device,
    ("GET", "/api/users/{userId}/devices"): list_devices,
    ("DELETE", "/api/users/{userId}/devices/{deviceId}"): delete_device,
    ("GET", "/api/users/{userId}/export"): export_user,
    ("DELETE", "/api/users/{userId}"): erase_user,
    ("POST", "/api/users/{userId}/tokens"): issue_token,
    ("POST", "/api/users/{userId}/tokens/revoke"): revoke_tokens,
    ("POST", "/api/notifications"): send_notification,
    ("GET", "/api/notifications/user/{userId}"): user_notifications,
    ("GET", "/api/notifications/{id}"): get_notification,
    ("GET", "/api/notifications/{id}/events"): notification_events,
    ("POST", "/api/notifications/{id}/read"): mark_notification_read,
    ("DELETE", "/api/notifications/{id}"): cancel_scheduled,
    ("PATCH", "/api/notifications/{id}"): edit_notification,
    ("GET", "/api/notifications/user/{userId}/scheduled"): user_scheduled,
    ("POST", "/api/users/{userId}/notifications/read-all"): mark_all_read,
    ("GET", "/api/stats"): stats,
    ("GET", "/metrics"): metrics,
    ("GET", "/api/channel-deliveries/failed"): failed_deliveries,
    ("GET", "/console"): console,
    ("GET", "/console/inbox"): console_inbox,
    ("GET", "/console/assets/{asset}"): console_asset,
    ("GET", "/docs"): api_reference,
    ("POST", "/api/keys"): create_api_key,
    ("GET", "/api/keys"): list_api_keys,
    ("GET", "/api/keys/{keyId}"): get_api_key,
    ("DELETE", "/api/keys/{keyId}"): revoke_api_key,
    ("GET", "/api/audit"): audit,
    ("GET", "/api/webpush/vapid-public-key"): vapid_public_key,
    ("POST", "/api/webhooks"): create_webhook,
    ("GET", "/api/webhooks"): list_webhooks,
    ("GET", "/api/webhooks/{webhookId}"): webhook,
    ("DELETE", "/api/webhooks/{webhookId}"): webhook,
    ("POST", "/api/webhooks/{webhookId}/rotate-secret"): rotate_webhook_secret,
    ("POST", "/api/webhooks/{webhookId}/enable"): enable_webhook,
    ("GET", "/unsubscribe"): unsubscribe_page,
    ("POST", "/unsubscribe"): unsubscribe,
    ("PUT", "/api/categories/{slug}"): put_category,
    ("GET", "/api/categories"): list_categories,
    ("GET", "/api/categories/{slug}"): category,
    ("DELETE", "/api/categories/{slug}"): category,
    ("GET", "/preferences"): preference_center_page,
    ("GET", "/preferences/preference_center.js"): preference_center_script,
    ("GET", "/client.js"): client_script,
    ("POST", "/api/preference-center"): preference_center,
    ("PUT", "/api/preference-center"): preference_center,
    ("POST", "/api/channels/sms/{provider}/status"): sms_status,
    ("GET", "/ws"): websocket,
    ("GET", "/sse"): server_sent_events,
    ("GET", "/api/users/{userId}/preferences"): user_preferences,
    ("PUT", "/api/users/{userId}/preferences"): replace_preferences,
    ("PATCH", "/api/users/{userId}/preferences"): change_preferences,
    ("GET", "/api/me/preferences"): my_preferences,
    ("PATCH", "/api/me/preferences"): change_my_preferences,
    ("PATCH", "/api/users/{userId}"): update_user,
    ("POST", "/api/notifications/batch"): send_batch,
    ("POST", "/api/segments"): create_segment,
    ("GET", "/api/segments"): list_segments,
    ("GET", "/api/segments/{segmentId}"): segment,
    ("DELETE", "/api/segments/{segmentId}"): segment,
    ("GET", "/api/segments/{segmentId}/count"): segment_count,
    ("GET", "/api/sends/{sendId}"): audience_send,
    ("POST", "/api/topics"): create_topic,
    ("GET", "/api/topics"): list_topics,
    ("GET", "/api/topics/{topic}"): topic,
    ("DELETE", "/api/topics/{topic}"): topic,
    ("PUT", "/api/topics/{topic}/subscribers/{userId}"): topic_subscriber,
    ("DELETE", "/api/topics/{topic}/subscribers/{userId}"): topic_subscriber,
    ("POST", "/api/topics/{topic}/subscribers"): subscribe_many,
    ("GET", "/api/topics/{topic}/subscribers"): topic_subscribers,
    ("GET", "/api/users/{userId}/topics"): user_topics,
    ("PUT", "/api/me/topics/{topic}"): my_topic,
    ("DELETE", "/api/me/topics/{topic}"): my_topic,
    ("PUT", "/api/templates/{templateId}"): save_template,
    ("GET", "/api/templates"): list_templates,
    ("GET", "/api/templates/{templateId}"): template,
    ("DELETE", "/api/templates/{templateId}"): template,
    ("POST", "/api/templates/{templateId}/preview"): preview_template,
}


def test_every_route_has_a_prepared_request() -> None:
    assert set(PREPARE) == {(route.method, route.path) for route in ROUTES}


@pytest.mark.parametrize(
    ("method", "path", "cells"),
    documented_rows(),
    ids=[f"{method} {path}" for method, path, _ in documented_rows()],
)
async def test_route_answers_each_caller_as_documented(
    make_client: MakeClient, method: str, path: str, cells: dict[str, str]
) -> None:
    client = await make_client(**ROUTE_CONFIG.get((method, path), {}))
    keys = {"admin": ADMIN_KEY}
    for role in ROLES[1:]:
        keys[role], _ = await create_key(client, role)
    revoked, revoked_record = await create_key(client, "publisher")
    response = await client.delete(f"/api/keys/{revoked_record['id']}", headers=AUTH)
    assert response.status == 200
    prepare = PREPARE[(method, path)]
    if set(cells.values()) == {END_USER} and path == "/ws":
        await _check_websocket(client, prepare, [None, revoked, *keys.values()])
        return
    if set(cells.values()) == {END_USER}:
        await _check_user_token_route(client, method, prepare, [None, revoked, *keys.values()])
        return
    public = set(cells.values()) == {PUBLIC}

    async def call(key: str | None) -> tuple[int, dict[str, Any] | None]:
        url, body = await prepare(client)
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        if isinstance(body, Form):
            headers |= body.headers
            response = await client.request(method, url, data=body.data, headers=headers)
        else:
            response = await client.request(method, url, json=body, headers=headers)
        text = await response.text()
        is_json = response.content_type == "application/json" and text
        return response.status, (await response.json()) if is_json else None

    for key in (None, revoked):
        status, body = await call(key)
        if public:
            assert 200 <= status < 300, (key, status, body)
        else:
            assert status == 401, (key, status, body)
            assert body is not None
            assert body["error"]["code"] == "unauthorized"
    for role, cell in cells.items():
        status, body = await call(keys[role])
        if cell in (ALLOWED, PUBLIC):
            assert 200 <= status < 300, (role, status, body)
        else:
            assert cell == REFUSED
            assert status == 403, (role, status, body)
            assert body is not None
            assert body["error"]["code"] == "forbidden"
            assert f"role {role!r}" in body["error"]["message"]
            allowed = [r for r, c in cells.items() if c == ALLOWED]
            assert all(r in body["error"]["message"] for r in allowed)


async def _check_user_token_route(
    client: Client, method: str, prepare: Prepare, keys: list[str | None]
) -> None:
    """A route of the user's own token takes no API key: none, a revoked one and every
    role's are refused with 401, and the user's token is accepted."""
    for key in keys:
        url, body = await prepare(client)
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        response = await client.request(method, url, json=body, headers=headers)
        assert response.status == 401, (key, response.status, await response.text())
    url, body = await prepare(client)
    token = await user_token(client, await _user(client))
    headers = {"Authorization": f"Bearer {token}"}
    response = await client.request(method, url, json=body, headers=headers)
    assert 200 <= response.status < 300, await response.text()


async def _check_websocket(client: Client, prepare: Prepare, keys: list[str | None]) -> None:
    """A WebSocket route takes no API key: whatever key the upgrade carries (none, a
    revoked one, any role's), a user token in the first frame opens the socket, and an
    API key in its place is refused."""
    for key in keys:
        url, first_frame = await prepare(client)
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        async with client.ws_connect(url, headers=headers) as ws:
            await ws.send_json(first_frame)
            welcome = await ws.receive_json(timeout=5)
            assert welcome["type"] == "welcome", (key, welcome)
    url, _ = await prepare(client)
    async with client.ws_connect(url) as ws:
        await ws.send_json({"type": "auth", "token": ADMIN_KEY})
        await ws.receive(timeout=5)
        assert ws.close_code == CloseCode.INVALID_TOKEN


async def test_openapi_lists_the_roles_of_every_operation(client: Client) -> None:
    document = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        if route.public:
            assert "x-roles" not in operation
            continue
        assert operation["x-roles"] == sorted(route.roles)
        assert "403" in operation["responses"]
