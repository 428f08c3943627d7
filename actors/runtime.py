"""A small actor runtime: one task and one bounded mailbox per live key.

Shaped after pykka (`on_start` / `on_receive` / `on_stop` / `on_failure`, one message at a
time), with three differences that matter for a server: mailboxes are bounded (a full
mailbox makes `tell` wait), a failing message is retried on the same actor instance and
then dead-lettered instead of killing the actor, and idle actors are passivated so that
cost grows with active keys, not with known keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from actors.latch import Latch

logger = logging.getLogger(__name__)

M = TypeVar("M")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class ActorError(Exception):
    """Base of the actor runtime's errors."""


class ActorStartError(ActorError):
    """The actor for a key could not be created or its `on_start` raised.

    The actor is not registered; the message was not delivered. The cause is chained
    (`__cause__`) and was logged; the next `tell` to the key tries a fresh actor.
    """


class ActorSystemStoppedError(ActorError):
    """`tell` was called after `ActorSystem.stop()` began: the message was not accepted."""


class Actor(Generic[M]):
    """Base class of an actor: override the hooks you need.

    The runtime calls every hook from the actor's own task, never two at once, so an
    actor's state needs no lock. Hooks may await; while one runs, the actor's next
    message waits in its mailbox (other actors are not affected).
    """

    async def on_start(self) -> None:
        """Called once before the first message. If it raises, `tell` raises
        `ActorStartError` and the actor is discarded."""

    async def on_receive(self, message: M) -> None:
        """Handle one message. Raising makes the runtime retry the same message on this
        same instance (see `on_failure`, `on_restart`)."""
        raise NotImplementedError(f"{type(self).__name__} must override on_receive")

    async def on_failure(self, exc: Exception, message: M) -> None:
        """Called after `on_receive(message)` raised `exc` (already logged), before
        `on_restart`. For cleanup or metrics; an exception from it is logged and ignored."""

    async def on_restart(self) -> None:
        """Called after every failed `on_receive`, before the message is retried (or the
        next one is handled). State that survives failures (sockets) is kept; override to
        reset state the failure may have left inconsistent."""

    async def on_dead_letter(self, message: M) -> None:
        """Called when `message` failed `max_attempts` times and is given up on; the
        override may tell whoever depended on it (e.g. ask clients to resync)."""

    async def on_idle(self) -> bool:
        """Called when the mailbox stayed empty for the idle timeout. Return True to be
        stopped and forgotten (a later `tell` creates a fresh actor), False to stay."""
        return True

    async def on_stop(self) -> None:
        """Called once when the actor is passivated or the system stops, after its
        mailbox was drained. An exception from it is logged and ignored."""


class _Control(enum.Enum):
    WAKE = enum.auto()
    """Makes an actor waiting on an empty mailbox look again at whether it should stop."""
    IDLE_DUE = enum.auto()
    """The mailbox may have stayed empty for the idle timeout: ask about passivation."""


