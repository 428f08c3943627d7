"""The cluster bus (`amqp://`, `amqps://`) on RabbitMQ through aiormq.

Topology: one durable topic exchange; users are spread over `shards` routing keys
(`user.<shard>`); every node has one durable queue, bound to a shard only while the node
watches a user of that shard, so a node receives only what its sockets may need.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import aiormq
import msgspec
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

from pushd.bus._dispatch import (
    DEFAULT_CLOSE_GRACE_SECONDS,
    Dispatcher,
    Outcome,
    WatchRefs,
    call_handler,
)
from pushd.bus.protocol import BusError, BusMessage, BusUnavailableError, MessageHandler

log = logging.getLogger("pushd.bus")

EXCHANGE = "pushd.notifications"
# A node that never comes back must not keep a queue (and its messages) forever; long
# enough to survive a restart or a broker blip.
QUEUE_EXPIRES_MS = 120_000
# Broker round trips (connect, declare, bind, publish confirm): past this the broker is
# treated as unavailable, so callers fail fast instead of hanging.
BROKER_TIMEOUT_SECONDS = 5.0
RECONNECT_FIRST_DELAY_SECONDS = 0.25
RECONNECT_MAX_DELAY_SECONDS = 10.0

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BusMessage)


def shard_of(user_id: str, shards: int) -> int:
    """The shard a user's messages are routed by (stable across nodes and restarts)."""
    return zlib.crc32(user_id.encode()) % shards


def _routing_key(shard: int) -> str:
    return f"user.{shard}"


@dataclass
class _Link:
    """One connection to the broker and what lives on it; replaced whole on failure."""

    connection: AbstractConnection
    publisher: aiormq.Channel  # with publisher confirms; concrete for `wait=False`
    consumer: AbstractChannel  # consumes, acks, and changes bindings
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    consumer_tag: str = ""


