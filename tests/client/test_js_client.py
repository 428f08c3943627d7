"""The JavaScript client (pushd/client/pushd-client.js): its Node tests
(tests/client/js/*.test.mjs, Node's built-in runner) run here against a real pushd on
a real port, so that the project's one test command runs them; and `GET /client.js`.

A missing `node` fails, never skips: the JS client would otherwise go untested."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from actors.transport import CloseCode
from pushd.appkeys import SOCKETS
from tests.app_client import ADMIN_KEY, MakeClient

ROOT = Path(__file__).resolve().parents[2]
JS_TESTS = ROOT / "tests" / "client" / "js"
CLIENT_JS = ROOT / "pushd" / "client" / "pushd-client.js"
NODE_TIMEOUT = 90.0

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]


def control_app(pushd: web.Application) -> web.Application:
    """`POST /close?code=N`: close every socket (and stream) of `pushd` with N, as pushd
    itself does on shutdown (1001) or a server-side reset (4000). The Node tests use it
    to cut their client off from the server side."""

    async def close(request: web.Request) -> web.Response:
        await pushd[SOCKETS].close_all(CloseCode(int(request.query["code"])))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/close", close)
    return app


async def test_node_tests_pass_against_a_real_pushd(
    make_client: MakeClient, aiohttp_server: AiohttpServer
) -> None:
    node = shutil.which("node")
    assert node is not None, "node (>= 20) is needed for the JavaScript client's tests"
    server = await make_client(mailbox={"cursor_flush_interval": 0.05})
    control = await aiohttp_server(control_app(server.app))
    environment = {
        **os.environ,
        "PUSHD_URL": str(server.make_url("")).rstrip("/"),
        "PUSHD_ADMIN_KEY": ADMIN_KEY,
        "PUSHD_CONTROL_URL": str(control.make_url("")).rstrip("/"),
    }
    files = sorted(str(path) for path in JS_TESTS.glob("*.test.mjs"))
    assert files, f"no *.test.mjs in {JS_TESTS}"
    process = await asyncio.create_subprocess_exec(
        node,
        # Node 20 has its WebSocket behind this flag (22 has it by default), and needs the
        # other one to load pushd-client.js, an ES module without a package.json.
        "--experimental-websocket",
        "--experimental-detect-module",
        "--test",
        "--test-timeout=30000",
        *files,
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output: list[bytes] = []
    try:
        async with asyncio.timeout(NODE_TIMEOUT):
            async for line in process.stdout:
                output.append(line)
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        text = b"".join(output).decode(errors="replace")
        pytest.fail(f"node --test did not finish within {NODE_TIMEOUT} s:\n{text}")
    text = b"".join(output).decode(errors="replace")
    print(text)  # the figures of each Node test, shown with -s or on failure
    assert process.returncode == 0, f"node --test failed:\n{text}"
    assert re.search(r"^# fail 0$", text, re.MULTILINE), text
    assert not re.search(r"^# pass 0$", text, re.MULTILINE), text


def test_the_close_code_table_is_the_servers() -> None:
    """The JS client's copy of the close codes must match actors.transport.CloseCode."""
    source = CLIENT_JS.read_text(encoding="utf-8")
    block = re.search(r"CLOSE_CODES = Object\.freeze\(\{(.*?)\}\)", source, re.DOTALL)
    assert block is not None
    in_js = {name: int(code) for name, code in re.findall(r"(\w+): (\d+)", block.group(1))}
    assert in_js == {code.name: code.value for code in CloseCode}


async def test_client_js_is_served(make_client: MakeClient) -> None:
    client: TestClient[Any, Any] = await make_client()
    response = await client.get("/client.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert await response.read() == CLIENT_JS.read_bytes()
    assert "max-age" in response.headers["Cache-Control"]
    again = await client.get("/client.js", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""
