"""Keeps one node queue's bindings equal to the shards of the users the node watches."""

from __future__ import annotations

import asyncio
import logging
import zlib

from aiormq.abc import AbstractChannel

from pushd.bus._dispatch import WatchRefs, cancelled_from_outside
from pushd.bus.protocol import BusUnavailableError

log = logging.getLogger("pushd.bus")


def shard_of(user_id: str, shards: int) -> int:
    """The shard a user's messages are routed by (stable across nodes and restarts)."""
    return zlib.crc32(user_id.encode()) % shards


def routing_key(shard: int) -> str:
    """The routing key of a shard on the exchange."""
    return f"user.{shard}"


class ShardBindings:
    """Reference-counted watching, turned into queue_bind/queue_unbind on the broker.

    All RPCs run in one reconciler task (`run`, owned by the bus): callers only wait for
    it, so a cancelled caller never cancels an aiormq RPC, which would close the channel.
    """

    def __init__(self, queue: str, exchange: str, shards: int, rpc_timeout: float) -> None:
        self._queue = queue
        self._exchange = exchange
        self._shards = shards
        self._rpc_timeout = rpc_timeout
        self._channel: AbstractChannel | None = None  # None while disconnected
        self._watched = WatchRefs()
        self._shard_users: dict[int, int] = {}  # shard -> watched users in it
        self._bound: set[int] = set()  # confirmed bound through the current channel
        self._stale: set[int] = set()  # may be bound on the broker; checked on reconcile
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}  # callers, by shard
        self._changed = asyncio.Event()
        self._stopping = False

    def attach(self, channel: AbstractChannel) -> None:
        """Use this channel from now on, and bind everything watched through it."""
        self._channel = channel
        self._changed.set()

    def detach(self) -> None:
        """The channel is gone: fail waiting callers; the next one binds all again."""
        self._channel = None
        # The bindings may have outlived the connection, or not (queue expired): the
        # next channel binds everything watched again (idempotent), unbinds the rest.
        self._stale |= self._bound
        self._bound.clear()
        self._changed.set()

    async def watch(self, user_id: str) -> None:
        """Take a reference; returns once the user's shard is bound on the broker."""
        shard = shard_of(user_id, self._shards)
        if self._watched.acquire(user_id):
            self._shard_users[shard] = self._shard_users.get(shard, 0) + 1
        if shard in self._bound:
            return
        try:
            channel = self._channel
            if self._stopping or channel is None or channel.is_closed:
                raise BusUnavailableError(
                    f"cannot watch user {user_id!r}: the bus is not connected to RabbitMQ"
                )
            await self._settled(shard)
        except BaseException:
            self._release(user_id, shard)
            raise

    async def unwatch(self, user_id: str) -> None:
        """Drop a reference; at a shard's last, wait until it is unbound (or give up)."""
        shard = shard_of(user_id, self._shards)
        if not self._release(user_id, shard) or self._channel is None or self._stopping:
            return  # a stale binding is removed on the next connection
        try:
            await self._settled(shard)
        except BusUnavailableError as exc:
            log.info("bus: shard %d stays bound for now (%s)", shard, exc)

    def stop(self) -> None:
        """Let `run` return after the RPC in progress; fail waiting callers."""
        self._stopping = True
        self._changed.set()
        self._fail_waiters(BusUnavailableError("the bus is closing"))

    def bound_shards(self) -> set[int]:
        """Shards that are or may be bound, for a clean close to remove."""
        return self._bound | self._stale

    def _release(self, user_id: str, shard: int) -> bool:
        """Drop a reference; True if the shard is no longer wanted."""
        if not self._watched.release(user_id):
            return False
        remaining = self._shard_users[shard] - 1
        if remaining:
            self._shard_users[shard] = remaining
            return False
        del self._shard_users[shard]
        self._changed.set()
        return True

    async def _settled(self, shard: int) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(shard, []).append(waiter)
        self._changed.set()
        await waiter

    def _is_settled(self, shard: int) -> bool:
        if shard in self._shard_users:
            return shard in self._bound
        return shard not in self._bound and shard not in self._stale

    async def run(self) -> None:
        """The reconciler: after each change, make the broker match; one RPC at a time."""
        while not self._stopping:
            await self._changed.wait()
            self._changed.clear()
            channel = self._channel
            if channel is None or channel.is_closed:
                self._fail_waiters(BusUnavailableError("the RabbitMQ connection was lost"))
                continue
            try:
                await self._reconcile(channel)
            except (Exception, asyncio.CancelledError) as exc:
                if cancelled_from_outside():
                    raise
                # The channel is closed by now, so the bus reconnects and attaches a
                # new one, which starts another pass.
                log.warning("bus: could not update shard bindings: %r", exc)
                self._fail_waiters(BusUnavailableError(f"binding failed: {exc!r}"))

    async def _reconcile(self, channel: AbstractChannel) -> None:
        for shard in sorted(set(self._shard_users) - self._bound):
            if self._stopping:
                return
            if shard not in self._shard_users:
                continue  # unwatched during an earlier RPC of this pass
            await channel.queue_bind(
                self._queue, self._exchange, routing_key(shard), timeout=self._rpc_timeout
            )
            if channel is not self._channel:
                return  # reconnected meanwhile: the new channel starts over
            self._bound.add(shard)
            self._stale.discard(shard)
            self._wake_if_settled(shard)
        for shard in sorted((self._bound | self._stale) - set(self._shard_users)):
            if self._stopping:
                return
            if shard in self._shard_users:
                continue  # watched again during an earlier RPC of this pass
            # Not "bound" from now on, so that a watch arriving during the unbind waits
            # for the bind that follows instead of returning at once.
            self._bound.discard(shard)
            self._stale.add(shard)
            await channel.queue_unbind(
                self._queue, self._exchange, routing_key(shard), timeout=self._rpc_timeout
            )
            if channel is not self._channel:
                return
            self._stale.discard(shard)
        for shard in list(self._waiters):
            self._wake_if_settled(shard)

    def _wake_if_settled(self, shard: int) -> None:
        # A shard changed again meanwhile keeps its waiters: its change set the event.
        if self._is_settled(shard):
            for waiter in self._waiters.pop(shard, []):
                if not waiter.done():
                    waiter.set_result(None)

    def _fail_waiters(self, error: BusUnavailableError) -> None:
        waiters, self._waiters = self._waiters, {}
        for shard_waiters in waiters.values():
            for waiter in shard_waiters:
                if not waiter.done():
                    waiter.set_exception(error)
