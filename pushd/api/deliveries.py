"""Delivery status of the in-app channel, derived instead of written per notification.

A user's sockets receive notifications in seq order and ack cumulatively, so two cursors
per user (sent, acked) and their history (`cursor_history`: the time of each advance)
say when every notification was sent and delivered; read and drop marks are on the row.
Deriving the record costs no write per notification on the hot path, and the status only
moves forward because the cursors do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pushd.api.schemas import (
    ChannelDelivery,
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    Notification,
    NotificationDetail,
    ScheduledNotificationView,
)
from pushd.ids import from_ms, opt_from_ms
from storage import Storage
from storage.records import CursorTimes, NotificationRecord, ScheduledRecord, UserRecord

_DROP_ERRORS = {
    "expired": "expired before it reached a device",
    "not_retained": "dropped: beyond the user's replay backlog (count or age bound)",
}
_NEVER = CursorTimes(sent_at=None, acked_at=None)


def inapp_delivery(
    record: NotificationRecord, user: UserRecord, times: CursorTimes, now: int
) -> Delivery:
    """The in-app delivery of `record`, given the user's cursors and when they reached
    its seq."""
    sent_at = times.sent_at if record.seq <= user.sent_seq else None
    delivered_at = times.acked_at if record.seq <= user.ack_seq else None
    expired_at: int | None = None
    error: str | None = None
    if record.dropped_at is not None:
        # A socket got a `gap` over it (the ack cursor then passed it, unseen).
        expired_at, sent_at, delivered_at = record.dropped_at, None, None
        error = _DROP_ERRORS.get(record.dropped_reason or "", "dropped")
    elif (
        record.expires_at is not None
        and record.expires_at <= now
        and (delivered_at is None or delivered_at > record.expires_at)
    ):
        expired_at, delivered_at = record.expires_at, None
        error = _DROP_ERRORS["expired"]
    read_at = record.read_at if expired_at is None else None
    status: DeliveryStatus = "queued"
    for reached, name in (
        (sent_at, "sent"),
        (delivered_at, "delivered"),
        (read_at, "read"),
        (expired_at, "expired"),
    ):
        if reached is not None:
            status = name  # type: ignore[assignment]  # the literal names above
    return Delivery(
        channel="inapp",
        status=status,
        queued_at=from_ms(record.created_at),
        sent_at=opt_from_ms(sent_at),
        delivered_at=opt_from_ms(delivered_at),
        read_at=opt_from_ms(read_at),
        expired_at=opt_from_ms(expired_at),
        failed_at=None,
        last_error=error,
    )


def delivery_events(delivery: Delivery) -> list[DeliveryEvent]:
    """The transitions of one delivery, oldest first."""
    steps: list[tuple[DeliveryStatus, datetime | None]] = [
        ("queued", delivery.queued_at),
        ("sent", delivery.sent_at),
        ("delivered", delivery.delivered_at),
        ("read", delivery.read_at),
        ("expired", delivery.expired_at),
        ("failed", delivery.failed_at),
    ]
    events = []
    for status, at in steps:
        if at is not None:
            error = delivery.last_error if status in ("expired", "failed") else None
            events.append(
                DeliveryEvent(channel=delivery.channel, status=status, at=at, error=error)
            )
    return events


def as_notification(record: NotificationRecord, delivery: Delivery) -> Notification:
    """The API view of a notification, with its in-app status."""
    priority: object = record.priority
    return Notification(
        id=record.id,
        user_id=record.user_id,
        seq=record.seq,
        title=record.title,
        body=record.body,
        data=record.data,
        category=record.category,
        priority=priority,  # type: ignore[arg-type]  # validated when it was accepted
        created_at=from_ms(record.created_at),
        expires_at=opt_from_ms(record.expires_at),
        read_at=delivery.read_at,
        status=delivery.status,
        data_unreadable=record.data_unreadable,
        version=record.version,
        updated_at=opt_from_ms(record.updated_at),
        retracted_at=opt_from_ms(record.retracted_at),
    )


def as_detail(
    record: NotificationRecord, delivery: Delivery, channel_deliveries: list[ChannelDelivery]
) -> NotificationDetail:
    """`as_notification` with every channel's delivery record."""
    view = as_notification(record, delivery)
    fields = {name: getattr(view, name) for name in Notification.__struct_fields__}
    return NotificationDetail(
        **fields, deliveries=[delivery], channel_deliveries=channel_deliveries
    )


async def deliveries_of(
    storage: Storage, user: UserRecord, records: Sequence[NotificationRecord], now: int
) -> list[Delivery]:
    """The in-app delivery of each record (one cursor-history query for all of them)."""
    sent = [r.seq for r in records if r.seq <= user.sent_seq]
    times = await storage.cursor_times(user.id, sent) if sent else {}
    return [inapp_delivery(r, user, times.get(r.seq, _NEVER), now) for r in records]


def as_scheduled_view(record: ScheduledRecord) -> ScheduledNotificationView:
    notification = record.notification
    priority: Any = notification.priority  # stored from a `Priority`
    status: Any = record.status  # storage writes only these two
    return ScheduledNotificationView(
        id=notification.id,
        user_id=notification.user_id,
        status=status,
        send_at=from_ms(record.due_at),
        created_at=from_ms(record.accepted_at),
        cancelled_at=opt_from_ms(record.cancelled_at),
        title=notification.title,
        body=notification.body,
        data=notification.data,
        category=notification.category,
        priority=priority,
        expires_at=opt_from_ms(notification.expires_at),
        planned_channels=[delivery.channel for delivery in notification.deliveries],
        decision=record.decision,
    )
