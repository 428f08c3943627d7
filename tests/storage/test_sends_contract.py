"""The sends and segments parts of the `Storage` contract (storage/areas/sends.py,
storage/areas/segments.py), on every backend: the send job's lease and progress, one
notification per (send, user), and `UserFilter` compiled to SQL."""

from __future__ import annotations

import pytest

from storage import ConflictError, KeyRing, Storage
from storage.records import (
    AllOf,
    AnyOf,
    AttributeIs,
    CreatedBetween,
    HasTag,
    LocaleIs,
    NewSegment,
    NewSend,
    NewUser,
    NoneOf,
    PlannedDelivery,
    SendChunk,
    TimezoneIs,
    UserFilter,
)
from tests.storage.conftest import CREATED_AT, note, opened, raw_sql, user

K1 = ("k1", bytes(range(32)))


def send(send_id: str = "snd_1", **fields: object) -> NewSend:
    values: dict[str, object] = {
        "audience": {"kind": "broadcast"},
        "content": '{"title":"Hello"}',
        "created_at": CREATED_AT,
    }
    values.update(fields)
    return NewSend(id=send_id, **values)  # type: ignore[arg-type]


# sends ---------------------------------------------------------------------------------


async def test_send_round_trip_lease_progress_and_finish(storage: Storage) -> None:
    created = await storage.create_send(send(category="news", api_key_id="key_1"))
    assert (created.status, created.resolved, created.cursor_user_id) == ("pending", 0, None)
    assert created.content == '{"title":"Hello"}'
    assert await storage.get_send("snd_1") == created
    assert await storage.get_send("snd_nope") is None
    with pytest.raises(ConflictError):
        await storage.create_send(send())
    assert await storage.unfinished_sends(node_id="n1", now=1000, limit=10) == ["snd_1"]

    leased = await storage.lease_send("snd_1", node_id="n1", now=1000, until=5000)
    assert leased is not None
    # Listed for its holder, and for others only once the lease has run out.
    assert await storage.unfinished_sends(node_id="n1", now=2000, limit=10) == ["snd_1"]
    assert await storage.unfinished_sends(node_id="n2", now=2000, limit=10) == []
    assert await storage.unfinished_sends(node_id="n2", now=5001, limit=10) == ["snd_1"]
    # Held by n1 until 5000: n2 cannot take it before, can after.
    assert await storage.lease_send("snd_1", node_id="n2", now=4000, until=9000) is None
    chunk = SendChunk(cursor_user_id="u2", resolved=2, committed=1, skipped=1)
    assert await storage.record_send_chunk("snd_1", chunk, node_id="n1", now=4500, until=8000)
    assert not await storage.record_send_chunk("snd_1", chunk, node_id="n2", now=4500, until=8000)
    moved = await storage.get_send("snd_1")
    assert moved is not None
    assert (moved.status, moved.cursor_user_id, moved.resolved, moved.committed, moved.skipped) == (
        "running",
        "u2",
        2,
        1,
        1,
    )
    assert await storage.lease_send("snd_1", node_id="n2", now=7000, until=9000) is None
    taken = await storage.lease_send("snd_1", node_id="n2", now=8001, until=12000)
    assert taken is not None
    assert taken.cursor_user_id == "u2"
    # n1 lost it: its progress and its finish are refused.
    assert not await storage.record_send_chunk("snd_1", chunk, node_id="n1", now=8100, until=9)
    assert not await storage.finish_send("snd_1", node_id="n1", status="done", error=None, now=1)
    assert await storage.finish_send("snd_1", node_id="n2", status="done", error=None, now=9000)
    done = await storage.get_send("snd_1")
    assert done is not None
    assert (done.status, done.finished_at) == ("done", 9000)
    assert await storage.unfinished_sends(node_id="n2", now=9001, limit=10) == []
    assert await storage.lease_send("snd_1", node_id="n2", now=9001, until=10000) is None


