"""The channel-delivery part of the `Storage` contract (storage/areas/channel_deliveries.py),
on every backend: plans committed with their notification, leases that two nodes never
share, outcomes, retries, receipts, cancellation by reads and acks (categories
respected), expiry, queue stats, and the data-protection duties (erasure, retention,
encryption at rest, the export's pages)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage import ConflictError, KeyRing, Storage, UnknownUserError
from storage.records import (
    ChannelQueueStats,
    DeliveryOutcome,
    LeasedDelivery,
    NewDevice,
    PlannedDelivery,
)
from tests.storage.conftest import CREATED_AT, note, opened, raw_sql, user

NOW = CREATED_AT + 60_000
LEASE_MS = 30_000
PUSH = {"title": "PushTitle", "body": "PushBody"}
EMAIL = {"subject": "MailSubject", "html": "<p>MailHtml</p>", "text": "MailText"}


def step(delivery_id: str, channel: str, due_at: int = NOW, **fields: Any) -> PlannedDelivery:
    return PlannedDelivery(id=delivery_id, channel=channel, due_at=due_at, **fields)


async def lease(
    storage: Storage, *channels: str, now: int = NOW, limit: int = 100, owner: str = "w1"
) -> list[LeasedDelivery]:
    return await storage.lease_due_deliveries(
        channels, now=now, limit=limit, owner=owner, lease_ms=LEASE_MS
    )


async def statuses(storage: Storage, notification_id: str) -> dict[str, tuple[str, str | None]]:
    """{delivery id: (status, reason)} of the notification's deliveries."""
    rows = await storage.channel_deliveries_of(notification_id)
    return {row.id: (row.status, row.reason) for row in rows}


async def ada(storage: Storage) -> None:
    """User u1 with an e-mail address, a phone, a web push subscription and an FCM token."""
    await storage.create_user(user("u1", email="ada@example.org", phone="+33611223344"))
    for device_id, kind, address, details in (
        ("dev-web", "webpush", "https://push.example/sub1", {"p256dh": "P", "auth": "A"}),
        ("dev-fcm", "fcm", "fcm-token-1", {}),
    ):
        await storage.upsert_device(
            NewDevice(
                id=device_id,
                user_id="u1",
                kind=kind,
                address=address,
                details=details,
                created_at=CREATED_AT,
            )
        )


def sent(delivery_id: str, **fields: Any) -> DeliveryOutcome:
    fields.setdefault("provider", "p1")
    return DeliveryOutcome(delivery_id=delivery_id, at=NOW + 1, status="sent", **fields)


# committed with the notification -------------------------------------------------------


async def test_plans_are_committed_with_their_notifications(storage: Storage) -> None:
    await ada(storage)
    await storage.create_user(user("u2"))
    records = await storage.insert_notifications(
        [
            note("n1", "u1"),
            note(
                "n2",
                "u1",
                deliveries=(
                    step("d-web", "webpush", device_id="dev-web"),
                    step("d-mail", "email", due_at=NOW + 600_000),
                    step("d-sms", "sms", status="skipped", reason="no_address"),
                ),
            ),
            note("n3", "u2", deliveries=(step("d-u2", "email", cancel_on_read=False),)),
        ]
    )
    assert [r.seq for r in records] == [1, 2, 1]
    assert await storage.channel_deliveries_of("n1") == []
    found = await storage.channel_deliveries_of("n2")
    # By due_at, then channel.
    assert [(d.id, d.seq, d.user_id, d.channel, d.status, d.reason) for d in found] == [
        ("d-sms", 2, "u1", "sms", "skipped", "no_address"),
        ("d-web", 2, "u1", "webpush", "scheduled", None),
        ("d-mail", 2, "u1", "email", "scheduled", None),
    ]
    web = found[1]
    assert (web.device_id, web.due_at, web.attempts, web.provider, web.fallback) == (
        "dev-web",
        NOW,
        0,
        None,
        False,
    )
    assert (web.created_at, web.updated_at) == (CREATED_AT, CREATED_AT)
    [other] = await storage.channel_deliveries_of("n3")
    assert (other.user_id, other.seq) == ("u2", 1)
    assert await storage.delivery_history_of("n2") == []


async def test_a_refused_batch_commits_no_delivery(storage: Storage) -> None:
    await ada(storage)
    with pytest.raises(UnknownUserError):
        await storage.insert_notifications(
            [
                note("n1", "u1", deliveries=(step("d1", "email"),)),
                note("n2", "ghost", deliveries=(step("d2", "email"),)),
            ]
        )
    await storage.insert_notifications([note("n3", "u1", deliveries=(step("d3", "email"),))])
    with pytest.raises(ConflictError):
        await storage.insert_notifications([note("n4", "u1", deliveries=(step("d3", "sms"),))])
    assert await storage.get_notification("n1") is None
    assert await storage.get_notification("n4") is None
    assert [d.id for d in await lease(storage, "email", "sms")] == ["d3"]


# leasing -------------------------------------------------------------------------------


