"""The per-user mailbox actor: owns one user's sockets on this node and hands each of
them the user's notifications and events (each `Connection` keeps its own stream in
`seq` order, without gaps or duplicates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

import msgspec

from actors.connection import UNSEQUENCED, Connection
from actors.runtime import Actor, ActorSystem, ActorSystemStoppedError
from actors.transport import CloseCode


class Attach(msgspec.Struct, frozen=True):
    """A socket of the user authenticated on this node: deliver to it from now on."""

    connection: Connection


class Detach(msgspec.Struct, frozen=True):
    """A socket of the user ended (its handler returned): forget it."""

    connection: Connection


class Deliver(msgspec.Struct, frozen=True):
    """A notification for the user, as the frame every socket receives (encoded once);
    `seq` 0 for an event outside the notification stream (e.g. a `read` sync)."""

    seq: int
    frame: bytes


class CloseAll(msgspec.Struct, frozen=True):
    """Close every socket of the user, e.g. because the user was deleted."""

    code: CloseCode
    cause: str | None = None
    """What happened, if more precise than the code's usual cause (`CloseCode.reason`)."""


UserMessage = Attach | Detach | Deliver | CloseAll


@dataclass
class UserMailboxStats:
    """Counters shared by all the mailboxes of one system, for metrics."""

    connections_dropped: int = 0
    """Sockets forgotten because `offer` refused a frame (slow consumer or closed)."""


class UserMailbox(Actor[UserMessage]):
    """One user's mailbox on this node, keyed by user id.

    Holds the user's attached `Connection`s. A `Deliver` offers the same bytes object to
    each of them (each skips what its stream already covered, so an at-least-once
    redelivery is harmless); a connection that refuses it (slow consumer, or closed) is
    forgotten — it is being closed and its client will resume. Idle only without sockets.
    `UserMailboxes` applies its messages without running it as an actor (see there).
    """

    def __init__(self, user_id: str, stats: UserMailboxStats | None = None) -> None:
        self.user_id = user_id
        self.stats = UserMailboxStats() if stats is None else stats
        self._connections: set[Connection] = set()

    @property
    def connections(self) -> frozenset[Connection]:
        """The attached connections (a snapshot)."""
        return frozenset(self._connections)

    async def on_receive(self, message: UserMessage) -> None:
        """Apply one message; see the message classes."""
        match message:
            case Deliver(seq=seq, frame=frame):
                self._deliver(seq, frame)
            case Attach(connection=connection):
                # A socket may close between its handshake and this message.
                if not connection.closed:
                    self._connections.add(connection)
            case Detach(connection=connection):
                self._connections.discard(connection)
            case CloseAll(code=code, cause=cause):
                self._close_all(code, cause)
            case _:
                assert_never(message)

    def _deliver(self, seq: int, frame: bytes) -> None:
        # The same bytes object for every socket: encoded once upstream, never per socket.
        if seq == UNSEQUENCED:
            refused = [c for c in self._connections if not c.offer(frame)]
        else:
            refused = [c for c in self._connections if not c.offer_notification(seq, frame)]
        if refused:
            self._connections.difference_update(refused)
            self.stats.connections_dropped += len(refused)

    def _close_all(self, code: CloseCode, cause: str | None = None) -> None:
        for connection in self._connections:
            connection.close_soon(code, cause)
        self._connections.clear()

    async def on_restart(self) -> None:
        """Keep the sockets (clients must not notice a retried message); only forget the
        ones that closed meanwhile."""
        self.forget_closed_connections()

    async def on_dead_letter(self, message: UserMessage) -> None:
        """A message was given up on, so a socket may have missed a frame or never been
        attached: close the user's sockets with RECONNECT so their clients resume from
        their ack cursor (the store has every frame)."""
        if isinstance(message, Attach | Detach):
            message.connection.close_soon(CloseCode.RECONNECT)
        self._close_all(CloseCode.RECONNECT)

    async def on_idle(self) -> bool:
        """Idle only without sockets. Closed ones are forgotten first, so that a lost
        `Detach` cannot keep the actor alive for ever."""
        self.forget_closed_connections()
        return not self._connections

    async def on_stop(self) -> None:
        """The node is stopping: tell the remaining clients to reconnect (elsewhere)."""
        self.close_all(CloseCode.GOING_AWAY)

    def close_all(self, code: CloseCode) -> None:
        """Close every attached socket with `code`."""
        self._close_all(code)

    @property
    def has_connections(self) -> bool:
        """Whether a socket is attached (a mailbox without one is not kept parked)."""
        return bool(self._connections)

    def forget_closed_connections(self) -> None:
        """Forget the sockets that closed: one whose `Detach` was lost does not stay
        attached for ever."""
        self._connections = {c for c in self._connections if not c.closed}


