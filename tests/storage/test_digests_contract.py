"""The digest part of the `Storage` contract (`ChannelDeliveries.lease_due_digests`,
migration 0017), on every backend: a digest is leased whole, once its oldest row is
due; the ordinary lease never takes digest rows; a row committed during a lease lands
in the next digest, so that each row is in exactly one digest even with two nodes
leasing and a sender inserting at once; retries, expired leases, reads and expiry."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from storage import Storage
from storage.records import DeliveryOutcome, LeasedDelivery, PlannedDelivery
from tests.storage.conftest import CREATED_AT, note, opened, user

NOW = CREATED_AT + 60_000
WINDOW = 10_000
LEASE_MS = 30_000


def digest_step(delivery_id: str, channel: str = "email", due_at: int = NOW) -> PlannedDelivery:
    return PlannedDelivery(
        id=delivery_id, channel=channel, due_at=due_at, status="scheduled", reason="digest"
    )


def digest_note(notification_id: str, delivery_id: str, *, due_at: int, **fields: Any) -> Any:
    fields.setdefault("category", "news")
    fields.setdefault("user_id", "u1")
    user_id = fields.pop("user_id")
    channel = fields.pop("channel", "email")
    return note(
        notification_id,
        user_id,
        deliveries=(digest_step(delivery_id, channel, due_at),),
        **fields,
    )


async def lease_digests(
    storage: Storage, *channels: str, now: int = NOW, limit: int = 100, owner: str = "w1"
) -> list[list[LeasedDelivery]]:
    return await storage.lease_due_digests(
        channels or ("email",), now=now, limit=limit, owner=owner, lease_ms=LEASE_MS
    )


def ids(digests: list[list[LeasedDelivery]]) -> list[list[str]]:
    return [[delivery.id for delivery in digest] for digest in digests]


async def people(storage: Storage) -> None:
    await storage.create_user(user("u1", email="ada@example.org", phone="+33611223344"))
    await storage.create_user(user("u2", email="bob@example.org"))


async def test_a_digest_is_leased_whole_once_its_oldest_row_is_due(storage: Storage) -> None:
    await people(storage)
    await storage.insert_notifications(
        [
            digest_note("n1", "d1", due_at=NOW, created_at=CREATED_AT),
            digest_note("n2", "d2", due_at=NOW + 5_000, created_at=CREATED_AT + 1),
            digest_note("n3", "d3", due_at=NOW + 9_000, created_at=CREATED_AT + 2),
            # Another category, another channel, another user: other digests.
            digest_note("n4", "d4", due_at=NOW + 1_000, category="billing"),
            digest_note("n5", "d5", due_at=NOW, channel="sms"),
            digest_note("n6", "d6", due_at=NOW + 1_000, user_id="u2"),
        ]
    )
    # Not due yet: nothing; and the ordinary lease never takes a digest row.
    assert await lease_digests(storage, now=NOW - 1) == []
    assert (
        await storage.lease_due_deliveries(
            ["email", "sms"], now=NOW + 60_000, limit=100, owner="w1", lease_ms=LEASE_MS
        )
        == []
    )
    [digest] = await lease_digests(storage)
    assert [d.id for d in digest] == ["d1", "d2", "d3"]  # oldest first, due or not
    assert {d.address["email"] for d in digest} == {"ada@example.org"}
    assert {(d.category, d.attempts) for d in digest} == {("news", 1)}
    rows = await storage.channel_deliveries_of("n3")
    assert [(r.status, r.reason) for r in rows] == [("sending", "digest")]
    # Leased once: the next lease finds the other digests as they fall due, not these.
    assert ids(await lease_digests(storage, now=NOW + 1_000)) == [["d4"], ["d6"]]
    assert ids(await lease_digests(storage, "sms", now=NOW + 1_000)) == [["d5"]]
    assert await lease_digests(storage, "email", "sms", now=NOW + 20_000) == []


async def test_a_row_after_the_lease_opens_the_next_window(storage: Storage) -> None:
    await people(storage)
    await storage.insert_notifications([digest_note("n1", "d1", due_at=NOW)])
    assert ids(await lease_digests(storage)) == [["d1"]]
    await storage.insert_notifications([digest_note("n2", "d2", due_at=NOW + WINDOW)])
    assert await lease_digests(storage, now=NOW + WINDOW - 1) == []
    assert ids(await lease_digests(storage, now=NOW + WINDOW)) == [["d2"]]


async def test_the_limit_counts_digests(storage: Storage) -> None:
    await people(storage)
    await storage.insert_notifications(
        [
            digest_note("n1", "d1", due_at=NOW),
            digest_note("n2", "d2", due_at=NOW + 1),
            digest_note("n3", "d3", due_at=NOW, user_id="u2"),
        ]
    )
    first = ids(await lease_digests(storage, limit=1))
    second = ids(await lease_digests(storage, limit=1))
    assert sorted(first + second) == [["d1", "d2"], ["d3"]]


async def test_one_outcome_per_row_and_a_retry_stays_in_the_digest(storage: Storage) -> None:
    await people(storage)
    await storage.insert_notifications(
        [digest_note("n1", "d1", due_at=NOW), digest_note("n2", "d2", due_at=NOW + 1)]
    )
    [digest] = await lease_digests(storage)
    await storage.record_delivery_outcomes(
        [
            DeliveryOutcome(
                delivery_id=d.id,
                at=NOW + 1,
                status="queued",
                next_due_at=NOW + 5_000,
                error="try later",
                attempt=d.attempts,
            )
            for d in digest
        ]
    )
    # The retried rows wait for their retry, then go out together with a new row.
    await storage.insert_notifications([digest_note("n3", "d3", due_at=NOW + WINDOW)])
    assert await lease_digests(storage, now=NOW + 4_999) == []
    [again] = await lease_digests(storage, now=NOW + 5_000)
    assert [(d.id, d.attempts) for d in again] == [("d1", 2), ("d2", 2), ("d3", 1)]
    await storage.record_delivery_outcomes(
        [
            DeliveryOutcome(
                delivery_id=d.id,
                at=NOW + 5_001,
                status="sent",
                provider="smtp",
                provider_message_id="<one@example>",
                attempt=d.attempts,
            )
            for d in again
        ]
    )
    for notification_id in ("n1", "n2", "n3"):
        [row] = await storage.channel_deliveries_of(notification_id)
        assert (row.status, row.provider_message_id) == ("sent", "<one@example>")


async def test_a_digest_whose_lease_ran_out_is_leased_whole_again(storage: Storage) -> None:
    await people(storage)
    await storage.insert_notifications(
        [digest_note("n1", "d1", due_at=NOW), digest_note("n2", "d2", due_at=NOW + 1)]
    )
    assert ids(await lease_digests(storage, owner="dead")) == [["d1", "d2"]]
    assert await lease_digests(storage, now=NOW + LEASE_MS - 1) == []
    # Not the ordinary lease: that would send each row on its own.
    assert (
        await storage.lease_due_deliveries(
            ["email"], now=NOW + LEASE_MS + 1, limit=100, owner="w2", lease_ms=LEASE_MS
        )
        == []
    )
    [again] = await lease_digests(storage, now=NOW + LEASE_MS + 1, owner="w2")
    assert [(d.id, d.attempts) for d in again] == [("d1", 2), ("d2", 2)]


async def test_reading_cancels_a_row_and_reading_all_cancels_the_digest(
    storage: Storage,
) -> None:
    await people(storage)
    await storage.insert_notifications(
        [
            digest_note("n1", "d1", due_at=NOW),
            digest_note("n2", "d2", due_at=NOW + 1),
            digest_note("n3", "d3", due_at=NOW, user_id="u2"),
        ]
    )
    await storage.mark_read("u1", ["n1"], NOW - 1)
    await storage.mark_read("u2", ["n3"], NOW - 1)
    [digest] = await lease_digests(storage, now=NOW + 1)
    assert [d.id for d in digest] == ["d2"]
    [row] = await storage.channel_deliveries_of("n3")
    assert (row.status, row.reason) == ("cancelled", "read")


async def test_rows_of_expired_notifications_are_cancelled_not_leased(storage: Storage) -> None:
    await people(storage)
    await storage.insert_notifications(
        [
            digest_note("n1", "d1", due_at=NOW, expires_at=NOW - 1),
            digest_note("n2", "d2", due_at=NOW + 1),
        ]
    )
    [digest] = await lease_digests(storage, now=NOW + 1)
    assert [d.id for d in digest] == ["d2"]
    [row] = await storage.channel_deliveries_of("n1")
    assert (row.status, row.reason) == ("cancelled", "expired")


async def test_each_row_is_in_exactly_one_digest_under_concurrency(
    storage: Storage, storage_url: str
) -> None:
    """Guards the window's edge: a sender commits rows while two nodes (two connections)
    lease digests of the same user and category. Every row must come out in exactly one
    digest, and no digest of a lease may hold a row another lease also took."""
    await people(storage)
    counter = itertools.count()
    inserted: list[str] = []
    taken: list[list[str]] = []
    inserting = True

    async def send() -> None:
        nonlocal inserting
        for _ in range(60):
            batch = []
            for _ in range(3):
                i = next(counter)
                batch.append(digest_note(f"n{i:04d}", f"d{i:04d}", due_at=NOW + i))
            await storage.insert_notifications(batch)
            inserted.extend(n.deliveries[0].id for n in batch)
            await asyncio.sleep(0)
        inserting = False

    async def drain(store: Storage, owner: str) -> None:
        now = NOW
        while inserting:
            taken.extend(ids(await lease_digests(store, now=now, owner=owner)))
            now += 3
            await asyncio.sleep(0)

    async with opened(storage_url) as other:
        await asyncio.gather(send(), drain(storage, "a"), drain(other, "b"))
        # What is left goes out in the last digest (before any lease runs out).
        taken.extend(ids(await lease_digests(other, now=NOW + LEASE_MS - 1, owner="b")))
    together = [delivery_id for digest in taken for delivery_id in digest]
    assert len(together) == len(set(together))
    assert sorted(together) == sorted(inserted)
    assert len(inserted) == 180
    assert len(taken) > 1  # digests did go out while rows were arriving