async def test_lease_takes_the_oldest_due_rows_of_its_channels(storage: Storage) -> None:
    await ada(storage)
    await storage.insert_notifications(
        [
            note(
                "n1",
                "u1",
                deliveries=(
                    step("d-late", "email", due_at=NOW - 10),
                    step("d-future", "email", due_at=NOW + 1),
                    step("d-fcm", "fcm", due_at=NOW - 30, device_id="dev-fcm"),
                    step("d-sms", "sms", due_at=NOW - 50),
                ),
            ),
            note("n2", "u1", deliveries=(step("d-early", "email", due_at=NOW - 20),)),
            note("n3", "u1", deliveries=(step("d-queued", "email", status="queued"),)),
        ]
    )
    first = await lease(storage, "email", "fcm", limit=2)
    assert [d.id for d in first] == ["d-fcm", "d-early"]
    assert [d.attempts for d in first] == [1, 1]
    rest = await lease(storage, "email", "fcm", limit=10, owner="w2")
    assert [d.id for d in rest] == ["d-late", "d-queued"]  # not d-future, nor d-sms
    assert await lease(storage, "email", "fcm") == []
    assert await lease(storage, "email") == []
    assert await lease(storage, "email", limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        await lease(storage, "email", limit=-1)
    rows = {d.id: d for d in await storage.channel_deliveries_of("n1")}
    assert (rows["d-late"].status, rows["d-late"].attempts) == ("sending", 1)
    assert rows["d-future"].status == "scheduled"
    assert rows["d-sms"].status == "scheduled"
    assert [d.id for d in await lease(storage, "email", now=NOW + 1)] == ["d-future"]


async def test_a_leased_row_carries_what_sending_needs(storage: Storage) -> None:
    await ada(storage)
    await storage.insert_notifications(
        [
            note(
                "n1",
                "u1",
                title="Title",
                body="Body",
                data={"k": "v"},
                category="billing",
                priority="high",
                expires_at=NOW + 3_600_000,
                channel_content={"push": PUSH, "email": EMAIL},
                deliveries=(
                    step("d-web", "webpush", device_id="dev-web"),
                    step("d-fcm", "fcm", device_id="dev-fcm"),
                    step("d-mail", "email"),
                    step("d-sms", "sms"),
                    step("d-hook", "webhook", endpoint_id="ep1", event={"type": "x", "n": 1}),
                ),
            ),
            note("n2", "u1", deliveries=(step("d-gone", "apns", device_id="dev-gone"),)),
        ]
    )
    leased = {d.id: d for d in await lease(storage, "webpush", "fcm", "email", "sms", "webhook")}
    web = leased["d-web"]
    assert web.address == {"endpoint": "https://push.example/sub1", "p256dh": "P", "auth": "A"}
    assert (web.title, web.body, web.data, web.content) == ("Title", "Body", {"k": "v"}, PUSH)
    assert (web.notification_id, web.user_id, web.channel, web.device_id) == (
        "n1",
        "u1",
        "webpush",
        "dev-web",
    )
    assert (web.category, web.priority, web.created_at, web.expires_at, web.first_due_at) == (
        "billing",
        "high",
        CREATED_AT,
        NOW + 3_600_000,
        NOW,
    )
    assert leased["d-fcm"].address == {"token": "fcm-token-1"}
    assert leased["d-fcm"].content == PUSH
    assert (leased["d-mail"].address, leased["d-mail"].content) == (
        {"email": "ada@example.org"},
        EMAIL,
    )
    assert (leased["d-sms"].address, leased["d-sms"].content) == ({"phone": "+33611223344"}, None)
    hook = leased["d-hook"]
    assert (hook.endpoint_id, hook.event, hook.content) == ("ep1", {"type": "x", "n": 1}, None)
    # A device removed meanwhile: no address (the worker skips the row).
    [gone] = await lease(storage, "apns")
    assert (gone.address, gone.device_id) == ({}, "dev-gone")


async def test_two_leasers_never_get_the_same_row(storage: Storage, storage_url: str) -> None:
    """Guards the lease's lock (PostgreSQL: FOR UPDATE SKIP LOCKED, SQLite: the write
    transaction): two nodes leasing at once, through their own connections, must split
    the rows, never both send one."""
    await ada(storage)
    await storage.insert_notifications(
        [
            note(f"n{i}", "u1", deliveries=(step(f"d{i:03d}", "email", due_at=NOW - i),))
            for i in range(300)
        ]
    )
    taken: dict[str, list[str]] = {"a": [], "b": []}

    async def drain(store: Storage, owner: str) -> None:
        while batch := await lease(store, "email", limit=7, owner=owner):
            taken[owner] += [d.id for d in batch]

    async with opened(storage_url) as other:
        await asyncio.gather(
            drain(storage, "a"), drain(other, "b"), drain(storage, "a"), drain(other, "b")
        )
    together = taken["a"] + taken["b"]
    assert len(together) == len(set(together)) == 300
    rows = await raw_sql(
        storage_url,
        "SELECT lease_owner, count(*), max(attempts) FROM channel_deliveries "
        "WHERE status = 'sending' GROUP BY lease_owner ORDER BY lease_owner",
    )
    # Each row leased once (attempts 1) and owned by the leaser that got it. (On SQLite
    # one leaser may get them all: the other waits for the write lock meanwhile.)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (owner, len(ids), 1) for owner, ids in taken.items() if ids
    ]


