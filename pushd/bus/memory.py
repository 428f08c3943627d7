"""The embedded bus (`memory://`): one process accepts notifications and holds every
socket, so the bus is a bounded in-process queue in front of the handler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pushd.bus._dispatch import (
    DEFAULT_CLOSE_GRACE_SECONDS,
    Dispatcher,
    Outcome,
    WatchRefs,
    call_handler,
)
from pushd.bus.protocol import BusError, BusMessage, BusUnavailableError, MessageHandler

log = logging.getLogger("pushd.bus")

MIN_QUEUE_SIZE = 1024


class MemoryBus:
    """In-process `Bus`: publish puts into a bounded queue; one task drains it in order.

    Messages still queued when the bus closes are dropped: they exist only in this
    process, and the database (the truth) lets clients resume past them.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        node_id: str = "embedded",
        prefetch: int = 256,
        shards: int = 8,
        close_grace: float = DEFAULT_CLOSE_GRACE_SECONDS,
    ) -> None:
        del url, shards  # one node, one queue: nothing to route
        self._node_id = node_id
        self._close_grace = close_grace
        # Bounded; overflow policy: `publish` waits for space, which slows the HTTP
        # handlers that publish down to the pace of delivery (backpressure) instead of
        # growing memory without limit.
        self._queue: asyncio.Queue[BusMessage] = asyncio.Queue(max(prefetch, MIN_QUEUE_SIZE))
        self._publish_order = asyncio.Lock()
        self._watched = WatchRefs()
        self._handler: MessageHandler | None = None
        self._dispatcher = Dispatcher(self._queue, self._deliver, f"bus-dispatch-{node_id}")
        self._started = False
        self._closed = asyncio.Event()

    async def start(self, handler: MessageHandler) -> None:
        """Start the dispatcher task that calls `handler` per message, in publish order."""
        if self._started or self._closed.is_set():
            raise BusError("a memory bus starts once; create a new one")
        self._started = True
        self._handler = handler
        self._dispatcher.start()

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        """Queue the messages in order; waits while the queue is full.

        Raises `BusUnavailableError` if the bus is not running or closes while waiting.
        """
        # Concurrent publish calls queue up in call order (the lock is FIFO): one call's
        # messages are never interleaved with, or overtaken by, a later call's while it
        # waits for space.
        async with self._publish_order:
            for message in messages:
                self._check_running()
                try:
                    self._queue.put_nowait(message)
                except asyncio.QueueFull:
                    await self._put_unless_closed(message)

    async def _put_unless_closed(self, message: BusMessage) -> None:
        # A publisher waiting for space must not wait forever once nobody drains the
        # queue any more, so the wait races the close.
        put = asyncio.ensure_future(self._queue.put(message))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({put, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (put, closed):
                waiter.cancel()
            await asyncio.gather(put, closed, return_exceptions=True)
        if put.cancelled():
            self._check_running()

    def _check_running(self) -> None:
        if self._closed.is_set() or not self._started:
            state = "closed" if self._closed.is_set() else "not started"
            raise BusUnavailableError(f"the memory bus of node {self._node_id!r} is {state}")

    async def watch_user(self, user_id: str) -> None:
        """Count a reference; every message already reaches this (only) node."""
        self._watched.acquire(user_id)

    async def unwatch_user(self, user_id: str) -> None:
        """Drop a reference taken by `watch_user`."""
        self._watched.release(user_id)

    async def healthy(self) -> bool:
        """True between `start` and `close`."""
        return self._started and not self._closed.is_set()

    async def close(self) -> None:
        """Let the handler call in progress finish (up to the grace), drop the rest."""
        if self._closed.is_set():
            return
        self._closed.set()
        await self._dispatcher.stop(self._close_grace)
        if not self._queue.empty():
            log.info(
                "memory bus of node %r closed with %d undelivered messages",
                self._node_id,
                self._queue.qsize(),
            )

    async def _deliver(self, message: BusMessage) -> None:
        assert self._handler is not None  # the dispatcher runs only after start
        outcome = await call_handler(self._handler, message, self._dispatcher.stopping)
        if outcome is Outcome.DEAD_LETTERED:
            log.error(
                "dead-lettered bus message for user %r seq %d: the handler kept raising",
                message.user_id,
                message.seq,
            )
        elif outcome is Outcome.ABANDONED:
            log.warning(
                "bus closed while retrying user %r seq %d; the message is dropped",
                message.user_id,
                message.seq,
            )
