"""Templates over a real app (pushd/api/templates.py): saving versions, listing, reading,
deleting, the 422s naming the part or the variable, the preview, and sends with a
template: the in-app notification and an email step carry the rendered text, for a
single send, a batch and a topic (a send job rendered per subscriber)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from pushd.ids import now_ms
from tests.api.test_broadcast import finished
from tests.app_client import AUTH, MakeClient, create_key, create_user

Client = TestClient[Any, Any]
# Never contacted: the email step is planned 10 minutes later and leased by the test.
RELAY = {
    "name": "relay",
    "host": "127.0.0.1",
    "port": 2,
    "security": "none",
    "from_address": "pushd@example.com",
}

SHIPPED: dict[str, Any] = {
    "description": "Order shipped",
    "default_locale": "en",
    "variables": {"carrier": "the post"},
    "locales": {
        "en": {
            "inapp": {"title": "Order {{ order_id }} shipped", "body": "Hi {{ user.name }}"},
            "email": {
                "subject": "Your order {{ order_id }}",
                "html": "<p>Shipped by {{ carrier }}</p>",
                "text": "Shipped by {{ carrier }}",
            },
            "sms": {"text": "Order {{ order_id }} shipped"},
        },
        "fr": {
            "inapp": {
                "title": "Commande {{ order_id }} expédiée",
                "body": "Bonjour {{ user.name }}",
            },
            "email": {"subject": "Votre commande {{ order_id }}", "html": "<p>{{ carrier }}</p>"},
        },
    },
}


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        channels={"email": [RELAY], "plans": {"default": [{"channel": "email", "delay": 600.0}]}}
    )


async def put(client: Client, template_id: str, body: dict[str, Any], status: int = 200) -> Any:
    response = await client.put(f"/api/templates/{template_id}", json=body, headers=AUTH)
    assert response.status == status, await response.text()
    return await response.json()


async def refused(response: Any, status: int = 422) -> dict[str, Any]:
    assert response.status == status, await response.text()
    error: dict[str, Any] = (await response.json())["error"]
    return error


async def post(client: Client, path: str, body: dict[str, Any]) -> Any:
    return await client.post(path, json=body, headers=AUTH)


async def email_contents(client: Client) -> dict[str, dict[str, str] | None]:
    """notification id -> the content of its email step, as the channel worker leases it."""
    leased = await client.app[STORAGE].lease_due_deliveries(
        ["email"], now=now_ms() + 3_600_000, limit=100, owner="test", lease_ms=60_000
    )
    return {delivery.notification_id: delivery.content for delivery in leased}


async def notification(client: Client, notification_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/notifications/{notification_id}", headers=AUTH)
    assert response.status == 200, await response.text()
    found: dict[str, Any] = await response.json()
    return found


# managing templates --------------------------------------------------------------------


async def test_each_save_is_a_new_version_and_old_ones_stay_readable(client: Client) -> None:
    first = await put(client, "shipped", SHIPPED)
    assert (first["id"], first["version"], first["variables"]) == (
        "shipped",
        1,
        {"carrier": "the post"},
    )
    assert first["locales"]["en"]["email"]["subject"] == "Your order {{ order_id }}"
    changed = {**SHIPPED, "locales": {"en": {"inapp": {"title": "v2"}}}}
    second = await put(client, "shipped", changed)
    assert second["version"] == 2
    latest = await (await client.get("/api/templates/shipped", headers=AUTH)).json()
    assert latest == second
    old = await client.get("/api/templates/shipped", params={"version": "1"}, headers=AUTH)
    assert await old.json() == first
    error = await refused(
        await client.get("/api/templates/shipped", params={"version": "3"}, headers=AUTH), 404
    )
    assert error["field"] == "templateId"


async def test_list_pages_through_latest_versions_and_delete_removes(client: Client) -> None:
    for template_id in ("c", "a", "b"):
        await put(client, template_id, SHIPPED)
    await put(client, "a", SHIPPED)
    page = await (await client.get("/api/templates", params={"limit": "2"}, headers=AUTH)).json()
    assert [(t["id"], t["version"]) for t in page["items"]] == [("a", 2), ("b", 1)]
    assert page["items"][0]["locales"] == ["en", "fr"]
    rest = await client.get("/api/templates", params={"cursor": page["next_cursor"]}, headers=AUTH)
    assert [t["id"] for t in (await rest.json())["items"]] == ["c"]
    assert (await client.delete("/api/templates/a", headers=AUTH)).status == 204
    assert (await refused(await client.delete("/api/templates/a", headers=AUTH), 404))["field"] == (
        "templateId"
    )
    assert (await client.get("/api/templates/a", headers=AUTH)).status == 404
    assert (await put(client, "a", SHIPPED))["version"] == 3  # numbering continues


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            {"locales": {"en": {"inapp": {"title": "ok"}, "email": {"html": "<p>\n{{ x }\n"}}}},
            "locales.en.email.html",
            "line 2",
        ),
        (
            {"locales": {"en": {"inapp": {"title": "{{ x | nope }}"}}}},
            "locales.en.inapp.title",
            "nope",
        ),
        ({"default_locale": "de"}, "default_locale", "not one of"),
        ({"locales": {"en": {"inapp": {}}}}, "locales.en.inapp", "no in-app"),
        ({"variables": {"user": "x"}}, "variables.user", "profile"),
        (
            {"locales": {"en": {"inapp": {"title": "a"}, "fax": {}}}},
            "locales.fax",
            "unknown",
        ),  # msgspec paths skip dict keys
        ({"locales": {"not a locale": {"inapp": {"title": "a"}}}}, "locales", ""),
    ],
)
async def test_a_template_that_cannot_be_saved_is_a_422_naming_where(
    client: Client, change: dict[str, Any], field: str, words: str
) -> None:
    response = await client.put("/api/templates/t", json={**SHIPPED, **change}, headers=AUTH)
    error = await refused(response)
    assert error["field"] == field
    assert words in error["message"]
    assert (await client.get("/api/templates/t", headers=AUTH)).status == 404


async def test_the_source_size_limit_is_the_configured_one(make_client: MakeClient) -> None:
    client = await make_client(templates={"max_source_bytes": 20})
    body = {"locales": {"en": {"inapp": {"title": "x" * 21}}}}
    error = await refused(await client.put("/api/templates/t", json=body, headers=AUTH))
    assert error["field"] == "locales.en.inapp.title"
    assert "templates.max_source_bytes" in error["message"]


async def test_a_large_template_is_compiled_off_the_event_loop(make_client: MakeClient) -> None:
    """Guards the worker thread: compiling a 60 KB source with thousands of expressions
    takes about a second, which the blocking guard (tests/conftest.py) would catch on
    the loop, at the save and at the first render."""
    client = await make_client(templates={"render_timeout": 1.0})
    source = "{{ first ~ second }}" * 3000
    await put(client, "big", {"locales": {"en": {"inapp": {"body": source}}}})
    user = await create_user(client)
    response = await post(
        client,
        "/api/templates/big/preview",
        {"user_id": user["id"], "data": {"first": "a", "second": "b"}},
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["parts"]["inapp"]["body"] == "ab" * 3000


async def test_a_bad_id_in_the_path_is_a_422(client: Client) -> None:
    error = await refused(await client.put("/api/templates/Bad%20Id", json=SHIPPED, headers=AUTH))
    assert error["field"] == "templateId"


async def test_managing_is_for_admins_and_previewing_for_publishers(client: Client) -> None:
    await put(client, "shipped", SHIPPED)
    user = await create_user(client, name="Ada")
    publisher, _ = await create_key(client, "publisher")
    headers = {"Authorization": f"Bearer {publisher}"}
    response = await client.put("/api/templates/x", json=SHIPPED, headers=headers)
    assert response.status == 403
    assert (await client.delete("/api/templates/shipped", headers=headers)).status == 403
    assert (await client.get("/api/templates/shipped", headers=headers)).status == 200
    preview = await client.post(
        "/api/templates/shipped/preview",
        json={"user_id": user["id"], "data": {"order_id": 7}},
        headers=headers,
    )
    assert preview.status == 200, await preview.text()


# preview -------------------------------------------------------------------------------


async def test_preview_renders_in_the_users_locale_with_fallback(client: Client) -> None:
    await put(client, "shipped", SHIPPED)
    user = await create_user(client, name="Zoé", locale="fr-CA", external_id="ext-1")
    response = await post(
        client, "/api/templates/shipped/preview", {"external_id": "ext-1", "data": {"order_id": 42}}
    )
    assert response.status == 200, await response.text()
    preview = await response.json()
    assert (preview["template"], preview["version"], preview["locale"]) == ("shipped", 1, "fr")
    assert preview["parts"] == {
        "inapp": {"title": "Commande 42 expédiée", "body": "Bonjour Zoé"},
        "email": {"subject": "Votre commande 42", "html": "<p>the post</p>"},
    }
    response = await post(
        client,
        "/api/templates/shipped/preview",
        {"user_id": user["id"], "data": {"order_id": 1, "carrier": "<UPS>"}, "locale": "en-GB"},
    )
    preview = await response.json()
    assert preview["locale"] == "en"
    assert preview["parts"]["email"]["html"] == "<p>Shipped by &lt;UPS&gt;</p>"
    assert preview["parts"]["email"]["text"] == "Shipped by <UPS>"


async def test_preview_refuses_a_missing_variable_by_name(client: Client) -> None:
    await put(client, "shipped", SHIPPED)
    user = await create_user(client, name="Ada")
    error = await refused(
        await post(client, "/api/templates/shipped/preview", {"user_id": user["id"]})
    )
    assert error["field"] == "data.order_id"
    assert "order_id" in error["message"]
    nameless = await create_user(client)
    error = await refused(
        await post(
            client,
            "/api/templates/shipped/preview",
            {"user_id": nameless["id"], "data": {"order_id": 1}},
        )
    )
    assert error["field"] == "template"  # user.name: no value, and no default in the template
    unknown = await post(client, "/api/templates/shipped/preview", {"user_id": "nobody"})
    assert (await refused(unknown, 404))["field"] == "user_id"
    missing = await post(client, "/api/templates/nothing/preview", {"user_id": user["id"]})
    assert (await refused(missing, 404))["field"] == "templateId"


async def test_a_runaway_template_is_stopped_by_the_time_bound(make_client: MakeClient) -> None:
    client = await make_client(templates={"render_timeout": 0.02})
    loops = (
        "{% for i in items %}{% for j in items %}{% for k in items %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    await put(client, "slow", {"locales": {"en": {"inapp": {"title": "x" + loops}}}})
    user = await create_user(client)
    response = await post(
        client,
        "/api/templates/slow/preview",
        {"user_id": user["id"], "data": {"items": list(range(500))}},
    )
    error = await refused(response)
    assert "templates.render_timeout" in error["message"]


# sending -------------------------------------------------------------------------------


async def test_a_send_with_a_template_delivers_the_rendered_text(client: Client) -> None:
    await put(client, "shipped", SHIPPED)
    user = await create_user(client, name="Ada", email="ada@example.com", locale="en-US")
    response = await post(
        client,
        "/api/notifications",
        {"user_id": user["id"], "template": "shipped", "data": {"order_id": 42}},
    )
    assert response.status == 202, await response.text()
    sent = await notification(client, (await response.json())["id"])
    assert (sent["title"], sent["body"]) == ("Order 42 shipped", "Hi Ada")
    assert sent["data"] == {"order_id": 42}
    assert (await email_contents(client))[sent["id"]] == {
        "subject": "Your order 42",
        "html": "<p>Shipped by the post</p>",
        "text": "Shipped by the post",
    }


async def test_a_send_can_name_an_older_version(client: Client) -> None:
    await put(client, "shipped", SHIPPED)
    await put(client, "shipped", {"locales": {"en": {"inapp": {"title": "v2 {{ order_id }}"}}}})
    user = await create_user(client, name="Ada", email="ada@example.com")
    for version, title in ((None, "v2 1"), (1, "Order 1 shipped")):
        body = {"user_id": user["id"], "template": "shipped", "data": {"order_id": 1}}
        if version is not None:
            body["template_version"] = version
        response = await post(client, "/api/notifications", body)
        assert response.status == 202, await response.text()
        assert (await notification(client, (await response.json())["id"]))["title"] == title


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"data": {}}, 422, "data.order_id"),
        ({"title": "also a title"}, 422, "title"),
        ({"content": {"sms": {"text": "x"}}}, 422, "content"),
        ({"data": {"order_id": 1, "user": "x"}}, 422, "data.user"),
        ({"template": "nothing"}, 404, "template"),
        ({"template_version": 9}, 404, "template"),
    ],
)
async def test_a_send_with_a_template_is_refused_naming_the_field(
    client: Client, change: dict[str, Any], status: int, field: str
) -> None:
    await put(client, "shipped", SHIPPED)
    user = await create_user(client, name="Ada")
    body = {"user_id": user["id"], "template": "shipped", "data": {"order_id": 1}, **change}
    error = await refused(await post(client, "/api/notifications", body), status)
    assert error["field"] == field


async def test_template_version_alone_is_refused(client: Client) -> None:
    user = await create_user(client)
    body = {"user_id": user["id"], "title": "t", "template_version": 1}
    assert (await refused(await post(client, "/api/notifications", body)))["field"] == (
        "template_version"
    )


async def test_rendered_output_over_the_title_limit_is_refused(make_client: MakeClient) -> None:
    client = await make_client(limits={"title_max_chars": 10})
    await put(client, "long", {"locales": {"en": {"inapp": {"title": "{{ 'x' * 11 }}"}}}})
    user = await create_user(client)
    body = {"user_id": user["id"], "template": "long"}
    error = await refused(await post(client, "/api/notifications", body))
    assert (error["field"], "limits.title_max_chars" in error["message"]) == ("template", True)


async def test_a_batch_renders_each_item_for_its_user_and_refuses_only_the_bad_one(
    client: Client,
) -> None:
    await put(client, "shipped", SHIPPED)
    ada = await create_user(client, name="Ada", locale="fr")
    bob = await create_user(client, name="Bob")
    items = [
        {"user_id": ada["id"], "template": "shipped", "data": {"order_id": 1}},
        {"user_id": bob["id"], "template": "shipped"},
    ]
    response = await post(client, "/api/notifications/batch", {"items": items})
    assert response.status == 200, await response.text()
    first, second = (await response.json())["results"]
    assert first["status"] == 202
    assert (second["status"], second["error"]["field"]) == (422, "items[1].data.order_id")
    sent = await notification(client, first["notification"]["id"])
    assert (sent["title"], sent["body"]) == ("Commande 1 expédiée", "Bonjour Ada")


async def test_a_topic_send_renders_for_each_subscriber(client: Client) -> None:
    await put(client, "shipped", SHIPPED)
    ada = await create_user(client, name="Ada", locale="fr")
    bob = await create_user(client, name="Bob", locale="en")
    response = await post(client, "/api/topics", {"slug": "orders", "name": "Orders"})
    assert response.status == 201, await response.text()
    response = await post(
        client, "/api/topics/orders/subscribers", {"user_ids": [ada["id"], bob["id"]]}
    )
    assert response.status == 200, await response.text()
    response = await post(
        client,
        "/api/notifications",
        {"topic": "orders", "template": "shipped", "data": {"order_id": 5}},
    )
    assert response.status == 202, await response.text()
    progress = await finished(client, (await response.json())["send_id"])  # a send job
    assert progress["recipients"]["committed"] == 2
    titles = {}
    for user in (ada, bob):
        page = await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)
        [item] = (await page.json())["items"]
        titles[user["name"]] = item["title"]
    assert titles == {"Ada": "Commande 5 expédiée", "Bob": "Order 5 shipped"}
