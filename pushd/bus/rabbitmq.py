"""The cluster bus (`amqp://`, `amqps://`) on RabbitMQ through aiormq.

Topology: one durable topic exchange; users are spread over `shards` routing keys
(`user.<shard>`); every node has one durable queue, bound to a shard only while the node
watches a user of that shard, so a node receives only what its sockets may need.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import aiormq
import msgspec
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

from actors.retry import Backoff
from pushd.bus._bindings import ShardBindings, routing_key, shard_of
from pushd.bus._dispatch import (
    DEFAULT_CLOSE_GRACE_SECONDS,
    Dispatcher,
    Outcome,
    call_handler,
    cancelled_from_outside,
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
# The cap is low on purpose: while the broker is down the outbox relay keeps every
# notification on disk, but nothing reaches sockets until this node reconnects. With a
# 10 s cap, a 3 s broker restart delayed delivery by up to 7.4 s (tests/faults); one
# attempt every 2 s at most is still no load on a broker that is coming back.
RECONNECT_BACKOFF = Backoff(base=0.25, cap=2.0)

_encoder = msgspec.msgpack.Encoder()
# One AMQP message carries every BusMessage of one publish call for one shard, in order:
# under load the ingest publishes batches of hundreds, and per-AMQP-message costs
# (framing, confirms, acks, routing) are what bounded the bus, not the bytes.
_decoder = msgspec.msgpack.Decoder(list[BusMessage])


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
        shards: int = 8,
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
        # Acks are sent cumulatively (multiple=True): once the buffer runs dry, or every
        # `_ack_every` messages, well inside the prefetch window so the broker keeps
        # sending. A crash loses at most these acks, which means duplicates, not loss.
        self._ack_every = max(1, prefetch // 4)
        self._handled_unacked: tuple[AbstractChannel, int] | None = None
        self._bindings = ShardBindings(
            self._queue_name, EXCHANGE, shards, rpc_timeout=BROKER_TIMEOUT_SECONDS
        )
        self._supervisor: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()
        self._ever_connected = False
        self.reconnects = 0
        """Connections opened again after the first (metrics)."""

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
            self._ever_connected = True
        except (Exception, asyncio.CancelledError) as exc:
            if cancelled_from_outside():
                raise
            log.warning("%s; retrying in the background", self._describe_failure(exc))
        self._supervisor = asyncio.create_task(self._supervise(), name="bus-supervisor")
        self._reconciler = asyncio.create_task(self._bindings.run(), name="bus-bindings")

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
        self._bindings.stop()  # the reconciler returns after the RPC in progress
        try:
            await _cancel_and_wait(self._supervisor)
            link = self._link
            if link is not None and not link.lost.is_set() and link.consumer_tag:
                await _best_effort(
                    "cancel the consumer",
                    link.consumer.basic_cancel(link.consumer_tag, timeout=BROKER_TIMEOUT_SECONDS),
                )
            await self._dispatcher.stop(self._close_grace)
            await self._flush_acks()
            if self._reconciler is not None:
                # Cancelling an aiormq RPC would close the channel the unbinds need.
                await asyncio.wait({self._reconciler}, timeout=BROKER_TIMEOUT_SECONDS)
            await _cancel_and_wait(self._reconciler)
            if link is not None and not link.lost.is_set():
                # A clean stop removes this node's routes, so publishers do not fill a
                # queue nobody reads.
                for shard in sorted(self._bindings.bound_shards()):
                    await _best_effort(
                        f"unbind shard {shard}",
                        link.consumer.queue_unbind(
                            self._queue_name,
                            EXCHANGE,
                            routing_key(shard),
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
        packets: dict[int, list[BusMessage]] = {}
        for message in messages:
            packets.setdefault(shard_of(message.user_id, self._shards), []).append(message)
        # One task per packet so that confirms are awaited together; the tasks queue
        # on the channel lock in creation order, which keeps publish order. gather
        # with return_exceptions waits for all of them, so none outlives this call.
        results = await asyncio.gather(
            *(
                self._publish_one(link.publisher, shard, packet)
                for shard, packet in packets.items()
            ),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise BusUnavailableError(
                f"RabbitMQ did not confirm {len(failures)} of {len(packets)} packets "
                f"({failures[0]!r}); they may be published again"
            ) from failures[0]

    async def _publish_one(
        self, channel: aiormq.Channel, shard: int, packet: list[BusMessage]
    ) -> None:
        confirmation = await channel.basic_publish(
            _encoder.encode(packet),
            exchange=EXCHANGE,
            routing_key=routing_key(shard),
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
        await self._bindings.watch(user_id)

    async def unwatch_user(self, user_id: str) -> None:
        """Drop one reference; at zero, unbind the shard if no other watched user needs it.

        Never raises: when the broker cannot be told, the binding is removed on the next
        connection (or expires with the queue).
        """
        await self._bindings.unwatch(user_id)

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
        self._bindings.attach(consumer)
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
                self._bindings.detach()
                self._purge_deliveries()
                await _close_link(link)
            await RECONNECT_BACKOFF.wait(attempt)
            attempt += 1
            try:
                self._link = await self._open_link()
                self.reconnects += self._ever_connected
                self._ever_connected = True
            except (Exception, asyncio.CancelledError) as exc:
                if cancelled_from_outside():
                    raise
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
        tag = _tag(delivery)
        try:
            packet = _decoder.decode(delivery.body)
        except msgspec.DecodeError as exc:
            log.error("bus: dropping an undecodable message (%s)", exc)
            await self._flush_acks()  # a cumulative ack must not cover the rejected one
            await _best_effort("reject", channel.basic_nack(tag, requeue=False))
            return
        assert self._handler is not None  # the dispatcher runs only after start
        for index, message in enumerate(packet):
            if index and self._dispatcher.stopping.is_set():
                # Stop between messages: the packet stays unacknowledged and returns to
                # the queue whole; the next bus of this node skips nothing.
                await self._flush_acks()
                return
            outcome = await call_handler(self._handler, message, self._dispatcher.stopping)
            if outcome is Outcome.ABANDONED:
                # Left unacknowledged: closing the channel returns the packet to the
                # queue; messages of it already handled come again (at-least-once).
                await self._flush_acks()
                return
            if outcome is Outcome.DEAD_LETTERED:
                # Requeueing a message the handler always rejects would loop on it
                # forever: it is logged and skipped, its packet neighbours go on.
                log.error(
                    "dead-lettered bus message for user %r seq %d: the handler kept raising",
                    message.user_id,
                    message.seq,
                )
        self._handled_unacked = (channel, tag)
        if self._deliveries.empty() or tag % self._ack_every == 0:
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        """Acknowledge every handled message not acknowledged yet, in one frame."""
        if self._handled_unacked is None:
            return
        channel, tag = self._handled_unacked
        self._handled_unacked = None
        if not channel.is_closed:  # else its messages come again on the next link
            # wait=False: the frame is queued in order before any later Channel.Close,
            # so waiting for the socket write would only slow the dispatcher down.
            await _best_effort("ack", channel.basic_ack(tag, multiple=True, wait=False))


def _tag(delivery: DeliveredMessage) -> int:
    tag = delivery.delivery_tag
    assert tag is not None  # always set on Basic.Deliver
    return tag


async def _best_effort(what: str, operation: Awaitable[object]) -> None:
    """Await a broker operation whose failure only means the broker cleans up itself."""
    try:
        # A bound even on acks: with the connection's writer gone, aiormq's bounded
        # write queue would otherwise block the dispatcher forever.
        async with asyncio.timeout(BROKER_TIMEOUT_SECONDS):
            await operation
    except (Exception, asyncio.CancelledError) as exc:
        if cancelled_from_outside():
            raise
        log.info("bus: could not %s (%r); the broker will redeliver or expire it", what, exc)


async def _close_link(link: _Link) -> None:
    # Closing the connection returns every unacknowledged message to the queue.
    await _best_effort("close the connection", link.connection.close())


async def _cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
