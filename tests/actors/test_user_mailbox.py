"""UserMailbox: fan-out of one frame object, duplicates, attach/detach, idle, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.connection import Connection
from actors.transport import CloseCode
from actors.user_mailbox import (
    Attach,
    CloseAll,
    Deliver,
    Detach,
    UserMailbox,
    UserMailboxes,
    UserMailboxStats,
)
from tests.actors.doubles import FakeSocket, closed, connect, eventually, writers_running

IDLE = 0.05

Mailboxes = UserMailboxes


@pytest.fixture
def stats() -> UserMailboxStats:
    return UserMailboxStats()


@pytest.fixture
async def mailboxes(stats: UserMailboxStats) -> AsyncIterator[Mailboxes]:
    """A user mailbox system, stopped after the test."""
    system = UserMailboxes(mailbox_size=8, idle_timeout=IDLE, stats=stats)
    yield system
    await system.stop(timeout=1)


async def test_one_frame_object_reaches_every_socket() -> None:
    """Guards "encode once": every socket must get the very bytes object delivered."""
    mailbox = UserMailbox("u1")
    pairs = [connect(connection_id=f"c{n}") for n in range(3)]
    frame = b'{"type":"notification","seq":1}'
    async with writers_running(*(connection for connection, _ in pairs)):
        for connection, _ in pairs:
            await mailbox.on_receive(Attach(connection))
        await mailbox.on_receive(Deliver(seq=1, frame=frame))
        await eventually(lambda: all(socket.frames for _, socket in pairs))
    for _, socket in pairs:
        assert len(socket.frames) == 1
        assert socket.frames[0] is frame


async def test_a_slow_socket_is_dropped_while_a_fast_one_gets_every_frame(
    mailboxes: Mailboxes, stats: UserMailboxStats
) -> None:
    slow, slow_socket = connect(queue_size=2, connection_id="slow")
    fast, fast_socket = connect(queue_size=32, connection_id="fast")
    slow_socket.stall()
    frames = [f'{{"seq":{seq}}}'.encode() for seq in range(1, 21)]
    async with writers_running(slow, fast):
        await mailboxes.tell("u1", Attach(slow))
        await mailboxes.tell("u1", Attach(fast))
        for seq, frame in enumerate(frames, start=1):
            await mailboxes.tell("u1", Deliver(seq, frame))
        await closed(slow)
        await eventually(lambda: len(fast_socket.frames) == len(frames))

    assert fast_socket.frames == frames
    assert slow_socket.close_code == CloseCode.SLOW_CONSUMER
    assert stats.connections_dropped == 1


async def test_a_redelivered_seq_is_skipped_per_socket() -> None:
    """Guards at-least-once bus redelivery reaching the client twice."""
    mailbox = UserMailbox("u1")
    connection, socket = connect()
    async with writers_running(connection):
        await mailbox.on_receive(Attach(connection))
        for seq in (1, 2, 2, 1, 3):
            await mailbox.on_receive(Deliver(seq, f"frame {seq}".encode()))
        await eventually(lambda: len(socket.frames) == 3)
    assert socket.frames == [b"frame 1", b"frame 2", b"frame 3"]
    assert connection.duplicates_skipped == 2


async def test_an_event_reaches_every_socket_outside_the_stream() -> None:
    mailbox = UserMailbox("u1")
    pairs = [connect(connection_id=f"c{n}") for n in range(2)]
    async with writers_running(*(connection for connection, _ in pairs)):
        for connection, _ in pairs:
            await mailbox.on_receive(Attach(connection))
        await mailbox.on_receive(Deliver(1, b"n1"))
        await mailbox.on_receive(Deliver(0, b"read"))
        await mailbox.on_receive(Deliver(0, b"read again"))
        await eventually(lambda: all(len(socket.frames) == 3 for _, socket in pairs))
    assert [socket.frames for _, socket in pairs] == [[b"n1", b"read", b"read again"]] * 2


async def test_a_detached_socket_gets_nothing_more() -> None:
    mailbox = UserMailbox("u1")
    (staying, staying_socket), (leaving, leaving_socket) = connect(), connect()
    async with writers_running(staying, leaving):
        await mailbox.on_receive(Attach(staying))
        await mailbox.on_receive(Attach(leaving))
        await mailbox.on_receive(Deliver(1, b"1"))
        await mailbox.on_receive(Detach(leaving))
        await mailbox.on_receive(Deliver(2, b"2"))
        await eventually(lambda: len(staying_socket.frames) == 2)
    assert leaving_socket.frames == [b"1"]
    assert mailbox.connections == {staying}


async def test_an_already_closed_socket_is_not_attached() -> None:
    mailbox = UserMailbox("u1")
    connection, _ = connect()
    connection.close_soon(CloseCode.NORMAL, "client left during the handshake")
    await mailbox.on_receive(Attach(connection))
    assert mailbox.connections == frozenset()


async def test_close_all_closes_every_socket_with_the_code() -> None:
    mailbox = UserMailbox("u1")
    pairs = [connect(connection_id=f"c{n}") for n in range(2)]
    async with writers_running(*(connection for connection, _ in pairs)):
        for connection, _ in pairs:
            await mailbox.on_receive(Attach(connection))
        await mailbox.on_receive(CloseAll(CloseCode.USER_UNKNOWN, "user deleted"))
    assert [socket.close_code for _, socket in pairs] == [CloseCode.USER_UNKNOWN] * 2
    assert mailbox.connections == frozenset()
    assert await mailbox.on_idle()


async def test_the_mailbox_is_idle_only_without_sockets(mailboxes: Mailboxes) -> None:
    connection, _ = connect()
    async with writers_running(connection):
        await mailboxes.tell("u1", Attach(connection))
        await asyncio.sleep(IDLE * 3)
        assert mailboxes.get("u1")

        await mailboxes.tell("u1", Detach(connection))
        await eventually(lambda: not mailboxes.get("u1"))


async def test_an_idle_mailbox_with_sockets_is_parked_and_the_next_message_wakes_it(
    mailboxes: Mailboxes,
) -> None:
    """Guards the memory of idle sockets: no actor (task, queue) for a quiet user."""
    connection, socket = connect()
    async with writers_running(connection):
        await mailboxes.tell("u1", Attach(connection))
        await eventually(lambda: mailboxes.parked == 1)
        assert len(mailboxes) == 0  # no live actor
        assert mailboxes.get("u1")  # but the user has a mailbox here, holding the socket

        await mailboxes.tell("u1", Deliver(1, b"1"))
        await eventually(lambda: socket.frames == [b"1"])
        await eventually(lambda: mailboxes.parked == 1)
        await mailboxes.tell("u1", Deliver(2, b"2"))
        await eventually(lambda: socket.frames == [b"1", b"2"])
        assert socket.close_code is None


async def test_stopping_the_system_closes_the_sockets_of_parked_mailboxes(
    mailboxes: Mailboxes,
) -> None:
    connection, socket = connect()
    async with writers_running(connection):
        await mailboxes.tell("u1", Attach(connection))
        await eventually(lambda: mailboxes.parked == 1)
        await mailboxes.stop(timeout=1)
        await closed(connection)
    assert socket.close_code == CloseCode.GOING_AWAY
    assert not mailboxes.get("u1")


async def test_a_socket_that_closed_without_detach_does_not_keep_the_mailbox_alive(
    mailboxes: Mailboxes,
) -> None:
    """Guards against a lost Detach pinning an actor (and its memory) for ever: the
    user's next message finds the socket closed, and the actor then stops for good."""
    connection, socket = connect()
    async with writers_running(connection):
        await mailboxes.tell("u1", Attach(connection))
        socket.vanish()
        connection.offer(b"x")
        await closed(connection)
        await mailboxes.tell("u1", Deliver(1, b"1"))
        await eventually(lambda: not mailboxes.get("u1"))


