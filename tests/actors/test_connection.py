"""Connection: the bounded per-socket outbox and its writer."""

from __future__ import annotations

import asyncio

from actors.transport import CloseCode
from tests.actors.doubles import closed, connect, eventually, writers_running


async def test_frames_are_written_in_offer_order() -> None:
    connection, socket = connect(queue_size=100)
    frames = [f'{{"seq":{n}}}'.encode() for n in range(50)]
    async with writers_running(connection):
        for frame in frames:
            assert connection.offer(frame)
            if len(frame) % 2:
                await asyncio.sleep(0)  # let the writer catch up now and then
        await eventually(lambda: len(socket.frames) == len(frames))
    assert socket.frames == frames
    assert socket.close_code == CloseCode.NORMAL


async def test_a_client_that_stops_reading_is_closed_as_slow_consumer() -> None:
    """Guards against the slow-consumer close waiting behind a send the client will never
    complete: the close must interrupt it."""
    connection, socket = connect(queue_size=3)
    socket.stall()
    async with writers_running(connection):
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


async def test_close_soon_drops_pending_frames_and_closes_with_the_code() -> None:
    connection, socket = connect()
    socket.stall()
    async with writers_running(connection):
        for frame in (b"1", b"2", b"3"):
            connection.offer(frame)
        await asyncio.sleep(0.01)
        connection.close_soon(CloseCode.USER_UNKNOWN, "user deleted")
        socket.resume()
        await closed(connection)
    assert socket.frames == []
    assert socket.close_code == CloseCode.USER_UNKNOWN
    assert socket.close_reason == "user deleted: do not reconnect"


async def test_a_frame_offered_after_close_is_refused() -> None:
    connection, socket = connect()
    async with writers_running(connection):
        connection.close_soon(CloseCode.NORMAL, "bye")
        assert not connection.offer(b"late")
        await closed(connection)
        assert not connection.offer(b"later")
    assert socket.frames == []
    assert socket.close_code == CloseCode.NORMAL


async def test_the_first_close_request_wins() -> None:
    connection, socket = connect()
    async with writers_running(connection):
        connection.close_soon(CloseCode.GOING_AWAY, "shutdown")
        connection.close_soon(CloseCode.RECONNECT, "reset")
    assert socket.close_code == CloseCode.GOING_AWAY


async def test_a_vanished_peer_ends_the_writer_quietly() -> None:
    connection, socket = connect()
    async with writers_running(connection):
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
