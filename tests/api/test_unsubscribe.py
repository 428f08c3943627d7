"""`/unsubscribe` (pushd/api/unsubscribe.py) over a real app: RFC 8058 one-click POST
as mail clients send it, the confirmation page, forged links, and the opt-out being
honoured by the next notification's plan and shown in the user's export."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE, UNSUBSCRIBE_LINKS
from tests.app_client import AUTH, MakeClient, create_user

Client = TestClient[Any, Any]
ONE_CLICK = "List-Unsubscribe=One-Click"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Never contacted: the email step is planned 10 minutes later.
RELAY = {
    "name": "relay",
    "host": "127.0.0.1",
    "port": 2,
    "security": "none",
    "from_address": "pushd@example.com",
}


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        channels={
            "public_url": "https://push.example.com",
            "email": [RELAY],
            "plans": {"default": [{"channel": "email", "delay": 600.0}]},
        }
    )


def link(client: Client, user_id: str, category: str = "news") -> str:
    """The path and query of the user's unsubscribe link, as an email carries it."""
    links = client.app[UNSUBSCRIBE_LINKS]
    assert links is not None
    url = urlsplit(links.url(user_id, category))
    assert (url.scheme, url.netloc, url.path) == ("https", "push.example.com", "/unsubscribe")
    return f"{url.path}?{url.query}"


async def opt_outs(client: Client, user_id: str) -> list[tuple[str, str]]:
    """The switches turned off in the user's preferences, as (channel, category)."""
    found = await client.app[STORAGE].get_preferences(user_id)
    assert found is not None
    return [
        (channel, category)
        for category, switches in found.channels.items()
        for channel, enabled in switches.items()
        if not enabled
    ]


async def test_one_click_post_stores_the_opt_out(client: Client) -> None:
    user = await create_user(client, email="ada@example.com")
    response = await client.post(
        link(client, user["id"]), data=ONE_CLICK, headers=FORM, allow_redirects=False
    )
    assert response.status == 200, await response.text()
    assert "Set-Cookie" not in response.headers
    assert "unsubscribed" in await response.text()
    assert await opt_outs(client, user["id"]) == [("email", "news")]
    # Clients may retry: the same answer, nothing more stored.
    again = await client.post(link(client, user["id"]), data=ONE_CLICK, headers=FORM)
    assert again.status == 200
    assert await opt_outs(client, user["id"]) == [("email", "news")]


async def test_multipart_body_is_accepted_too(client: Client) -> None:
    """RFC 8058 lets the client send multipart/form-data as well."""
    user = await create_user(client)
    with aiohttp.MultipartWriter("form-data") as form:
        part = form.append("One-Click")
        part.set_content_disposition("form-data", name="List-Unsubscribe")
    response = await client.post(link(client, user["id"], "billing"), data=form)
    assert response.status == 200, await response.text()
    assert await opt_outs(client, user["id"]) == [("email", "billing")]


async def test_opening_the_link_shows_a_page_and_changes_nothing(client: Client) -> None:
    user = await create_user(client)
    response = await client.get(link(client, user["id"]))
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert '<form method="post"' in page
    assert 'name="List-Unsubscribe" value="One-Click"' in page
    assert "news" in page
    assert "form-action 'self'" in response.headers["Content-Security-Policy"]
    assert await opt_outs(client, user["id"]) == []


async def test_the_category_is_escaped_on_the_page(client: Client) -> None:
    user = await create_user(client)
    response = await client.get(link(client, user["id"], "<script>x</script>"))
    page = await response.text()
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def forged(path: str) -> str:
    """The link with its signature's first character changed."""
    head, _, signature = path.rpartition(".")
    return f"{head}.{'B' if signature[0] != 'B' else 'C'}{signature[1:]}"


async def test_a_forged_link_is_400_and_stores_nothing(client: Client) -> None:
    user = await create_user(client)
    response = await client.post(forged(link(client, user["id"])), data=ONE_CLICK, headers=FORM)
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == ("invalid_query", "token")
    assert "bad signature" in error["message"]
    page = await client.get(forged(link(client, user["id"])))
    assert page.status == 400
    assert "bad signature" in await page.text()
    missing = await client.post("/unsubscribe", data=ONE_CLICK, headers=FORM)
    assert missing.status == 400
    assert await opt_outs(client, user["id"]) == []


async def test_a_post_without_the_one_click_body_is_refused(client: Client) -> None:
    user = await create_user(client)
    response = await client.post(link(client, user["id"]))
    assert response.status == 422
    assert (await response.json())["error"]["field"] == "List-Unsubscribe"
    assert await opt_outs(client, user["id"]) == []


async def test_forged_links_spend_the_unauthenticated_budget(make_client: MakeClient) -> None:
    client = await make_client(
        channels={"public_url": "https://push.example.com"},
        limits={"unauthenticated_rate": 0.001, "unauthenticated_burst": 2},
    )
    user = await create_user(client)
    bad = forged(link(client, user["id"]))
    statuses = [(await client.post(bad, data=ONE_CLICK, headers=FORM)).status for _ in range(3)]
    assert statuses == [400, 400, 429]
    # A valid link is not limited by it.
    good = await client.post(link(client, user["id"]), data=ONE_CLICK, headers=FORM)
    assert good.status == 200


async def test_without_public_url_there_are_no_links(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.post("/unsubscribe?token=x.y", data=ONE_CLICK, headers=FORM)
    assert response.status == 404
    assert "channels.public_url" in (await response.json())["error"]["message"]


async def test_the_next_plan_skips_email_for_that_category(client: Client) -> None:
    user = await create_user(client, email="ada@example.com")
    await client.post(link(client, user["id"]), data=ONE_CLICK, headers=FORM)
    storage = client.app[STORAGE]
    statuses = {}
    for category in ("news", "billing"):
        payload = {"user_id": user["id"], "title": "hello", "category": category}
        response = await client.post("/api/notifications", json=payload, headers=AUTH)
        assert response.status == 202, await response.text()
        [row] = await storage.channel_deliveries_of((await response.json())["id"])
        statuses[category] = (row.channel, row.status, row.reason)
    assert statuses == {
        "news": ("email", "skipped", "preference"),
        "billing": ("email", "scheduled", None),
    }


async def test_a_mandatory_category_cannot_be_unsubscribed_from(make_client: MakeClient) -> None:
    client = await make_client(
        channels={"public_url": "https://push.example.com", "email": [RELAY]},
        routing={"mandatory_categories": ["security"]},
    )
    user = await create_user(client, email="ada@example.com")
    response = await client.post(link(client, user["id"], "security"), data=ONE_CLICK, headers=FORM)
    assert response.status == 200
    assert "cannot be turned off" in await response.text()
    assert await opt_outs(client, user["id"]) == []


async def test_the_opt_out_is_exported_and_audited_under_the_user(client: Client) -> None:
    user = await create_user(client)
    await client.post(link(client, user["id"]), data=ONE_CLICK, headers=FORM)
    export = await (await client.get(f"/api/users/{user['id']}/export", headers=AUTH)).json()
    assert export["preferences"]["categories"] == {"news": {"email": False}}
    audit = await (await client.get("/api/audit?action=user.unsubscribe", headers=AUTH)).json()
    [record] = audit["items"]
    assert (record["actor"], record["target"], record["result"]) == (
        f"user:{user['id']}",
        f"user:{user['id']}",
        "200",
    )
    assert record["detail"] == {"channel": "email", "category": "news"}
