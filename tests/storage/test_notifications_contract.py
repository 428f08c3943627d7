"""The notifications part of the `Storage` contract (storage/areas/notifications.py), on
every backend: per-user seqs under concurrent writers, pages and replay, read state,
expiry and drop marks. The `categories` filter has its own file,
test_category_contract.py."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict

import pytest

from storage import ConflictError, Storage, UnknownUserError
from storage.records import NotificationRecord
from tests.storage.conftest import note, opened, user

# seqs ----------------------------------------------------------------------------------


async def test_insert_assigns_per_user_seqs_in_batch_order(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    batch = [note("n1", "u2"), note("n2", "u1"), note("n3", "u2"), note("n4", "u2")]
    records = await storage.insert_notifications(batch)
    assert [(r.id, r.user_id, r.seq) for r in records] == [
        ("n1", "u2", 1),
        ("n2", "u1", 1),
        ("n3", "u2", 2),
        ("n4", "u2", 3),
    ]
    for record in records:
        assert await storage.get_notification(record.id) == record
    u1, u2 = await storage.get_user("u1"), await storage.get_user("u2")
    assert u1 is not None
    assert u2 is not None
    assert (u1.last_seq, u2.last_seq) == (1, 3)


async def test_seqs_continue_across_batches_without_gaps(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    seqs = []
    for batch_number in range(3):
        batch = [note(f"n{batch_number}-{i}", "u1") for i in range(batch_number + 1)]
        seqs += [record.seq for record in await storage.insert_notifications(batch)]
    assert seqs == list(range(1, 7))


async def test_notification_round_trips_every_field(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    data = {"order": {"id": 7, "lines": [1.5, None, True]}, "emoji": "🔔"}
    [full, bare] = await storage.insert_notifications(
        [
            note(
                "n1",
                "u1",
                title="Café",
                body="Your order shipped",
                data=data,
                category="orders",
                priority="high",
            ),
            note("n2", "u1"),
        ]
    )
    assert await storage.get_notification("n1") == full
    assert (full.title, full.body, full.data, full.category, full.priority) == (
        "Café",
        "Your order shipped",
        data,
        "orders",
        "high",
    )
    assert await storage.get_notification("n2") == bare
    assert (bare.title, bare.data, bare.priority) == (None, None, "normal")
    assert await storage.get_notification("missing") is None


async def test_empty_batch_is_a_no_op(storage: Storage) -> None:
    assert await storage.insert_notifications([]) == []


async def test_batch_with_an_unknown_user_writes_nothing(storage: Storage) -> None:
    """Guards partial group commits: the valid rows before and after the unknown user
    must not be committed, nor their users' last_seq raised."""
    await storage.create_user(user("u1"))
    batch = [note("n1", "u1"), note("n2", "ghost"), note("n3", "u1")]
    with pytest.raises(UnknownUserError) as unknown:
        await storage.insert_notifications(batch)
    assert unknown.value.user_id == "ghost"
    await assert_untouched(storage, "u1", ["n1", "n2", "n3"])


async def test_batch_with_a_taken_id_writes_nothing(storage: Storage) -> None:
    """Guards the seq bump surviving a failed insert: last_seq would then run ahead of
    the stored rows and the next notification would leave a gap."""
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note("n1", "u1")])
    with pytest.raises(ConflictError) as taken:
        await storage.insert_notifications([note("n2", "u1"), note("n1", "u1")])
    assert taken.value.field == "id"
    await assert_untouched(storage, "u1", ["n2"], last_seq=1)
    [retried] = await storage.insert_notifications([note("n2", "u1")])
    assert retried.seq == 2


async def assert_untouched(
    storage: Storage, user_id: str, notification_ids: list[str], *, last_seq: int = 0
) -> None:
    for notification_id in notification_ids:
        assert await storage.get_notification(notification_id) is None
    found = await storage.get_user(user_id)
    assert found is not None
    assert found.last_seq == last_seq
    stored = await storage.notifications_after(user_id, after_seq=0, limit=100)
    assert len(stored) == last_seq


async def test_concurrent_batches_from_two_instances_get_gap_free_seqs(storage_url: str) -> None:
    """Guards lost updates of last_seq (a read-modify-write without the row lock gives
    two notifications one seq) and deadlocks between nodes: every batch names the same
    users in a different order, from two separately opened instances at once."""
    users = [f"u{i}" for i in range(5)]
    async with opened(storage_url) as first, opened(storage_url) as second:
        await first.migrate()
        for user_id in users:
            await first.create_user(user(user_id))
        batches = [
            [note(f"n{b}-{i}", users[(b * 3 + i * (b % 4 + 1)) % 5]) for i in range(20)]
            for b in range(40)
        ]
        results = await asyncio.gather(
            *(
                store.insert_notifications(batch)
                for store, batch in zip(itertools.cycle([first, second]), batches, strict=False)
            )
        )
        returned: dict[str, dict[int, str]] = defaultdict(dict)
        for records in results:
            in_batch: dict[str, list[int]] = defaultdict(list)
            for record in records:
                in_batch[record.user_id].append(record.seq)
                returned[record.user_id][record.seq] = record.id
            for user_seqs in in_batch.values():
                # One transaction: a user's seqs in a batch are consecutive, in batch order.
                assert user_seqs == list(range(user_seqs[0], user_seqs[0] + len(user_seqs)))
        assert sum(len(by_seq) for by_seq in returned.values()) == 40 * 20
        for user_id in users:
            count = len(returned[user_id])
            assert sorted(returned[user_id]) == list(range(1, count + 1))
            found = await second.get_user(user_id)
            assert found is not None
            assert found.last_seq == count
            replay = await second.notifications_after(user_id, after_seq=0, limit=1000)
            assert {record.seq: record.id for record in replay} == returned[user_id]


# pages and replay ----------------------------------------------------------------------


async def test_list_notifications_newest_first_before_seq(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.insert_notifications(
        [note(f"n{i}", "u1") for i in range(1, 8)] + [note("other", "u2")]
    )

    def seqs_of(records: list[NotificationRecord]) -> list[int]:
        return [record.seq for record in records]

    latest = await storage.list_notifications("u1", before_seq=None, limit=3)
    assert seqs_of(latest) == [7, 6, 5]
    older = await storage.list_notifications("u1", before_seq=latest[-1].seq, limit=3)
    assert seqs_of(older) == [4, 3, 2]
    oldest = await storage.list_notifications("u1", before_seq=2, limit=3)
    assert seqs_of(oldest) == [1]
    assert await storage.list_notifications("u1", before_seq=1, limit=3) == []
    assert await storage.list_notifications("ghost", before_seq=None, limit=3) == []


async def test_notifications_after_oldest_first(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.insert_notifications(
        [note(f"n{i}", "u1") for i in range(1, 8)] + [note("other", "u2")]
    )
    first = await storage.notifications_after("u1", after_seq=0, limit=3)
    assert [record.seq for record in first] == [1, 2, 3]
    rest = await storage.notifications_after("u1", after_seq=3, limit=100)
    assert [record.seq for record in rest] == [4, 5, 6, 7]
    assert await storage.notifications_after("u1", after_seq=7, limit=100) == []
    assert await storage.notifications_after("ghost", after_seq=0, limit=100) == []


async def test_negative_limit_is_refused(storage: Storage) -> None:
    """SQLite reads LIMIT -1 as 'no limit' and PostgreSQL rejects it: refuse it the same."""
    with pytest.raises(ValueError, match="limit"):
        await storage.notifications_after("u1", after_seq=0, limit=-1)


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