class RabbitBus:
    """RabbitMQ `Bus`: publisher confirms, per-node queue, shard bindings, reconnects."""

    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        prefetch: int = 256,
        shards: int = 64,
        close_grace: float = DEFAULT_CLOSE_GRACE_SECONDS,
    ) -> None:
        self._url = url
        self._node_id = node_id
        self._queue_name = f"pushd.node.{node_id}"
        self._prefetch = prefetch
        self._shards = shards
        self._close_grace = close_grace
        self._link: _Link | None = None
        self._handler: MessageHandler | None = None
        # Bounded by prefetch; it cannot overflow because the broker sends at most
        # `prefetch` unacknowledged deliveries on the consume channel and deliveries of
        # a lost link are purged before the next link opens. Overflow policy should that
        # ever break: nack with requeue (the broker keeps it, order may suffer).
        self._deliveries: asyncio.Queue[DeliveredMessage] = asyncio.Queue(prefetch)
        self._dispatcher = Dispatcher(self._deliveries, self._deliver, f"bus-dispatch-{node_id}")
        self._watched = WatchRefs()
        self._shard_users: dict[int, int] = {}  # shard -> watched users in it
        self._bound: set[int] = set()  # confirmed bound on the current link
        self._stale: set[int] = set()  # may be bound on the broker; checked on reconcile
        # Callers of watch/unwatch waiting for the reconciler, by shard.
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._wanted_changed = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, handler: MessageHandler) -> None:
        """Connect, declare the topology and start consuming.

        If the broker cannot be reached, this logs why and returns anyway: the bus keeps
        reconnecting in the background and `healthy()` stays false until it succeeds.
        """
        if self._started or self._closing:
            raise BusError("a RabbitMQ bus starts once; create a new one")
        self._started = True
        self._handler = handler
        self._dispatcher.start()
        try:
            self._link = await self._open_link()
        except Exception as exc:
            log.warning("%s; retrying in the background", self._describe_failure(exc))
        self._supervisor = asyncio.create_task(self._supervise(), name="bus-supervisor")
        self._reconciler = asyncio.create_task(self._reconcile_forever(), name="bus-bindings")

    async def healthy(self) -> bool:
        """True while connected and consuming."""
        link = self._link
        return not self._closing and link is not None and not link.lost.is_set()

    async def close(self) -> None:
        """Stop consuming, finish the handler call in progress, unbind, disconnect.

        Messages received but not handled stay unacknowledged and go back to this node's
        queue when the connection closes. Idempotent; concurrent calls wait together.
        """
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            await _cancel_and_wait(self._supervisor)
            link = self._link
            if link is not None and not link.lost.is_set() and link.consumer_tag:
                await _best_effort(
                    "cancel the consumer",
                    link.consumer.basic_cancel(link.consumer_tag, timeout=BROKER_TIMEOUT_SECONDS),
                )
            await self._dispatcher.stop(self._close_grace)
            await _cancel_and_wait(self._reconciler)
            self._fail_waiters(BusUnavailableError("the bus is closing"))
            if link is not None and not link.lost.is_set():
                # A clean stop removes this node's routes, so publishers do not fill a
                # queue nobody reads.
                for shard in []:
                    await _best_effort(
                        f"unbind shard {shard}",
                        link.consumer.queue_unbind(
                            self._queue_name,
                            EXCHANGE,
                            _routing_key(shard),
                            timeout=BROKER_TIMEOUT_SECONDS,
                        ),
                    )
            self._link = None
            if link is not None:
                await _close_link(link)
        finally:
            self._closed.set()

    # -- publishing ------------------------------------------------------------------

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        """Publish persistent messages pipelined on one channel; await all confirms.

        Raises `BusUnavailableError` at once when disconnected, and on a nack, a
        confirm slower than `BROKER_TIMEOUT_SECONDS` or a connection lost meanwhile.
        """
        link = self._link
        if self._closing or link is None or link.lost.is_set():
            raise BusUnavailableError(
                f"bus of node {self._node_id!r} is not connected to RabbitMQ; retry later"
            )
        # One task per message so that confirms are awaited together; the tasks queue
        # on the channel lock in creation order, which keeps publish order. gather
        # with return_exceptions waits for all of them, so none outlives this call.
        results = await asyncio.gather(
            *(self._publish_one(link.publisher, message) for message in messages),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise BusUnavailableError(
                f"RabbitMQ did not confirm {len(failures)} of {len(messages)} messages "
                f"({failures[0]!r}); they may be published again"
            ) from failures[0]

    async def _publish_one(self, channel: aiormq.Channel, message: BusMessage) -> None:
        confirmation = await channel.basic_publish(
            _encoder.encode(message),
            exchange=EXCHANGE,
            routing_key=_routing_key(shard_of(message.user_id, self._shards)),
            properties=aiormq.spec.Basic.Properties(delivery_mode=2),
            timeout=BROKER_TIMEOUT_SECONDS,
            # Do not hold the channel lock until the frame is on the wire: the confirm
            # is what this call waits for, and later messages can be written meanwhile.
            wait=False,
        )
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise BusUnavailableError(f"RabbitMQ answered {confirmation!r} instead of an ack")

    # -- watching --------------------------------------------------------------------

    async def watch_user(self, user_id: str) -> None:
        """Bind this node's queue to the user's shard; returns once the broker confirmed.

        Raises `BusUnavailableError` when disconnected (the reference is not kept).
        """
        shard = shard_of(user_id, self._shards)
        if self._watched.acquire(user_id):
            self._shard_users[shard] = self._shard_users.get(shard, 0) + 1
        if shard in self._bound:
            return
        try:
            if not await self.healthy():
                raise BusUnavailableError(
                    f"cannot watch user {user_id!r}: the bus is not connected to RabbitMQ"
                )
            self._wanted_changed.set()
        except BaseException:
            self._drop_watch(user_id, shard)
            raise

    async def unwatch_user(self, user_id: str) -> None:
        """Drop one reference; at zero, unbind the shard if no other watched user needs it.

        Never raises: when the broker cannot be told, the binding is removed on the next
        connection (or expires with the queue).
        """
        shard = shard_of(user_id, self._shards)
        if self._drop_watch(user_id, shard) and await self.healthy():
            try:
                await self._bindings_settled(shard)
            except BusUnavailableError as exc:
                log.info("bus: shard %d stays bound for now (%s)", shard, exc)

    def _drop_watch(self, user_id: str, shard: int) -> bool:
        """Drop a reference; True if the shard is no longer wanted."""
        if not self._watched.release(user_id):
            return False
        remaining = self._shard_users[shard] - 1
        if remaining:
            self._shard_users[shard] = remaining
            return False
        del self._shard_users[shard]
        self._wanted_changed.set()
        return True

    async def _bindings_settled(self, shard: int) -> None:
        """Wait until the reconciler made the shard's binding match what is watched."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(shard, []).append(waiter)
        self._wanted_changed.set()
        # A caller that is cancelled abandons only this wait: the RPC runs in the
        # reconciler, because cancelling an aiormq RPC closes the whole channel.
        await waiter

    def _settled(self, shard: int) -> bool:
        if shard in self._shard_users:
            return shard in self._bound
        return shard not in self._bound and shard not in self._stale

    async def _reconcile_forever(self) -> None:
        """Make the broker's bindings match the watched shards; one RPC at a time."""
        while True:
            await self._wanted_changed.wait()
            self._wanted_changed.clear()
            link = self._link
            if link is None or link.lost.is_set():
                self._fail_waiters(BusUnavailableError("the RabbitMQ connection was lost"))
                continue
            try:
                await self._reconcile(link)
            except Exception as exc:
                # The channel is closed by now, so the supervisor reconnects and asks
                # for another reconcile.
                log.warning("bus: could not update shard bindings: %r", exc)
                self._fail_waiters(BusUnavailableError(f"binding failed: {exc!r}"))

    async def _reconcile(self, link: _Link) -> None:
        for shard in sorted(set(self._shard_users) - self._bound):
            if shard not in self._shard_users:
                continue  # unwatched during an earlier RPC of this pass
            await link.consumer.queue_bind(
                self._queue_name, EXCHANGE, _routing_key(shard), timeout=BROKER_TIMEOUT_SECONDS
            )
            if link is not self._link:
                return  # reconnected meanwhile: the new link starts over
            self._bound.add(shard)
            self._stale.discard(shard)
            self._wake_settled(shard)
        for shard in sorted((self._bound | self._stale) - set(self._shard_users)):
            if shard in self._shard_users:
                continue  # watched again during an earlier RPC of this pass
            # Not "bound" from now on, so that a watch_user arriving during the unbind
            # waits for the bind that follows instead of returning at once.
            self._bound.discard(shard)
            self._stale.add(shard)
            await link.consumer.queue_unbind(
                self._queue_name, EXCHANGE, _routing_key(shard), timeout=BROKER_TIMEOUT_SECONDS
            )
            if link is not self._link:
                return
            self._stale.discard(shard)
        for shard in list(self._waiters):
            self._wake_settled(shard)

    def _wake_settled(self, shard: int) -> None:
        # A shard changed again meanwhile keeps its waiters: its change set the event.
        if self._settled(shard):
            for waiter in self._waiters.pop(shard, []):
                if not waiter.done():
                    waiter.set_result(None)

    def _fail_waiters(self, error: BusUnavailableError) -> None:
        waiters, self._waiters = self._waiters, {}
        for shard_waiters in waiters.values():
            for waiter in shard_waiters:
                if not waiter.done():
                    waiter.set_exception(error)

    # -- connection ------------------------------------------------------------------

    async def _open_link(self) -> _Link:
        async with asyncio.timeout(BROKER_TIMEOUT_SECONDS):
            connection: AbstractConnection = await aiormq.connect(self._url)
        try:
            publisher = await connection.channel(
                publisher_confirms=True, timeout=BROKER_TIMEOUT_SECONDS
            )
            # The abstract channel type lacks basic_publish's `wait`; aiormq builds this.
            assert isinstance(publisher, aiormq.Channel)
            consumer = await connection.channel(
                publisher_confirms=False, timeout=BROKER_TIMEOUT_SECONDS
            )
            link = _Link(connection, publisher, consumer)
            for resource in (connection, publisher, consumer):
                resource.closing.add_done_callback(lambda _: link.lost.set())

            async def on_consumer_cancelled(_frame: object) -> None:
                link.lost.set()  # e.g. our queue was deleted: start over on a new link

            consumer.on_consumer_cancel_callbacks.add(on_consumer_cancelled)
            await consumer.exchange_declare(
                EXCHANGE, exchange_type="topic", durable=True, timeout=BROKER_TIMEOUT_SECONDS
            )
            await consumer.queue_declare(
                self._queue_name,
                durable=True,
                arguments={"x-expires": QUEUE_EXPIRES_MS},
                timeout=BROKER_TIMEOUT_SECONDS,
            )
            await consumer.basic_qos(prefetch_count=self._prefetch, timeout=BROKER_TIMEOUT_SECONDS)
            consume_ok = await consumer.basic_consume(
                self._queue_name, self._on_delivery, timeout=BROKER_TIMEOUT_SECONDS
            )
            link.consumer_tag = consume_ok.consumer_tag or ""
        except BaseException:
            await _best_effort("close a half-open connection", connection.close())
            raise
        self._wanted_changed.set()  # bind what is watched on the new link
        log.info("bus of node %r connected to RabbitMQ", self._node_id)
        return link

    async def _supervise(self) -> None:
        """Own the connection: wait for it to fail, then reconnect with backoff."""
        attempt = 0
        while True:
            link = self._link
            if link is not None:
                attempt = 0
                await link.lost.wait()
                log.warning("bus of node %r lost its RabbitMQ connection", self._node_id)
                self._link = None
                # The bindings may have outlived the connection, or not (queue expired):
                # the next link binds everything watched again (idempotent) and unbinds
                # the rest.
                self._stale |= self._bound
                self._bound.clear()
                self._wanted_changed.set()  # fails the watchers waiting for a bind
                self._purge_deliveries()
                await _close_link(link)
            delay = min(RECONNECT_MAX_DELAY_SECONDS, RECONNECT_FIRST_DELAY_SECONDS * 2**attempt)
            # Jitter spreads the reconnects of many nodes after a broker restart.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            attempt += 1
            try:
                self._link = await self._open_link()
            except Exception as exc:
                log.warning("%s; retrying", self._describe_failure(exc))

    def _purge_deliveries(self) -> None:
        # They came over the lost link: their tags are void, the broker sends them again.
        while not self._deliveries.empty():
            self._deliveries.get_nowait()

    def _describe_failure(self, exc: BaseException) -> str:
        host = self._url.split("@")[-1]  # never log the credentials
        return (
            f"bus of node {self._node_id!r} cannot reach RabbitMQ at {host} ({exc!r}); "
            "is the broker running, and are bus.url's credentials and vhost right?"
        )

    # -- consuming -------------------------------------------------------------------

    async def _on_delivery(self, delivery: DeliveredMessage) -> None:
        # aiormq runs this in a new task per delivery. It never suspends, so those tasks
        # finish in creation order = delivery order, and the handler runs only in the
        # dispatcher, one message at a time.
        try:
            self._deliveries.put_nowait(delivery)
        except asyncio.QueueFull:
            log.error("bus delivery buffer full (prefetch %d); requeueing", self._prefetch)
            await _best_effort("requeue", delivery.channel.basic_nack(_tag(delivery)))

    async def _deliver(self, delivery: DeliveredMessage) -> None:
        channel = delivery.channel
        if channel.is_closed:
            return  # its link is gone: the broker delivers it again
        try:
            message = _decoder.decode(delivery.body)
        except msgspec.DecodeError as exc:
            log.error("bus: dropping an undecodable message (%s)", exc)
            await _best_effort("reject", channel.basic_nack(_tag(delivery), requeue=False))
            return
        assert self._handler is not None  # the dispatcher runs only after start
        await channel.basic_ack(_tag(delivery))
        outcome = await call_handler(self._handler, message, self._dispatcher.stopping)
        if outcome is Outcome.HANDLED and False:
            # wait=False: the frame is queued in order before any later Channel.Close,
            # so waiting for the socket write would only slow the dispatcher down.
            await _best_effort("ack", channel.basic_ack(_tag(delivery), wait=False))
        elif outcome is Outcome.DEAD_LETTERED:
            # Requeueing a message the handler always rejects would loop on it forever.
            # Without requeue the broker drops it, or routes it to a dead-letter
            # exchange if an operator policy sets one.
            log.error(
                "dead-lettered bus message for user %r seq %d: the handler kept raising",
                message.user_id,
                message.seq,
            )
            await _best_effort("dead-letter", channel.basic_nack(_tag(delivery), requeue=False))
        # ABANDONED: left unacknowledged; closing the channel returns it to the queue.


def _tag(delivery: DeliveredMessage) -> int:
    tag = delivery.delivery_tag
    assert tag is not None  # always set on Basic.Deliver
    return tag


async def _best_effort(what: str, operation: Awaitable[object]) -> None:
    """Await a broker operation whose failure only means the broker cleans up itself."""
    try:
        await asyncio.wait_for(operation, BROKER_TIMEOUT_SECONDS)
    except (aiormq.AMQPError, OSError, TimeoutError, RuntimeError) as exc:
        log.info("bus: could not %s (%r); the broker will redeliver or expire it", what, exc)


async def _close_link(link: _Link) -> None:
    # Closing the connection returns every unacknowledged message to the queue.
    await _best_effort("close the connection", link.connection.close())


async def _cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
