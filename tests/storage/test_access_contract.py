"""The API-key and revocation part of the `Storage` contract (storage/areas/access.py),
on every backend: keys are found by hash, never deleted, the last live admin key cannot
be revoked (also by two processes at once), and a user's token cutoff only moves
forward."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage import ConflictError, LastAdminKeyError, Storage
from storage.records import ApiKeyRecord
from tests.storage.conftest import CREATED_AT, opened, user

# API keys ------------------------------------------------------------------------------


def api_key(key_id: str, key_hash: str, *, revoked_at: int | None = None) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key_id,
        name=f"key {key_id}",
        role="publisher",
        key_hash=key_hash,
        created_at=CREATED_AT,
        revoked_at=revoked_at,
    )


def admin_key(key_id: str, key_hash: str, **fields: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key_id,
        name=f"admin {key_id}",
        role="admin",
        key_hash=key_hash,
        created_at=CREATED_AT,
        **fields,
    )


async def test_api_keys(storage: Storage) -> None:
    assert await storage.count_api_keys() == 0
    active, revoked = api_key("k1", "a" * 64), api_key("k2", "b" * 64, revoked_at=CREATED_AT)
    await storage.create_api_key(active)
    await storage.create_api_key(revoked)
    assert await storage.find_api_key("a" * 64) == active
    assert await storage.find_api_key("b" * 64) == revoked
    assert await storage.find_api_key("c" * 64) is None
    assert await storage.count_api_keys() == 2
    with pytest.raises(ConflictError) as taken:
        await storage.create_api_key(api_key("k3", "a" * 64))
    assert taken.value.field == "key_hash"
    with pytest.raises(ConflictError) as taken_id:
        await storage.create_api_key(api_key("k1", "d" * 64))
    assert taken_id.value.field == "id"
    assert await storage.count_api_keys() == 2


async def test_api_key_categories_round_trip(storage: Storage) -> None:
    limited = ApiKeyRecord(
        id="k1",
        name="billing",
        role="publisher",
        key_hash="a" * 64,
        created_at=CREATED_AT,
        categories=("billing", "invoices"),
    )
    await storage.create_api_key(limited)
    await storage.create_api_key(api_key("k2", "b" * 64))
    assert await storage.find_api_key("a" * 64) == limited
    assert await storage.get_api_key("k1") == limited
    unlimited = await storage.get_api_key("k2")
    assert unlimited is not None
    assert unlimited.categories is None
    assert await storage.get_api_key("nope") is None


async def test_list_api_keys_oldest_first_revoked_included(storage: Storage) -> None:
    keys = [
        api_key("k-b", "b" * 64),
        ApiKeyRecord(
            id="k-a", name="older", role="reader", key_hash="a" * 64, created_at=CREATED_AT - 1
        ),
        api_key("k-c", "c" * 64, revoked_at=CREATED_AT + 5),
    ]
    for key in keys:
        await storage.create_api_key(key)
    assert [key.id for key in await storage.list_api_keys()] == ["k-a", "k-b", "k-c"]


# revocations ---------------------------------------------------------------------------


async def test_revoke_api_key_is_idempotent_and_keeps_the_first_instant(storage: Storage) -> None:
    await storage.create_api_key(api_key("k1", "a" * 64))
    revoked = await storage.revoke_api_key("k1", at=CREATED_AT + 10)
    assert revoked is not None
    assert revoked.revoked_at == CREATED_AT + 10
    again = await storage.revoke_api_key("k1", at=CREATED_AT + 99)
    assert again == revoked
    assert await storage.find_api_key("a" * 64) == revoked
    assert await storage.revoke_api_key("ghost", at=CREATED_AT) is None


async def test_last_live_admin_key_cannot_be_revoked(storage: Storage) -> None:
    """Guards an administrator locking everyone out: with one live admin key left (a
    revoked one does not count), revoking it is refused and changes nothing."""
    await storage.create_api_key(admin_key("a1", "a" * 64))
    await storage.create_api_key(admin_key("a0", "0" * 64, revoked_at=CREATED_AT))
    await storage.create_api_key(api_key("p1", "b" * 64))
    with pytest.raises(LastAdminKeyError) as refused:
        await storage.revoke_api_key("a1", at=CREATED_AT + 1)
    assert refused.value.key_id == "a1"
    still = await storage.get_api_key("a1")
    assert still is not None
    assert still.revoked_at is None
    # Non-admin keys and already revoked admin keys are not concerned by the rule.
    assert await storage.revoke_api_key("p1", at=CREATED_AT + 1) is not None
    assert await storage.revoke_api_key("a0", at=CREATED_AT + 1) is not None
    await storage.create_api_key(admin_key("a2", "c" * 64))
    first = await storage.revoke_api_key("a1", at=CREATED_AT + 2)
    assert first is not None
    assert first.revoked_at == CREATED_AT + 2


async def test_concurrent_revocations_of_the_last_two_admin_keys_leave_one(
    storage_url: str,
) -> None:
    """Guards a check-then-act race: two processes each revoking one of the last two
    admin keys would each see the other key live, and both would revoke."""
    async with opened(storage_url) as first, opened(storage_url) as second:
        await first.migrate()
        for round_number in range(5):
            ids = [f"r{round_number}-x", f"r{round_number}-y"]
            for index, key_id in enumerate(ids):
                await first.create_api_key(admin_key(key_id, f"{round_number}{index}" * 32))
            if round_number:  # the survivor of the previous round must not count
                for key in await first.list_api_keys():
                    if key.revoked_at is None and key.id not in ids:
                        await first.revoke_api_key(key.id, at=CREATED_AT)
            results = await asyncio.gather(
                first.revoke_api_key(ids[0], at=CREATED_AT),
                second.revoke_api_key(ids[1], at=CREATED_AT),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, LastAdminKeyError)]
            assert len(refused) == 1, results
            live = [k.id for k in await second.list_api_keys() if k.revoked_at is None]
            assert live == [refused[0].key_id]


async def test_user_token_cutoff_only_moves_forward(storage: Storage) -> None:
    created = await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    assert await storage.get_user_and_token_cutoff("u1") == (created, 0)
    assert await storage.revoke_user_tokens("u1", before=CREATED_AT + 50)
    assert await storage.revoke_user_tokens("u1", before=CREATED_AT + 10)
    assert await storage.get_user_and_token_cutoff("u1") == (created, CREATED_AT + 50)
    other = await storage.get_user_and_token_cutoff("u2")
    assert other is not None
    assert other[1] == 0
    assert not await storage.revoke_user_tokens("ghost", before=CREATED_AT)
    assert await storage.get_user_and_token_cutoff("ghost") is None