async def test_a_lease_that_ran_out_is_taken_again(storage: Storage) -> None:
    await ada(storage)
    await storage.insert_notifications([note("n1", "u1", deliveries=(step("d1", "email"),))])
    assert [d.id for d in await lease(storage, "email", owner="dead")] == ["d1"]
    assert await lease(storage, "email", now=NOW + LEASE_MS - 1, owner="w2") == []
    [again] = await lease(storage, "email", now=NOW + LEASE_MS + 1, owner="w2")
    assert (again.id, again.attempts) == ("d1", 2)
    assert await lease(storage, "email", now=NOW + LEASE_MS + 2, owner="w3") == []


async def test_an_outcome_of_a_lease_that_ran_out_does_not_overwrite_the_new_one(
    storage: Storage,
) -> None:
    """Guards two nodes sending the same row: the first worker's lease ran out mid-send,
    another node leased the row again (attempt 2); the first worker's late outcome
    must not end the second attempt, which is still in flight."""
    await ada(storage)
    await storage.insert_notifications([note("n1", "u1", deliveries=(step("d1", "email"),))])
    [first] = await lease(storage, "email", owner="stalled")
    [second] = await lease(storage, "email", now=NOW + LEASE_MS + 1, owner="w2")
    assert (first.attempts, second.attempts) == (1, 2)
    late = DeliveryOutcome(delivery_id="d1", at=NOW + LEASE_MS + 5, status="failed", attempt=1)
    await storage.record_delivery_outcomes([late])
    [row] = await storage.channel_deliveries_of("n1")
    assert row.status == "sending"
    current = DeliveryOutcome(delivery_id="d1", at=NOW + LEASE_MS + 9, status="sent", attempt=2)
    await storage.record_delivery_outcomes([current])
    assert await statuses(storage, "n1") == {"d1": ("sent", None)}
    assert [h.status for h in await storage.delivery_history_of("n1")] == ["sent"]


# outcomes ------------------------------------------------------------------------------


async def test_outcomes_set_status_and_history_in_one_batch(storage: Storage) -> None:
    await ada(storage)
    await storage.insert_notifications(
        [
            note(
                "n1",
                "u1",
                deliveries=(step("d1", "email"), step("d2", "sms"), step("d3", "webpush")),
            )
        ]
    )
    await lease(storage, "email", "sms", "webpush")
    await storage.record_delivery_outcomes(
        [
            sent("d1", provider="smtp-b", fallback=True, provider_message_id="<m1@x>"),
            DeliveryOutcome(
                delivery_id="d2",
                at=NOW + 2,
                status="failed",
                provider="twilio",
                error="invalid number",
                provider_code="21211",
                detail={"encoding": "GSM-7", "segments": 2},
                duration_ms=40,
            ),
            DeliveryOutcome(delivery_id="d3", at=NOW + 3, status="skipped", error="no address"),
        ]
    )
    rows = {d.id: d for d in await storage.channel_deliveries_of("n1")}
    d1, d2, d3 = rows["d1"], rows["d2"], rows["d3"]
    assert (d1.status, d1.provider, d1.fallback, d1.provider_message_id, d1.last_error) == (
        "sent",
        "smtp-b",
        True,
        "<m1@x>",
        None,
    )
    assert (d1.updated_at, d1.attempts) == (NOW + 1, 1)
    assert (d2.status, d2.provider, d2.last_error) == ("failed", "twilio", "invalid number")
    assert (d3.status, d3.provider) == ("skipped", None)
    history = await storage.delivery_history_of("n1")
    assert [(h.delivery_id, h.status, h.at) for h in history] == [
        ("d1", "sent", NOW + 1),
        ("d2", "failed", NOW + 2),
        ("d3", "skipped", NOW + 3),
    ]
    assert (history[0].provider_message_id, history[0].fallback) == ("<m1@x>", True)
    assert (history[1].provider_code, history[1].detail, history[1].duration_ms) == (
        "21211",
        {"encoding": "GSM-7", "segments": 2},
        40,
    )
    assert await lease(storage, "email", "sms", "webpush", now=NOW + LEASE_MS * 2) == []


async def test_latest_failures_newest_first_within_the_scanned_range(storage: Storage) -> None:
    """What the console lists: failed history rows only, newest first, paged by history
    id, and never more than `scan` history rows looked at."""
    await ada(storage)
    deliveries = tuple(step(f"d{n}", "email") for n in range(1, 5))
    await storage.insert_notifications([note("n1", "u1", deliveries=deliveries)])
    await lease(storage, "email")
    failed = [
        DeliveryOutcome(
            delivery_id=f"d{n}",
            at=NOW + n,
            status="failed",
            provider="smtp",
            error=f"refused {n}",
            provider_code="550",
        )
        for n in (1, 3, 4)
    ]
    await storage.record_delivery_outcomes([failed[0], sent("d2"), *failed[1:]])

    page = await storage.latest_failed_deliveries(before=None, limit=2, scan=100)
    assert [(f.delivery_id, f.error, f.at) for f in page] == [
        ("d4", "refused 4", NOW + 4),
        ("d3", "refused 3", NOW + 3),
    ]
    first = page[0]
    assert (first.notification_id, first.user_id, first.channel, first.provider) == (
        "n1",
        "u1",
        "email",
        "smtp",
    )
    assert (first.provider_code, first.attempts) == ("550", 1)
    rest = await storage.latest_failed_deliveries(before=page[-1].history_id, limit=2, scan=100)
    assert [f.delivery_id for f in rest] == ["d1"]  # d2's "sent" row is not a failure
    # The scan bounds the work: the one history row before d3's is d2's "sent", so
    # nothing comes back, though d1's failure lies further back.
    assert (
        await storage.latest_failed_deliveries(before=page[-1].history_id, limit=10, scan=1) == []
    )


