"""A fan-out's content stored once per send (migration 0019, storage/sql/send_contents.py)
on every backend: one `send_contents` row per distinct rendering of a send, the
recipients' rows without a copy, and every read, edit, retract, erasure, purge and rekey
seeing (or keeping) the right content."""

from __future__ import annotations

from typing import Any

from storage import KeyRing, Storage
from storage.records import NewNotification, NotificationRecord, PlannedDelivery
from tests.storage.conftest import CREATED_AT, note, opened, raw_sql, user

K1 = ("k1", bytes(range(32)))
K2 = ("k2", bytes(range(1, 33)))
ENGLISH = {
    "title": "Release 3.0",
    "body": "It is out",
    "data": {"url": "/r/3"},
    "channel_content": {"email": {"subject": "Release 3.0 (mail)", "text": "Mail body"}},
}
GERMAN = {**ENGLISH, "title": "Version 3.0", "body": "Sie ist da"}


def fanned(
    notification_id: str, user_id: str, content: dict[str, Any], **fields: Any
) -> NewNotification:
    """A recipient's notification of the send `snd_1`."""
    return note(notification_id, user_id, send_id="snd_1", **content, **fields)


def content_of(record: NotificationRecord | None) -> tuple[Any, ...]:
    assert record is not None
    return record.title, record.body, record.data


async def count(url: str, sql: str, *params: Any) -> int:
    [(value,)] = await raw_sql(url, sql, *params)
    return int(value)


async def fan_out(store: Storage) -> None:
    """u1 and u2 get the English rendering, u3 the German one, in two chunks (two
    transactions, as the fan-out commits them); u1 has an email step."""
    for user_id in ("u1", "u2", "u3", "u4"):
        await store.create_user(user(user_id, email=f"{user_id}@example.com"))
    email = PlannedDelivery(id="d1", channel="email", due_at=CREATED_AT, status="queued")
    await store.insert_notifications(
        [fanned("n1", "u1", ENGLISH, deliveries=(email,)), fanned("n3", "u3", GERMAN)]
    )
    # The second chunk goes with a single send of someone else, in one batch.
    await store.insert_notifications([fanned("n2", "u2", ENGLISH), note("n4", "u4", title="own")])


async def test_a_send_stores_each_rendering_once_and_reads_resolve_it(storage_url: str) -> None:
    async with opened(storage_url, KeyRing([K1])) as store:
        await store.migrate()
        await fan_out(store)
        # Two renderings, two contents: the second chunk's English one was not stored again.
        assert await count(storage_url, "SELECT count(*) FROM send_contents") == 2
        rows = await raw_sql(
            storage_url,
            "SELECT id, title, body, data, channel_content, content_no FROM notifications "
            "ORDER BY id",
        )
        for notification_id, *own, content_no in rows:
            if notification_id == "n4":  # a single send keeps its content in its row
                assert content_no is None
                assert own[0] is not None
            else:
                assert own == [None, None, None, None]
                assert content_no is not None
        assert rows[0][-1] == rows[1][-1] != rows[2][-1]  # n1 and n2 share, n3 not
        refs = "SELECT id, number, refs FROM send_contents ORDER BY number"
        assert await raw_sql(storage_url, refs) == [("snd_1:1", 1, 2), ("snd_1:2", 2, 1)]
        sealed = await raw_sql(storage_url, "SELECT title, body, data FROM send_contents")
        assert all(value.startswith("enc:v1:k1:") for row in sealed for value in row)

        english = ("Release 3.0", "It is out", {"url": "/r/3"})
        assert content_of(await store.get_notification("n1")) == english
        assert content_of(await store.get_notification("n3"))[:2] == ("Version 3.0", "Sie ist da")
        assert content_of(await store.get_notification("n4"))[0] == "own"
        [listed] = await store.list_notifications("u2", before_seq=None, limit=10)
        assert content_of(listed) == english
        [replayed] = await store.notifications_after("u3", after_seq=0, limit=10)
        assert replayed.title == "Version 3.0"
        relayed = await store.unpublished_notifications("", after_gid=0, limit=10)
        assert [r.title for r in relayed] == ["Release 3.0", "Version 3.0", "Release 3.0", "own"]
        [leased] = await store.lease_due_deliveries(
            ["email"], now=CREATED_AT, limit=10, owner="w", lease_ms=1000
        )
        assert (leased.title, leased.data) == ("Release 3.0", {"url": "/r/3"})
        assert leased.content == {"subject": "Release 3.0 (mail)", "text": "Mail body"}


