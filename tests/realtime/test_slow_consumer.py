"""A client that stops reading is cut off and its socket released (issue #3 point 7)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import SOCKETS
from pushd.realtime import sockets
from tests.actors.doubles import eventually
from tests.app_client import AUTH, MakeClient, create_user, user_token


def _masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _stuck_client(client: TestClient[Any, Any], token: str) -> socket.socket:
    """A raw WebSocket client with a tiny receive buffer that authenticates and then
    never reads again."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = str(client.server.host), int(client.server.port or 0)
    await loop.sock_connect(sock, (host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    await loop.sock_recv(sock, 4096)  # the 101 answer
    auth = json.dumps({"type": "auth", "token": token}).encode()
    await loop.sock_sendall(sock, _masked_text_frame(auth))
    return sock


async def test_a_client_that_stops_reading_is_cut_off_and_released(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the 4008 close waiting for ever on a send buffer the peer never drains:
    the server must free the socket (descriptor, buffer, handler), not just stop
    writing to it."""
    # The 4008 close gives up on the peer after this, then aborts (5 s in production).
    monkeypatch.setattr(sockets, "CLOSE_TIMEOUT", 0.5)
    client = await make_client(actors={"socket_queue_size": 8})
    user = await create_user(client)
    sock = await _stuck_client(client, await user_token(client, user["id"]))
    with contextlib.closing(sock):
        await eventually(lambda: len(client.app[SOCKETS]) == 1)
        # Up to 32 MB (about 32 KB a notification, body and data near their caps): more
        # than the kernel buffers between the two ends can hold.
        big = "x" * 16_000
        body = {"user_id": user["id"], "title": "t", "body": big, "data": {"pad": big}}
        for _ in range(1000):
            response = await client.post("/api/notifications", json=body, headers=AUTH)
            assert response.status == 202
            if not client.app[SOCKETS]:
                break
        await eventually(lambda: len(client.app[SOCKETS]) == 0, within=10)
    metrics = await (await client.get("/metrics", headers=AUTH)).text()
    assert "pushd_mailbox_sockets_dropped_total 1" in metrics
