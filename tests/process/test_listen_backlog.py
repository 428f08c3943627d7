"""A burst of connections larger than aiohttp's default listen backlog (128) is queued by
the kernel instead of dropped, on a real `pushd serve` process.

The process is stopped (SIGSTOP, by its own PID) while the burst arrives, so it accepts
nothing: every connection that completes its handshake meanwhile sits in the listen
queue. With a queue of 128, the kernel drops the rest of the SYNs and those clients
retry 1, 3, 7, 15 s later, which is what made a reconnect storm of 1,000 clients take
3 to 15 s.
"""

from __future__ import annotations

import asyncio
import select
import signal
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.process.server_process import ServerProcess

BURST = 400
CONNECT_WAIT_S = 2.0

pytestmark = pytest.mark.slow


async def connected_within(sockets: list[socket.socket], seconds: float) -> int:
    """How many of the non-blocking connects completed within `seconds`."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLOUT)
    done: set[int] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while len(done) < len(sockets) and loop.time() < deadline:
        for fd, _ in poller.poll(0):
            done.add(fd)
            poller.unregister(fd)
        await asyncio.sleep(0.05)
    return sum(
        1
        for sock in sockets
        if sock.fileno() in done and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    )


async def burst_while_stopped(server: ServerProcess) -> int:
    address = urlsplit(server.url)
    assert address.hostname is not None
    assert address.port is not None
    sockets = []
    server.process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(BURST):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.connect_ex((address.hostname, address.port))
            sockets.append(sock)
        return await connected_within(sockets, CONNECT_WAIT_S)
    finally:
        server.process.send_signal(signal.SIGCONT)
        for sock in sockets:
            sock.close()


async def test_a_burst_of_connects_is_queued_while_the_server_accepts_nothing(
    tmp_path: Path,
) -> None:
    async with await ServerProcess.start(tmp_path) as server:
        assert await burst_while_stopped(server) == BURST


async def test_the_listen_backlog_is_a_setting(tmp_path: Path) -> None:
    env = {"PUSHD_SERVER__LISTEN_BACKLOG": "128"}
    async with await ServerProcess.start(tmp_path, env=env) as server:
        queued = await burst_while_stopped(server)
    # The kernel queues backlog + 1 connections.
    assert 128 <= queued <= 130
