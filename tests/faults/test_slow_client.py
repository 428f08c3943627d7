"""One client that never reads its socket (issue #3, point 7).

Embedded shape, default settings (rate limits off), 500 users. User 0 gets a flood of 8 KiB
notifications; users 1-499 get a steady paced load and have resuming clients that read
and ack. Two phases with the same POST load, in the same server:

1. baseline: user 0's client reads like everyone else;
2. stuck: user 0's socket is a raw TCP socket (4 KiB receive buffer) that sends `auth`,
   reads the welcome, then never reads again.

Guards against: one socket that cannot keep up delaying other users (a writer or an
actor waiting on it, a bus consumer blocked behind its mailbox); the server buffering
without bound for a client that does not read (memory grows with the flood); the stuck
socket never being cut (it must be closed with 4008 "slow consumer", after at most
`actors.socket_queue_size` frames queued for it) or never being released (a close
handshake the client never answers must not hold the socket and its handler for good).

Margin, stated because the machine is a shared 2-core box where the server, the 500
clients and the publisher compete for CPU: the stuck phase's p99 POST-to-frame delay for
users 1-499 must stay within LATENCY_FACTOR x the baseline p99 + LATENCY_SLACK.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.faults.harness import (
    AUTH,
    Endpoint,
    Job,
    Publisher,
    Report,
    ResumingClient,
    check,
    connected_clients,
    create_users,
    last_seqs,
    percentile,
    rss_kib,
    run_all,
    start_server,
    wait_caught_up,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

USERS = 500
NORMAL_PER_PHASE = 2_500
NORMAL_RATE = 250.0  # notifications/s to users 1-499, paced
FLOOD_PER_PHASE = 3_000
FLOOD_RATE = 300.0  # notifications/s to user 0, paced
FLOOD_BODY = "x" * 8192
SOCKET_QUEUE_SIZE = 1024  # actors.socket_queue_size, the default
LATENCY_FACTOR = 2.0
LATENCY_SLACK = 0.05  # seconds
# Growth of the server's RSS allowed during the stuck phase: the frames it may queue
# for the stuck socket (1,024 x ~8.3 KiB) plus 12 MiB of slack. Buffering the whole
# flood would need about 25 MiB more.
RSS_GROWTH_LIMIT_KIB = SOCKET_QUEUE_SIZE * 8 + 12 * 1024

# After the stuck phase, how long the server may still hold the socket it closed with
# 4008: a close handshake the client never answers must time out and the connection be
# dropped, or every client that stops reading holds a socket and a handler for good.
SOCKET_RELEASE_TIMEOUT = 15.0

OP_TEXT, OP_CLOSE = 0x1, 0x8


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client-to-server WebSocket frame (payload under 64 KiB)."""
    mask = os.urandom(4)
    size = len(payload)
    header = bytes([0x80 | opcode, 0x80 | size]) if size < 126 else (
        bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    )  # fmt: skip
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(size)


@dataclass
class StuckClient:
    """A WebSocket client that authenticates, reads its welcome, then stops reading."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def connect(cls, url: str, token: str, *, since: int) -> StuckClient:
        address = urlsplit(url)
        host, port = address.hostname or "127.0.0.1", address.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A tiny receive window, so that the server's side fills up fast.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        # The stream buffers at most 2 x limit before it stops reading the socket.
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        auth = json.dumps({"type": "auth", "token": token, "since": since}).encode()
        writer.write(_client_frame(OP_TEXT, auth))
        await writer.drain()
        opcode, payload = await _read_frame(reader)
        assert opcode == OP_TEXT, (opcode, payload)
        assert json.loads(payload)["type"] == "welcome", payload
        return cls(reader, writer)

    async def read_to_the_end(self) -> tuple[int, int | None]:
        """Read again until the server closes: (notification frames, close code or None
        if the connection ended without a close frame)."""
        frames = 0
        try:
            while True:
                opcode, payload = await _read_frame(self.reader)
                if opcode == OP_CLOSE:
                    return frames, int.from_bytes(payload[:2], "big") if payload else 1005
                frames += opcode == OP_TEXT
        except (asyncio.IncompleteReadError, ConnectionError):
            return frames, None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@dataclass
class RssWatch:
    """Samples the server's RSS while the stuck phase runs."""

    pid: int
    before: int = 0
    peak: int = 0

    async def run(self) -> None:
        self.before = self.peak = rss_kib(self.pid)
        while True:
            await asyncio.sleep(0.1)  # the sampling period
            self.peak = max(self.peak, rss_kib(self.pid))


