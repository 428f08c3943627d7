"""One client socket as an actor sees it: a cursor over the user's seqs, a bounded
outbox in front of a `Transport`, and a catch-up path that reads the user's backlog.

The actor only ever calls `offer`, `offer_notification` and `close_soon`, which never
wait, so one slow socket cannot slow down the actor or the user's other sockets. The
writer runs beside the socket's reader: the WebSocket edge lets the connection start it
on demand (`write_on_demand`: a task only while there is something to write, none for an
idle socket), the SSE edge runs `run_writer` for the stream's life in its TaskGroup.

Ordering is the connection's job, not the bus's: the socket's stream covers the seqs
`since + 1, since + 2, ...` exactly once, in order. A live notification that continues
the stream is queued; one already covered is skipped; one that skips ahead (a publish
that was lost, arrived late from another node, or was never made because the bus was
down) switches the connection to catching up, and the writer reads what is missing from
the backlog (storage) before it goes live again. The bus is only the wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from actors.latch import Latch
from actors.transport import CloseCode, Transport
from storage import StorageError

log = logging.getLogger("pushd.actors.connection")

UNSEQUENCED = 0
"""The `seq` of frames outside the notification stream (pong, read, error, ...)."""


class Backlog(Protocol):
    """The user's stored notifications, as frames, for a connection that catches up."""

    async def replay(self, after_seq: int, up_to: int) -> Sequence[tuple[int, bytes | None]]:
        """Frames covering the seqs after `after_seq`, in order, as (the highest seq the
        frame covers, frame): a notification covers its own seq, a gap frame a range,
        and None (no frame) seqs this socket does not see (a token limited to categories).

        At most one page. Never empty while `after_seq < up_to`: a range nothing is
        stored for comes back as a gap frame (or None). Raises `StorageError`.
        """
        ...