async def test_an_edit_copies_on_write_and_leaves_the_others(storage: Storage) -> None:
    await fan_out(storage)
    edited = await storage.update_notification(
        "n1", title="Fixed", body=None, data=None, expected_version=1, at=CREATED_AT + 1
    )
    assert edited is not None
    assert content_of(edited) == ("Fixed", None, None)
    assert content_of(await storage.get_notification("n1")) == ("Fixed", None, None)
    assert content_of(await storage.get_notification("n2"))[0] == "Release 3.0"
    # The edited one keeps the channel content it had (copied into its row).
    [leased] = await storage.lease_due_deliveries(
        ["email"], now=CREATED_AT + 2, limit=10, owner="w", lease_ms=1000
    )
    assert (leased.title, leased.content) == (
        "Fixed",
        {"subject": "Release 3.0 (mail)", "text": "Mail body"},
    )
    # Retracting one recipient's leaves the other's.
    assert await storage.retract_notification("n2", CREATED_AT + 3) is not None
    assert content_of(await storage.get_notification("n2")) == (None, None, None)
    assert content_of(await storage.get_notification("n3"))[0] == "Version 3.0"


async def test_a_content_goes_with_its_last_reference(storage_url: str) -> None:
    async with opened(storage_url) as store:
        await store.migrate()
        await fan_out(store)
        contents = "SELECT count(*) FROM send_contents"
        # Erasing one recipient leaves the content the other still reads.
        assert await store.erase_user("u1", batch_size=1)
        assert await count(storage_url, contents) == 2
        assert content_of(await store.get_notification("n2"))[0] == "Release 3.0"
        # Its last reader gone (a retract), the German content is deleted.
        assert await store.retract_notification("n3", CREATED_AT + 1) is not None
        assert await count(storage_url, contents) == 1
        # Retention: purging the last English reader deletes that content too.
        assert await store.purge_notifications(created_before=CREATED_AT + 1, limit=10) == 3
        assert await count(storage_url, contents) == 0


async def test_the_last_recipient_erased_takes_the_content(
    storage: Storage, storage_url: str
) -> None:
    await fan_out(storage)
    await storage.update_notification(
        "n1", title="Mine", body=None, data=None, expected_version=1, at=CREATED_AT + 1
    )
    # n1 was copied out: erasing u2, the English content's last reader, deletes it.
    assert await storage.erase_user("u2", batch_size=10)
    assert await raw_sql(storage_url, "SELECT send_id FROM send_contents") == [("snd_1",)]
    assert content_of(await storage.get_notification("n1"))[0] == "Mine"
    assert content_of(await storage.get_notification("n3"))[0] == "Version 3.0"


async def test_a_content_is_deleted_only_with_its_last_reader_whoever_deletes(
    storage_url: str,
) -> None:
    """The rule that cannot lose content: the count of readers is kept by the database
    (migration 0019's triggers), so a notification deleted by any statement, not only
    storage's own paths, releases its content, and only the last one deletes it."""
    async with opened(storage_url) as store:
        await store.migrate()
        await fan_out(store)
    refs = "SELECT number, refs FROM send_contents ORDER BY number"
    await raw_sql(storage_url, "DELETE FROM notifications WHERE id = $1", "n1")
    assert await raw_sql(storage_url, refs) == [(1, 1), (2, 1)]
    async with opened(storage_url) as store:
        assert content_of(await store.get_notification("n2"))[0] == "Release 3.0"
    await raw_sql(storage_url, "DELETE FROM notifications WHERE id = $1", "n2")
    assert await raw_sql(storage_url, refs) == [(2, 1)]
    # A later chunk of the send with the English rendering stores it again.
    async with opened(storage_url) as store:
        await store.create_user(user("u5"))
        await store.insert_notifications([fanned("n5", "u5", ENGLISH), fanned("n6", "u4", GERMAN)])
        assert content_of(await store.get_notification("n5"))[0] == "Release 3.0"
        assert content_of(await store.get_notification("n6"))[0] == "Version 3.0"
    assert await raw_sql(storage_url, refs) == [(2, 2), (3, 1)]  # numbered after the highest


async def test_the_rekey_reseals_shared_contents(storage_url: str) -> None:
    async with opened(storage_url, KeyRing([K1])) as store:
        await store.migrate()
        await fan_out(store)
    async with opened(storage_url, KeyRing([K2, K1])) as store:
        assert await store.rekey_batch("send_contents", after_id="", limit=10) == (
            2,
            max(row[0] for row in await raw_sql(storage_url, "SELECT id FROM send_contents")),
        )
        sealed = await raw_sql(storage_url, "SELECT title, channel_content FROM send_contents")
        assert all(value.startswith("enc:v1:k2:") for row in sealed for value in row)
        [leased] = await store.lease_due_deliveries(
            ["email"], now=CREATED_AT, limit=10, owner="w", lease_ms=1000
        )
        assert leased.content == {"subject": "Release 3.0 (mail)", "text": "Mail body"}
    # The shared contents no longer need k1 (the users' rows, not rekeyed here, still do).
    async with opened(storage_url, KeyRing([K2])) as store:
        assert content_of(await store.get_notification("n2"))[0] == "Release 3.0"
        assert content_of(await store.get_notification("n3"))[0] == "Version 3.0"