async def test_send_content_is_sealed(storage_url: str) -> None:
    async with opened(storage_url, KeyRing([K1])) as store:
        await store.migrate()
        await store.create_send(send(content='{"title":"SecretTitle"}'))
        [(stored,)] = await raw_sql(storage_url, "SELECT content FROM sends WHERE id = $1", "snd_1")
        assert "SecretTitle" not in stored
        loaded = await store.get_send("snd_1")
        assert loaded is not None
        assert loaded.content == '{"title":"SecretTitle"}'


async def test_one_notification_per_send_and_user(storage: Storage) -> None:
    """Guards exactly-once: a chunk committed twice is refused, whole, by storage."""
    for user_id in ("u1", "u2"):
        await storage.create_user(user(user_id))
    await storage.create_send(send())
    await storage.insert_notifications([note("n1", "u1", send_id="snd_1")])
    assert await storage.users_sent("snd_1", ["u1", "u2", "ghost"]) == {"u1"}
    assert await storage.users_sent("snd_other", ["u1"]) == set()
    with pytest.raises(ConflictError):
        await storage.insert_notifications(
            [note("n2", "u2", send_id="snd_1"), note("n3", "u1", send_id="snd_1")]
        )
    assert await storage.users_sent("snd_1", ["u1", "u2"]) == {"u1"}
    # Single sends (no send id) are not limited.
    await storage.insert_notifications([note("n4", "u1"), note("n5", "u1")])


async def test_send_delivery_counts_and_acks(storage: Storage) -> None:
    for user_id in ("u1", "u2"):
        await storage.create_user(user(user_id))
    await storage.create_send(send())
    email = PlannedDelivery(id="d1", channel="email", due_at=CREATED_AT)
    await storage.insert_notifications(
        [
            note("n1", "u1", send_id="snd_1", deliveries=(email,)),
            note("n2", "u2", send_id="snd_1"),
            note("n3", "u2"),
        ]
    )
    counts = await storage.send_delivery_counts("snd_1")
    assert [(c.channel, c.status, c.count) for c in counts] == [("email", "scheduled", 1)]
    assert await storage.send_acked("snd_1") == 0
    await storage.advance_cursors(sent={}, acked={"u2": 1}, at=CREATED_AT)
    assert await storage.send_acked("snd_1") == 1


# segments ------------------------------------------------------------------------------


async def test_segment_round_trip(storage: Storage) -> None:
    document = {"all": [{"tag": "pro"}, {"locale": "de"}]}
    created = await storage.create_segment(
        NewSegment(id="seg_1", name="German pros", filter=document, created_at=CREATED_AT)
    )
    assert created.filter == document
    assert await storage.get_segment("seg_1") == created
    await storage.create_segment(
        NewSegment(id="seg_2", name="All", filter={"tag": "x"}, created_at=CREATED_AT)
    )
    assert [s.id for s in await storage.list_segments(after_id=None, limit=1)] == ["seg_1"]
    assert [s.id for s in await storage.list_segments(after_id="seg_1", limit=5)] == ["seg_2"]
    assert await storage.delete_segment("seg_1")
    assert not await storage.delete_segment("seg_1")
    assert await storage.get_segment("seg_1") is None


def born(user_id: str, created_at: int, **fields: object) -> NewUser:
    return NewUser(id=user_id, created_at=created_at, **fields)  # type: ignore[arg-type]


async def _population(storage: Storage) -> None:
    day = 86_400_000
    await storage.create_user(born("u1", 0, tags=("pro", "beta"), locale="de-AT"))
    await storage.create_user(born("u2", day, tags=("pro",), locale="de", timezone="Europe/Berlin"))
    await storage.create_user(born("u3", 2 * day, tags=("free",), locale="fr"))
    await storage.create_user(born("u4", 3 * day, locale="den", attributes={"plan": "pro"}))
    await storage.create_user(born("u5", 4 * day, tags=("x' OR 1=1 --",)))