class Connection:
    """A client socket's stream position, outbox and writer.

    Frames are written in offer order. Once a close is requested (by `close_soon`, by an
    overflowing outbox, or because the peer is gone) no frame is accepted any more and
    pending ones are dropped: a client that reconnects resumes from its own position,
    and the store still has every notification.

    There is one per open socket, most of them idle: slots instead of a `__dict__`, and
    the outbox and the writer task exist only while there is something to write.
    """

    __slots__ = (
        "_backlog",
        "_catching_up",
        "_close_request",
        "_cursor",
        "_epoch",
        "_interrupted",
        "_offers_while_stalled",
        "_on_demand",
        "_on_sent",
        "_outbox",
        "_queue_size",
        "_sending",
        "_started",
        "_target",
        "_transport",
        "_visible",
        "_writer_done",
        "_writer_task",
        "_writer_wakeup",
        "connection_id",
        "duplicates_skipped",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        queue_size: int,
        connection_id: str,
        backlog: Backlog | None = None,
        on_sent: Callable[[int], None] | None = None,
        since: int | None = 0,
        visible: Callable[[bytes], bool] | None = None,
    ) -> None:
        """`since`: the seq the stream starts after; None to start later with `start`
        (notifications offered meanwhile are caught up from the backlog). `on_sent` is
        called with the highest seq covered each time the socket took a sequenced frame."""
        if queue_size < 1:
            raise ValueError(f"connection {connection_id}: queue_size must be >= 1")
        self.connection_id = connection_id
        self._transport = transport
        self._queue_size = queue_size
        self._backlog = backlog
        self._on_sent = on_sent
        # Whether the socket may be given a frame of the user's (None: every one). A
        # notification it may not see still moves the stream past its seq.
        self._visible = visible
        # Bounded by `_queue_size` in `_enqueue`. Overflow policy: the socket is a slow
        # consumer; its pending frames are dropped and it is closed with SLOW_CONSUMER,
        # so the client reconnects and resumes instead of the server buffering without
        # end or making the user's other sockets wait. Entries are (seq, frame), seq 0
        # for frames outside the stream. None while empty: a deque allocates a block of
        # 64 entries (about 0.6 kB) up front, and an idle socket has nothing to queue.
        self._outbox: deque[tuple[int, bytes]] | None = None
        # The writer task, and (`run_writer`) the future it sleeps on while there is
        # nothing to write. Not an asyncio.Event, and no current_task() per frame: those
        # look the running loop up on every wait, which in CPython 3.11 is a getpid()
        # system call, and the writer sleeps and wakes about once per frame.
        self._writer_task: asyncio.Task[None] | None = None
        self._writer_wakeup: asyncio.Future[None] | None = None
        self._on_demand = False
        """`write_on_demand` was called: a writer task starts when there is work."""
        self._close_request: tuple[CloseCode, str] | None = None
        self._sending = False
        """A send is in flight: a close interrupts it by cancelling the writer task."""
        self._interrupted = False
        self._writer_done = Latch()
        self._cursor = 0 if since is None else since
        """The highest seq handed to the writer (queued or sent) for this socket."""
        self._started = since is not None
        self._target = self._cursor
        """The highest seq known to exist for the user."""
        self._catching_up = False
        self._epoch = 0
        """Bumped by `resume`: a catch-up page read before it is stale."""
        self._offers_while_stalled = 0
        """Notifications offered while catching up since the last frame the socket took."""
        self.duplicates_skipped = 0

    def __repr__(self) -> str:
        return (
            f"<Connection {self.connection_id} cursor={self._cursor} "
            f"pending={len(self._outbox or ())}>"
        )

    @property
    def closed(self) -> bool:
        """True once the connection accepts no more frames (closing or closed)."""
        return self._close_request is not None or self._writer_done.is_set()

    @property
    def close_code(self) -> CloseCode | None:
        """The code of the requested close, None while open or if the peer went away."""
        return None if self._close_request is None else self._close_request[0]

    @property
    def cursor(self) -> int:
        """The highest seq this socket has been given (queued or sent)."""
        return self._cursor

    @property
    def known_last_seq(self) -> int:
        """The highest seq this connection knows to exist for the user."""
        return max(self._cursor, self._target)

    def start(self, since: int, last_seq: int) -> None:
        """Begin the stream after `since`; `last_seq` is the user's newest seq as read
        from storage, so everything up to it is caught up from the backlog first."""
        self._cursor = since
        self._target = max(self._target, last_seq)
        self._started = True
        self._catch_up_if_behind()

    def resume(self, since: int, marker: bytes) -> None:
        """Restart the stream after `since`: pending frames are dropped, `marker` goes
        first (it tells the client where the new stream starts), then the catch-up."""
        if self.closed:
            return
        self._epoch += 1
        self._outbox = deque([(UNSEQUENCED, marker)])
        self._target = self.known_last_seq
        self._cursor = since
        self._started = True
        self._catch_up_if_behind()

    def offer(self, frame: bytes) -> bool:
        """Queue a frame outside the notification stream without waiting.

        Returns False if the connection is closed, or if the outbox is full: then the
        connection is a slow consumer and is being closed with `CloseCode.SLOW_CONSUMER`.
        The caller should forget a connection that returned False.
        """
        if self._visible is not None and not self._visible(frame):
            return not self.closed
        return self._enqueue(UNSEQUENCED, frame)

    def offer_notification(self, seq: int, frame: bytes) -> bool:
        """Offer the user's notification `seq` (its frame encoded once for all sockets).

        Queued if it continues the stream, skipped if already covered, and otherwise
        (the stream is catching up, or `seq` skips ahead) remembered as existing so the
        writer reads it from the backlog in order. False as for `offer`.
        """
        if self.closed:
            return False
        if not self._started or self._catching_up:
            return self._note_while_catching_up(seq)
        if seq <= self._cursor:
            self.duplicates_skipped += 1
            return True
        if seq > self._cursor + 1 and self._backlog is not None:
            self._target = seq
            self._catch_up_if_behind()
            return True
        # A frame the socket may not see is passed over: the stream moves on all the same.
        if (self._visible is None or self._visible(frame)) and not self._enqueue(seq, frame):
            return False
        self._cursor = seq
        return True

    def _note_while_catching_up(self, seq: int) -> bool:
        self._target = max(self._target, seq)
        # The replay has no outbox to overflow: a client that stopped reading is told
        # apart by live notifications piling up while none of its sends ends.
        self._offers_while_stalled += 1
        if self._offers_while_stalled > self._queue_size:
            log.info(
                "connection %s: slow consumer (%d notifications arrived while its replay "
                "was stuck)",
                self.connection_id,
                self._offers_while_stalled,
            )
            self.close_soon(CloseCode.SLOW_CONSUMER)
            return False
        return True

    def close_soon(self, code: CloseCode, cause: str | None = None) -> None:
        """Ask the writer to close the socket with `code` next, dropping the pending
        frames. The reason sent is `code.reason(cause)`: `cause` names what happened when
        the code's usual cause is too vague. Does not wait; the first close request wins."""
        if self.closed:
            return
        self._close_request = (code, code.reason(cause))
        self._outbox = None
        self._wake_writer()
        if self._sending and not self._interrupted:
            # A client that stopped reading blocks `send` for good: interrupt it, or the
            # slow consumer would never be disconnected.
            assert self._writer_task is not None
            self._interrupted = True
            self._writer_task.cancel()

    async def wait_closed(self) -> None:
        """Return once the writer finished: the socket was closed or the peer is gone."""
        await self._writer_done.wait()

    def write_on_demand(self) -> None:
        """Write from now on, in a task of the connection's own that starts when there
        is a frame to write, a backlog page to catch up or a close to make, and ends as
        soon as there is none: an idle socket has no writer task. The edge calls
        `stop_writing` when its handler ends. Instead of `run_writer`, never with it.

        With thousands of idle sockets, a writer task per socket (the task, its two
        coroutine frames, its wake-up future, the TaskGroup holding it) was over 2 kB of
        each one's memory. A writer that fails with anything but `ConnectionError` (a
        bug) is logged and closes the socket with RECONNECT: there is no TaskGroup to
        take the error to the reader.
        """
        self._on_demand = True
        self._wake_writer()

    async def stop_writing(self) -> None:
        """The edge's handler ends (its reader finished, or it was cancelled): cancel a
        writer still running, wait for it, and leave the connection closed. The edge
        owns the socket and releases it. Idempotent."""
        self._on_demand = False
        task = self._writer_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait((task,))  # not the writer's CancelledError: only the caller's
        self._outbox = None
        self._writer_done.set()

    async def run_writer(self) -> None:
        """Write frames to the transport until a close is requested, then close.

        Returns when the connection is closed. A `ConnectionError` from the transport
        means the peer is gone and ends the writer quietly. If cancelled (the edge's
        TaskGroup ends because the reader finished), the connection is marked closed and
        the edge, which owns the socket, releases it.
        """
        self._writer_task = asyncio.current_task()
        try:
            await self._write_until_close_requested()
            assert self._close_request is not None
            await self._transport.close(*self._close_request)
        except ConnectionError:
            pass  # the peer is gone: nothing left to write or to close gracefully
        finally:
            self._outbox = None
            self._writer_done.set()

    async def _write_on_demand(self) -> None:
        """The writer task of `write_on_demand`: write until there is nothing left (then
        end; the next frame starts another) or until a close is requested (then close)."""
        ended = True
        try:
            await self._write_until_close_requested()
            if self._close_request is None:
                ended = False  # nothing left to write, the connection stays open
                return
            await self._transport.close(*self._close_request)
        except ConnectionError:
            pass  # the peer is gone: nothing left to write or to close gracefully
        except Exception:
            log.exception("connection %s: the writer failed; closing", self.connection_id)
            if self._close_request is None:
                self._close_request = (CloseCode.RECONNECT, CloseCode.RECONNECT.reason())
            # Already logged: whatever the close raises adds nothing, and the socket is
            # released by the edge's handler when its reader ends.
            with contextlib.suppress(Exception):
                await self._transport.close(*self._close_request)
        finally:
            if ended:
                self._outbox = None
                self._writer_done.set()

    def _enqueue(self, seq: int, frame: bytes) -> bool:
        if self.closed:
            return False
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        elif len(outbox) >= self._queue_size:
            log.info("connection %s: slow consumer (outbox full)", self.connection_id)
            self.close_soon(CloseCode.SLOW_CONSUMER)
            return False
        outbox.append((seq, frame))
        self._wake_writer()
        return True

    def _wake_writer(self) -> None:
        wakeup = self._writer_wakeup
        if wakeup is not None:
            if not wakeup.done():
                wakeup.set_result(None)
        elif self._on_demand and self._writer_task is None and self._has_work():
            self._writer_task = asyncio.get_running_loop().create_task(self._write_on_demand())

    def _has_work(self) -> bool:
        return bool(self._outbox) or self._catching_up or self._close_request is not None

    def _catch_up_if_behind(self) -> None:
        self._catching_up = self._backlog is not None and self._cursor < self._target
        self._wake_writer()

    async def _write_until_close_requested(self) -> None:
        """Returns when a close is requested, or (`write_on_demand`) when there is
        nothing left to write, with `_writer_task` cleared: the next frame starts a new
        writer, and no await comes between this look at the work and that."""
        while self._close_request is None:
            outbox = self._outbox
            if outbox:
                seq, frame = outbox.popleft()
                if not await self._send(frame):
                    return
                if seq and self._on_sent is not None:
                    self._on_sent(seq)
            elif self._catching_up:
                await self._catch_up_one_page()
            elif self._on_demand:
                self._outbox = None
                self._writer_task = None
                return
            else:
                self._outbox = None
                assert self._writer_task is not None
                # Checked above with no await since: whatever is queued from now on
                # finds this future and wakes the writer.
                self._writer_wakeup = self._writer_task.get_loop().create_future()
                try:
                    await self._writer_wakeup
                finally:
                    self._writer_wakeup = None

    async def _catch_up_one_page(self) -> None:
        """Send the next page of the backlog; go live once the stream reached the
        highest seq known to exist. Offers that arrive meanwhile only raise that seq,
        and the switch happens with no await after the check, so nothing slips between
        the backlog and the live frames."""
        assert self._backlog is not None
        epoch = self._epoch
        try:
            page = await self._backlog.replay(self._cursor, self._target)
        except StorageError as exc:
            log.warning("connection %s cannot catch up: %s", self.connection_id, exc)
            self.close_soon(CloseCode.RECONNECT, "storage unavailable")
            return
        for covered, frame in page:
            if epoch != self._epoch or self._close_request is not None:
                return  # resumed elsewhere, or closing: this page is stale
            if covered <= self._cursor:
                continue
            if frame is None:  # seqs this socket does not see: passed over
                self._cursor = covered
                self._target = max(self._target, covered)
                continue
            if not await self._send(frame):
                return
            if epoch != self._epoch:
                return
            self._cursor = covered
            self._target = max(self._target, covered)
            self._offers_while_stalled = 0
            if self._on_sent is not None:
                self._on_sent(covered)
        if epoch == self._epoch and (not page or self._cursor >= self._target):
            self._catching_up = False

    async def _send(self, frame: bytes) -> bool:
        """Write one frame; False if a close interrupted it."""
        # No asyncio.timeout per frame (it showed in profiles): close_soon cancels this
        # task instead, and only that cancellation is swallowed here.
        self._sending = True
        try:
            await self._transport.send(frame)
            if self._interrupted:
                # The close came as the send completed: its cancellation is still pending
                # and must be taken here, or it would hit the close handshake instead
                # (which then never aborts a peer that stopped reading).
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            task = self._writer_task
            if not self._interrupted or task is None or task.uncancel() > 0:
                raise  # cancelled from outside (the edge's TaskGroup), not by us
            return False
        finally:
            self._sending = False
        return not self._interrupted