async def _open_sockets(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/api/stats", headers=AUTH) as response:
        return int((await response.json())["websockets_open"])


async def _wait_released(session: aiohttp.ClientSession, url: str, count: int) -> bool:
    """Wait (at most SOCKET_RELEASE_TIMEOUT s) until the server holds `count` sockets."""
    period = 0.2
    for _ in range(int(SOCKET_RELEASE_TIMEOUT / period)):
        if await _open_sockets(session, url) <= count:
            return True
        await asyncio.sleep(period)  # polling the server's gauge
    return False


async def _phase(normal: Publisher, flood: Publisher, phase: str, normal_users: int) -> None:
    """The same POST load in both phases: steady to users 1-499, a flood to user 0."""
    await run_all(
        [
            normal.publish(
                [Job(k % normal_users, phase) for k in range(NORMAL_PER_PHASE)],
                concurrency=16,
                rate=NORMAL_RATE,
            ),
            flood.publish(
                [Job(0, phase, FLOOD_BODY) for _ in range(FLOOD_PER_PHASE)],
                concurrency=16,
                rate=FLOOD_RATE,
            ),
        ]
    )


def _p99(clients: list[ResumingClient], phase: str) -> float:
    return percentile(
        [d.delay for c in clients for d in c.deliveries.values() if d.phase == phase], 99
    )


async def test_slow_client(tmp_path: Path, report_figures: Report) -> None:
    began = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(await start_server(tmp_path / "pushd", {}))
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=48))
        )
        users = await create_users(session, server.url, USERS)
        endpoint = Endpoint(server.url)
        normal_users = users[1:]
        normal_ids = [user_id for user_id, _ in normal_users]
        clients = await stack.enter_async_context(connected_clients(endpoint, normal_users))
        normal = Publisher(session, endpoint, normal_ids)
        flood = Publisher(session, endpoint, [users[0][0]])

        async with connected_clients(endpoint, users[:1]) as (flood_reader,):
            await _phase(normal, flood, "baseline", len(normal_users))
            flood_truth = await last_seqs(session, server.url, [users[0][0]])
            await wait_caught_up([flood_reader], flood_truth, timeout=30)
        baseline_flood_read = len(flood_reader.deliveries)

        stuck = await StuckClient.connect(server.url, users[0][1], since=flood_reader.highest)
        stack.push_async_callback(stuck.close)
        sockets_before = await _open_sockets(session, server.url)
        rss = RssWatch(server.process.pid)
        async with asyncio.TaskGroup() as tasks:
            sampler = tasks.create_task(rss.run())
            await _phase(normal, flood, "stuck", len(normal_users))
            truth = await last_seqs(session, server.url, normal_ids)
            caught_up = await wait_caught_up(clients, truth, timeout=30)
            sampler.cancel()
        released = await _wait_released(session, server.url, sockets_before - 1)
        sockets_after = await _open_sockets(session, server.url)
        async with asyncio.timeout(30):
            stuck_frames, stuck_close = await stuck.read_to_the_end()

        baseline_p99, stuck_p99 = _p99(clients, "baseline"), _p99(clients, "stuck")
        allowed_p99 = LATENCY_FACTOR * baseline_p99 + LATENCY_SLACK
        outcome = check(
            clients,
            normal,
            truth,
            extra={
                "baseline p99 ms": round(baseline_p99 * 1e3, 1),
                "stuck p99 ms": round(stuck_p99 * 1e3, 1),
                "allowed p99 ms": round(allowed_p99 * 1e3, 1),
                "flood sent": len(flood.accepted),
                "flood read (baseline)": baseline_flood_read,
                "flood frames the stuck client could read": stuck_frames,
                "stuck close code": stuck_close,
                "server sockets open before/after": f"{sockets_before}/{sockets_after}",
                "RSS growth KiB": rss.peak - rss.before,
                "RSS before MiB": round(rss.before / 1024, 1),
                "test s": round(time.monotonic() - began, 1),
            },
        )
        summary = outcome.summary()
        report_figures(summary)
        assert caught_up, f"users 1-499 did not all catch up: {summary}"
        assert not outcome.problems, "\n".join([summary, *outcome.problems])
        assert baseline_flood_read == FLOOD_PER_PHASE, summary
        assert stuck_p99 <= allowed_p99, f"the stuck client delayed the others: {summary}"
        assert stuck_close in (4008, None), summary
        assert released, f"the server still holds the stuck socket it closed: {summary}"
        assert stuck_frames < FLOOD_PER_PHASE, f"the server buffered the whole flood: {summary}"
        assert rss.peak - rss.before < RSS_GROWTH_LIMIT_KIB, summary
        assert await server.stop() == 0, server.log()[-3000:]
