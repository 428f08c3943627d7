"""The scheduled-sends part of the `Storage` contract (issue #13), on every backend:
stored without a seq, released once with the next seq, cancelled, sealed at rest, erased."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage import (
    ConflictError,
    IdempotencyConflictError,
    KeyRing,
    Storage,
    UnknownUserError,
)
from storage.records import IdempotencyClaim, PlannedDelivery, ScheduledNotification
from tests.storage.conftest import CREATED_AT, note, opened, raw_sql, user

DUE = CREATED_AT + 60_000


def scheduled(
    notification_id: str, user_id: str = "u1", *, due_at: int = DUE, **fields: Any
) -> ScheduledNotification:
    """A scheduled notification due at `due_at`, accepted at CREATED_AT."""
    fields.setdefault("title", f"title of {notification_id}")
    return ScheduledNotification(
        notification=note(notification_id, user_id, created_at=due_at, **fields),
        due_at=due_at,
        accepted_at=CREATED_AT,
    )


async def test_scheduled_notification_takes_no_seq_until_released(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note("n1", "u1")])
    await storage.schedule_notification(scheduled("s1", data={"k": "v"}, category="billing"))
    found = await storage.get_scheduled("s1")
    assert found is not None
    assert (found.status, found.due_at, found.accepted_at) == ("scheduled", DUE, CREATED_AT)
    assert found.notification.title == "title of s1"
    assert found.notification.data == {"k": "v"}
    assert await storage.get_notification("s1") is None
    assert (await storage.get_user("u1")).last_seq == 1  # type: ignore[union-attr]

    assert await storage.release_due(DUE - 1, limit=10, node_id="n") == []
    [released] = await storage.release_due(DUE, limit=10, node_id="n")
    assert (released.id, released.seq, released.category) == ("s1", 2, "billing")
    assert released.data == {"k": "v"}
    assert released.gid > 0
    assert await storage.get_scheduled("s1") is None
    stored = await storage.get_notification("s1")
    assert stored is not None
    assert (stored.seq, stored.title) == (2, "title of s1")
    assert await storage.release_due(DUE + 1_000, limit=10, node_id="n") == []
    # The releasing node's commits are in its outbox for the relay.
    unpublished = await storage.unpublished_notifications("n", after_gid=0, limit=10)
    assert [r.id for r in unpublished] == ["s1"]


async def test_release_takes_due_order_and_respects_limit(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    for index, due in enumerate([DUE + 3, DUE + 1, DUE + 2, DUE + 50]):
        await storage.schedule_notification(scheduled(f"s{index}", due_at=due))
    await storage.schedule_notification(scheduled("t0", "u2", due_at=DUE))
    first = await storage.release_due(DUE + 10, limit=2, node_id="n")
    assert [(r.id, r.seq) for r in first] == [("t0", 1), ("s1", 1)]
    rest = await storage.release_due(DUE + 10, limit=10, node_id="n")
    assert [(r.id, r.seq) for r in rest] == [("s2", 2), ("s0", 3)]
    assert (await storage.get_scheduled("s3")) is not None


async def test_release_inserts_the_planned_deliveries(storage: Storage) -> None:
    await storage.create_user(user("u1", email="a@example.org"))
    plan = (PlannedDelivery(id="dlv_1", channel="email", due_at=DUE + 30_000),)
    await storage.schedule_notification(scheduled("s1", deliveries=plan))
    await storage.release_due(DUE, limit=10, node_id="n")
    [delivery] = await storage.channel_deliveries_of("s1")
    assert (delivery.id, delivery.channel, delivery.due_at) == ("dlv_1", "email", DUE + 30_000)


async def test_two_concurrent_releasers_release_each_row_once(storage_url: str) -> None:
    """Guards exactly-once release across nodes: two storage instances (two connection
    pools, as two processes would have) release the same due rows at the same time."""
    async with opened(storage_url) as first, opened(storage_url) as second:
        await first.migrate()
        for index in range(5):
            await first.create_user(user(f"u{index}"))
        for index in range(200):
            await first.schedule_notification(scheduled(f"s{index:03}", f"u{index % 5}"))

        async def drain(store: Storage, node: str) -> list[str]:
            taken: list[str] = []
            while batch := await store.release_due(DUE, limit=7, node_id=node):
                taken += [r.id for r in batch]
            return taken

        one, two = await asyncio.gather(drain(first, "a"), drain(second, "b"))
        assert sorted(one + two) == [f"s{index:03}" for index in range(200)]
        assert not set(one) & set(two)
        rows = await raw_sql(storage_url, "SELECT user_id, seq FROM notifications ORDER BY 1, 2")
        assert len(rows) == 200
        for index in range(5):
            assert [seq for uid, seq in rows if uid == f"u{index}"] == list(range(1, 41))


async def test_cancel_wins_or_release_wins_never_both(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    for index in range(30):
        await storage.schedule_notification(scheduled(f"s{index:02}"))
    ids = [f"s{index:02}" for index in range(30)]

    async def cancel_all() -> list[str]:
        cancelled = []
        for notification_id in ids:
            record = await storage.cancel_scheduled(notification_id, DUE)
            if record is not None:
                cancelled.append(notification_id)
        return cancelled

    async def release_all() -> list[str]:
        released: list[str] = []
        while batch := await storage.release_due(DUE, limit=3, node_id="n"):
            released += [r.id for r in batch]
        return released

    cancelled, released = await asyncio.gather(cancel_all(), release_all())
    assert sorted(cancelled + released) == ids
    assert not set(cancelled) & set(released)
    for notification_id in cancelled:
        assert await storage.get_notification(notification_id) is None


async def test_cancel_marks_and_is_never_released(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.schedule_notification(scheduled("s1"))
    cancelled = await storage.cancel_scheduled("s1", DUE - 5)
    assert cancelled is not None
    assert (cancelled.status, cancelled.cancelled_at) == ("cancelled", DUE - 5)
    again = await storage.cancel_scheduled("s1", DUE)
    assert again is not None
    assert again.cancelled_at == DUE - 5
    assert await storage.release_due(DUE + 10, limit=10, node_id="n") == []
    assert await storage.cancel_scheduled("nope", DUE) is None
    await storage.schedule_notification(scheduled("s2"))
    await storage.release_due(DUE, limit=10, node_id="n")
    assert await storage.cancel_scheduled("s2", DUE) is None  # released: not cancellable


async def test_list_scheduled_pages_in_id_order_within_categories(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.schedule_notification(scheduled("s1", category="billing"))
    await storage.schedule_notification(scheduled("s2"))
    await storage.schedule_notification(scheduled("s3", category="news"))
    await storage.schedule_notification(scheduled("x1", "u2"))
    await storage.cancel_scheduled("s2", DUE)
    listed = await storage.list_scheduled("u1", after_id=None, limit=10)
    assert [(r.notification.id, r.status) for r in listed] == [
        ("s1", "scheduled"),
        ("s2", "cancelled"),
        ("s3", "scheduled"),
    ]
    page = await storage.list_scheduled("u1", after_id="s1", limit=1)
    assert [r.notification.id for r in page] == ["s2"]
    within = await storage.list_scheduled("u1", after_id=None, limit=10, categories=["news"])
    assert [r.notification.id for r in within] == ["s3"]


async def test_schedule_refuses_unknown_user_taken_id_and_taken_key(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    claim = IdempotencyClaim(scope="key1", key="k", request_hash="h")
    with pytest.raises(UnknownUserError):
        await storage.schedule_notification(scheduled("s0", "ghost", idempotency=claim))
    assert await storage.find_idempotency("key1", "k", not_before=0) is None
    await storage.schedule_notification(scheduled("s1", idempotency=claim))
    with pytest.raises(ConflictError) as taken:
        await storage.schedule_notification(scheduled("s1"))
    assert taken.value.field == "id"
    with pytest.raises(IdempotencyConflictError):
        await storage.schedule_notification(scheduled("s2", idempotency=claim))
    assert await storage.get_scheduled("s2") is None


async def test_claim_has_seq_zero_until_release(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note("n1", "u1")])
    claim = IdempotencyClaim(scope="key1", key="k", request_hash="h")
    await storage.schedule_notification(scheduled("s1", idempotency=claim))
    stored = await storage.find_idempotency("key1", "k", not_before=0)
    assert stored is not None
    assert (stored.notification_id, stored.seq) == ("s1", 0)
    await storage.release_due(DUE, limit=10, node_id="n")
    stored = await storage.find_idempotency("key1", "k", not_before=0)
    assert stored is not None
    assert (stored.notification_id, stored.seq) == ("s1", 2)


async def test_payload_is_sealed_at_rest(storage_url: str) -> None:
    async with opened(storage_url, KeyRing([("k1", bytes(range(32)))])) as store:
        await store.migrate()
        await store.create_user(user("u1"))
        await store.schedule_notification(scheduled("s1", body="BodySecretXYZ"))
        rows = await raw_sql(storage_url, "SELECT * FROM scheduled_notifications")
        assert "BodySecretXYZ" not in repr(rows)
        found = await store.get_scheduled("s1")
        assert found is not None
        assert found.notification.body == "BodySecretXYZ"
        [released] = await store.release_due(DUE, limit=1, node_id="n")
        assert released.body == "BodySecretXYZ"


async def test_erase_removes_scheduled_rows(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.schedule_notification(scheduled("s1"))
    await storage.schedule_notification(scheduled("s2", "u2"))
    await storage.cancel_scheduled("s1", DUE)
    assert await storage.erase_user("u1", batch_size=10)
    assert await storage.get_scheduled("s1") is None
    assert await storage.get_scheduled("s2") is not None


async def test_rekey_reseals_scheduled_payloads(storage_url: str) -> None:
    """Guards `pushd rekey`: the payload is a sealed column like notification content."""
    k1, k2 = ("k1", bytes(range(32))), ("k2", bytes(range(100, 132)))
    async with opened(storage_url, KeyRing([k1])) as store:
        await store.migrate()
        await store.create_user(user("u1"))
        await store.schedule_notification(scheduled("s1", body="kept"))
    async with opened(storage_url, KeyRing([k2, k1])) as store:
        assert await store.count_not_under_active_key() == 1
        assert await store.rekey_batch("scheduled_notifications", after_id="", limit=10) == (
            1,
            "s1",
        )
        assert await store.count_not_under_active_key() == 0
    async with opened(storage_url, KeyRing([k2])) as store:
        found = await store.get_scheduled("s1")
        assert found is not None
        assert found.notification.body == "kept"
