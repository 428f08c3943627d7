"""What only the RabbitMQ bus does: routing between nodes by shard, the per-node queue
that outlives a node, publisher confirms, and reconnecting. Each test gets a fresh vhost
and fails (never skips) when RabbitMQ is down."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import unquote, urlsplit

import aiormq
import pytest

from pushd.bus import BusMessage, BusUnavailableError
from pushd.bus._bindings import shard_of
from pushd.bus.rabbitmq import EXCHANGE, RabbitBus
from tests.bus.helpers import (
    WAIT_SECONDS,
    Buses,
    GatedRecorder,
    Recorder,
    messages_for,
    started,
)

# Slow: each test's vhost is made and deleted by three rabbitmqctl processes
# (tests/services.py), and some tests run rabbitmqctl themselves.
pytestmark = pytest.mark.slow

SHARDS = 64


def users_in_distinct_shards(count: int) -> list[str]:
    """User ids whose shards all differ, so 'unwatched shard' tests mean something."""
    users: dict[int, str] = {}
    for n in range(1000):
        users.setdefault(shard_of(f"user-{n}", SHARDS), f"user-{n}")
        if len(users) == count:
            break
    return list(users.values())


ALICE, BOB, CAROL = users_in_distinct_shards(3)


@pytest.fixture
async def make_bus(amqp_url: str) -> AsyncIterator[Callable[..., RabbitBus]]:
    """Builds RabbitBus instances in this test's vhost; closes them afterwards."""
    buses = Buses[RabbitBus]()

    def make(node_id: str, *, url: str = amqp_url, close_grace: float = 10.0) -> RabbitBus:
        bus = RabbitBus(url, node_id=node_id, prefetch=16, shards=SHARDS, close_grace=close_grace)
        return buses.keep(bus)

    yield make
    await buses.close_all()


