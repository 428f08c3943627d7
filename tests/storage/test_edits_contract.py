"""The edit and retract part of the `Storage` contract (issue #13, point 7), on every
backend: versions, the concurrent-edit guard, content sealed at rest, and the retract
that clears the content, keeps the seq and cancels the steps not sent yet."""

from __future__ import annotations

from storage import KeyRing, Storage
from storage.records import PlannedDelivery
from tests.storage.conftest import CREATED_AT, note, opened, raw_sql, user

EDITED_AT = CREATED_AT + 5_000
RETRACTED_AT = CREATED_AT + 9_000


async def _one_sent(storage: Storage, **fields: object) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications(
        [note("n1", "u1", title="first", body="b1", data={"k": 1}, **fields)]
    )


async def test_a_new_notification_is_version_1_never_edited(storage: Storage) -> None:
    await _one_sent(storage)
    found = await storage.get_notification("n1")
    assert found is not None
    assert (found.version, found.updated_at, found.retracted_at) == (1, None, None)


async def test_update_replaces_content_and_raises_version(storage: Storage) -> None:
    await _one_sent(storage)
    await storage.insert_notifications([note("n2", "u1", title="other")])
    updated = await storage.update_notification(
        "n1", title="second", body=None, data={"k": 2}, expected_version=1, at=EDITED_AT
    )
    assert updated is not None
    assert (updated.title, updated.body, updated.data) == ("second", None, {"k": 2})
    assert (updated.seq, updated.version, updated.updated_at) == (1, 2, EDITED_AT)
    # Every read shows the current version: get, history, replay.
    assert await storage.get_notification("n1") == updated
    listed = await storage.list_notifications("u1", before_seq=None, limit=10)
    assert [(r.id, r.version, r.title) for r in listed] == [("n2", 1, "other"), ("n1", 2, "second")]
    replayed = await storage.notifications_after("u1", after_seq=0, limit=10)
    assert replayed[0] == updated


async def test_update_at_a_stale_version_writes_nothing(storage: Storage) -> None:
    """Guards the read-merge-write of a partial PATCH: two edits read version 1; the
    second must not overwrite the first's content without seeing it."""
    await _one_sent(storage)
    assert await storage.update_notification(
        "n1", title="a", body="b", data=None, expected_version=1, at=EDITED_AT
    )
    stale = await storage.update_notification(
        "n1", title="lost", body="b", data=None, expected_version=1, at=EDITED_AT + 1
    )
    assert stale is None
    found = await storage.get_notification("n1")
    assert found is not None
    assert (found.title, found.version) == ("a", 2)


async def test_update_of_unknown_or_retracted_is_none(storage: Storage) -> None:
    await _one_sent(storage)
    assert (
        await storage.update_notification(
            "nope", title="x", body=None, data=None, expected_version=1, at=EDITED_AT
        )
        is None
    )
    assert await storage.retract_notification("n1", RETRACTED_AT) is not None
    assert (
        await storage.update_notification(
            "n1", title="x", body=None, data=None, expected_version=2, at=EDITED_AT
        )
        is None
    )


