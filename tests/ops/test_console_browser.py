"""The console and the demo inbox in a real headless Chromium (tests/api/headless_chromium.py)
against a pushd on a real port: log in with a key, send through the form and see the
accepted figure move within 2 s; a reader sees no send form; the inbox shows a
notification sent through the API within 2 s and its unread count drops on mark-read.

A screenshot of each page is written to `$PUSHD_SCREENSHOTS` (default: the test's
tmp_path/screenshots) and its path printed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.api.headless_chromium import Page, open_page
from tests.app_client import (
    ADMIN_KEY,
    AUTH,
    MakeClient,
    create_key,
    create_user,
    send,
    user_token,
)

Client = TestClient[Any, Any]
# Set by each page's script once its handlers are in place.
READY = "document.documentElement.dataset.ready === 'true'"
# The bar: what was sent shows in the page within 2 s.
SHOWN_WITHIN = 2.0
# An email provider, for the channels table (its breaker); never contacted here.
RELAY = {
    "name": "relay",
    "host": "127.0.0.1",
    "port": 2,
    "security": "none",
    "from_address": "pushd@example.com",
}


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    return Path(os.environ.get("PUSHD_SCREENSHOTS") or tmp_path / "screenshots")


async def screenshot(page: Page, directory: Path, name: str) -> Path:
    """The page as PNG in `directory`; its path is printed (pytest -s shows it)."""
    height = await page.evaluate("document.documentElement.scrollHeight")
    await page.call(
        "Emulation.setDeviceMetricsOverride",
        width=1280,
        height=min(max(720, int(height)), 4000),
        deviceScaleFactor=1,
        mobile=False,
    )
    shot = await page.call("Page.captureScreenshot", format="png")
    path = directory / f"{name}.png"

    def write() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    await asyncio.to_thread(write)
    print(f"screenshot: {path}")
    return path


def text_of(element_id: str) -> str:
    return f"document.getElementById({json.dumps(element_id)}).textContent"


def fill(element_id: str, value: str) -> str:
    return f"document.getElementById({json.dumps(element_id)}).value = {json.dumps(value)}"


async def log_in(page: Page, key: str) -> None:
    """Type the key into the console's form and wait for its role to show."""
    await page.wait_for(READY)
    await page.evaluate(fill("key", key))
    await page.evaluate("document.querySelector('#login button').click()")
    await page.wait_for("!document.getElementById('live').hidden")


@pytest.mark.slow
async def test_the_console_shows_a_send_from_its_form_within_two_seconds(
    make_client: MakeClient, screenshots: Path
) -> None:
    # One attempt per email: a send to the relay fails at once (nothing listens there).
    channels = {"email": [RELAY], "max_attempts": 1, "poll_interval": 0.05}
    client = await make_client(channels=channels)
    user = await create_user(client, email="ada@example.com")
    async with open_page(str(client.make_url("/console"))) as page:
        await log_in(page, ADMIN_KEY)
        assert await page.evaluate(text_of("role")) == "admin"
        assert await page.evaluate("document.getElementById('keys-section').hidden") is False
        assert await page.evaluate("document.getElementById('failures-section').hidden") is False
        # The first reading of /metrics: nothing accepted yet, latency without data.
        await page.wait_for("document.getElementById('chart-accepted').dataset.total === '0'")
        assert await page.evaluate(text_of("value-p99")) == "no data"
        channels = await page.wait_for(
            "[...document.querySelectorAll('#channels tbody tr')].map(r => r.innerText).join('\\n')"
        )
        assert channels.startswith("email\t")
        assert "relay: closed" in channels

        await page.evaluate(fill("send-user", user["id"]))
        await page.evaluate(fill("send-body", "sent from the console test"))
        started = time.monotonic()
        await page.evaluate("document.querySelector('#send button').click()")
        result = await page.wait_for(
            f"{text_of('send-result')}.startsWith('Accepted') && {text_of('send-result')}"
        )
        await page.wait_for(
            "document.getElementById('chart-accepted').dataset.total === '1' && "
            "Number(document.getElementById('chart-accepted').dataset.peak) > 0",
            timeout=SHOWN_WITHIN,
        )
        shown_after = time.monotonic() - started
        print(f"accepted figure updated {shown_after:.2f} s after the click")
        notification_id = result.split()[1]
        stored = await client.get(f"/api/notifications/{notification_id}", headers=AUTH)
        assert (await stored.json())["body"] == "sent from the console test"

        # An email that fails shows in the admin's list, with its error.
        failing = await send(client, user["id"], channels=[{"channel": "email"}])
        failure = await page.wait_for(
            f"[...document.querySelectorAll('#failures tbody tr')].map(r => r.innerText)"
            f".find(text => text.includes('{failing['id']}'))"
        )
        assert "\temail\trelay\t" in failure

        # A frame handed to a socket: delivered/s and the latency percentiles get data.
        async with client.ws_connect("/ws") as socket:
            await socket.send_json({"type": "auth", "token": await user_token(client, user["id"])})
            assert (await socket.receive_json())["type"] == "welcome"
            await send(client, user["id"], title="to the socket")
            p50 = await page.wait_for(
                f"{text_of('value-p50')}.endsWith(' ms') && {text_of('value-p50')}",
                timeout=SHOWN_WITHIN,
            )
            print(f"p50 accept-to-frame latency shown: {p50}")
            assert float(p50.split()[0].replace(",", "")) > 0
            delivered = "document.getElementById('chart-delivered').dataset.peak"
            assert float(await page.evaluate(delivered)) > 0
        await screenshot(page, screenshots, "console")