async def rabbitmqctl(amqp_url: str, *args: str) -> str:
    """Run rabbitmqctl on this test's vhost, off the event loop (it takes a second)."""
    vhost = unquote(urlsplit(amqp_url).path[1:])
    command = ["rabbitmqctl", "-q", "-p", vhost, *args]
    done = await asyncio.to_thread(
        subprocess.run, command, check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after WAIT_SECONDS.

    Polling, because `healthy()` is a query with no event to wait on.
    """
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


async def test_a_message_reaches_the_node_watching_the_user(
    make_bus: Callable[..., RabbitBus],
) -> None:
    """Also guards that watch_user returns only once the binding is confirmed: the
    publish follows it immediately, and an unconfirmed binding would drop the message."""
    node_a_received, node_b_received = Recorder(), Recorder()
    node_a = await started(make_bus("a"), node_a_received)
    await started(make_bus("b"), node_b_received, ALICE)
    await node_a.publish(messages_for(ALICE, [1, 2]))
    await node_b_received.wait_for(2)
    assert node_b_received.seqs(ALICE) == [1, 2]
    assert node_a_received.received == []


async def test_a_node_receives_no_shard_it_does_not_watch(
    make_bus: Callable[..., RabbitBus],
) -> None:
    """Messages from one channel to one queue keep their order, so once the sentinel
    (CAROL, watched) arrived, anything routed to this node before it has arrived too."""
    received = Recorder()
    node_b = await started(make_bus("b"), received, ALICE, CAROL)
    publisher = await started(make_bus("a"), Recorder())

    await publisher.publish(messages_for(BOB, [1]) + messages_for(CAROL, [1]))
    await received.wait_for(1)

    await node_b.unwatch_user(ALICE)  # returns once the broker confirmed the unbind
    await publisher.publish(messages_for(ALICE, [2]) + messages_for(CAROL, [2]))
    await received.wait_for(2)
    assert [(m.user_id, m.seq) for m in received.received] == [(CAROL, 1), (CAROL, 2)]


async def test_a_shard_stays_bound_while_another_user_of_it_is_watched(
    make_bus: Callable[..., RabbitBus],
) -> None:
    """Guards the per-shard reference count: unwatching one user must not unbind a shard
    that another watched user still needs."""
    same_shard = next(
        f"other-{n}"
        for n in range(10_000)
        if shard_of(f"other-{n}", SHARDS) == shard_of(ALICE, SHARDS)
    )
    received = Recorder()
    node_b = await started(make_bus("b"), received, ALICE, same_shard)
    await node_b.unwatch_user(same_shard)
    publisher = await started(make_bus("a"), Recorder())
    await publisher.publish(messages_for(ALICE, [1]))
    await received.wait_for(1)


async def test_a_clean_close_removes_the_nodes_bindings(
    amqp_url: str, make_bus: Callable[..., RabbitBus]
) -> None:
    node_b = await started(make_bus("b"), Recorder(), ALICE, BOB)
    queue = "pushd.node.b"
    assert (await rabbitmqctl(amqp_url, "list_bindings", "destination_name")).count(queue) > 1
    await node_b.close()
    bindings = await rabbitmqctl(amqp_url, "list_bindings", "source_name", "destination_name")
    assert EXCHANGE not in bindings


async def test_a_message_stuck_in_the_handler_at_close_goes_to_the_next_bus_of_the_node(
    make_bus: Callable[..., RabbitBus],
) -> None:
    """Guards at-least-once across a stop: a message whose handler did not return must
    not be acknowledged, so the node's queue hands it to its next incarnation."""
    stuck = GatedRecorder()
    node_b = await started(make_bus("b", close_grace=0.2), stuck, ALICE)
    await node_b.publish(messages_for(ALICE, [1]))
    await stuck.wait_entered()
    await node_b.close()

    restarted = Recorder()
    await started(make_bus("b"), restarted)
    await restarted.wait_for(1)
    assert restarted.seqs(ALICE) == [1]


async def close_during_first_message(
    make_bus: Callable[..., RabbitBus], publishes: list[list[BusMessage]], *, expect_after: int
) -> tuple[list[int], list[int]]:
    """Publish on node b, close it while its handler holds the first message, then start
    node b again: the seqs handled before the close and by the restarted node."""
    gated = GatedRecorder()
    node_b = await started(make_bus("b"), gated, ALICE)
    for messages in publishes:
        await node_b.publish(messages)
    await gated.wait_entered()
    closing = asyncio.create_task(node_b.close())
    await asyncio.sleep(0.1)
    gated.gate.set()
    await closing
    restarted = Recorder()
    await started(make_bus("b"), restarted)
    await restarted.wait_for(expect_after)
    return gated.seqs(ALICE), restarted.seqs(ALICE)


async def test_close_acks_the_handled_message_and_returns_the_prefetched_ones(
    make_bus: Callable[..., RabbitBus],
) -> None:
    """Guards the close order: cancel the consumer, let the handler finish and ack, then
    close the channel so that prefetched but unhandled messages are requeued, not lost."""
    before, after = await close_during_first_message(
        make_bus, [messages_for(ALICE, [seq]) for seq in (1, 2, 3)], expect_after=2
    )
    assert before == [1]
    assert after == [2, 3]


async def test_a_packet_interrupted_by_close_comes_back_whole(
    make_bus: Callable[..., RabbitBus],
) -> None:
    """One publish call travels as one AMQP message per shard. If the node stops in the
    middle of such a packet, the packet must stay unacknowledged so the next bus of the
    node gets all of it: duplicates are allowed, a skipped message is not."""
    before, after = await close_during_first_message(
        make_bus, [messages_for(ALICE, [1, 2, 3])], expect_after=3
    )
    assert before == [1]
    assert after == [1, 2, 3]


async def test_handled_messages_are_not_delivered_again_to_the_next_bus(
    make_bus: Callable[..., RabbitBus],
) -> None:
    """Guards the cumulative acks: every handled message must end up acknowledged,
    including the last ones of a burst whose ack was deferred. Requeued messages would
    come before the sentinel, which is published last."""
    received = Recorder()
    node_b = await started(make_bus("b"), received, ALICE)
    await node_b.publish(messages_for(ALICE, range(50)))
    await received.wait_for(50)
    await node_b.close()

    restarted = Recorder()
    node_b = await started(make_bus("b"), restarted, ALICE)
    await node_b.publish(messages_for(ALICE, [999]))
    await restarted.wait_for(1)
    assert restarted.seqs(ALICE) == [999]


async def test_publish_fails_when_the_broker_nacks(
    amqp_url: str, make_bus: Callable[..., RabbitBus]
) -> None:
    """Guards that publish really awaits the confirms: a queue that rejects when full
    makes the broker nack, and the caller must hear about it."""
    await started(make_bus("b"), Recorder())
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(
            "full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        await channel.queue_bind("full", EXCHANGE, f"user.{shard_of(ALICE, SHARDS)}")
    finally:
        await connection.close()
    publisher = await started(make_bus("a"), Recorder())
    await publisher.publish(messages_for(BOB, [1]))  # routed elsewhere: confirmed
    with pytest.raises(BusUnavailableError, match="did not confirm 1 of 2"):
        await publisher.publish(messages_for(BOB, [2]) + messages_for(ALICE, [1]))


async def test_an_unreachable_broker_fails_fast(make_bus: Callable[..., RabbitBus]) -> None:
    bus = make_bus("a", url="amqp://guest:guest@127.0.0.1:1/")
    async with asyncio.timeout(5):
        await bus.start(Recorder())
        assert not await bus.healthy()
        with pytest.raises(BusUnavailableError, match="not connected"):
            await bus.publish(messages_for(ALICE, [1]))
        with pytest.raises(BusUnavailableError, match="not connected"):
            await bus.watch_user(ALICE)
        await bus.close()


@pytest.mark.parametrize(
    "break_link",
    [
        pytest.param(("close_all_connections", "test"), id="connection-closed"),
        pytest.param(("delete_queue", "pushd.node.b"), id="queue-deleted"),
    ],
)
async def test_the_bus_reconnects_and_binds_again(
    amqp_url: str, make_bus: Callable[..., RabbitBus], break_link: tuple[str, ...]
) -> None:
    """Guards the supervisor: healthy() drops, the link comes back on its own, the
    queue is declared again and the watched shards are bound again."""
    received = Recorder()
    node_b = await started(make_bus("b"), received, ALICE)
    publisher = await started(make_bus("a"), Recorder())

    await rabbitmqctl(amqp_url, *break_link)

    async def node_b_unhealthy() -> bool:
        return not await node_b.healthy()

    await eventually(node_b_unhealthy, "node b notices the loss")
    await eventually(node_b.healthy, "node b reconnects")
    await eventually(publisher.healthy, "node a reconnects")
    await node_b.watch_user(ALICE)  # waits for the rebinding to reach ALICE's shard

    await publisher.publish(messages_for(ALICE, [1]))
    await received.wait_for(1)
    assert received.seqs(ALICE) == [1]
