"""The idempotency-key part of the `Storage` contract (storage/areas/idempotency.py), on
every backend: a claim is stored with its notification or not at all, and expires."""

from __future__ import annotations

import pytest

from storage import IdempotencyConflictError, Storage, UnknownUserError
from storage.records import IdempotencyClaim
from tests.storage.conftest import note, user


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