async def test_a_socket_that_closed_without_detach_is_forgotten_by_the_next_socket(
    mailboxes: Mailboxes,
) -> None:
    """The same with no message in between: the parked state forgets the closed socket
    when the user's next socket comes and goes."""
    connection, socket = connect()
    other, _ = connect(connection_id="c2")
    async with writers_running(connection, other):
        await mailboxes.tell("u1", Attach(connection))
        socket.vanish()
        connection.offer(b"x")
        await closed(connection)
        await mailboxes.tell("u1", Attach(other))
        await mailboxes.tell("u1", Detach(other))
        assert not mailboxes.get("u1")


async def test_a_user_with_open_sockets_costs_no_actor(mailboxes: Mailboxes) -> None:
    """Guards the memory of idle sockets: attaching a socket parks the user's state at
    once instead of starting an actor (task, queue, timers) that would wait
    `idle_timeout` to be parked, and a message for the user is applied to that state
    without starting one either."""
    connection, socket = connect()
    async with writers_running(connection):
        await mailboxes.tell("u1", Attach(connection))
        assert (len(mailboxes), mailboxes.parked) == (0, 1)
        await mailboxes.tell("u1", Deliver(1, b"1"))
        await eventually(lambda: socket.frames == [b"1"])
        assert (len(mailboxes), mailboxes.parked) == (0, 1)
        await mailboxes.tell("u1", Detach(connection))
        assert (len(mailboxes), mailboxes.parked) == (0, 0)
        assert not mailboxes.get("u1")
    assert mailboxes.actors_started == 0
    assert mailboxes.messages_processed == 3