class UserMailboxes(ActorSystem[str, UserMessage]):
    """The user mailboxes of one node, keyed by user id, all counting into `stats`.

    A user's mailbox is never run as an actor: its state (the connections) waits in
    `_parking`, without a task or a queue, and each message for the user is applied to
    it at once, in the teller's task, under the runtime's supervision (`tell`). Most
    sockets are idle most of the time, and an actor's task and mailbox were a good part
    of an idle socket's memory; the bus consumer, which hands messages over one at a
    time, also waited a loop turn for each actor's start, so a burst to many idle users
    stalled delivery for seconds under load. The system keeps the runtime's supervision
    (retries, then `on_dead_letter`), its counters and its refusal of tells once
    stopping.
    """

    def __init__(
        self,
        *,
        mailbox_size: int,
        idle_timeout: float,
        max_attempts: int = 3,
        stats: UserMailboxStats | None = None,
    ) -> None:
        self.stats = UserMailboxStats() if stats is None else stats
        self._parking: dict[str, UserMailbox] = {}
        super().__init__(
            lambda user_id: UserMailbox(user_id, self.stats),
            mailbox_size=mailbox_size,
            idle_timeout=idle_timeout,
            max_attempts=max_attempts,
            name="user-mailbox",
        )

    async def tell(self, key: str, message: UserMessage) -> None:
        """Apply `message` to the user's state at once, in the caller's task, with the
        runtime's supervision (`ActorSystem._handle`: retries, then `on_dead_letter`).
        Raises `ActorSystemStoppedError` once `stop()` has begun, as `ActorSystem.tell`.

        Safe without an actor's one-message-at-a-time: none of `UserMailbox`'s hooks
        awaits (offers to a socket never wait) and `_handle` retries without sleeping, so
        a message is applied in one step and messages for a user in tell order.
        """
        if not self._accepting:
            raise ActorSystemStoppedError(
                f"actor system {self.name!r} is stopping: message for {key!r} refused"
            )
        mailbox = self._parking.pop(key, None)
        if mailbox is None:
            if not isinstance(message, Attach):
                return  # no socket of the user's here: nothing to deliver, close or detach
            mailbox = UserMailbox(key, self.stats)
        try:
            await self._handle(key, mailbox, message)
        finally:
            if isinstance(message, Attach | Detach):  # a Deliver drops the closed ones
                mailbox.forget_closed_connections()
            if mailbox.has_connections:
                self._parking[key] = mailbox

    def get(self, key: str) -> bool:
        """True if `key` has a mailbox here (it holds sockets)."""
        return key in self._parking

    @property
    def parked(self) -> int:
        """Users with a mailbox here (sockets open)."""
        return len(self._parking)

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 - as ActorSystem.stop
        """Refuse new tells, then close every user's sockets with GOING_AWAY, as a
        stopping actor's `on_stop` does."""
        await super().stop(timeout)
        parked, self._parking = self._parking, {}
        for mailbox in parked.values():
            mailbox.close_all(CloseCode.GOING_AWAY)
