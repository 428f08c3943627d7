"""Connection: the per-socket stream (cursor, catch-up from the backlog, resume)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from actors.connection import Connection
from actors.transport import CloseCode
from storage import StorageUnavailableError
from tests.actors.doubles import FakeSocket, WritersRunning, closed, eventually


class FakeBacklog:
    """A user's stored notifications: frame b"n<seq>" for each stored seq; a range with
    nothing stored comes back as one gap frame b"gap<a>-<b>"."""

    def __init__(self, stored: Sequence[int], *, page_size: int = 3) -> None:
        self.stored = sorted(stored)
        self.page_size = page_size
        self.hold = asyncio.Event()
        self.hold.set()
        self.reads = 0
        self.fail = False

    async def replay(self, after_seq: int, up_to: int) -> list[tuple[int, bytes]]:
        self.reads += 1
        await self.hold.wait()
        if self.fail:
            raise StorageUnavailableError("database down")
        page: list[tuple[int, bytes]] = []
        expected = after_seq + 1
        for seq in self.stored:
            if seq <= after_seq:
                continue
            if len(page) == self.page_size:
                break
            if seq > expected:
                page.append((seq - 1, f"gap{expected}-{seq - 1}".encode()))
            page.append((seq, f"n{seq}".encode()))
            expected = seq + 1
        if not page and after_seq < up_to:
            page.append((up_to, f"gap{after_seq + 1}-{up_to}".encode()))
        return page


def stream(
    backlog: FakeBacklog, *, since: int | None = None, queue_size: int = 16
) -> tuple[Connection, FakeSocket, list[int]]:
    socket = FakeSocket()
    sent: list[int] = []
    connection = Connection(
        socket,
        queue_size=queue_size,
        connection_id="c1",
        backlog=backlog,
        on_sent=sent.append,
        since=since,
    )
    return connection, socket, sent


def frame(seq: int) -> bytes:
    return f"n{seq}".encode()


async def test_start_replays_the_backlog_then_goes_live(writer_mode: WritersRunning) -> None:
    backlog = FakeBacklog(range(1, 8))
    connection, socket, sent = stream(backlog)
    async with writer_mode(connection):
        connection.start(since=2, last_seq=7)
        await eventually(lambda: len(socket.frames) == 5)
        assert connection.offer_notification(8, frame(8))
        await eventually(lambda: len(socket.frames) == 6)
    assert socket.frames == [frame(seq) for seq in range(3, 9)]
    assert sent == list(range(3, 9))


async def test_live_notifications_during_the_replay_are_neither_lost_nor_doubled(
    writer_mode: WritersRunning,
) -> None:
    """Guards the hand-over from replay to live: notifications committed while a page
    is read must follow the replay, once each, in order."""
    backlog = FakeBacklog(range(1, 5))
    backlog.hold.clear()
    connection, socket, _ = stream(backlog)
    async with writer_mode(connection):
        connection.start(since=0, last_seq=4)
        await eventually(lambda: backlog.reads == 1)
        for seq in (5, 6):  # committed and published while the first page is read
            backlog.stored.append(seq)
            assert connection.offer_notification(seq, frame(seq))
        backlog.hold.set()
        await eventually(lambda: len(socket.frames) == 6)
        assert connection.offer_notification(6, frame(6))  # a late redelivery
        assert connection.offer_notification(7, frame(7))
        await eventually(lambda: len(socket.frames) == 7)
    assert socket.frames == [frame(seq) for seq in range(1, 8)]


async def test_notifications_offered_before_start_are_caught_up(
    writer_mode: WritersRunning,
) -> None:
    backlog = FakeBacklog(range(1, 4))
    connection, socket, _ = stream(backlog, since=None)
    async with writer_mode(connection):
        assert connection.offer_notification(3, frame(3))  # before the user was read
        connection.start(since=1, last_seq=2)
        await eventually(lambda: len(socket.frames) == 2)
    assert socket.frames == [frame(2), frame(3)]


async def test_a_live_gap_is_filled_from_the_backlog(writer_mode: WritersRunning) -> None:
    """Guards a publish that never reached this node (bus outage, another node's late
    publish): the socket must not skip the missing seq."""
    backlog = FakeBacklog(range(1, 6))
    connection, socket, _ = stream(backlog, since=0)
    async with writer_mode(connection):
        assert connection.offer_notification(1, frame(1))
        assert connection.offer_notification(4, frame(4))  # 2 and 3 never published
        await eventually(lambda: len(socket.frames) == 4)
        assert connection.offer_notification(3, frame(3))  # arrives late: covered
        assert connection.offer_notification(5, frame(5))
        await eventually(lambda: len(socket.frames) == 5)
    assert socket.frames == [frame(seq) for seq in range(1, 6)]


async def test_what_is_not_stored_any_more_comes_as_a_gap(writer_mode: WritersRunning) -> None:
    backlog = FakeBacklog([6, 7])
    connection, socket, sent = stream(backlog)
    async with writer_mode(connection):
        connection.start(since=1, last_seq=7)
        await eventually(lambda: len(socket.frames) == 3)
    assert socket.frames == [b"gap2-5", frame(6), frame(7)]
    assert sent == [5, 6, 7]


async def test_resume_restarts_the_stream_after_a_marker(writer_mode: WritersRunning) -> None:
    backlog = FakeBacklog(range(1, 6))
    connection, socket, _ = stream(backlog)
    async with writer_mode(connection):
        connection.start(since=5, last_seq=5)
        connection.resume(2, b"resumed")
        await eventually(lambda: len(socket.frames) == 4)
        assert connection.offer_notification(6, frame(6))
        await eventually(lambda: len(socket.frames) == 5)
    assert socket.frames == [b"resumed", frame(3), frame(4), frame(5), frame(6)]


async def test_storage_down_during_catch_up_asks_the_client_to_reconnect(
    writer_mode: WritersRunning,
) -> None:
    backlog = FakeBacklog(range(1, 4))
    backlog.fail = True
    connection, socket, _ = stream(backlog)
    async with writer_mode(connection):
        connection.start(since=0, last_seq=3)
        await closed(connection)
    assert socket.close_code == CloseCode.RECONNECT
    assert socket.frames == []


async def test_a_replay_does_not_fill_the_outbox(writer_mode: WritersRunning) -> None:
    """The replay is paced by the socket: a backlog longer than the outbox must not
    close the client as a slow consumer."""
    backlog = FakeBacklog(range(1, 41), page_size=10)
    connection, socket, _ = stream(backlog, queue_size=2)
    async with writer_mode(connection):
        connection.start(since=0, last_seq=40)
        await eventually(lambda: len(socket.frames) == 40)
    assert socket.frames == [frame(seq) for seq in range(1, 41)]
    assert socket.close_code == CloseCode.NORMAL


async def test_a_client_that_stops_reading_during_the_replay_is_a_slow_consumer(
    writer_mode: WritersRunning,
) -> None:
    """Guards the replay path, which has no outbox to overflow: a stuck client must
    still be closed once live notifications pile up behind it."""
    backlog = FakeBacklog(range(1, 4))
    connection, socket, _ = stream(backlog, queue_size=4)
    socket.stall()
    async with writer_mode(connection):
        connection.start(since=0, last_seq=3)
        await eventually(lambda: backlog.reads == 1)
        accepted = [connection.offer_notification(seq, frame(seq)) for seq in range(4, 10)]
        assert accepted == [True] * 4 + [False] * 2
        await closed(connection)
    assert socket.close_code == CloseCode.SLOW_CONSUMER


class HidingBacklog:
    """Seq 2 is the only stored notification the socket may see; the rest, up to
    `up_to`, is passed over (a None entry), as for a token limited to categories."""

    def __init__(self) -> None:
        self.reads = 0

    async def replay(self, after_seq: int, up_to: int) -> list[tuple[int, bytes | None]]:
        self.reads += 1
        return [(2, frame(2)), (up_to, None)] if after_seq < 2 else [(up_to, None)]


async def test_hidden_notifications_move_the_stream_on_without_a_frame(
    writer_mode: WritersRunning,
) -> None:
    """Guards a socket limited to categories (issue #10) that would stall, or read the
    backlog again for every notification it may not see: a hidden seq, live or passed
    over in the replay, moves its cursor on, so the next visible one goes out live."""
    backlog = HidingBacklog()
    socket = FakeSocket()
    sent: list[int] = []
    connection = Connection(
        socket,
        queue_size=16,
        connection_id="c1",
        backlog=backlog,
        on_sent=sent.append,
        since=None,
        visible=lambda f: not f.startswith(b"h"),
    )
    async with writer_mode(connection):
        connection.start(since=0, last_seq=5)
        await eventually(lambda: connection.cursor == 5)
        assert connection.offer_notification(6, b"h6")
        assert connection.offer_notification(7, frame(7))
        assert connection.offer(b"h-read")
        assert connection.offer(b"pong")
        await eventually(lambda: len(socket.frames) == 3)
    assert socket.frames == [frame(2), frame(7), b"pong"]
    assert sent == [2, 7]
    assert backlog.reads == 1
