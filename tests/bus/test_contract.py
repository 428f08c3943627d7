"""The `Bus` contract (pushd/bus/protocol.py), run against every backend.

The backend matrix is data (`BACKENDS`): a backend added to `open_bus` is added here, and
every test below runs against it. RabbitMQ tests fail, never skip, when it is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from pushd.bus import Bus, BusError, BusMessage, BusUnavailableError, open_bus
from pushd.bus._dispatch import HANDLER_ATTEMPTS
from pushd.bus.memory import MemoryBus
from pushd.bus.rabbitmq import RabbitBus
from tests.bus.helpers import Buses, GatedRecorder, Recorder, messages_for, started

BACKENDS = [
    pytest.param("memory", id="memory"),
    # Slow: its vhost is made and deleted by three rabbitmqctl processes (tests/services.py),
    # about 1.5 s a test on a quiet machine.
    pytest.param("amqp", id="amqp", marks=pytest.mark.slow),
]
_CLASSES: dict[str, type[MemoryBus | RabbitBus]] = {"memory": MemoryBus, "amqp": RabbitBus}


class BusFactory(Protocol):
    def __call__(
        self, node_id: str = "node-a", *, prefetch: int = 64, close_grace: float = 10.0
    ) -> Bus: ...


@pytest.fixture(params=BACKENDS)
def bus_url(request: pytest.FixtureRequest) -> str:
    """The URL of one backend; a fresh vhost for RabbitMQ (resolved outside the loop)."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("amqp_url")
    return url


@pytest.fixture
async def bus_factory(bus_url: str) -> AsyncIterator[BusFactory]:
    """Builds buses of the backend under test; closes every one after the test."""
    backend = _CLASSES[bus_url.split(":", 1)[0]]
    buses = Buses[Bus]()

    def make(node_id: str = "node-a", *, prefetch: int = 64, close_grace: float = 10.0) -> Bus:
        return buses.keep(
            backend(bus_url, node_id=node_id, prefetch=prefetch, close_grace=close_grace)
        )

    yield make
    await buses.close_all()


async def test_open_bus_builds_the_backend_named_by_the_url(bus_url: str) -> None:
    bus = open_bus(bus_url, node_id="node-a")
    assert isinstance(bus, _CLASSES[bus_url.split(":", 1)[0]])
    await bus.close()


async def test_healthy_between_start_and_close(bus_factory: BusFactory) -> None:
    bus = bus_factory()
    assert not await bus.healthy()
    await bus.start(Recorder())
    assert await bus.healthy()
    await bus.close()
    assert not await bus.healthy()


async def test_close_is_idempotent_and_safe_before_start(bus_factory: BusFactory) -> None:
    await bus_factory("never-started").close()
    bus = await started(bus_factory(), Recorder(), "alice")
    await asyncio.gather(bus.close(), bus.close())
    await bus.close()
    assert not await bus.healthy()


async def test_a_bus_starts_once(bus_factory: BusFactory) -> None:
    bus = await started(bus_factory(), Recorder())
    with pytest.raises(BusError, match="starts once"):
        await bus.start(Recorder())


async def test_publish_on_a_closed_bus_raises_unavailable(bus_factory: BusFactory) -> None:
    bus = await started(bus_factory(), Recorder(), "alice")
    await bus.close()
    with pytest.raises(BusUnavailableError):
        await bus.publish(messages_for("alice", [1]))


async def test_each_users_messages_arrive_in_publish_order(bus_factory: BusFactory) -> None:
    """Thousands of interleaved messages, with prefetch well below the total so the
    consumer side buffers, refills and acks many times while publishing continues."""
    users = ["alice", "bob", "carol"]
    per_user = 1000
    recorder = Recorder()
    bus = await started(bus_factory(prefetch=64), recorder, *users)

    batch: list[BusMessage] = []
    for seq in range(per_user):
        batch.extend(BusMessage(user_id, seq, b"{}") for user_id in users)
        if len(batch) >= 150:
            await bus.publish(batch)
            batch = []
    await bus.publish(batch)

    await recorder.wait_for(per_user * len(users))
    for user_id in users:
        assert recorder.seqs(user_id) == list(range(per_user))


class SlowRecorder(Recorder):
    async def handle(self, message: BusMessage) -> None:
        await asyncio.sleep(0.001)