@pytest.mark.slow
async def test_a_reader_key_sees_no_send_form(make_client: MakeClient) -> None:
    client = await make_client()
    reader, _ = await create_key(client, "reader")
    async with open_page(str(client.make_url("/console"))) as page:
        await log_in(page, reader)
        assert await page.evaluate(text_of("role")) == "reader"
        for admin_only in ("send-section", "keys-section", "failures-section"):
            hidden = await page.evaluate(f"document.getElementById('{admin_only}').hidden")
            assert hidden is True, admin_only
        # The figures are there all the same.
        await page.wait_for("document.getElementById('chart-accepted').dataset.total === '0'")


@pytest.mark.slow
async def test_the_inbox_shows_notifications_live_and_marks_them_read(
    make_client: MakeClient, screenshots: Path
) -> None:
    client = await make_client()
    user = await create_user(client)
    first = await send(client, user["id"], title="Sent before the inbox opened")
    async with open_page(str(client.make_url("/console/inbox"))) as page:
        await page.wait_for(READY)
        await page.evaluate(fill("key", ADMIN_KEY))
        await page.evaluate(fill("user", user["id"]))
        await page.evaluate("document.querySelector('#open button').click()")
        # Replayed on connect: the inbox is live once it shows.
        await page.wait_for(f"document.querySelector('li[data-id=\"{first['id']}\"]') !== null")
        assert await page.evaluate(text_of("unread")) == "1"

        started = time.monotonic()
        second = await send(client, user["id"], title="Sent while it is open", body="live")
        await page.wait_for(
            f"document.querySelector('li[data-id=\"{second['id']}\"]') !== null",
            timeout=SHOWN_WITHIN,
        )
        print(f"notification shown {time.monotonic() - started:.2f} s after its 202")
        titles = await page.evaluate(
            "[...document.querySelectorAll('#notifications .title')].map(t => t.textContent)"
        )
        assert titles == ["Sent while it is open", "Sent before the inbox opened"]  # newest first
        assert await page.evaluate(text_of("unread")) == "2"
        await screenshot(page, screenshots, "inbox")

        await page.evaluate(
            f"document.querySelector('li[data-id=\"{second['id']}\"] .mark-read').click()"
        )
        await page.wait_for(f"{text_of('unread')} === '1'", timeout=SHOWN_WITHIN)
        # "Mark all read" goes through the API; the server's `read` frame (through_seq)
        # reaches the page through the client.
        await page.evaluate("document.getElementById('read-all').click()")
        await page.wait_for(f"{text_of('unread')} === '0'", timeout=SHOWN_WITHIN)
        assert await page.evaluate("document.querySelectorAll('li.unread').length") == 0

    # The click went through the client's socket to the server, not only the page.
    for _ in range(100):
        response = await client.get(f"/api/notifications/{second['id']}", headers=AUTH)
        if (await response.json())["read_at"] is not None:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the mark-read never reached the server")
