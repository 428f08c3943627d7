"""The API view of a notification's channel deliveries (beyond the socket) and of
their history, as storage records them (storage/areas/channel_deliveries.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pushd.api.schemas import ChannelDelivery, DeliveryEvent
from pushd.ids import from_ms
from storage.areas.channel_deliveries import ChannelDeliveries
from storage.records import ChannelDeliveryRecord, DeliveryAttemptRecord


def as_channel_delivery(record: ChannelDeliveryRecord) -> ChannelDelivery:
    """One delivery row as the API shows it."""
    channel: Any = record.channel
    status: Any = record.status
    return ChannelDelivery(
        id=record.id,
        channel=channel,  # values of the plan and of storage's statuses
        device_id=record.device_id,
        endpoint_id=record.endpoint_id,
        status=status,
        reason=record.reason,
        due_at=from_ms(record.due_at),
        attempts=record.attempts,
        provider=record.provider,
        fallback=record.fallback,
        provider_message_id=record.provider_message_id,
        last_error=record.last_error,
        updated_at=from_ms(record.updated_at),
        decision=record.decision,
    )


def channel_events(
    deliveries: Sequence[ChannelDeliveryRecord], history: Sequence[DeliveryAttemptRecord]
) -> list[DeliveryEvent]:
    """The history rows as events, each with its delivery's channel, oldest first."""
    channels: dict[str, Any] = {delivery.id: delivery.channel for delivery in deliveries}
    return [
        DeliveryEvent(
            channel=channels.get(row.delivery_id, "push"),
            status=row.status,  # type: ignore[arg-type]  # storage's statuses
            at=from_ms(row.at),
            error=row.error,
            delivery_id=row.delivery_id,
            provider=row.provider,
            provider_message_id=row.provider_message_id,
            provider_code=row.provider_code,
            duration_ms=row.duration_ms,
            fallback=row.fallback,
            detail=row.detail,
        )
        for row in history
    ]


async def channel_deliveries(
    storage: ChannelDeliveries, notification_id: str
) -> list[ChannelDelivery]:
    """The notification's channel deliveries, as the API shows them."""
    return [as_channel_delivery(r) for r in await storage.channel_deliveries_of(notification_id)]