async def test_the_handler_is_awaited_one_message_at_a_time(bus_factory: BusFactory) -> None:
    """Guards against awaiting the handler in the consumer callback: aiormq runs every
    delivery's callback in its own task, so that would run handlers concurrently."""
    recorder = SlowRecorder()
    bus = await started(bus_factory(prefetch=32), recorder, "alice", "bob")
    await bus.publish(messages_for("alice", range(100)) + messages_for("bob", range(100)))
    await recorder.wait_for(200)
    assert recorder.most_running == 1


class FailingRecorder(Recorder):
    """Raises `failures` times for the message with seq `failing_seq`."""

    def __init__(self, failing_seq: int, failures: int) -> None:
        super().__init__()
        self.failing_seq = failing_seq
        self.failures_left = failures
        self.calls: list[int] = []

    async def handle(self, message: BusMessage) -> None:
        self.calls.append(message.seq)
        if message.seq == self.failing_seq and self.failures_left > 0:
            self.failures_left -= 1
            raise RuntimeError("handler failed on purpose")


async def test_a_message_is_handed_over_again_after_the_handler_raises(
    bus_factory: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards at-least-once and order together: a message sent back to the broker would
    come after those already prefetched, so the retry has to come first."""
    recorder = FailingRecorder(failing_seq=3, failures=2)
    bus = await started(bus_factory(), recorder, "alice")
    await bus.publish(messages_for("alice", range(10)))
    await recorder.wait_for(10)
    assert recorder.seqs("alice") == list(range(10))
    assert recorder.calls[:6] == [0, 1, 2, 3, 3, 3]
    assert "handler failed on purpose" in caplog.text


async def test_a_message_the_handler_always_rejects_does_not_stall_the_rest(
    bus_factory: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards against a poison message blocking a node's queue forever."""
    recorder = FailingRecorder(failing_seq=1, failures=HANDLER_ATTEMPTS + 10)
    bus = await started(bus_factory(), recorder, "alice")
    await bus.publish(messages_for("alice", range(4)))
    await recorder.wait_for(3)
    assert recorder.seqs("alice") == [0, 2, 3]
    assert recorder.calls.count(1) == HANDLER_ATTEMPTS
    assert "dead-lettered" in caplog.text


async def test_published_messages_are_kept_while_the_handler_is_busy(
    bus_factory: BusFactory,
) -> None:
    """What `publish` accepted is delivered later, even though nothing was consumed yet."""
    recorder = GatedRecorder()
    bus = await started(bus_factory(prefetch=8), recorder, "alice")
    await bus.publish(messages_for("alice", [0]))
    await recorder.wait_entered()
    await bus.publish(messages_for("alice", range(1, 200)))
    recorder.gate.set()
    await recorder.wait_for(200)
    assert recorder.seqs("alice") == list(range(200))


async def test_close_waits_for_the_handler_call_in_progress(bus_factory: BusFactory) -> None:
    recorder = GatedRecorder()
    bus = await started(bus_factory(), recorder, "alice")
    await bus.publish(messages_for("alice", [0]))
    await recorder.wait_entered()

    closing = asyncio.create_task(bus.close())
    await asyncio.sleep(0.2)
    assert not closing.done(), "close returned while the handler was still running"
    recorder.gate.set()
    await closing
    assert recorder.seqs("alice") == [0]


async def test_close_cancels_a_handler_stuck_past_the_grace(bus_factory: BusFactory) -> None:
    """Guards against a stuck handler hanging a node's shutdown forever."""
    recorder = GatedRecorder()
    bus = await started(bus_factory(close_grace=0.2), recorder, "alice")
    await bus.publish(messages_for("alice", [0]))
    await recorder.wait_entered()
    async with asyncio.timeout(5):
        await bus.close()
    assert recorder.running == 0
    assert recorder.received == []


async def test_unwatching_more_than_watched_is_harmless(bus_factory: BusFactory) -> None:
    recorder = Recorder()
    bus = await started(bus_factory(), recorder, "alice")
    await bus.unwatch_user("alice")
    await bus.unwatch_user("alice")
    await bus.unwatch_user("nobody")
    await bus.watch_user("alice")
    await bus.publish(messages_for("alice", [7]))
    await recorder.wait_for(1)
    assert recorder.seqs("alice") == [7]