class _Mailbox(Generic[T]):
    """A bounded FIFO with one consumer (its actor) and any number of producers.

    Not an `asyncio.Queue`: a Queue allocates three deques up front (about 2 kB), and
    there is a mailbox per live actor, one per user with a socket open; this one makes
    the futures that waiters sleep on, and the producers' waiting line, only when
    someone has to wait. It is also bound to the loop it was made on: the Queue looks
    the running loop up on every wait, which in CPython 3.11 is a getpid() system call
    (once per message for an actor whose mailbox runs dry between messages, about 3%
    of the event loop's time at max load in bench/deliver.py).
    """

    __slots__ = ("_getter", "_items", "_loop", "_maxsize", "_putters")

    def __init__(self, maxsize: int, loop: asyncio.AbstractEventLoop) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._loop = loop
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        """Append `item`; `asyncio.QueueFull` if the mailbox holds `maxsize` already."""
        if len(self._items) >= self._maxsize:
            raise asyncio.QueueFull
        self._items.append(item)
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)

    async def put(self, item: T) -> None:
        """Append `item`, waiting (in arrival order) while the mailbox is full."""
        while len(self._items) >= self._maxsize:
            if self._putters is None:
                self._putters = deque()
            waiter = self._loop.create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except BaseException:
                with contextlib.suppress(ValueError):
                    self._putters.remove(waiter)
                # Woken and cancelled at once: pass the free slot to the next producer.
                if waiter.done() and not waiter.cancelled():
                    self._wake_next_putter()
                raise
        self.put_nowait(item)

    def get_nowait(self) -> T:
        """The oldest item; `asyncio.QueueEmpty` if there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        self._wake_next_putter()
        return item

    async def get(self) -> T:
        """The oldest item, waiting for one (only the actor calls this)."""
        while not self._items:
            self._getter = self._loop.create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        return self.get_nowait()

    def _wake_next_putter(self) -> None:
        while self._putters:
            waiter = self._putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


@dataclass(eq=False)
class _ActorCell(Generic[M]):
    """The runtime's bookkeeping for one live actor."""

    actor: Actor[M]
    mailbox: _Mailbox[M | _Control]
    started: Latch = field(default_factory=Latch)
    """Set once `on_start` finished, successfully (`start_error` None) or not."""
    start_error: BaseException | None = None
    stopped: Latch = field(default_factory=Latch)
    """Set once `on_stop` returned (or the actor was cancelled)."""
    pending_tells: int = 0
    """`tell`s holding this cell that have not enqueued yet (awaiting start or space).
    The actor must not stop while one is pending, or its message would be lost."""
    draining: bool = False
    """The system is stopping: finish the mailbox, then stop."""
    discarded: bool = False
    """The actor was cancelled; what reaches its mailbox now is dropped."""
    idle_since: float = 0.0
    """Loop time at which the actor last found its mailbox empty."""
    idle_timer: asyncio.TimerHandle | None = None
    """At most one per actor and idle period (not one per message: that cost showed
    in profiles with thousands of busy actors)."""

    def is_drained(self) -> bool:
        return self.mailbox.empty() and self.pending_tells == 0

    def wake(self) -> None:
        # An empty mailbox is never full, so this cannot raise. A non-empty one needs no
        # wake-up: the actor will look again after taking the next message.
        if self.mailbox.empty():
            self.mailbox.put_nowait(_Control.WAKE)


