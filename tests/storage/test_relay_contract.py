"""The outbox-relay part of the `Storage` contract (storage/areas/relay.py), on every
backend: gids follow commit order, each node reads its own commits, marks never move
back."""

from __future__ import annotations

import asyncio

from storage import Storage
from tests.storage.conftest import note, user


async def test_gids_follow_commit_order_and_relay_reads_one_nodes_commits(
    storage: Storage,
) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    a = await storage.insert_notifications([note("a1", "u1"), note("a2", "u2")], node_id="A")
    b = await storage.insert_notifications([note("b1", "u1")], node_id="B")
    a += await storage.insert_notifications([note("a3", "u1")], node_id="A")
    gids = [r.gid for r in a[:2] + b + a[2:]]
    assert gids == sorted(gids)
    assert len(set(gids)) == 4
    assert await storage.max_gid("A") == a[2].gid
    assert await storage.max_gid("C") == 0
    after_first = await storage.unpublished_notifications("A", after_gid=a[0].gid, limit=10)
    assert [r.id for r in after_first] == ["a2", "a3"]
    assert after_first == [
        await storage.get_notification("a2"),
        await storage.get_notification("a3"),
    ]
    assert await storage.unpublished_notifications("A", after_gid=0, limit=1) == [a[0]]


async def test_relay_mark_never_moves_back(storage: Storage) -> None:
    assert await storage.get_relay_mark("A") is None
    await storage.set_relay_mark("A", 7)
    await storage.set_relay_mark("A", 5)
    await storage.set_relay_mark("B", 1)
    assert await storage.get_relay_mark("A") == 7
    assert await storage.get_relay_mark("B") == 1


async def test_concurrent_batches_get_distinct_gids(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    batches = await asyncio.gather(
        *(
            storage.insert_notifications([note(f"n{i}-{j}", "u1") for j in range(5)], node_id="A")
            for i in range(6)
        )
    )
    gids = [r.gid for batch in batches for r in batch]
    assert len(set(gids)) == 30
    for batch in batches:
        assert [r.gid for r in batch] == sorted(r.gid for r in batch)
