"""The HTTP server under the app (pushd/process/http_server.py), over real sockets on the runner
`pushd serve` uses: how long a connection may take to send its headers or stay idle, how
many one address may hold, and what a request the HTTP parser refuses gets back (issue
#10, points 6 and 7)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pushd.app import Identity, build_app
from pushd.config.settings import ServerConfig, load_config
from pushd.process import http_server
from tests.app_client import ADMIN_KEY, AUTH, TOKEN_SECRET, create_user, send, user_token
from tests.realtime.test_ws import connect, next_notification

Client = TestClient[Any, Any]
Serve = Callable[..., Awaitable[Client]]
Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter

HEALTHCHECK = b"GET /api/healthcheck HTTP/1.1\r\nHost: pushd\r\n\r\n"
# Well above every timeout the tests set: a connection still open by then was kept.
PATIENCE_S = 3.0


class PushdTestServer(TestServer):
    """aiohttp's TestServer on the runner `pushd serve` uses, not a plain AppRunner."""

    def __init__(self, app: web.Application, settings: ServerConfig) -> None:
        super().__init__(app)
        self._settings = settings

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return http_server.app_runner(self.app, self._settings, **kwargs)


@pytest.fixture
def serve(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Serve:
    """Start the whole app; keyword arguments are `[server]` settings."""

    async def start(**server: Any) -> Client:
        overrides = {"server": {"data_dir": str(tmp_path), **server}}
        config = load_config(None, environ={}, overrides=overrides)
        identity = Identity("test-node", admin_key=ADMIN_KEY)
        app = build_app(config, identity=identity, token_secret=TOKEN_SECRET)
        return await aiohttp_client(PushdTestServer(app, config.server))

    return start


@contextlib.asynccontextmanager
async def raw_connection(client: Client) -> AsyncIterator[tuple[Reader, Writer]]:
    """A plain TCP connection to the server, to send bytes no HTTP client would."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: Reader) -> tuple[bytes, bytes]:
    """One response: its head (status line and headers) and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


async def seconds_until_closed(reader: Reader, writer: Writer, *, trickle: bool = False) -> float:
    """Seconds until the server closed the connection (inf if it was still open after
    PATIENCE_S). With `trickle`, a header line is sent every 0.1 s meanwhile, never the
    blank line that ends the headers."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < PATIENCE_S:
        try:
            if not await asyncio.wait_for(reader.read(65536), 0.1):
                return loop.time() - started
        except TimeoutError:
            if trickle:
                writer.write(b"X-Slow: a\r\n")
        except ConnectionResetError:
            return loop.time() - started
    return float("inf")


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    serve: Serve,
) -> None:
    client = await serve(header_timeout=0.5, keepalive_timeout=30.0)
    async with raw_connection(client) as (reader, writer):
        assert 0.4 < await seconds_until_closed(reader, writer) < PATIENCE_S


async def test_headers_sent_slowly_do_not_extend_the_header_timeout(serve: Serve) -> None:
    """Guards against slow-header attacks: each byte that arrives must not restart the
    clock, or a client sending a header line every few seconds holds the socket forever."""
    client = await serve(header_timeout=0.5, keepalive_timeout=30.0)
    async with raw_connection(client) as (reader, writer):
        writer.write(b"GET /api/healthcheck HTTP/1.1\r\nHost: pushd\r\n")
        assert await seconds_until_closed(reader, writer, trickle=True) < PATIENCE_S


async def test_the_next_request_on_a_kept_alive_connection_has_the_header_timeout_too(
    serve: Serve,
) -> None:
    client = await serve(header_timeout=0.5, keepalive_timeout=30.0)
    async with raw_connection(client) as (reader, writer):
        writer.write(HEALTHCHECK)
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200")
        writer.write(b"GET /api/healthcheck HTTP/1.1\r\nHost: pushd\r\n")
        assert await seconds_until_closed(reader, writer, trickle=True) < PATIENCE_S


async def test_an_idle_keep_alive_connection_is_closed(serve: Serve) -> None:
    client = await serve(header_timeout=30.0, keepalive_timeout=0.5)
    async with raw_connection(client) as (reader, writer):
        writer.write(HEALTHCHECK)
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200")
        assert 0.4 < await seconds_until_closed(reader, writer) < PATIENCE_S


async def test_an_open_websocket_is_not_an_idle_connection(serve: Serve) -> None:
    """The counterpart of the two timeouts: a quiet WebSocket outlives both."""
    client = await serve(header_timeout=0.3, keepalive_timeout=0.3)
    user = await create_user(client)
    ws, _ = await connect(client, await user_token(client, user["id"]))
    await asyncio.sleep(1.0)
    sent = await send(client, user["id"])
    assert (await next_notification(ws))["id"] == sent["id"]
    await ws.close()


async def healthcheck_on(reader: Reader, writer: Writer) -> bytes:
    """The status line of a healthcheck sent on this connection."""
    writer.write(HEALTHCHECK)
    head, _ = await read_response(reader)
    return head.partition(b"\r\n")[0]


async def test_connections_beyond_the_per_address_cap_are_closed_at_once(serve: Serve) -> None:
    client = await serve(max_connections_per_address=3)
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(raw_connection(client)) for _ in range(3)]
        for reader, writer in held:
            assert await healthcheck_on(reader, writer) == b"HTTP/1.1 200 OK"

        async with raw_connection(client) as (reader, writer):
            assert await seconds_until_closed(reader, writer) < 0.5

        # A connection that closes makes room for the next one (once the server has
        # seen it go: until then the next one is refused too).
        held[0][1].close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PATIENCE_S
        while True:
            async with raw_connection(client) as (reader, writer):
                with contextlib.suppress(asyncio.IncompleteReadError, ConnectionResetError):
                    assert await healthcheck_on(reader, writer) == b"HTTP/1.1 200 OK"
                    break
            assert loop.time() < deadline, "the freed slot was never given to a new connection"
            await asyncio.sleep(0.05)


async def test_no_per_address_cap_when_set_to_zero(serve: Serve) -> None:
    client = await serve(max_connections_per_address=0)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(20):
            reader, writer = await stack.enter_async_context(raw_connection(client))
            assert await healthcheck_on(reader, writer) == b"HTTP/1.1 200 OK"


SECRET = f"Bearer {ADMIN_KEY}"


@pytest.mark.parametrize(
    "header",
    [
        f"Authorization: {SECRET}\x01".encode(),  # a control character in the value
        f"Authorization : {SECRET}".encode(),  # a space before the colon
    ],
    ids=["control-character", "space-before-colon"],
)
async def test_a_request_the_parser_refuses_gets_the_json_error_and_echoes_nothing(
    serve: Serve, caplog: pytest.LogCaptureFixture, header: bytes
) -> None:
    """aiohttp's own 400 repeats the offending header line (here the API key) in its
    text body, and logs it at ERROR with a traceback."""
    caplog.set_level(logging.DEBUG)
    client = await serve()
    async with raw_connection(client) as (reader, writer):
        writer.write(b"GET /api/users HTTP/1.1\r\nHost: pushd\r\n" + header + b"\r\n\r\n")
        head, body = await read_response(reader)
        assert await asyncio.wait_for(reader.read(), PATIENCE_S) == b""  # then it closes

    assert head.split(b" ")[1] == b"400"
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
    }
    assert headers[b"content-type"].startswith(b"application/json")
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"content-security-policy"].startswith(b"default-src 'none'")
    assert headers[b"cache-control"] == b"no-store"
    # Generated (the header line is not trusted): a process prefix and a counter, in hex.
    assert re.fullmatch(rb"[0-9a-f]{24,}", headers[b"x-request-id"])
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request"
    assert error["message"]
    assert ADMIN_KEY.encode() not in head + body

    formatter = logging.Formatter()
    for record in caplog.records:
        assert ADMIN_KEY not in formatter.format(record), record.name
    # The server still serves well-formed requests.
    assert (await client.get("/api/users", headers=AUTH)).status == 200