async def test_a_retry_goes_back_to_the_queue_due_later(storage: Storage) -> None:
    await ada(storage)
    await storage.insert_notifications([note("n1", "u1", deliveries=(step("d1", "email"),))])
    await lease(storage, "email")
    retry_at = NOW + 5_000
    await storage.record_delivery_outcomes(
        [
            DeliveryOutcome(
                delivery_id="d1",
                at=NOW + 1,
                status="queued",
                provider="smtp-a",
                next_due_at=retry_at,
                error="421 try later",
                provider_code="421",
            )
        ]
    )
    [row] = await storage.channel_deliveries_of("n1")
    assert (row.status, row.due_at, row.last_error, row.provider) == (
        "queued",
        retry_at,
        "421 try later",
        "smtp-a",
    )
    assert await lease(storage, "email", now=retry_at - 1) == []
    [again] = await lease(storage, "email", now=retry_at)
    assert (again.attempts, again.first_due_at) == (2, NOW)
    await storage.record_delivery_outcomes([sent("d1", provider="smtp-a")])
    [row] = await storage.channel_deliveries_of("n1")
    assert (row.status, row.last_error, row.attempts) == ("sent", None, 2)
    history = await storage.delivery_history_of("n1")
    assert [(h.status, h.error) for h in history] == [("queued", "421 try later"), ("sent", None)]


async def test_an_outcome_for_a_row_no_longer_sending_is_ignored(storage: Storage) -> None:
    """Guards a worker whose lease ran out overwriting what happened since: the row was
    cancelled (its notification expired) when another worker took it again."""
    await ada(storage)
    await storage.insert_notifications(
        [
            note("n1", "u1", expires_at=NOW + LEASE_MS, deliveries=(step("d1", "email"),)),
            note("n2", "u1", deliveries=(step("d2", "email"),)),
        ]
    )
    assert len(await lease(storage, "email", owner="slow")) == 2
    assert await lease(storage, "email", now=NOW + LEASE_MS + 1) != []  # d2 again; d1 expired
    await storage.record_delivery_outcomes(
        [sent("d1"), sent("dlv-unknown"), DeliveryOutcome(delivery_id="d2", at=1, status="sent")]
    )
    assert await statuses(storage, "n1") == {"d1": ("cancelled", "expired")}
    assert await statuses(storage, "n2") == {"d2": ("sent", None)}
    assert [(h.delivery_id, h.status) for h in await storage.delivery_history_of("n1")] == [
        ("d1", "cancelled")
    ]
    # A row never leased takes no outcome either.
    await storage.insert_notifications([note("n3", "u1", deliveries=(step("d3", "email"),))])
    await storage.record_delivery_outcomes([sent("d3")])
    assert await statuses(storage, "n3") == {"d3": ("scheduled", None)}


async def test_a_dead_address_removes_its_device(storage: Storage) -> None:
    await ada(storage)
    await storage.insert_notifications(
        [
            note(
                "n1",
                "u1",
                deliveries=(
                    step("d-web", "webpush", device_id="dev-web"),
                    step("d-fcm", "fcm", device_id="dev-fcm"),
                ),
            )
        ]
    )
    await lease(storage, "webpush", "fcm")
    await storage.record_delivery_outcomes(
        [
            DeliveryOutcome(
                delivery_id="d-web",
                at=NOW + 1,
                status="failed",
                provider="webpush",
                error="410 Gone",
                remove_device=True,
            ),
            sent("d-fcm"),
        ]
    )
    assert [d.id for d in await storage.list_devices("u1")] == ["dev-fcm"]
    assert await statuses(storage, "n1") == {
        "d-fcm": ("sent", None),
        "d-web": ("failed", None),
    }


