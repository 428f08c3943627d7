"""The engagement part of the `Storage` contract (storage/areas/engagement.py), on every
backend, with synthetic read histories: notifications inserted, their channel deliveries
sent and the notifications read at chosen instants; and the `decision` a planned
delivery carries, stored and read back."""

from __future__ import annotations

from storage import Storage
from storage.records import DeliveryOutcome, PlannedDelivery, ScheduledNotification
from tests.storage.conftest import CREATED_AT, note, user

HOUR = 3_600_000
LEASE_MS = 30_000


async def read_at(storage: Storage, notification_id: str, at: int) -> None:
    await storage.mark_read("u1", [notification_id], at)


async def send(storage: Storage, channel: str, *, at: int) -> None:
    """Lease every due row of `channel` and record it sent at `at`."""
    leased = await storage.lease_due_deliveries(
        [channel], now=at, limit=100, owner="w1", lease_ms=LEASE_MS
    )
    assert leased
    await storage.record_delivery_outcomes(
        [DeliveryOutcome(delivery_id=row.id, at=at, status="sent", provider="p1") for row in leased]
    )


async def test_recent_reads_newest_first_bounded_by_lookback_and_limit(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.insert_notifications(
        [note(f"n{i}", "u1") for i in range(5)] + [note("other", "u2"), note("unread", "u1")]
    )
    for i in range(5):
        await read_at(storage, f"n{i}", CREATED_AT + i * HOUR)
    await storage.mark_read("u2", ["other"], CREATED_AT + 9 * HOUR)

    found = await storage.engagement_of("u1", since=CREATED_AT + HOUR, limit=3)
    # n0 is before the look-back; the limit keeps the three most recent; unread and
    # another user's reads are not counted.
    assert found.read_times == [CREATED_AT + 4 * HOUR, CREATED_AT + 3 * HOUR, CREATED_AT + 2 * HOUR]
    assert found.read_delays == {}
    everything = await storage.engagement_of("u1", since=0, limit=500)
    assert len(everything.read_times) == 5
    empty = await storage.engagement_of("nobody", since=0, limit=500)
    assert empty.read_times == []
    assert empty.read_delays == {}


async def test_read_delays_per_channel_count_sent_deliveries_only(storage: Storage) -> None:
    await storage.create_user(user("u1", email="ada@example.org", phone="+33611223344"))
    await storage.insert_notifications(
        [
            note(
                "n1",
                "u1",
                deliveries=(
                    PlannedDelivery(id="d1-mail", channel="email", due_at=CREATED_AT),
                    PlannedDelivery(id="d1-sms", channel="sms", due_at=CREATED_AT),
                ),
            ),
            note(
                "n2",
                "u1",
                deliveries=(
                    PlannedDelivery(id="d2-mail", channel="email", due_at=CREATED_AT),
                    # Never sent: it says nothing about how fast SMS is read.
                    PlannedDelivery(
                        id="d2-sms",
                        channel="sms",
                        due_at=CREATED_AT,
                        status="skipped",
                        reason="preference",
                    ),
                ),
            ),
        ]
    )
    await send(storage, "email", at=CREATED_AT + 1000)
    await send(storage, "sms", at=CREATED_AT + 2000)
    await read_at(storage, "n1", CREATED_AT + 61_000)
    await read_at(storage, "n2", CREATED_AT + 301_000)

    found = await storage.engagement_of("u1", since=CREATED_AT, limit=500)
    assert found.read_delays == {"email": [300_000, 60_000], "sms": [59_000]}
    assert found.read_times == [CREATED_AT + 301_000, CREATED_AT + 61_000]
    # A read before the send (in-app first) is no delay of that channel.
    assert (
        await storage.engagement_of("u1", since=CREATED_AT + 100_000, limit=500)
    ).read_delays == {"email": [300_000]}


async def test_a_planned_decision_is_stored_and_read_back(storage: Storage) -> None:
    await storage.create_user(user("u1", email="ada@example.org"))
    decision = {
        "time": {"time": "best", "hour": 19, "reads": 42, "lookback_days": 30},
        "order": {"order": "engagement", "median_read_seconds": {"email": 120.0}},
    }
    await storage.insert_notifications(
        [
            note(
                "n1",
                "u1",
                deliveries=(
                    PlannedDelivery(
                        id="d-mail", channel="email", due_at=CREATED_AT, decision=decision
                    ),
                    PlannedDelivery(id="d-plain", channel="sms", due_at=CREATED_AT + 1),
                ),
            )
        ]
    )
    rows = {row.id: row.decision for row in await storage.channel_deliveries_of("n1")}
    assert rows == {"d-mail": decision, "d-plain": None}


async def test_a_scheduled_sends_decision_is_stored_and_read_back(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    why = {"time": {"time": "best", "hour": 19, "reads": 42, "lookback_days": 30}}
    for notification_id, decision in (("s1", why), ("s2", None)):
        await storage.schedule_notification(
            ScheduledNotification(
                notification=note(notification_id, "u1"),
                due_at=CREATED_AT + HOUR,
                accepted_at=CREATED_AT,
                decision=decision,
            )
        )
    found = await storage.get_scheduled("s1")
    assert found is not None
    assert found.decision == why
    listed = await storage.list_scheduled("u1", after_id=None, limit=10)
    assert [(r.notification.id, r.decision) for r in listed] == [("s1", why), ("s2", None)]
    cancelled = await storage.cancel_scheduled("s1", CREATED_AT + 1)
    assert cancelled is not None
    assert cancelled.decision == why
