"""The console's pages and assets over HTTP (pushd/ops/console.py): the strict policy,
the assets served, and the key's role in /api/stats. The pages in a real browser:
tests/ops/test_console_browser.py."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp.test_utils import TestClient

from pushd.ops.console import PAGE_CSP
from tests.app_client import AUTH, MakeClient, create_key, create_user, send

Client = TestClient[Any, Any]
PAGES = ["/console", "/console/inbox", "/docs"]


async def test_the_pages_run_only_scripts_served_by_pushd(client: Client) -> None:
    """Guards the policy against inline code coming back (a page that needs
    'unsafe-inline' or a hash), and the pages against a script from elsewhere."""
    assert "script-src 'self'" in PAGE_CSP
    assert "style-src 'self'" in PAGE_CSP
    assert "unsafe" not in PAGE_CSP
    assert "sha256-" not in PAGE_CSP
    for path in PAGES:
        response = await client.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Security-Policy"] == PAGE_CSP
        assert response.headers["X-Frame-Options"] == "DENY"
        html = await response.text()
        # Every script is a file of this origin; no inline code, no inline style.
        for tag in re.findall(r"<script[^>]*>", html):
            assert re.search(r'src="/console/assets/\w+\.js"', tag), tag
        assert "<style" not in html
        assert " style=" not in html
        assert not re.search(r"<[^>]+\son\w+=", html), path


async def test_the_assets_are_served_with_their_types(client: Client) -> None:
    for asset, content_type in [
        ("console.js", "text/javascript"),
        ("inbox.js", "text/javascript"),
        ("docs.js", "text/javascript"),
        ("console.css", "text/css"),
    ]:
        response = await client.get(f"/console/assets/{asset}")
        assert response.status == 200, asset
        assert response.content_type == content_type
    console_script = await (await client.get("/console/assets/console.js")).text()
    assert "/metrics" in console_script
    assert "pushd_delivery_latency_seconds_bucket" in console_script
    for missing in ["nope.js", "console.html", "..%2Fconsole.py"]:
        response = await client.get(f"/console/assets/{missing}")
        assert response.status == 404, missing
        assert (await response.json())["error"]["code"] == "not_found"


async def test_stats_name_the_role_of_the_key_that_asks(client: Client) -> None:
    stats = await (await client.get("/api/stats", headers=AUTH)).json()
    assert stats["key_role"] == "admin"
    reader, _ = await create_key(client, "reader")
    as_reader = await client.get("/api/stats", headers={"Authorization": f"Bearer {reader}"})
    assert (await as_reader.json())["key_role"] == "reader"


# Never listening: every send is refused at once, a transient error, and with one
# attempt allowed the delivery fails on its first.
UNREACHABLE_RELAY = {
    "name": "relay",
    "host": "127.0.0.1",
    "port": 2,
    "security": "none",
    "from_address": "pushd@example.com",
}
FAIL_AT_ONCE = {"email": [UNREACHABLE_RELAY], "max_attempts": 1, "poll_interval": 0.05}


async def failures(client: Client, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/api/channel-deliveries/failed{query}", headers=AUTH)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def fail_emails(client: Client, count: int) -> list[str]:
    """Send `count` emails that fail; their notification ids, oldest first."""
    user = await create_user(client, email="ada@example.com")
    sent = [
        (await send(client, user["id"], channels=[{"channel": "email"}]))["id"]
        for _ in range(count)
    ]
    for _ in range(200):
        if len((await failures(client))["items"]) == count:
            return sent
        await asyncio.sleep(0.05)
    raise AssertionError(f"the {count} emails never failed: {await failures(client)}")


async def test_the_latest_failed_deliveries_on_sqlite(make_client: MakeClient) -> None:
    await check_latest_failures(await make_client(channels=FAIL_AT_ONCE))


async def test_the_latest_failed_deliveries_on_postgresql(
    make_client: MakeClient, postgres_url: str
) -> None:
    client = await make_client(storage={"url": postgres_url}, channels=FAIL_AT_ONCE)
    await check_latest_failures(client)


async def check_latest_failures(client: Client) -> None:
    """Newest first, with their errors, a page at a time."""
    assert (await failures(client)) == {"items": [], "next_cursor": None}
    sent = await fail_emails(client, 3)

    page = await failures(client, "?limit=2")
    first = page["items"][0]
    assert (first["channel"], first["provider"], first["attempts"]) == ("email", "relay", 1)
    assert first["error"]  # why it failed, as the provider's client said it
    rest = await failures(client, f"?limit=2&cursor={page['next_cursor']}")
    assert rest["next_cursor"] is None
    # Newest failure first. The worker sends the three at once, so they may fail in any
    # order: the pages hold each once, ordered by when each failed.
    items = page["items"] + rest["items"]
    assert sorted(item["notification_id"] for item in items) == sorted(sent)
    failed_at = [item["failed_at"] for item in items]
    assert failed_at == sorted(failed_at, reverse=True)


async def test_the_failed_deliveries_are_for_admins_only(client: Client) -> None:
    for role in ("publisher", "reader"):
        key, _ = await create_key(client, role)
        response = await client.get(
            "/api/channel-deliveries/failed", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status == 403, role