async def test_a_provider_receipt_updates_the_row_it_names(storage: Storage) -> None:
    await ada(storage)
    await storage.insert_notifications(
        [note("n1", "u1", deliveries=(step("d1", "sms"), step("d2", "sms")))]
    )
    await lease(storage, "sms")
    await storage.record_delivery_outcomes(
        [
            sent("d1", provider="twilio", provider_message_id="SM1"),
            sent("d2", provider="twilio", provider_message_id="SM2"),
        ]
    )
    found = await storage.record_delivery_receipt(
        provider="twilio", provider_message_id="SM1", status="delivered", at=NOW + 9, error=None
    )
    failed = await storage.record_delivery_receipt(
        provider="twilio",
        provider_message_id="SM2",
        status="failed",
        at=NOW + 10,
        error="30003 unreachable",
    )
    assert (found, failed) == (True, True)
    for provider, message_id in (("twilio", "SM404"), ("other", "SM1")):
        assert not await storage.record_delivery_receipt(
            provider=provider,
            provider_message_id=message_id,
            status="delivered",
            at=NOW + 11,
            error=None,
        )
    rows = {d.id: d for d in await storage.channel_deliveries_of("n1")}
    assert (rows["d1"].status, rows["d1"].updated_at) == ("delivered", NOW + 9)
    assert (rows["d2"].status, rows["d2"].last_error) == ("failed", "30003 unreachable")
    history = await storage.delivery_history_of("n1")
    assert [(h.delivery_id, h.status, h.provider_message_id) for h in history] == [
        ("d1", "sent", "SM1"),
        ("d2", "sent", "SM2"),
        ("d1", "delivered", "SM1"),
        ("d2", "failed", "SM2"),
    ]
    assert history[-1].error == "30003 unreachable"


async def test_an_outcome_without_a_send_gives_its_lease_attempt_back(storage: Storage) -> None:
    """Guards retries spent on waiting: a row requeued because every breaker of its
    channel was open, or skipped for want of an address, was leased (attempts + 1) but
    never sent; the update that records it gives the attempt back. Only under its own
    lease: a late outcome of a lease that ran out takes nothing from the new one."""
    await ada(storage)
    await storage.insert_notifications(
        [note("n1", "u1", deliveries=(step("d1", "email"), step("d2", "sms"), step("d3", "fcm")))]
    )
    assert [d.attempts for d in await lease(storage, "email", "sms", "fcm")] == [1, 1, 1]
    retry_at = NOW + 30_000
    await storage.record_delivery_outcomes(
        [
            DeliveryOutcome(
                delivery_id="d1",
                at=NOW + 1,
                status="queued",
                next_due_at=retry_at,
                error="circuit open",
                attempt=1,
                send_attempted=False,
            ),
            DeliveryOutcome(
                delivery_id="d2",
                at=NOW + 1,
                status="skipped",
                error="no_address",
                attempt=1,
                send_attempted=False,
            ),
            DeliveryOutcome(delivery_id="d3", at=NOW + 1, status="queued", next_due_at=retry_at),
        ]
    )
    rows = {d.id: d for d in await storage.channel_deliveries_of("n1")}
    assert {i: (r.status, r.attempts) for i, r in rows.items()} == {
        "d1": ("queued", 0),
        "d2": ("skipped", 0),
        "d3": ("queued", 1),  # a send was attempted: it counts
    }
    assert [(h.delivery_id, h.status) for h in await storage.delivery_history_of("n1")] == [
        ("d1", "queued"),
        ("d2", "skipped"),
        ("d3", "queued"),
    ]
    [again] = await lease(storage, "email", now=retry_at, owner="stalled")
    assert again.attempts == 1
    [taken_over] = await lease(storage, "email", now=retry_at + LEASE_MS + 1, owner="w2")
    assert taken_over.attempts == 2
    late = DeliveryOutcome(
        delivery_id="d1",
        at=retry_at + LEASE_MS + 2,
        status="queued",
        attempt=1,
        send_attempted=False,
    )
    await storage.record_delivery_outcomes([late])
    [row] = [d for d in await storage.channel_deliveries_of("n1") if d.id == "d1"]
    assert (row.status, row.attempts) == ("sending", 2)
    await storage.record_delivery_outcomes([sent("d1", attempt=2)])
    [row] = [d for d in await storage.channel_deliveries_of("n1") if d.id == "d1"]
    assert (row.status, row.attempts) == ("sent", 2)


# the user's history filtered by delivery ------------------------------------------------


async def history_with_deliveries(storage: Storage) -> None:
    """u1's n1..n6 (seq 1..6) and u2's n7, their deliveries settled as:
    n1 email sent, sms skipped; n2 none; n3 email failed, webpush sent; n4 webpush
    scheduled; n5 (billing) email failed; n6 sms failed, email skipped; n7 email failed."""
    await ada(storage)
    await storage.create_user(user("u2", email="bob@example.org"))
    skipped: dict[str, Any] = {"status": "skipped", "reason": "no_address"}
    await storage.insert_notifications(
        [
            note(
                "n1", "u1", deliveries=(step("n1-mail", "email"), step("n1-sms", "sms", **skipped))
            ),
            note("n2", "u1"),
            note(
                "n3",
                "u1",
                deliveries=(
                    step("n3-mail", "email"),
                    step("n3-web", "webpush", device_id="dev-web"),
                ),
            ),
            note("n4", "u1", deliveries=(step("n4-web", "webpush", due_at=NOW + 600_000),)),
            note("n5", "u1", category="billing", deliveries=(step("n5-mail", "email"),)),
            note(
                "n6", "u1", deliveries=(step("n6-sms", "sms"), step("n6-mail", "email", **skipped))
            ),
            note("n7", "u2", deliveries=(step("n7-mail", "email"),)),
        ]
    )
    leased = await lease(storage, "email", "sms", "webpush")
    failed = {"n3-mail", "n5-mail", "n6-sms", "n7-mail"}
    assert {d.id for d in leased} == failed | {"n1-mail", "n3-web"}
    await storage.record_delivery_outcomes(
        [
            DeliveryOutcome(delivery_id=d.id, at=NOW + 1, status="failed")
            if d.id in failed
            else sent(d.id)
            for d in leased
        ]
    )


