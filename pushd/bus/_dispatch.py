"""What every backend does the same way once a message has arrived on this node: one
dispatcher task feeding the handler one message at a time, retries when it raises, a
graceful stop, and reference-counted watching."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from actors.retry import Backoff
from pushd.bus.protocol import BusMessage, MessageHandler

log = logging.getLogger("pushd.bus")

# A failing handler is retried in place rather than sent back to the broker: a message
# that went back would be handed over after the ones already prefetched behind it, and
# per-user order would break. The waits are short because the handler only feeds an
# in-process mailbox; what it cannot take after these attempts it will not take later.
HANDLER_ATTEMPTS = 5
HANDLER_BACKOFF = Backoff(base=0.05, cap=0.4)

# How long `close` lets the handler call in progress run before cancelling it, so that a
# stuck handler cannot hang a node's shutdown.
DEFAULT_CLOSE_GRACE_SECONDS = 10.0

T = TypeVar("T")


def cancelled_from_outside() -> bool:
    """Whether the current task was asked to stop.

    Tells our own cancellation from a CancelledError that a library or a handler let
    escape for its own reasons (aiormq fails pending futures with one when a channel
    closes); the latter must not silently end a loop that keeps the bus alive.
    """
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class Outcome(enum.Enum):
    """How the handler ended with one message."""

    HANDLED = "handled"
    DEAD_LETTERED = "dead-lettered"  # raised on every attempt
    ABANDONED = "abandoned"  # the bus started closing between two attempts


async def call_handler(
    handler: MessageHandler, message: BusMessage, stopping: asyncio.Event
) -> Outcome:
    """Await `handler(message)`, calling it again after a short wait while it raises."""
    for attempt in range(1, HANDLER_ATTEMPTS + 1):
        try:
            await handler(message)
        except (Exception, asyncio.CancelledError):
            if cancelled_from_outside():
                raise
            log.exception(
                "bus handler raised for user %r seq %d (attempt %d of %d)",
                message.user_id,
                message.seq,
                attempt,
                HANDLER_ATTEMPTS,
            )
        else:
            return Outcome.HANDLED
        if attempt == HANDLER_ATTEMPTS:
            break
        # Waiting on the stop event instead of sleeping lets `close` end the retries at
        # once; the message then stays unacknowledged and the broker delivers it again.
        if not await HANDLER_BACKOFF.wait(attempt - 1, stop=stopping):
            return Outcome.ABANDONED
    return Outcome.DEAD_LETTERED


class Dispatcher(Generic[T]):
    """Owns the one task that takes items from a queue and processes them in order.

    Exactly one item is processed at a time, so the handler never runs twice at once.
    """

    def __init__(
        self, queue: asyncio.Queue[T], process: Callable[[T], Awaitable[None]], name: str
    ) -> None:
        self._queue = queue
        self._process = process
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self.stopping = asyncio.Event()
        """Set once `stop` began; processing should not start anything new."""

    def start(self) -> None:
        """Create the dispatcher task (owned here, ended by `stop`)."""
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while not self.stopping.is_set():
            item = await self._queue.get()
            self._busy = True
            try:
                await self._process(item)
            except (Exception, asyncio.CancelledError):
                if cancelled_from_outside():
                    raise
                # A bug in processing must not silently stop all consumption.
                log.exception("%s failed to process an item; continuing", self._name)
            finally:
                self._busy = False

    async def stop(self, grace: float) -> None:
        """Let the item in progress finish (for up to `grace` seconds), then end the task.

        Items still queued are not processed.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self.stopping.set()
        if not self._busy:
            # Idle in `queue.get()`: nothing to wait for. An item already handed to the
            # getter stays in the queue, so cancelling here never drops one mid-flight.
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            log.warning(
                "%s: the bus handler is still running after %.1f s; cancelling it "
                "(its message is not acknowledged)",
                self._name,
                grace,
            )
            task.cancel()
        # gather, not `await task`: the task's own CancelledError is expected here, but a
        # cancellation of the caller must still propagate.
        await asyncio.gather(task, return_exceptions=True)


class WatchRefs:
    """Reference counts of watched users."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def acquire(self, user_id: str) -> bool:
        """Take one reference; True if it is the user's first."""
        count = self._counts.get(user_id, 0) + 1
        self._counts[user_id] = count
        return count == 1

    def release(self, user_id: str) -> bool:
        """Drop one reference; True if it was the user's last.

        Dropping a reference that was never taken does nothing: it runs on cleanup
        paths, where raising would hide the original problem.
        """
        count = self._counts.get(user_id, 0)
        if count == 0:
            return False
        if count == 1:
            del self._counts[user_id]
            return True
        self._counts[user_id] = count - 1
        return False

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._counts
