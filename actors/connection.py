"""One client socket as an actor sees it: a bounded outbox in front of a `Transport`.

The actor only ever calls `offer` and `close_soon`, which never wait, so one slow socket
cannot slow down the actor or the user's other sockets. The edge runs `run_writer` next
to the socket's reader, in the connection's TaskGroup.
"""

from __future__ import annotations

import asyncio
from collections import deque

from actors.transport import CloseCode, Transport

SLOW_CONSUMER_REASON = "slow consumer: reconnect and resume"


class Connection:
    """A client socket's outbox and writer.

    Frames are written in `offer` order. Once a close is requested (by `close_soon`, by
    an overflowing outbox, or because the peer is gone) no frame is accepted any more and
    pending ones are dropped: a client that reconnects resumes from its ack cursor, and
    the store still has every frame.
    """

    def __init__(self, transport: Transport, *, queue_size: int, connection_id: str) -> None:
        if queue_size < 1:
            raise ValueError(f"connection {connection_id}: queue_size must be >= 1")
        self.connection_id = connection_id
        self._transport = transport
        self._queue_size = queue_size
        # Bounded by `_queue_size` in `offer`. Overflow policy: the socket is a slow
        # consumer; its pending frames are dropped and it is closed with SLOW_CONSUMER,
        # so the client reconnects and resumes instead of the server buffering without
        # end or making the user's other sockets wait.
        self._outbox: deque[bytes] = deque()
        self._outbox_not_empty = asyncio.Event()
        self._close_request: tuple[CloseCode, str] | None = None
        self._sending_task: asyncio.Task[None] | None = None
        """The writer task while a send is in flight, so that a close can interrupt it."""
        self._interrupted = False
        self._writer_done = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Connection {self.connection_id} pending={len(self._outbox)}>"

    @property
    def closed(self) -> bool:
        """True once the connection accepts no more frames (closing or closed)."""
        return self._close_request is not None or self._writer_done.is_set()

    @property
    def close_code(self) -> CloseCode | None:
        """The code of the requested close, None while open or if the peer went away."""
        return None if self._close_request is None else self._close_request[0]

    def offer(self, frame: bytes) -> bool:
        """Queue `frame` for the writer without waiting.

        Returns False if the connection is closed, or if the outbox is full: then the
        connection is a slow consumer and is being closed with `CloseCode.SLOW_CONSUMER`.
        The caller should forget a connection that returned False.
        """
        if self.closed:
            return False
        if len(self._outbox) >= self._queue_size:
            self.close_soon(CloseCode.SLOW_CONSUMER, SLOW_CONSUMER_REASON)
            return False
        self._outbox.append(frame)
        self._outbox_not_empty.set()
        return True

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Ask the writer to close the socket with `code` and `reason` next, dropping the
        pending frames. Does not wait; the first close request wins."""
        if self.closed:
            return
        self._close_request = (code, reason)
        self._outbox.clear()
        self._outbox_not_empty.set()
        if self._sending_task is not None and not self._interrupted:
            # A client that stopped reading blocks `send` for good: interrupt it, or the
            # slow consumer would never be disconnected.
            self._interrupted = True
            self._sending_task.cancel()

    async def wait_closed(self) -> None:
        """Return once the writer finished: the socket was closed or the peer is gone."""
        await self._writer_done.wait()

    async def run_writer(self) -> None:
        """Write queued frames to the transport until a close is requested, then close.

        Returns when the connection is closed. A `ConnectionError` from the transport
        means the peer is gone and ends the writer quietly. If cancelled (the edge's
        TaskGroup ends because the reader finished), the connection is marked closed and
        the edge, which owns the socket, releases it.
        """
        try:
            await self._write_until_close_requested()
            assert self._close_request is not None
            await self._transport.close(*self._close_request)
        except ConnectionError:
            pass  # the peer is gone: nothing left to write or to close gracefully
        finally:
            self._outbox.clear()
            self._writer_done.set()

    async def _write_until_close_requested(self) -> None:
        while self._close_request is None:
            if not self._outbox:
                self._outbox_not_empty.clear()
                await self._outbox_not_empty.wait()
                continue
            frame = self._outbox.popleft()
            # No asyncio.timeout per frame (it showed in profiles): close_soon cancels
            # this task instead, and only that cancellation is swallowed here.
            self._sending_task = asyncio.current_task()
            try:
                await self._transport.send(frame)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self._interrupted or task is None or task.uncancel() > 0:
                    raise  # cancelled from outside (the edge's TaskGroup), not by us
                return
            finally:
                self._sending_task = None