class ActorSystem(Generic[K, M]):
    """Creates actors on demand, one per key, and runs each in its own task.

    Guarantees:
    - Messages told to one key are handled in `tell` order, one at a time; actors of
      different keys never wait for each other.
    - Mailboxes are bounded; `tell` waits for space (backpressure to the caller).
    - A message whose `on_receive` raises is retried on the same instance up to
      `max_attempts` times, then dead-lettered; the actor goes on with the next one.
    - An actor whose mailbox stayed empty for `idle_timeout` and whose `on_idle` agrees
      is stopped and forgotten; a `tell` racing with that stop is never lost: it waits
      for `on_stop` to return and goes to a fresh actor, so two actors of one key never
      run at the same time.
    - `stop()` refuses new tells, lets every actor drain its mailbox, then calls its
      `on_stop`; what is still running at the timeout is cancelled.

    Counters for metrics (monotonic since creation): `actors_started`,
    `actors_passivated`, `messages_processed`, `restarts`, `dead_letters`; gauges:
    `len(system)` (live actors) and `queued_messages`.
    """

    def __init__(
        self,
        factory: Callable[[K], Actor[M]],
        *,
        mailbox_size: int,
        idle_timeout: float,
        max_attempts: int = 3,
        name: str,
    ) -> None:
        if mailbox_size < 1 or max_attempts < 1 or idle_timeout <= 0:
            raise ValueError(
                f"actor system {name!r}: mailbox_size and max_attempts must be >= 1 and "
                f"idle_timeout > 0 (got {mailbox_size}, {max_attempts}, {idle_timeout})"
            )
        self.name = name
        self._factory = factory
        self._mailbox_size = mailbox_size
        self._idle_timeout = idle_timeout
        self._max_attempts = max_attempts
        self._cells: dict[K, _ActorCell[M]] = {}
        self._stopping: dict[K, _ActorCell[M]] = {}
        """Actors removed from `_cells` whose `on_stop` is still running."""
        # A TaskGroup would need one task holding `async with` for the system's whole
        # life; a tracked set gives the same ownership (cancelled and awaited in `stop`).
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True
        self.actors_started = 0
        self.actors_passivated = 0
        self.messages_processed = 0
        self.restarts = 0
        self.dead_letters = 0

    def __len__(self) -> int:
        """The number of live actors (started or starting, not yet stopping)."""
        return len(self._cells)

    def get(self, key: K) -> bool:
        """Whether an actor for `key` is live (a `tell` would not create one)."""
        return key in self._cells

    @property
    def queued_messages(self) -> int:
        """Messages waiting in all mailboxes (a gauge; O(live actors))."""
        return sum(cell.mailbox.qsize() for cell in self._cells.values())

    async def tell(self, key: K, message: M) -> None:
        """Put `message` into the mailbox of `key`'s actor, creating the actor if needed.

        Returns once the message is enqueued, not handled. Waits while the mailbox is
        full. Raises `ActorStartError` if the actor had to be created and failed to
        start, `ActorSystemStoppedError` once `stop()` has begun.
        """
        while True:
            if not self._accepting:
                raise ActorSystemStoppedError(
                    f"actor system {self.name!r} is stopping: message for {key!r} refused"
                )
            cell = self._cells.get(key)
            if cell is not None:
                break
            previous = self._stopping.get(key)
            if previous is None:
                cell = self._spawn(key)
                break
            # Keep one actor per key at a time: the fresh actor's on_start may depend on
            # what the old on_stop writes (e.g. a flushed cursor).
            await previous.stopped.wait()
        cell.pending_tells += 1
        try:
            if not cell.started.is_set():
                await cell.started.wait()
            if isinstance(cell.start_error, ActorSystemStoppedError):
                raise ActorSystemStoppedError(*cell.start_error.args)
            if cell.start_error is not None:
                raise ActorStartError(
                    f"actor {self.name}[{key!r}] failed to start: {cell.start_error!r}"
                ) from cell.start_error
            # Overflow policy: wait for space. The caller is the bus consumer, whose
            # prefetch bounds what it holds, so waiting pushes back to the broker.
            try:
                cell.mailbox.put_nowait(message)  # the common case, without a suspension
            except asyncio.QueueFull:
                await cell.mailbox.put(message)
            if cell.discarded:
                raise ActorSystemStoppedError(
                    f"actor system {self.name!r} stopped: {key!r} was cancelled at the "
                    "stop timeout before it could take this message"
                )
        finally:
            cell.pending_tells -= 1
            if cell.draining and cell.pending_tells == 0:
                # A tell cancelled while waiting for space must not leave a draining
                # actor waiting for a message that will never come.
                cell.wake()

    # The timeout bounds only the graceful part; wrapping stop() in asyncio.timeout
    # instead would cancel it without the forced cancel-and-await that follows.
    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109
        """Refuse new tells, drain every mailbox, call every `on_stop`; cancel (without
        `on_stop`) the actors still running after `timeout` seconds. Idempotent."""
        self._accepting = False
        for cell in self._cells.values():
            cell.draining = True
            cell.wake()
        try:
            if self._tasks:
                _, still_running = await asyncio.wait(set(self._tasks), timeout=timeout)
                if still_running:
                    logger.warning(
                        "actor system %r: %d actor(s) did not drain and stop within %.1fs "
                        "(a hook is stuck?); cancelling them: %s",
                        self.name,
                        len(still_running),
                        timeout,
                        ", ".join(sorted(task.get_name() for task in still_running)[:10]),
                    )
        finally:
            # Also reached when stop() itself is cancelled: no actor outlives the system.
            leftovers = [task for task in self._tasks if not task.done()]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

    def _spawn(self, key: K) -> _ActorCell[M]:
        try:
            actor = self._factory(key)
        except Exception as exc:
            logger.exception("actor %s[%r]: factory raised", self.name, key)
            raise ActorStartError(
                f"actor {self.name}[{key!r}] could not be created: {exc!r}"
            ) from exc
        # Bounded. Overflow policy: `tell` waits for space, which pushes back to the bus
        # consumer (bounded by its prefetch). WAKE needs no spare slot: it only ever goes
        # into an empty mailbox.
        mailbox: _Mailbox[M | _Control] = _Mailbox(self._mailbox_size, asyncio.get_running_loop())
        cell = _ActorCell(actor, mailbox)
        self._cells[key] = cell
        task = asyncio.create_task(self._live(key, cell), name=f"{self.name}[{key!r}]")
        self._tasks.add(task)
        task.add_done_callback(self._forget_task)
        return cell

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # `_live` catches what hooks raise, so this is a bug in the runtime itself.
            logger.error("actor task %s crashed", task.get_name(), exc_info=exc)

    async def _live(self, key: K, cell: _ActorCell[M]) -> None:
        """The whole life of one actor: start, handle messages, stop."""
        try:
            try:
                await cell.actor.on_start()
            except Exception as exc:
                logger.exception("actor %s[%r]: on_start raised", self.name, key)
                cell.start_error = exc
                return
            except BaseException:
                cell.start_error = ActorSystemStoppedError(
                    f"actor system {self.name!r} stopped while {key!r} was starting"
                )
                raise
            finally:
                cell.started.set()
            self.actors_started += 1
            await self._handle_until_stop(key, cell)
            try:
                await cell.actor.on_stop()
            except Exception:
                logger.exception("actor %s[%r]: on_stop raised", self.name, key)
        finally:
            if cell.idle_timer is not None:
                cell.idle_timer.cancel()
                cell.idle_timer = None
            if self._cells.get(key) is cell:
                del self._cells[key]
            if self._stopping.get(key) is cell:
                del self._stopping[key]
            if not cell.is_drained():
                await self._discard_mailbox(key, cell)
            cell.stopped.set()

    async def _discard_mailbox(self, key: K, cell: _ActorCell[M]) -> None:
        """Only after a cancellation (stop timeout): drop what is left so that no `tell`
        waits for space for ever; those tells then raise ActorSystemStoppedError."""
        cell.discarded = True
        dropped = 0
        while True:
            while not cell.mailbox.empty():
                if not isinstance(cell.mailbox.get_nowait(), _Control):
                    dropped += 1
            if cell.pending_tells == 0:
                break
            await asyncio.sleep(0)  # let the tells woken by the gets above run
        if dropped:
            logger.warning(
                "actor %s[%r] was cancelled with %d unhandled message(s); dropped",
                self.name,
                key,
                dropped,
            )

    async def _handle_until_stop(self, key: K, cell: _ActorCell[M]) -> None:
        """Handle messages one at a time until the actor is drained and should stop.

        On return the actor is already out of `_cells` (moved to `_stopping`); no await
        happens between the last look at the mailbox and that move, so no tell is lost.
        """
        mailbox = cell.mailbox
        loop = asyncio.get_running_loop()
        while True:
            if cell.draining and cell.is_drained():
                break
            if mailbox.empty():
                # Not `except QueueEmpty:` around the wait: an exception being handled
                # stays alive, with its traceback, for as long as the block awaits, that
                # is for the whole idle time of every idle actor.
                cell.idle_since = loop.time()
                if cell.idle_timer is None:
                    cell.idle_timer = loop.call_at(
                        cell.idle_since + self._idle_timeout, self._idle_due, cell
                    )
                item = await mailbox.get()
            else:
                item = mailbox.get_nowait()
            if item is _Control.IDLE_DUE:
                if not cell.draining and await self._agrees_to_passivate(key, cell):
                    self.actors_passivated += 1
                    break
                continue
            if not isinstance(item, _Control):
                await self._handle(key, cell.actor, item)
        del self._cells[key]
        self._stopping[key] = cell

    def _idle_due(self, cell: _ActorCell[M]) -> None:
        """Timer callback: the actor may have been idle for `idle_timeout`."""
        cell.idle_timer = None
        if not cell.mailbox.empty():
            return  # busy: it re-arms the timer when its mailbox runs dry again
        due = cell.idle_since + self._idle_timeout
        loop = asyncio.get_running_loop()
        if loop.time() < due:
            # The mailbox ran dry again after the timer was armed: wait for the rest.
            cell.idle_timer = loop.call_at(due, self._idle_due, cell)
            return
        # An empty mailbox is never full, so this cannot raise.
        cell.mailbox.put_nowait(_Control.IDLE_DUE)

    async def _agrees_to_passivate(self, key: K, cell: _ActorCell[M]) -> bool:
        if not cell.is_drained():
            return False
        try:
            idle = await cell.actor.on_idle()
        except Exception:
            logger.exception("actor %s[%r]: on_idle raised; keeping the actor", self.name, key)
            return False
        # Look again: a tell may have arrived while on_idle ran.
        return idle and cell.is_drained()

    async def _handle(self, key: K, actor: Actor[M], message: M) -> None:
        """Supervision: retry the same message on the same instance, then dead-letter."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                await actor.on_receive(message)
            except Exception as exc:
                logger.exception(
                    "actor %s[%r]: on_receive(%s) raised (attempt %d of %d)",
                    self.name,
                    key,
                    type(message).__name__,
                    attempt,
                    self._max_attempts,
                )
                await self._call_quietly(key, "on_failure", actor.on_failure(exc, message))
                self.restarts += 1
                await self._call_quietly(key, "on_restart", actor.on_restart())
            else:
                self.messages_processed += 1
                return
        self.dead_letters += 1
        logger.error(
            "actor %s[%r]: %s dead-lettered after %d attempts",
            self.name,
            key,
            type(message).__name__,
            self._max_attempts,
        )
        await self._call_quietly(key, "on_dead_letter", actor.on_dead_letter(message))

    async def _call_quietly(self, key: K, hook: str, call: Coroutine[object, object, None]) -> None:
        # Supervision hooks must not themselves take the actor's loop down.
        try:
            await call
        except Exception:
            logger.exception("actor %s[%r]: %s raised", self.name, key, hook)
