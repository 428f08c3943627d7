"""Connection: the bounded per-socket outbox and its writer."""

from __future__ import annotations

import asyncio
import gc
from collections import deque

import pytest

from actors.connection import Connection
from actors.transport import CloseCode
from tests.actors.doubles import (
    FakeSocket,
    WritersRunning,
    closed,
    connect,
    eventually,
    writing_on_demand,
)


async def test_frames_are_written_in_offer_order(writer_mode: WritersRunning) -> None:
    connection, socket = connect(queue_size=100)
    frames = [f'{{"seq":{n}}}'.encode() for n in range(50)]
    async with writer_mode(connection):
        for frame in frames:
            assert connection.offer(frame)
            if len(frame) % 2:
                await asyncio.sleep(0)  # let the writer catch up now and then
        await eventually(lambda: len(socket.frames) == len(frames))
    assert socket.frames == frames
    assert socket.close_code == CloseCode.NORMAL


async def test_a_client_that_stops_reading_is_closed_as_slow_consumer(
    writer_mode: WritersRunning,
) -> None:
    """Guards against the slow-consumer close waiting behind a send the client will never
    complete: the close must interrupt it."""
    connection, socket = connect(queue_size=3)
    socket.stall()
    async with writer_mode(connection):
        assert connection.offer(b"0")
        await asyncio.sleep(0.01)  # the writer takes frame 0 and blocks in send
        assert all(connection.offer(frame) for frame in (b"1", b"2", b"3"))
        assert not connection.offer(b"4")
        assert connection.closed
        await closed(connection, within=0.5)
    assert socket.close_code == 4008
    assert socket.close_reason == "slow consumer: reconnect and resume"
    assert socket.frames == []
    assert connection.close_code is CloseCode.SLOW_CONSUMER


async def test_close_soon_drops_pending_frames_and_closes_with_the_code(
    writer_mode: WritersRunning,
) -> None:
    connection, socket = connect()
    socket.stall()
    async with writer_mode(connection):
        for frame in (b"1", b"2", b"3"):
            connection.offer(frame)
        await asyncio.sleep(0.01)
        connection.close_soon(CloseCode.USER_UNKNOWN, "user deleted")
        socket.resume()
        await closed(connection)
    assert socket.frames == []
    assert socket.close_code == CloseCode.USER_UNKNOWN
    assert socket.close_reason == "user deleted: do not reconnect"


async def test_a_frame_offered_after_close_is_refused(writer_mode: WritersRunning) -> None:
    connection, socket = connect()
    async with writer_mode(connection):
        connection.close_soon(CloseCode.NORMAL, "bye")
        assert not connection.offer(b"late")
        await closed(connection)
        assert not connection.offer(b"later")
    assert socket.frames == []
    assert socket.close_code == CloseCode.NORMAL


async def test_the_first_close_request_wins(writer_mode: WritersRunning) -> None:
    connection, socket = connect()
    async with writer_mode(connection):
        connection.close_soon(CloseCode.GOING_AWAY, "shutdown")
        connection.close_soon(CloseCode.RECONNECT, "reset")
    assert socket.close_code == CloseCode.GOING_AWAY


async def test_a_vanished_peer_ends_the_writer_quietly(writer_mode: WritersRunning) -> None:
    connection, socket = connect()
    async with writer_mode(connection):
        socket.vanish()
        connection.offer(b"1")
        await closed(connection)
        assert connection.closed
        assert connection.close_code is None
        assert not connection.offer(b"2")


async def test_a_cancelled_writer_leaves_the_connection_closed() -> None:
    """The edge's TaskGroup cancels the writer when the reader ends; the actor must then
    see the connection as closed, or it would keep offering frames nobody writes."""
    connection, socket = connect()
    socket.stall()
    writer = asyncio.create_task(connection.run_writer())
    connection.offer(b"1")
    await asyncio.sleep(0.01)
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    assert writer.cancelled()
    assert connection.closed
    assert not connection.offer(b"2")
    await closed(connection)


def _writer_tasks() -> set[asyncio.Task[object]]:
    return {
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").startswith("Connection.")
    }


async def test_an_idle_connection_writing_on_demand_holds_no_task_and_no_outbox() -> None:
    """Guards the memory of idle sockets: once its frames are written, a connection that
    writes on demand keeps no writer task and no outbox (a deque, about 0.6 kB), and
    the next frame starts a writer again."""
    connection, socket = connect()
    async with writing_on_demand(connection):
        assert connection.offer(b"1")
        assert connection.offer(b"2")
        assert len(_writer_tasks()) == 1
        await eventually(lambda: socket.frames == [b"1", b"2"])
        await eventually(lambda: not _writer_tasks())
        assert not any(isinstance(held, deque) for held in gc.get_referents(connection))
        assert not hasattr(connection, "__dict__")
        assert connection.offer(b"3")
        await eventually(lambda: socket.frames == [b"1", b"2", b"3"])
    assert socket.close_code == CloseCode.NORMAL
    assert not _writer_tasks()


async def test_stop_writing_cancels_a_writer_stuck_in_a_send() -> None:
    """The edge's handler ends while the client stopped reading: the writer must not
    outlive it, and the actor must see the connection as closed."""
    connection, socket = connect()
    socket.stall()
    connection.write_on_demand()
    connection.offer(b"1")
    await asyncio.sleep(0.01)
    assert len(_writer_tasks()) == 1
    await connection.stop_writing()
    assert not _writer_tasks()
    assert connection.closed
    assert not connection.offer(b"2")
    await closed(connection)


class FailingSocket(FakeSocket):
    """A transport with a bug: `send` raises something that is not a ConnectionError."""

    async def send(self, frame: bytes) -> None:
        raise RuntimeError("bug in the transport")


async def test_a_writer_that_fails_on_demand_closes_the_socket_with_reconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No TaskGroup takes an on-demand writer's error to the reader: the writer must
    log it and close the socket, or the socket would stay open with nothing writing."""
    socket = FailingSocket()
    connection = Connection(socket, queue_size=4, connection_id="c1")
    connection.write_on_demand()
    connection.offer(b"1")
    await closed(connection)
    await connection.stop_writing()
    assert socket.close_code == CloseCode.RECONNECT
    assert "the writer failed" in caplog.text
