"""What only the Redis backend has: several nodes, prefixes, and a server that goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from pushd.state import StateUnavailableError
from pushd.state.redis import RedisState
from tests import services
from tests.state.test_contract import Signals

NodeFactory = Callable[..., RedisState]


@pytest.fixture
async def make_node(redis_prefix: str) -> AsyncIterator[NodeFactory]:
    """Started RedisStates, as separate nodes would hold them; closed after the test."""
    made: list[RedisState] = []

    def make(prefix: str = redis_prefix, url: str = services.REDIS_URL) -> RedisState:
        made.append(RedisState(url, prefix=prefix))
        return made[-1]

    yield make
    for state in reversed(made):
        await state.close()


async def test_two_nodes_share_one_budget(make_node: NodeFactory) -> None:
    node_a, node_b = make_node(), make_node()
    await node_a.start()
    await node_b.start()
    takers = [node_a, node_b] * 15
    decisions = await asyncio.gather(*(n.take_token("k", rate=0.001, burst=10) for n in takers))
    assert sum(d.allowed for d in decisions) == 10
    hits = await asyncio.gather(*(n.hit_window("k", limit=7, window=60) for n in takers))
    assert sum(d.allowed for d in hits) == 7


async def test_a_signal_reaches_every_node_and_no_other_prefix(
    make_node: NodeFactory, redis_prefix: str
) -> None:
    node_a, node_b, stranger = make_node(), make_node(), make_node(prefix=redis_prefix + "x:")
    on_a, on_b, on_stranger = Signals(), Signals(), Signals()
    node_a.subscribe("revoked", on_a)
    node_b.subscribe("revoked", on_b)
    stranger.subscribe("revoked", on_stranger)
    for node in (node_a, node_b, stranger):
        await node.start()
    await node_a.publish("revoked", b"key_1")
    await node_a.publish("revoked", b"key_2")
    assert await on_a.wait_for(2) == [b"key_1", b"key_2"]
    assert await on_b.wait_for(2) == [b"key_1", b"key_2"]
    assert (await stranger.take_token("k", rate=1, burst=1)).allowed
    assert (await node_a.take_token("k", rate=1, burst=1)).allowed  # not the stranger's key
    assert on_stranger.received == []


async def test_unreachable_redis_is_unavailable_not_a_crash(make_node: NodeFactory) -> None:
    state = make_node(url="redis://127.0.0.1:1/0")
    await state.start()  # does not fail: the listener keeps trying
    with pytest.raises(StateUnavailableError, match=r"127\.0\.0\.1:1"):
        await state.ping()
    with pytest.raises(StateUnavailableError):
        await state.take_token("k", rate=1, burst=1)
    with pytest.raises(StateUnavailableError):
        await state.publish("c", b"x")


async def test_the_listener_resubscribes_after_losing_its_connection(
    make_node: NodeFactory,
) -> None:
    """Kills the listener's own Redis connection (found by its client name): later
    signals must arrive again, without restarting anything."""
    state = make_node()
    signals = Signals()
    state.subscribe("c", signals)
    await state.start()
    admin = aioredis.Redis.from_url(services.REDIS_URL, decode_responses=True)
    try:
        clients = await admin.client_list(_type="pubsub")
        ours = [c["id"] for c in clients if c["name"] == state.client_name]
        assert ours, "the listener holds no subscription"
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        async with asyncio.timeout(15):
            while not signals.received:
                await state.publish("c", b"again")
                await asyncio.sleep(0.1)
        await state.ping()
    finally:
        await admin.aclose()
