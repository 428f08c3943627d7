"""A headless Chromium driven over the DevTools protocol with aiohttp's WebSocket client.

No Selenium: the protocol is a few JSON messages, aiohttp is already a dependency, and
every wait is a coroutine, so the test's event loop (watched by the blocking guard)
never blocks on a browser driver. Debian's `chromium` package provides the browser;
scripts/services.sh installs it. A missing browser FAILS the test that asks for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
_STARTUP_SECONDS = 30.0
_CALL_SECONDS = 15.0


class _DevTools:
    """The browser's DevTools socket: one id counter for every command sent on it."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, session_id: str | None = None, **params: Any) -> Any:
        """Send one command (to a tab when `session_id` is given); its result."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        await self._socket.send_json(message)
        async with asyncio.timeout(_CALL_SECONDS):
            while True:
                answer = await self._socket.receive_json()
                if answer.get("id") != message_id:
                    continue  # an event
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer["result"]


class Page:
    """One browser tab: evaluate JavaScript in it."""

    def __init__(self, devtools: _DevTools, session_id: str) -> None:
        self._devtools = devtools
        self._session_id = session_id

    async def call(self, method: str, **params: Any) -> Any:
        """Send one protocol command to the tab and return its result."""
        return await self._devtools.call(method, self._session_id, **params)

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` (a promise is awaited); a thrown error fails."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, *, timeout: float = 10.0) -> Any:  # noqa: ASYNC109 - a deadline for the page, not for one call
        """Poll `expression` until it is truthy; its value. It may throw meanwhile (the
        page is still loading); past the deadline, the last error is the failure."""
        last_error: AssertionError | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        value = await self.evaluate(expression)
                    except AssertionError as error:
                        last_error, value = error, None
                    if value:
                        return value
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"{expression!r} never held: {last_error}") from None


@contextlib.asynccontextmanager
async def open_page(url: str) -> AsyncIterator[Page]:
    """A headless Chromium showing `url`; the browser is stopped (by its own PID) after."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail(
            "chromium is not installed: run scripts/services.sh (it installs Debian's "
            "chromium), or apt-get install chromium"
        )
    with tempfile.TemporaryDirectory(prefix="pushd-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            "--headless=new",
            "--no-sandbox",  # CI containers run as root, where the sandbox cannot start
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            browser_url = await _devtools_url(process)
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(browser_url, max_msg_size=0) as socket,
            ):
                page = await _attach(socket, url)
                yield page
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def _devtools_url(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(_STARTUP_SECONDS):
        while True:
            line = (await process.stderr.readline()).decode(errors="replace")
            if not line:
                raise AssertionError("chromium exited before listening:\n" + "".join(seen))
            seen.append(line)
            found = _LISTENING.search(line)
            if found:
                return found[1]


async def _attach(socket: aiohttp.ClientWebSocketResponse, url: str) -> Page:
    """A new tab on `url`, attached in flat mode (commands carry its session id)."""
    devtools = _DevTools(socket)
    created = await devtools.call("Target.createTarget", url="about:blank")
    attached = await devtools.call(
        "Target.attachToTarget", targetId=created["targetId"], flatten=True
    )
    page = Page(devtools, attached["sessionId"])
    await page.call("Page.enable")
    await page.call("Page.navigate", url=url)
    return page
