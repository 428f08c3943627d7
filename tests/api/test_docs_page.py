"""`GET /docs` (pushd/api/docs_page.py): the OpenAPI document rendered in a real headless
Chromium by the script pushd serves, under the pages' strict policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.ops.console import PAGE_CSP
from tests.api.headless_chromium import open_page
from tests.app_client import ADMIN_KEY
from tests.ops.test_console_browser import READY, screenshot, screenshots

__all__ = ["screenshots"]  # the fixture, shared with the console's browser tests

Client = TestClient[Any, Any]
SEND = "document.querySelector('[data-operation=\"POST /api/notifications\"]')"
FILTER = (
    "(f => { f.value = %s; f.dispatchEvent(new Event('input')); })"
    "(document.getElementById('filter'))"
)


async def test_the_page_is_public_and_the_document_is_not(client: Client) -> None:
    page = await client.get("/docs")
    assert page.status == 200
    assert page.headers["Content-Security-Policy"] == PAGE_CSP
    assert '<script src="/console/assets/docs.js" defer>' in await page.text()
    assert (await client.get("/api/openapi.json")).status == 401


@pytest.mark.slow
async def test_the_reference_shows_the_send_operation(client: Client, screenshots: Path) -> None:
    async with open_page(str(client.make_url("/docs"))) as page:
        await page.wait_for(READY)
        # Nothing is shown before a key is given: the document needs one.
        assert await page.evaluate("document.querySelectorAll('.op').length") == 0
        await page.evaluate(f"document.getElementById('key').value = '{ADMIN_KEY}'")
        await page.evaluate("document.querySelector('#login button').click()")
        await page.wait_for(f"{SEND} !== null")
        await page.evaluate(f"{SEND}.open = true")
        text = await page.evaluate(f"{SEND}.innerText")
        assert "POST\n/api/notifications" in text or "POST/api/notifications" in text.replace(
            " ", ""
        )
        assert "API key roles: admin, publisher" in text
        assert "Idempotency-Key" in text  # its header parameter
        assert "user_id?: string" in text  # a field of its request body's schema
        assert "202:" in text
        assert "422:" in text
        groups = await page.evaluate(
            "[...document.querySelectorAll('section[data-tag]')].map(s => s.dataset.tag)"
        )
        assert {"notifications", "users", "system"} <= set(groups)
        # The filter narrows the list to what matches.
        await page.evaluate(FILTER % "'read-all'")
        shown = await page.evaluate(
            "[...document.querySelectorAll('.op')].filter(o => !o.hidden)"
            ".map(o => o.dataset.operation)"
        )
        assert shown == ["POST /api/users/{userId}/notifications/read-all"]
        await page.evaluate(FILTER % "''")
        await screenshot(page, screenshots, "docs")
