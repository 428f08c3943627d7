"""The delivery-guarantee part of the `Storage` contract (issue #3), on every backend:
cursors and their history, read state, drop marks, idempotency keys and the relay's
view of a node's commits."""

from __future__ import annotations

import asyncio

import pytest

from storage import IdempotencyConflictError, Storage, UnknownUserError
from storage.records import CursorTimes, IdempotencyClaim
from tests.storage.conftest import note, user

# cursors -------------------------------------------------------------------------------


async def _cursors(storage: Storage, user_id: str) -> tuple[int, int]:
    found = await storage.get_user(user_id)
    assert found is not None
    return found.sent_seq, found.ack_seq


async def test_cursors_only_move_forward_and_never_past_last_seq(storage: Storage) -> None:
    """Guards a late, stale ack (from a slow socket) moving the cursor back, which would
    replay notifications the user already has, and an ack above what exists hiding the
    next notifications from a client that connects without `since`."""
    for user_id in ("u1", "u2", "u3"):
        await storage.create_user(user(user_id))
    await storage.insert_notifications([note(f"a{i}", "u1") for i in range(6)])
    await storage.insert_notifications([note(f"b{i}", "u2") for i in range(4)])
    await storage.advance_cursors(sent={"u1": 5, "u2": 9}, acked={"u1": 5, "ghost": 9}, at=100)
    await storage.advance_cursors(sent={"u1": 2}, acked={"u1": 2, "u2": 3}, at=200)
    await storage.advance_cursors(sent={}, acked={}, at=300)
    assert await _cursors(storage, "u1") == (5, 5)
    assert await _cursors(storage, "u2") == (4, 3)  # sent 9 is lowered to last_seq 4
    assert await _cursors(storage, "u3") == (0, 0)
    assert await storage.get_user("ghost") is None


async def test_cursor_times_tell_when_each_seq_was_reached(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note(f"n{i}", "u1") for i in range(10)])
    await storage.advance_cursors(sent={"u1": 3}, acked={}, at=1_000)
    await storage.advance_cursors(sent={"u1": 7}, acked={"u1": 2}, at=2_000)
    await storage.advance_cursors(sent={"u1": 7}, acked={"u1": 1}, at=3_000)  # no move
    times = await storage.cursor_times("u1", [1, 3, 4, 7, 8])
    assert times == {
        1: CursorTimes(sent_at=1_000, acked_at=2_000),
        3: CursorTimes(sent_at=1_000, acked_at=None),
        4: CursorTimes(sent_at=2_000, acked_at=None),
        7: CursorTimes(sent_at=2_000, acked_at=None),
        8: CursorTimes(sent_at=None, acked_at=None),
    }
    assert await storage.cursor_times("u1", []) == {}


# read state ----------------------------------------------------------------------------


async def test_mark_read_only_touches_the_users_unread_notifications(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.insert_notifications([note(f"n{i}", "u1") for i in range(1, 5)])
    await storage.insert_notifications([note("other", "u2")])
    marked = await storage.mark_read("u1", ["n2", "n1", "other", "ghost", "n2"], 500)
    assert [m.id for m in marked] == ["n2", "n1"]
    marked = await storage.mark_read("u1", ["n1", "n3"], 600)
    assert [m.id for m in marked] == ["n3"]  # n1 already read
    assert await storage.mark_read("u1", [], 700) == []
    n1 = await storage.get_notification("n1")
    assert n1 is not None
    assert n1.read_at == 500
    other = await storage.get_notification("other")
    assert other is not None
    assert other.read_at is None
    assert await storage.count_unread("u1") == 1
    unread = await storage.list_notifications("u1", before_seq=None, limit=10, unread_only=True)
    assert [r.id for r in unread] == ["n4"]


async def test_mark_all_read_runs_up_to_last_seq(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note(f"n{i}", "u1") for i in range(1, 6)])
    await storage.mark_read("u1", ["n2"], 100)
    assert await storage.mark_all_read("u1", 200) == (4, 5)
    assert await storage.count_unread("u1") == 0
    assert await storage.mark_all_read("u1", 300) == (0, 5)
    assert await storage.mark_all_read("ghost", 300) == (0, 0)
    n2 = await storage.get_notification("n2")
    assert n2 is not None
    assert n2.read_at == 100


