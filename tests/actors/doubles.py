"""Test doubles for the actor tests: an in-memory socket and a polling wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from actors.connection import Connection
from actors.transport import CloseCode


class FakeSocket:
    """An in-memory `Transport`: records what was written and how it was closed.

    It stands for a client's socket: `stall()` makes it stop reading (sends wait, as when
    the kernel buffer is full), `vanish()` makes it a dropped peer (ConnectionError).
    """

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._reading = asyncio.Event()
        self._reading.set()
        self._gone = False

    def stall(self) -> None:
        """The client stops reading: `send` waits until `resume()`."""
        self._reading.clear()

    def resume(self) -> None:
        """The client reads again."""
        self._reading.set()

    def vanish(self) -> None:
        """The peer is gone: every call raises `ConnectionResetError`."""
        self._gone = True
        self._reading.set()

    async def send(self, frame: bytes) -> None:
        """Record `frame` once the client reads."""
        self._raise_if_unusable()
        await self._reading.wait()
        self._raise_if_unusable()
        self.frames.append(frame)

    async def close(self, code: int, reason: str) -> None:
        """Record the first close."""
        if self._gone:
            raise ConnectionResetError("peer gone")
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def _raise_if_unusable(self) -> None:
        if self._gone:
            raise ConnectionResetError("peer gone")
        if self.close_code is not None:
            raise ConnectionResetError("socket closed")


def connect(queue_size: int = 16, connection_id: str = "c1") -> tuple[Connection, FakeSocket]:
    """A connection over a fresh fake socket."""
    socket = FakeSocket()
    return Connection(socket, queue_size=queue_size, connection_id=connection_id), socket


@asynccontextmanager
async def writers_running(*connections: Connection) -> AsyncIterator[None]:
    """Run each connection's writer, as the edge does, for the duration of the block;
    connections still open at the end are closed normally."""
    async with asyncio.TaskGroup() as group:
        for connection in connections:
            group.create_task(connection.run_writer())
        yield
        for connection in connections:
            connection.close_soon(CloseCode.NORMAL, "test over")


@asynccontextmanager
async def writing_on_demand(*connections: Connection) -> AsyncIterator[None]:
    """Let each connection write on demand, as the WebSocket edge does, for the duration
    of the block; connections still open at the end are closed normally."""
    for connection in connections:
        connection.write_on_demand()
    try:
        yield
        for connection in connections:
            connection.close_soon(CloseCode.NORMAL, "test over")
        for connection in connections:
            await connection.wait_closed()
    finally:
        for connection in connections:
            await connection.stop_writing()


WritersRunning = Callable[..., AbstractAsyncContextManager[None]]


@pytest.fixture(params=["run_writer", "on_demand"])
def writer_mode(request: pytest.FixtureRequest) -> WritersRunning:
    """Each way an edge runs a connection's writer: a task for the socket's life (SSE),
    or a task only while there is something to write (WebSocket)."""
    modes: dict[str, WritersRunning] = {
        "run_writer": writers_running,
        "on_demand": writing_on_demand,
    }
    return modes[request.param]


async def eventually(condition: Callable[[], bool], *, within: float = 1.0) -> None:
    """Wait until `condition()` holds; fail after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            # Polling keeps the code under test free of hooks that exist only for tests.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"condition still false after {within}s") from None


async def closed(connection: Connection, *, within: float = 1.0) -> None:
    """Wait until the connection's writer finished; fail after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            await connection.wait_closed()
    except TimeoutError:
        raise AssertionError(f"{connection!r} still open after {within}s") from None