async def listed(storage: Storage, user_id: str = "u1", **filters: Any) -> list[str]:
    found = await storage.list_notifications(user_id, before_seq=None, limit=50, **filters)
    return [record.id for record in found]


async def test_history_keeps_notifications_with_a_matching_delivery(storage: Storage) -> None:
    await history_with_deliveries(storage)
    assert await listed(storage, delivery_channel="email") == ["n6", "n5", "n3", "n1"]
    assert await listed(storage, delivery_status="failed") == ["n6", "n5", "n3"]
    # Both: one delivery matches both. n6 has a failed SMS and a skipped email.
    assert await listed(storage, delivery_channel="email", delivery_status="failed") == ["n5", "n3"]
    assert await listed(storage, delivery_channel="sms", delivery_status="skipped") == ["n1"]
    assert await listed(storage, delivery_channel="webpush", delivery_status="scheduled") == ["n4"]
    assert await listed(storage, delivery_channel="apns") == []
    assert await listed(storage, delivery_status="delivered") == []
    assert await listed(storage, "u2", delivery_status="failed") == ["n7"]


async def test_delivery_filters_are_in_the_query_with_the_others(storage: Storage) -> None:
    """Guards short pages and cursors over hidden rows: `limit` counts only what
    matches every filter, so a page is full and ends on a notification it lists."""
    await history_with_deliveries(storage)
    page = await storage.list_notifications(
        "u1", before_seq=None, limit=2, delivery_channel="webpush"
    )
    assert [r.id for r in page] == ["n4", "n3"]  # past n6 and n5, which have none
    page = await storage.list_notifications(
        "u1", before_seq=None, limit=2, delivery_status="failed"
    )
    assert [r.id for r in page] == ["n6", "n5"]
    rest = await storage.list_notifications(
        "u1", before_seq=page[-1].seq, limit=2, delivery_status="failed"
    )
    assert [r.id for r in rest] == ["n3"]
    assert await listed(storage, delivery_status="failed", categories=["billing"]) == ["n5"]
    assert await listed(storage, delivery_channel="email", categories=["news"]) == []
    await storage.mark_read("u1", ["n3", "n5"], NOW + 2)
    assert await listed(storage, delivery_status="failed", unread_only=True) == ["n6"]


# cancellation --------------------------------------------------------------------------


async def plan_everywhere(storage: Storage, categories: list[str | None]) -> None:
    """u1's notifications n1.. (seq 1..) of these categories, each with a push step, an
    e-mail step that a read does not cancel, and one already sent."""
    await ada(storage)
    await storage.insert_notifications(
        [
            note(
                f"n{seq}",
                "u1",
                category=category,
                deliveries=(
                    step(f"d{seq}-push", "fcm", device_id="dev-fcm", due_at=NOW + 30_000),
                    step(f"d{seq}-keep", "email", cancel_on_read=False, due_at=NOW + 30_000),
                    step(f"d{seq}-sent", "sms", due_at=NOW - 1),
                ),
            )
            for seq, category in enumerate(categories, start=1)
        ]
    )
    await lease(storage, "sms")
    await storage.record_delivery_outcomes(
        [sent(f"d{seq}-sent") for seq in range(1, len(categories) + 1)]
    )


async def cancelled(storage: Storage, count: int) -> dict[str, str | None]:
    """{delivery id: reason} of u1's cancelled rows among n1..n{count}."""
    found = {}
    for seq in range(1, count + 1):
        for delivery in await storage.channel_deliveries_of(f"n{seq}"):
            if delivery.status == "cancelled":
                found[delivery.id] = delivery.reason
    return found


async def test_a_read_cancels_the_unsent_steps_of_what_it_read(storage: Storage) -> None:
    await plan_everywhere(storage, [None, None, None])
    marked = await storage.mark_read("u1", ["n2", "n3"], NOW + 5)
    assert [m.id for m in marked] == ["n2", "n3"]
    assert await cancelled(storage, 3) == {"d2-push": "read", "d3-push": "read"}
    history = await storage.delivery_history_of("n2")
    cancel = [h for h in history if h.status == "cancelled"]
    assert [(h.delivery_id, h.at, h.detail) for h in cancel] == [
        ("d2-push", NOW + 5, {"reason": "read"})
    ]
    # Read again: nothing more.
    assert await storage.mark_read("u1", ["n2"], NOW + 6) == []
    assert len(await storage.delivery_history_of("n2")) == len(history)
    assert await lease(storage, "fcm", now=NOW + 60_000) != []  # n1's push still goes


