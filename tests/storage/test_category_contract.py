"""The category part of the `Storage` contract (issue #10), on every backend: what a key
or token limited to categories reads, counts, marks read and acknowledges is filtered in
the query itself, so that pages are full and no cursor points at a hidden row."""

from __future__ import annotations

from storage import Storage
from storage.records import MarkedRead
from tests.storage.conftest import note, user

BILLING = ("billing",)


async def mixed_history(storage: Storage) -> None:
    """u1's seqs 1..7: marketing, billing, none, billing, marketing, billing, none; and a
    billing notification of u2."""
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    categories = ["marketing", "billing", None, "billing", "marketing", "billing", None]
    await storage.insert_notifications(
        [note(f"n{seq}", "u1", category=c) for seq, c in enumerate(categories, start=1)]
        + [note("other", "u2", category="billing")]
    )


async def test_pages_hold_only_the_categories_and_are_full(storage: Storage) -> None:
    """Guards pages filtered after the query: `limit=1` came back empty with a cursor
    naming the seq of a hidden row."""
    await mixed_history(storage)
    latest = await storage.list_notifications("u1", before_seq=None, limit=2, categories=BILLING)
    assert [r.seq for r in latest] == [6, 4]
    older = await storage.list_notifications("u1", before_seq=4, limit=2, categories=BILLING)
    assert [r.seq for r in older] == [2]
    both = ("marketing", "billing")
    mixed = await storage.list_notifications("u1", before_seq=5, limit=9, categories=both)
    assert [r.seq for r in mixed] == [4, 2, 1]
    await storage.mark_read("u1", ["n6"], 100)
    unread = await storage.list_notifications(
        "u1", before_seq=None, limit=9, unread_only=True, categories=BILLING
    )
    assert [r.seq for r in unread] == [4, 2]
    everything = await storage.list_notifications("u1", before_seq=None, limit=9)
    assert len(everything) == 7


async def test_unread_counts_only_the_categories(storage: Storage) -> None:
    await mixed_history(storage)
    assert await storage.count_unread("u1", categories=BILLING) == 3
    assert await storage.count_unread("u1", categories=("billing", "marketing")) == 5
    assert await storage.count_unread("u1") == 7
    assert await storage.count_unread("u1", categories=("nothing",)) == 0


async def test_replay_holds_only_the_categories(storage: Storage) -> None:
    await mixed_history(storage)
    first = await storage.notifications_after("u1", after_seq=0, limit=2, categories=BILLING)
    assert [r.seq for r in first] == [2, 4]
    rest = await storage.notifications_after("u1", after_seq=4, limit=9, categories=BILLING)
    assert [r.seq for r in rest] == [6]
    assert await storage.notifications_after("u1", after_seq=6, limit=9, categories=BILLING) == []


async def test_mark_read_within_categories_ignores_the_others(storage: Storage) -> None:
    """Guards read-all with ids of another category answering `marked: 1`."""
    await mixed_history(storage)
    marked = await storage.mark_read("u1", ["n1", "n2", "n3", "other"], 100, categories=BILLING)
    assert marked == [MarkedRead(id="n2", category="billing")]
    assert await storage.mark_read("u1", ["n1", "n3"], 200) == [
        MarkedRead(id="n1", category="marketing"),
        MarkedRead(id="n3", category=None),
    ]
    assert await storage.count_unread("u1") == 4


async def test_mark_all_read_within_categories(storage: Storage) -> None:
    """Only those categories are marked, up to the newest of them (never the user's
    last_seq, which counts every category)."""
    await mixed_history(storage)
    assert await storage.mark_all_read("u1", 100, categories=BILLING) == (3, 6)
    assert await storage.count_unread("u1") == 4
    assert await storage.count_unread("u1", categories=BILLING) == 0
    assert await storage.mark_all_read("u1", 200, categories=BILLING) == (0, 6)
    assert await storage.mark_all_read("u1", 300, categories=("nothing",)) == (0, 0)
    assert await storage.mark_all_read("ghost", 300, categories=BILLING) == (0, 0)
    other = await storage.get_notification("other")
    assert other is not None
    assert other.read_at is None
    assert await storage.mark_all_read("u1", 400) == (4, 7)


async def test_cursors_within_categories_stop_before_the_others(storage: Storage) -> None:
    """A socket limited to billing cannot vouch for seq 1 (marketing): its cursors stop
    before the first notification of another category above them, and move on once
    another client took the cursor past it."""
    await mixed_history(storage)
    await storage.advance_cursors(sent={"u1": 6}, acked={"u1": 4}, at=100, within=BILLING)
    found = await storage.get_user("u1")
    assert found is not None
    assert (found.sent_seq, found.ack_seq) == (0, 0)
    await storage.advance_cursors(sent={"u1": 1}, acked={"u1": 1}, at=200)
    await storage.advance_cursors(sent={"u1": 6}, acked={"u1": 4}, at=300, within=BILLING)
    found = await storage.get_user("u1")
    assert found is not None
    assert (found.sent_seq, found.ack_seq) == (2, 2)
    await storage.advance_cursors(sent={}, acked={"u1": 3}, at=400)
    await storage.advance_cursors(sent={"u1": 9}, acked={"u1": 9}, at=500, within=BILLING)
    found = await storage.get_user("u1")
    assert found is not None
    assert (found.sent_seq, found.ack_seq) == (2, 4)
    times = await storage.cursor_times("u1", [4])
    assert times[4].acked_at == 500
