"""The `SharedState` contract (pushd/state/protocol.py), run against every backend.

The backend matrix is data (`BACKENDS`): a backend added to `open_state` is added here,
and every test below runs against it. Redis tests fail, never skip, when it is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from pushd.state import RateDecision, SharedState, StateError, StateUnavailableError, open_state
from pushd.state.memory import MemoryState
from pushd.state.redis import RedisState
from tests import services

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis"),
]
_CLASSES: dict[str, type[MemoryState | RedisState]] = {"memory": MemoryState, "redis": RedisState}
WAIT_SECONDS = 10.0

StateFactory = Callable[[], SharedState]


@pytest.fixture(params=BACKENDS)
def state_target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(url, prefix) of one backend; a prefix of its own on the shared Redis."""
    if request.param == "memory":
        return "memory://", "pushd:"
    prefix: str = request.getfixturevalue("redis_prefix")
    return services.REDIS_URL, prefix


@pytest.fixture
async def make_state(state_target: tuple[str, str]) -> AsyncIterator[StateFactory]:
    """Builds (not started) states of the backend under test; closes them after the test."""
    made: list[SharedState] = []

    def make() -> SharedState:
        made.append(open_state(state_target[0], prefix=state_target[1]))
        return made[-1]

    yield make
    for state in reversed(made):
        await state.close()


@pytest.fixture
async def state(make_state: StateFactory) -> SharedState:
    started = make_state()
    await started.start()
    await started.ping()  # Redis down: this test fails here, it is never skipped
    return started