async def _ids(storage: Storage, where: UserFilter | None) -> list[str]:
    return [u.id for u in await storage.users_matching(where, after_id=None, limit=100)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (None, ["u1", "u2", "u3", "u4", "u5"]),
        (HasTag(tag="pro"), ["u1", "u2"]),
        (LocaleIs(locale="de"), ["u1", "u2"]),  # `de` and `de-AT`, not `den`
        (LocaleIs(locale="de-AT"), ["u1"]),
        (TimezoneIs(timezone="Europe/Berlin"), ["u2"]),
        (CreatedBetween(after=86_400_000, before=3 * 86_400_000), ["u2", "u3"]),
        (AllOf(parts=(HasTag(tag="pro"), NoneOf(part=HasTag(tag="beta")))), ["u2"]),
        (AnyOf(parts=(HasTag(tag="free"), LocaleIs(locale="de-AT"))), ["u1", "u3"]),
        # A missing locale or timezone is "not that one".
        (NoneOf(part=TimezoneIs(timezone="Europe/Berlin")), ["u1", "u3", "u4", "u5"]),
        # Attributes are sealed: storage selects a superset (everyone here)...
        (AttributeIs(key="plan", value="pro"), ["u1", "u2", "u3", "u4", "u5"]),
        # ...and under `not` the superset of the negation (everyone again).
        (NoneOf(part=AttributeIs(key="plan", value="pro")), ["u1", "u2", "u3", "u4", "u5"]),
        (AllOf(parts=(AttributeIs(key="plan"), HasTag(tag="free"))), ["u3"]),
        # A value that would break a string-built query matches only itself.
        (HasTag(tag="x' OR 1=1 --"), ["u5"]),
        (LocaleIs(locale="x' OR 1=1 --"), []),
    ],
)
async def test_users_matching(
    storage: Storage, where: UserFilter | None, expected: list[str]
) -> None:
    await _population(storage)
    assert await _ids(storage, where) == expected
    assert await storage.user_ids_matching(where, after_id=None, limit=100) == expected
    assert await storage.count_matching(where, at_most=100) == len(expected)


async def test_users_matching_pages_by_id_and_count_is_capped(storage: Storage) -> None:
    await _population(storage)
    first = await storage.users_matching(None, after_id=None, limit=2)
    rest = await storage.users_matching(None, after_id=first[-1].id, limit=10)
    assert [u.id for u in first + rest] == ["u1", "u2", "u3", "u4", "u5"]
    assert await storage.user_ids_matching(None, after_id="u2", limit=2) == ["u3", "u4"]
    assert await storage.count_matching(None, at_most=3) == 3
    with pytest.raises(ValueError, match="limit"):
        await storage.count_matching(None, at_most=-1)


async def test_an_erased_user_leaves_the_audience(storage: Storage) -> None:
    await _population(storage)
    assert await storage.erase_user("u1", batch_size=10)
    assert await _ids(storage, HasTag(tag="pro")) == ["u2"]


async def test_a_plaintext_send_is_resealed_by_the_rekey(storage_url: str) -> None:
    """Guards `sends` in SEALED_COLUMNS: `pushd rekey` seals a send stored in clear."""
    async with opened(storage_url) as plain:
        await plain.migrate()
        await plain.create_send(send(content='{"title":"ClearTitle"}'))
    async with opened(storage_url, KeyRing([K1])) as store:
        assert await store.count_not_under_active_key() == 1
        assert await store.rekey_batch("sends", after_id="", limit=10) == (1, "snd_1")
        assert await store.count_not_under_active_key() == 0
        [(stored,)] = await raw_sql(storage_url, "SELECT content FROM sends WHERE id = $1", "snd_1")
        assert "ClearTitle" not in stored
        loaded = await store.get_send("snd_1")
        assert loaded is not None
        assert loaded.content == '{"title":"ClearTitle"}'