async def test_retract_clears_content_keeps_seq_and_cancels_unsent_steps(
    storage: Storage,
) -> None:
    await storage.create_user(user("u1", email="u1@example.test"))
    steps = [
        PlannedDelivery(id="d_email", channel="email", due_at=CREATED_AT + 60_000),
        # Not cancelled by a read, but by a retract: the content is gone.
        PlannedDelivery(
            id="d_hook",
            channel="webhook",
            due_at=CREATED_AT,
            status="queued",
            cancel_on_read=False,
        ),
    ]
    await storage.insert_notifications(
        [
            note("n1", "u1", title="t", body="b", data={"k": 1}, deliveries=steps),
            note("n2", "u1", title="kept"),
        ]
    )
    retracted = await storage.retract_notification("n1", RETRACTED_AT)
    assert retracted is not None
    assert (retracted.title, retracted.body, retracted.data) == (None, None, None)
    assert (retracted.seq, retracted.version) == (1, 2)
    assert (retracted.retracted_at, retracted.updated_at) == (RETRACTED_AT, RETRACTED_AT)
    assert await storage.get_notification("n1") == retracted
    replayed = await storage.notifications_after("u1", after_seq=0, limit=10)
    assert [(r.seq, r.retracted_at) for r in replayed] == [(1, RETRACTED_AT), (2, None)]

    deliveries = await storage.channel_deliveries_of("n1")
    assert {(d.id, d.status, d.reason) for d in deliveries} == {
        ("d_email", "cancelled", "retracted"),
        ("d_hook", "cancelled", "retracted"),
    }
    history = await storage.delivery_history_of("n1")
    assert sorted((h.delivery_id, h.status, h.at) for h in history) == [
        ("d_email", "cancelled", RETRACTED_AT),
        ("d_hook", "cancelled", RETRACTED_AT),
    ]
    # A second retract changes nothing.
    assert await storage.retract_notification("n1", RETRACTED_AT + 1) is None
    assert len(await storage.delivery_history_of("n1")) == 2


async def test_edited_content_is_sealed_and_retract_removes_it(storage_url: str) -> None:
    async with opened(storage_url, KeyRing([("k1", bytes(range(32)))])) as store:
        await store.migrate()
        await _one_sent(store)
        await store.update_notification(
            "n1",
            title="secret title",
            body="secret body",
            data={"s": "secret"},
            expected_version=1,
            at=EDITED_AT,
        )
        rows = await raw_sql(storage_url, "SELECT title, body, data FROM notifications")
        assert all("secret" not in str(value) for value in rows[0])
        found = await store.get_notification("n1")
        assert found is not None
        assert (found.title, found.data) == ("secret title", {"s": "secret"})
        await store.retract_notification("n1", RETRACTED_AT)
        rows = await raw_sql(
            storage_url, "SELECT title, body, data, channel_content, seq FROM notifications"
        )
        assert rows == [(None, None, None, None, 1)]


async def test_update_queues_one_push_resend_per_device_already_sent(
    storage: Storage, storage_url: str
) -> None:
    """Guards the re-send of an edit: a device whose push went out gets one new step
    due at the edit (the first push keeps its history); a device whose step is still
    to send, and the other channels, get none; a second edit adds one more per device,
    never a copy of a re-send."""
    await storage.create_user(user("u1", email="u1@example.test"))
    steps = [
        PlannedDelivery(id="d_sent", channel="webpush", due_at=CREATED_AT, device_id="dev1"),
        PlannedDelivery(id="d_later", channel="fcm", due_at=CREATED_AT + 60_000, device_id="dev2"),
        PlannedDelivery(id="d_mail", channel="email", due_at=CREATED_AT),
    ]
    await storage.insert_notifications([note("n1", "u1", title="t", deliveries=steps)])
    await raw_sql(
        storage_url,
        "UPDATE channel_deliveries SET status = 'sent' WHERE id IN ('d_sent', 'd_mail')",
    )
    await storage.update_notification(
        "n1", title="t2", body=None, data=None, expected_version=1, at=EDITED_AT
    )
    deliveries = {d.id: d for d in await storage.channel_deliveries_of("n1")}
    assert set(deliveries) == {"d_sent", "d_later", "d_mail", "d_sent.v2"}
    resend = deliveries["d_sent.v2"]
    assert (resend.channel, resend.status, resend.due_at) == ("webpush", "queued", EDITED_AT)
    assert deliveries["d_sent"].status == "sent"

    await raw_sql(storage_url, "UPDATE channel_deliveries SET status = 'sent'")
    stale = await storage.update_notification(
        "n1", title="lost", body=None, data=None, expected_version=1, at=EDITED_AT + 1
    )
    assert stale is None
    await storage.update_notification(
        "n1", title="t3", body=None, data=None, expected_version=2, at=EDITED_AT + 2
    )
    ids = {d.id for d in await storage.channel_deliveries_of("n1")}
    assert ids == {"d_sent", "d_later", "d_mail", "d_sent.v2", "d_sent.v3", "d_later.v3"}