async def test_unread_pages_follow_the_cursor(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note(f"n{i}", "u1") for i in range(1, 8)])
    await storage.mark_read("u1", ["n6", "n3"], 100)
    first = await storage.list_notifications("u1", before_seq=None, limit=2, unread_only=True)
    assert [r.seq for r in first] == [7, 5]
    rest = await storage.list_notifications("u1", before_seq=5, limit=10, unread_only=True)
    assert [r.seq for r in rest] == [4, 2, 1]


# expiry and drops ----------------------------------------------------------------------


async def test_expiry_is_stored_and_drops_are_marked_once(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications(
        [note("n1", "u1", expires_at=9_000), note("n2", "u1"), note("n3", "u1")]
    )
    await storage.mark_dropped("u1", first_seq=1, last_seq=2, reason="expired", at=10_000)
    await storage.mark_dropped("u1", first_seq=2, last_seq=9, reason="not_retained", at=11_000)
    records = await storage.notifications_after("u1", after_seq=0, limit=10)
    assert [(r.expires_at, r.dropped_at, r.dropped_reason) for r in records] == [
        (9_000, 10_000, "expired"),
        (None, 10_000, "expired"),
        (None, 11_000, "not_retained"),
    ]


# idempotency ---------------------------------------------------------------------------


def claim(key: str, request_hash: str = "h1", scope: str = "key_a") -> IdempotencyClaim:
    return IdempotencyClaim(scope=scope, key=key, request_hash=request_hash)


async def test_idempotency_claim_is_stored_with_its_notification(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    [record] = await storage.insert_notifications(
        [note("n1", "u1", idempotency=claim("k1"), created_at=5_000)]
    )
    found = await storage.find_idempotency("key_a", "k1", not_before=0)
    assert found is not None
    assert (found.notification_id, found.user_id, found.seq, found.request_hash) == (
        "n1",
        "u1",
        record.seq,
        "h1",
    )
    assert found.created_at == 5_000
    # Scoped: the same key from another API key is another key.
    assert await storage.find_idempotency("key_b", "k1", not_before=0) is None


async def test_a_taken_idempotency_key_writes_nothing(storage: Storage) -> None:
    """Guards a retried POST that raced its original on another node: the second
    commit must fail as a whole, or the user would get the notification twice."""
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note("n1", "u1", idempotency=claim("k1"))])
    with pytest.raises(IdempotencyConflictError) as conflict:
        await storage.insert_notifications(
            [note("n2", "u1"), note("n3", "u1", idempotency=claim("k1", "h2"))]
        )
    assert (conflict.value.scope, conflict.value.key) == ("key_a", "k1")
    assert await storage.get_notification("n2") is None
    found = await storage.get_user("u1")
    assert found is not None
    assert found.last_seq == 1


async def test_unknown_user_wins_over_idempotency_conflict(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note("n1", "u1", idempotency=claim("k1"))])
    with pytest.raises(UnknownUserError):
        await storage.insert_notifications(
            [note("n2", "ghost"), note("n3", "u1", idempotency=claim("k1"))]
        )


async def test_expired_idempotency_keys_are_forgotten(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications(
        [
            note("n1", "u1", idempotency=claim("old"), created_at=1_000),
            note("n2", "u1", idempotency=claim("older"), created_at=500),
            note("n3", "u1", idempotency=claim("new"), created_at=9_000),
        ]
    )
    assert await storage.find_idempotency("key_a", "old", not_before=2_000) is None
    # Deleted on that lookup: the key can be used again.
    await storage.insert_notifications([note("n4", "u1", idempotency=claim("old"))])
    assert await storage.purge_idempotency(before=2_000, limit=10) == 1  # "older"
    assert await storage.find_idempotency("key_a", "new", not_before=2_000) is not None
    assert await storage.find_idempotency("key_a", "older", not_before=0) is None


# relay ---------------------------------------------------------------------------------


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
