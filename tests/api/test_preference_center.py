"""The hosted preference center (pushd/api/preference_center.py): the signed link, the
page in a real headless Chromium, and the next send honouring what was saved there."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.api.preference_center import PAGE_CSP
from pushd.appkeys import PREFERENCE_LINKS, STORAGE, UNSUBSCRIBE_LINKS
from pushd.channels.unsubscribe import PreferenceLinks
from storage.records import ChannelDeliveryRecord
from tests.api.headless_chromium import open_page
from tests.app_client import AUTH, TOKEN_SECRET, MakeClient, create_user, send

Client = TestClient[Any, Any]
PUBLIC_URL = "https://pushd.example.test"
# Never contacted: every email step below is planned for later or skipped.
RELAY = {
    "name": "relay",
    "host": "127.0.0.1",
    "port": 2,
    "security": "none",
    "from_address": "pushd@example.com",
}
EMAIL_LATER = [{"channel": "email", "delay": 600.0}]
CATEGORIES = {
    "news": {"name": "News and offers", "plan": EMAIL_LATER},
    "security": {"name": "Account security", "opt_out": False, "plan": EMAIL_LATER},
}
API = "/api/preference-center"


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        channels={"email": [RELAY], "public_url": PUBLIC_URL},
        routing={"categories": CATEGORIES},
    )


def links_of(client: Client) -> PreferenceLinks:
    links: PreferenceLinks | None = client.app[PREFERENCE_LINKS]
    assert links is not None
    return links


async def email_of(client: Client, notification_id: str) -> ChannelDeliveryRecord:
    rows: list[ChannelDeliveryRecord] = await client.app[STORAGE].channel_deliveries_of(
        notification_id
    )
    [row] = rows
    return row


@pytest.mark.slow
async def test_a_channel_turned_off_in_the_browser_is_skipped_on_the_next_send(
    client: Client,
) -> None:
    user = await create_user(client, email="ada@example.com")
    link = links_of(client).url(user["id"])
    assert link.startswith(PUBLIC_URL + "/preferences#token=")
    # The same link, on the test server's real port instead of the public address.
    local = str(client.make_url("/preferences")) + link.removeprefix(PUBLIC_URL + "/preferences")

    async with open_page(local) as page:
        await page.wait_for("!document.getElementById('preferences').hidden")
        # The token left the address bar as soon as the page read it.
        assert await page.evaluate("location.hash") == ""
        names = await page.evaluate(
            "[...document.querySelectorAll('tbody th')].map(th => th.textContent)"
        )
        assert names == ["News and offers", "Account security (always sent)"]
        assert await page.evaluate("document.querySelector('[name=\"security.email\"]').disabled")
        box = "document.querySelector('[name=\"news.email\"]')"
        assert await page.evaluate(f"{box}.checked") is True
        await page.evaluate(f"{box}.click()")
        await page.evaluate("document.getElementById('save').click()")
        status = "document.getElementById('status').textContent"
        outcome = await page.wait_for(f"{status} !== 'Saving…' && {status}")
        assert outcome == "Saved."
        assert await page.evaluate(f"{box}.checked") is False

    stored = await client.app[STORAGE].get_preferences(user["id"])
    assert stored.channels == {"news": {"email": False}}
    news = await email_of(client, (await send(client, user["id"], category="news"))["id"])
    assert (news.status, news.reason) == ("skipped", "preference")
    security = await email_of(client, (await send(client, user["id"], category="security"))["id"])
    assert (security.status, security.reason) == ("scheduled", None)


async def test_the_page_runs_only_its_own_served_script(client: Client) -> None:
    page = await client.get("/preferences")
    assert page.status == 200
    assert page.headers["Content-Security-Policy"] == PAGE_CSP
    assert "script-src 'self'" in PAGE_CSP
    assert "unsafe-inline" not in PAGE_CSP
    html = await page.text()
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="preferences/preference_center.js" defer>'
    ]
    script = await client.get("/preferences/preference_center.js")
    assert script.status == 200
    assert script.content_type == "text/javascript"
    assert "api/preference-center" in await script.text()


async def test_open_and_save_with_the_token_in_the_body(client: Client) -> None:
    user = await create_user(client, email="ada@example.com")
    token = links_of(client).token(user["id"])
    opened = await client.post(API, json={"token": token})
    assert opened.status == 200
    view = await opened.json()
    assert view["muted"] is False
    assert view["channels"] == ["email", "push", "sms"]
    assert [(c["slug"], c["opt_out"], c["channels"]) for c in view["categories"]] == [
        ("news", True, {"email": True, "push": True, "sms": True}),
        ("security", False, {"email": True, "push": True, "sms": True}),
    ]
    saved = await client.put(
        API, json={"token": token, "muted": True, "categories": {"news": {"sms": False}}}
    )
    assert saved.status == 200
    view = await saved.json()
    assert view["muted"] is True
    # The switches are shown as they are once unmuted.
    assert view["categories"][0]["channels"] == {"email": True, "push": True, "sms": False}
    by_api = await client.get(f"/api/users/{user['id']}/preferences", headers=AUTH)
    assert (await by_api.json())["muted"] is True


async def test_the_one_click_unsubscribe_writes_the_same_switch(client: Client) -> None:
    user = await create_user(client, email="ada@example.com")
    unsubscribe = client.app[UNSUBSCRIBE_LINKS].url(user["id"], "news")
    response = await client.post(
        unsubscribe.removeprefix(PUBLIC_URL),
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 200
    token = links_of(client).token(user["id"])
    view = await (await client.post(API, json={"token": token})).json()
    assert view["categories"][0]["channels"]["email"] is False


@pytest.mark.parametrize(
    ("categories", "field"),
    [
        ({"security": {"email": False}}, "categories.security.email"),
        ({"nonsense": {"email": False}}, "categories.nonsense"),
        ({"news": {"fax": False}}, "categories"),  # a dict key: msgspec names the dict
    ],
)
async def test_bad_saves_are_422_naming_the_field(
    client: Client, categories: dict[str, Any], field: str
) -> None:
    user = await create_user(client)
    token = links_of(client).token(user["id"])
    response = await client.put(API, json={"token": token, "categories": categories})
    assert response.status == 422
    assert (await response.json())["error"]["field"] == field
    stored = await client.app[STORAGE].get_preferences(user["id"])
    assert stored.channels == {}


async def test_forged_expired_and_foreign_tokens_are_refused(make_client: MakeClient) -> None:
    client = await make_client(
        channels={"email": [RELAY], "public_url": PUBLIC_URL},
        routing={"categories": CATEGORIES},
        preference_center={"link_max_age": 3600.0},
    )
    user = await create_user(client)
    links = links_of(client)
    good = links.token(user["id"])
    expired = links.token(user["id"], issued_at=1)
    altered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    # An unsubscribe token is signed with the same key but another label.
    unsubscribe = client.app[UNSUBSCRIBE_LINKS].token(user["id"], "news")
    other_server = PreferenceLinks(
        b"another-server-secret-0123456789abcdef", PUBLIC_URL + "/preferences"
    ).token(user["id"])
    for token, problem in [
        (expired, "expired"),
        (altered, "signature"),
        (unsubscribe, "preference link"),
        (other_server, "signature"),
        ("not-a-token", "malformed"),
    ]:
        response = await client.post(API, json={"token": token})
        assert response.status == 403, token
        error = (await response.json())["error"]
        assert error["field"] == "token"
        assert problem in error["message"]
    assert (await client.post(API, json={"token": good})).status == 200


async def test_erased_user_and_disabled_center(make_client: MakeClient) -> None:
    client = await make_client(channels={"public_url": PUBLIC_URL})
    user = await create_user(client)
    token = links_of(client).token(user["id"])
    assert (await client.delete(f"/api/users/{user['id']}", headers=AUTH)).status in (200, 204)
    gone = await client.post(API, json={"token": token})
    assert gone.status == 404
    assert (await gone.json())["error"]["field"] == "token"

    without_public_url = await make_client(token_secret=TOKEN_SECRET)
    assert without_public_url.app[PREFERENCE_LINKS] is None
    assert (await without_public_url.post(API, json={"token": token})).status == 404