async def test_read_all_cancels_only_within_its_categories(storage: Storage) -> None:
    """Guards a key limited to `billing` stopping the push of a marketing notification
    it may not even see."""
    await plan_everywhere(storage, ["billing", "marketing", "billing", None])
    assert await storage.mark_read("u1", ["n2"], NOW + 1, categories=["billing"]) == []
    assert await cancelled(storage, 4) == {}
    assert await storage.mark_all_read("u1", NOW + 2, categories=["billing"]) == (2, 3)
    assert await cancelled(storage, 4) == {"d1-push": "read", "d3-push": "read"}
    assert await storage.mark_all_read("u1", NOW + 3) == (2, 4)
    assert await cancelled(storage, 4) == {f"d{seq}-push": "read" for seq in range(1, 5)}


async def test_an_ack_cancels_the_unsent_steps_up_to_it(storage: Storage) -> None:
    await plan_everywhere(storage, ["billing", "billing", "marketing", "billing", "billing"])
    await storage.advance_cursors(sent={"u1": 5}, acked={"u1": 2}, at=NOW + 1)
    assert await cancelled(storage, 5) == {"d1-push": "acked", "d2-push": "acked"}
    # A socket limited to billing acks 5, but cannot vouch for seq 3: stops at 2.
    await storage.advance_cursors(sent={}, acked={"u1": 5}, at=NOW + 2, within=["billing"])
    assert await cancelled(storage, 5) == {"d1-push": "acked", "d2-push": "acked"}
    await storage.advance_cursors(sent={}, acked={"u1": 4}, at=NOW + 3)
    assert set(await cancelled(storage, 5)) == {"d1-push", "d2-push", "d3-push", "d4-push"}
    history = await storage.delivery_history_of("n4")
    assert [(h.status, h.at, h.detail) for h in history if h.status == "cancelled"] == [
        ("cancelled", NOW + 3, {"reason": "acked"})
    ]


async def test_cancel_unsent_deliveries_by_notification_or_seq(storage: Storage) -> None:
    await plan_everywhere(storage, [None, None, None, None])
    await storage.create_user(user("u2"))
    await storage.insert_notifications([note("x1", "u2", deliveries=(step("dx", "email"),))])
    assert (
        await storage.cancel_unsent_deliveries(
            "u1", notification_ids=["n3", "x1"], reason="recalled", at=NOW
        )
        == 1
    )
    assert await storage.cancel_unsent_deliveries("u1", up_to_seq=2, reason="read", at=NOW) == 2
    assert await cancelled(storage, 4) == {
        "d1-push": "read",
        "d2-push": "read",
        "d3-push": "recalled",
    }
    assert await storage.cancel_unsent_deliveries("u1", up_to_seq=2, reason="read", at=NOW) == 0
    assert await statuses(storage, "x1") == {"dx": ("scheduled", None)}


async def test_a_row_being_sent_is_not_cancelled(storage: Storage) -> None:
    await ada(storage)
    await storage.insert_notifications([note("n1", "u1", deliveries=(step("d1", "email"),))])
    await lease(storage, "email")
    await storage.mark_read("u1", ["n1"], NOW + 1)
    assert await statuses(storage, "n1") == {"d1": ("sending", None)}
    await storage.record_delivery_outcomes([sent("d1")])
    assert await statuses(storage, "n1") == {"d1": ("sent", None)}


async def test_rows_of_an_expired_notification_are_cancelled_not_leased(storage: Storage) -> None:
    await ada(storage)
    await storage.insert_notifications(
        [
            note("n1", "u1", expires_at=NOW, deliveries=(step("d1", "email", due_at=NOW - 5),)),
            note("n2", "u1", expires_at=NOW + 1, deliveries=(step("d2", "email"),)),
        ]
    )
    assert [d.id for d in await lease(storage, "email")] == ["d2"]
    assert await statuses(storage, "n1") == {"d1": ("cancelled", "expired")}
    [history] = await storage.delivery_history_of("n1")
    assert (history.status, history.at, history.detail) == ("cancelled", NOW, {"reason": "expired"})


# queue stats ---------------------------------------------------------------------------


async def test_queue_stats_per_channel(storage: Storage) -> None:
    await ada(storage)
    assert await storage.channel_queue_stats(now=NOW) == []
    await storage.insert_notifications(
        [
            note(
                "n1",
                "u1",
                deliveries=(
                    step("e1", "email", due_at=NOW - 100),
                    step("e2", "email", due_at=NOW - 50, status="queued"),
                    step("e3", "email", due_at=NOW + 100),
                    step("e4", "email", status="skipped", reason="preference"),
                    step("s1", "sms", due_at=NOW - 10),
                    step("s2", "sms", due_at=NOW - 5),
                ),
            )
        ]
    )
    await lease(storage, "sms", limit=1)
    assert await storage.channel_queue_stats(now=NOW) == [
        ChannelQueueStats(channel="email", due=2, scheduled=1, sending=0, oldest_due_at=NOW - 100),
        ChannelQueueStats(channel="sms", due=1, scheduled=0, sending=1, oldest_due_at=NOW - 5),
    ]


# data protection -----------------------------------------------------------------------

K1 = ("k1", bytes(range(32)))


async def _delivery_rows(url: str) -> list[tuple[Any, ...]]:
    return await raw_sql(
        url,
        "SELECT d.id, count(h.id) FROM channel_deliveries d "
        "LEFT JOIN channel_delivery_history h ON h.delivery_id = d.id GROUP BY d.id ORDER BY d.id",
    )