class Signals:
    """A handler that records messages and lets a test wait for a count."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self._changed = asyncio.Event()

    async def __call__(self, message: bytes) -> None:
        self.received.append(message)
        self._changed.set()

    async def wait_until_received(self, message: bytes) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            while message not in self.received:
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, count: int) -> list[bytes]:
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.received


def test_open_state_builds_the_backend_named_by_the_url(state_target: tuple[str, str]) -> None:
    url, prefix = state_target
    assert isinstance(open_state(url, prefix=prefix), _CLASSES[url.split(":", 1)[0]])
    with pytest.raises(StateError, match="supported schemes"):
        open_state("etcd://localhost")


async def test_unavailable_before_start_and_after_close(make_state: StateFactory) -> None:
    state = make_state()
    with pytest.raises(StateUnavailableError):
        await state.take_token("k", rate=1, burst=1)
    await state.start()
    with pytest.raises(StateError, match="starts once"):
        await state.start()
    await state.ping()
    await state.close()
    await state.close()  # idempotent
    for call in (
        state.ping(),
        state.take_token("k", rate=1, burst=1),
        state.hit_window("k", limit=1, window=1),
        state.publish("c", b"x"),
    ):
        with pytest.raises(StateUnavailableError):
            await call


async def test_misuse_is_a_state_error(state: SharedState) -> None:
    with pytest.raises(StateError, match="rate > 0"):
        await state.take_token("k", rate=0, burst=1)
    with pytest.raises(StateError, match="limit > 0"):
        await state.hit_window("k", limit=0, window=1)


async def test_token_bucket_grants_the_burst_then_refills_at_the_rate(state: SharedState) -> None:
    decisions = [await state.take_token("key", rate=10, burst=3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[0].retry_after == 0
    denied = decisions[3]
    assert 0.05 < denied.retry_after <= 0.1 + 1e-6  # one token every 0.1 s
    # A denied attempt takes nothing: asking again does not push the time back.
    again = await state.take_token("key", rate=10, burst=3)
    assert not again.allowed
    assert again.retry_after <= denied.retry_after
    await asyncio.sleep(again.retry_after + 0.02)
    assert (await state.take_token("key", rate=10, burst=3)).allowed
    assert not (await state.take_token("key", rate=10, burst=3)).allowed


async def test_an_idle_bucket_holds_no_more_than_the_burst(state: SharedState) -> None:
    for _ in range(2):
        assert (await state.take_token("key", rate=100, burst=2)).allowed
    await asyncio.sleep(0.2)  # 20 tokens' worth of time
    decisions = [await state.take_token("key", rate=100, burst=2) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]


async def test_window_grants_the_limit_then_waits_for_hits_to_slide_out(
    state: SharedState,
) -> None:
    decisions = [await state.hit_window("key", limit=3, window=0.5) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[0].remaining <= 2
    assert decisions[2].remaining == 0
    denied = decisions[3]
    assert 0 < denied.retry_after <= 2 * 0.5
    # A denied hit is not counted: asking again does not push the time back.
    again = await state.hit_window("key", limit=3, window=0.5)
    assert not again.allowed
    assert again.retry_after <= denied.retry_after
    await asyncio.sleep(again.retry_after + 0.02)
    assert (await state.hit_window("key", limit=3, window=0.5)).allowed


async def test_window_never_allows_more_than_twice_the_limit_per_window(
    state: SharedState,
) -> None:
    """Hammer a key for 1.5 windows: whatever the weighting, no span of one window may
    hold more than 2 x limit hits, and at least the limit must have been granted."""
    granted: list[float] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + 0.6
    while loop.time() < end:
        if (await state.hit_window("hammered", limit=5, window=0.4)).allowed:
            granted.append(loop.time())
        await asyncio.sleep(0.005)
    assert len(granted) >= 5
    for start in granted:
        assert sum(1 for t in granted if start <= t < start + 0.4) <= 10


async def test_keys_do_not_share_budgets(state: SharedState) -> None:
    assert (await state.take_token("a", rate=1, burst=1)).allowed
    assert not (await state.take_token("a", rate=1, burst=1)).allowed
    assert (await state.take_token("b", rate=1, burst=1)).allowed
    assert (await state.hit_window("a", limit=1, window=10)).allowed
    assert not (await state.hit_window("a", limit=1, window=10)).allowed
    assert (await state.hit_window("b", limit=1, window=10)).allowed


async def test_concurrent_takers_never_get_more_than_the_budget(state: SharedState) -> None:
    buckets = await asyncio.gather(
        *(state.take_token("shared", rate=0.001, burst=20) for _ in range(60))
    )
    windows = await asyncio.gather(
        *(state.hit_window("shared", limit=15, window=60) for _ in range(60))
    )
    assert sum(d.allowed for d in buckets) == 20
    assert sum(d.allowed for d in windows) == 15


async def test_signals_reach_every_handler_in_publish_order(state: SharedState) -> None:
    first, second, other = Signals(), Signals(), Signals()
    state.subscribe("news", first)
    state.subscribe("news", second)
    state.subscribe("other", other)
    await _wait_until_subscribed(state, "news", first, second)
    for i in range(50):
        await state.publish("news", str(i).encode())
    expected = [str(i).encode() for i in range(50)]
    assert await first.wait_for(50) == expected
    assert await second.wait_for(50) == expected
    assert other.received == []


async def test_handlers_registered_before_start_get_what_follows_start(
    make_state: StateFactory,
) -> None:
    state = make_state()
    signals = Signals()
    state.subscribe("early", signals)
    await state.start()
    await state.publish("early", b"hello")
    assert await signals.wait_for(1) == [b"hello"]


async def test_a_failing_handler_does_not_stop_the_listener(
    state: SharedState, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards against one bad handler killing the listener task, which would silently
    stop every later signal on this node."""
    signals = Signals()

    async def failing(message: bytes) -> None:
        raise RuntimeError(f"handler failed on purpose: {message!r}")

    state.subscribe("c", failing)
    state.subscribe("c", signals)
    with caplog.at_level(logging.ERROR, logger="pushd.state"):
        await _wait_until_subscribed(state, "c", signals)
        await state.publish("c", b"after")
        await signals.wait_until_received(b"after")
    assert "handler failed on purpose" in caplog.text
    await state.ping()


async def _wait_until_subscribed(state: SharedState, channel: str, *handlers: Signals) -> None:
    """Publish probes until one arrives (a subscription made after `start` is picked up
    by the listener shortly afterwards), then a marker; once the marker is in, no probe
    is still under way (publish order), and the handlers start empty."""
    async with asyncio.timeout(WAIT_SECONDS):
        while not handlers[0].received:
            await state.publish(channel, b"probe")
            await asyncio.sleep(0.05)
    await state.publish(channel, b"synced")
    for signals in handlers:
        await signals.wait_until_received(b"synced")
        signals.received.clear()


def test_rate_decision_is_immutable() -> None:
    decision = RateDecision(allowed=True, retry_after=0.0, remaining=1)
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]