async def test_a_message_for_a_parked_user_is_handed_over_without_waiting(
    mailboxes: Mailboxes,
) -> None:
    """Guards delivery to idle users under load: the bus dispatcher hands messages over
    one at a time, and when each `tell` to a parked user waited a loop turn for an
    actor to start, a burst to 1,000 idle users stalled every frame for seconds. A tell
    to a parked user must finish at its first step."""
    pairs = [connect(connection_id=f"c{n}") for n in range(20)]
    async with writers_running(*(connection for connection, _ in pairs)):
        for n, (connection, _) in enumerate(pairs):
            await mailboxes.tell(f"u{n}", Attach(connection))
        for n in range(len(pairs)):
            tell = mailboxes.tell(f"u{n}", Deliver(1, b"1"))
            try:
                tell.send(None)
            except StopIteration:
                continue
            tell.close()
            pytest.fail("a tell to a parked user waited for the loop")
        await eventually(lambda: all(socket.frames == [b"1"] for _, socket in pairs))


async def test_messages_for_a_parked_user_are_applied_in_tell_order(
    mailboxes: Mailboxes,
) -> None:
    """A socket gets no frame told before its Attach, and every frame told after it."""
    first, first_socket = connect(connection_id="c1")
    second, second_socket = connect(connection_id="c2")
    async with writers_running(first, second):
        await mailboxes.tell("u1", Attach(first))
        await mailboxes.tell("u1", Deliver(0, b"before"))
        await mailboxes.tell("u1", Attach(second))
        await mailboxes.tell("u1", Deliver(0, b"after"))
        await eventually(lambda: len(second_socket.frames) == 1)
        await eventually(lambda: len(first_socket.frames) == 2)
    assert first_socket.frames == [b"before", b"after"]
    assert second_socket.frames == [b"after"]


class FailsOnce(Connection):
    """A connection whose first `offer_notification` raises, as a bug in it would."""

    failed = False

    def offer_notification(self, seq: int, frame: bytes) -> bool:
        if not self.failed:
            self.failed = True
            raise RuntimeError("bug")
        return super().offer_notification(seq, frame)


class AlwaysFails(Connection):
    """A connection whose `offer_notification` always raises."""

    def offer_notification(self, seq: int, frame: bytes) -> bool:
        raise RuntimeError("bug")


async def test_a_deliver_that_failed_is_retried_not_taken_for_a_duplicate(
    mailboxes: Mailboxes,
) -> None:
    """Guards the supervisor's retry of a failed Deliver: the frame must still reach
    the socket, once."""
    socket = FakeSocket()
    connection = FailsOnce(socket, queue_size=4, connection_id="flaky")
    async with writers_running(connection):
        await mailboxes.tell("u1", Attach(connection))
        await mailboxes.tell("u1", Deliver(1, b"1"))
        await mailboxes.tell("u1", Deliver(2, b"2"))
        await eventually(lambda: len(socket.frames) == 2)
    assert socket.frames == [b"1", b"2"]
    assert (mailboxes.restarts, mailboxes.dead_letters) == (1, 0)


async def test_a_dead_lettered_deliver_asks_the_users_clients_to_resume(
    mailboxes: Mailboxes,
) -> None:
    broken = AlwaysFails(FakeSocket(), queue_size=4, connection_id="broken")
    healthy, healthy_socket = connect(connection_id="healthy")
    async with writers_running(broken, healthy):
        await mailboxes.tell("u1", Attach(healthy))
        await mailboxes.tell("u1", Attach(broken))
        await mailboxes.tell("u1", Deliver(1, b"1"))
        await closed(healthy)
    assert mailboxes.dead_letters == 1
    assert healthy_socket.close_code == CloseCode.RECONNECT