async def test_erasure_removes_deliveries_and_their_history(
    storage: Storage, storage_url: str
) -> None:
    await ada(storage)
    await storage.create_user(user("u2"))
    await storage.insert_notifications(
        [note(f"n{i}", "u1", deliveries=(step(f"d{i}", "email"),)) for i in range(5)]
        + [note("x1", "u2", deliveries=(step("dx", "email"),))]
    )
    await lease(storage, "email")
    await storage.record_delivery_outcomes([sent(f"d{i}") for i in range(5)] + [sent("dx")])
    assert await storage.erase_user("u1", batch_size=2)
    assert await _delivery_rows(storage_url) == [("dx", 1)]
    assert await raw_sql(storage_url, "SELECT count(*) FROM channel_delivery_history") == [(1,)]


async def test_retention_removes_the_deliveries_of_what_it_purges(
    storage: Storage, storage_url: str
) -> None:
    await ada(storage)
    await storage.insert_notifications(
        [
            note("old", "u1", created_at=CREATED_AT - 100, deliveries=(step("d-old", "email"),)),
            note("new", "u1", deliveries=(step("d-new", "email"),)),
        ]
    )
    await lease(storage, "email")
    await storage.record_delivery_outcomes([sent("d-old"), sent("d-new")])
    assert await storage.purge_notifications(created_before=CREATED_AT, limit=10) == 1
    assert await _delivery_rows(storage_url) == [("d-new", 1)]


async def test_content_is_sealed_at_rest(storage_url: str) -> None:
    """Guards per-channel content and webhook events stored readable: they hold the
    same personal data as title and body."""
    secrets = ("PushTitle", "MailHtml", "MailSubject", "EventSecret")
    async with opened(storage_url, KeyRing([K1])) as store:
        await store.migrate()
        await ada(store)
        await store.insert_notifications(
            [
                note(
                    "n1",
                    "u1",
                    channel_content={"push": PUSH, "email": EMAIL},
                    deliveries=(
                        step("d-mail", "email"),
                        step("d-hook", "webhook", event={"text": "EventSecret"}),
                    ),
                )
            ]
        )
        leased = {d.id: d for d in await lease(store, "email", "webhook")}
        assert leased["d-mail"].content == EMAIL
        assert leased["d-hook"].event == {"text": "EventSecret"}
        assert leased["d-mail"].address == {"email": "ada@example.org"}
        assert await store.count_not_under_active_key() == 0
    stored = await raw_sql(
        storage_url,
        "SELECT n.channel_content, d.event FROM notifications n "
        "JOIN channel_deliveries d ON d.notification_id = n.id WHERE d.id = 'd-hook'",
    )
    assert all(value.startswith("enc:v1:k1:") for value in stored[0])
    for table in ("notifications", "channel_deliveries", "channel_delivery_history"):
        raw = repr(await raw_sql(storage_url, f"SELECT * FROM {table}"))  # noqa: S608
        assert not [secret for secret in secrets if secret in raw], table


async def test_rekey_seals_content_written_in_plaintext(storage_url: str) -> None:
    async with opened(storage_url) as plain:
        await plain.migrate()
        await ada(plain)
        await plain.insert_notifications(
            [
                note(
                    "n1",
                    "u1",
                    channel_content={"push": PUSH},
                    deliveries=(step("d-hook", "webhook", event={"text": "EventSecret"}),),
                )
            ]
        )
    async with opened(storage_url, KeyRing([K1])) as store:
        # Rows: u1 (e-mail, phone), n1 (channel content), d-hook (event).
        assert await store.count_not_under_active_key() == 3
        for table in ("users", "notifications", "channel_deliveries"):
            assert await store.rekey_batch(table, after_id="", limit=10) != (0, None)
        assert await store.count_not_under_active_key() == 0
        [hook] = await lease(store, "webhook")
        assert hook.event == {"text": "EventSecret"}


async def test_export_reads_a_users_deliveries_page_by_page(storage: Storage) -> None:
    await ada(storage)
    await storage.create_user(user("u2"))
    await storage.insert_notifications(
        [
            note("n1", "u1", deliveries=(step("b", "email"), step("a", "sms"))),
            note("n2", "u1"),
            note("n3", "u1", deliveries=(step("c", "email"),)),
            note("x1", "u2", deliveries=(step("x", "email"),)),
        ]
    )
    await lease(storage, "email", limit=1)
    await storage.record_delivery_outcomes([sent("b")])
    first = await storage.channel_deliveries_of_user("u1", after=None, limit=2)
    assert [(d.seq, d.id) for d in first] == [(1, "a"), (1, "b")]
    rest = await storage.channel_deliveries_of_user("u1", after=(1, "b"), limit=2)
    assert [(d.seq, d.id) for d in rest] == [(3, "c")]
    assert await storage.channel_deliveries_of_user("u1", after=(3, "c"), limit=2) == []
    history = await storage.delivery_history_of_deliveries(["a", "b", "nope"])
    assert [h.status for h in history["b"]] == ["sent"]
    assert (history["a"], history["nope"]) == ([], [])
    assert await storage.delivery_history_of_deliveries([]) == {}
