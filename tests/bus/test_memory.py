"""What only the in-process bus does: its bounded queue pushes back on publishers."""

from __future__ import annotations

import asyncio

import pytest

from pushd.bus import BusUnavailableError
from pushd.bus.memory import MIN_QUEUE_SIZE, MemoryBus
from tests.bus.helpers import GatedRecorder, messages_for


async def full_bus(handler: GatedRecorder) -> MemoryBus:
    """A started bus whose handler is held at the gate and whose queue is full."""
    bus = MemoryBus(node_id="embedded", prefetch=1, close_grace=0.1)
    await bus.start(handler)
    await bus.publish(messages_for("alice", [0]))
    await handler.wait_entered()
    await bus.publish(messages_for("alice", range(1, MIN_QUEUE_SIZE + 1)))
    return bus


async def test_publish_waits_for_space_when_the_queue_is_full() -> None:
    """Guards the overflow policy: backpressure on the publisher, never an unbounded
    queue and never a dropped message."""
    handler = GatedRecorder()
    bus = await full_bus(handler)
    blocked = asyncio.create_task(bus.publish(messages_for("alice", [MIN_QUEUE_SIZE + 1])))
    await asyncio.sleep(0.05)
    assert not blocked.done()

    handler.gate.set()
    await blocked
    await handler.wait_for(MIN_QUEUE_SIZE + 2)
    assert handler.seqs("alice") == list(range(MIN_QUEUE_SIZE + 2))
    await bus.close()


async def test_close_releases_a_publisher_waiting_for_space() -> None:
    """Guards against a publisher hanging forever on a queue nobody drains any more."""
    handler = GatedRecorder()
    bus = await full_bus(handler)
    blocked = asyncio.create_task(bus.publish(messages_for("alice", [MIN_QUEUE_SIZE + 1])))
    await asyncio.sleep(0.05)

    await bus.close()
    with pytest.raises(BusUnavailableError, match="closed"):
        await blocked


async def test_concurrent_publishes_keep_call_order_under_backpressure() -> None:
    """Guards publish order with several publishers: while an earlier call waits for
    space, a later call must not slip its messages in between or ahead."""
    handler = GatedRecorder()
    bus = await full_bus(handler)
    first = asyncio.create_task(
        bus.publish(messages_for("alice", range(MIN_QUEUE_SIZE + 1, MIN_QUEUE_SIZE + 11)))
    )
    await asyncio.sleep(0.01)
    second = asyncio.create_task(
        bus.publish(messages_for("alice", range(MIN_QUEUE_SIZE + 11, MIN_QUEUE_SIZE + 21)))
    )
    await asyncio.sleep(0.01)
    handler.gate.set()
    await asyncio.gather(first, second)
    await handler.wait_for(MIN_QUEUE_SIZE + 21)
    assert handler.seqs("alice") == list(range(MIN_QUEUE_SIZE + 21))
    await bus.close()
