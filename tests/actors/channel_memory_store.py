"""A stand-in for the SQLite storage's users, devices, notifications and channel
deliveries, while their SQL is being written (the dispatcher tests switch to SQLite)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from storage.records import (
    ChannelDeliveryRecord,
    ChannelQueueStats,
    DeliveryAttemptRecord,
    DeliveryOutcome,
    DeviceRecord,
    LeasedDelivery,
    NewDevice,
    NewNotification,
    NewUser,
    NotificationRecord,
    UserRecord,
)

PUSH = {"webpush", "fcm", "apns"}


@dataclass
class _Row:
    record: ChannelDeliveryRecord
    first_due_at: int
    lease_until: int | None = None
    owner: str | None = None
    history: list[DeliveryAttemptRecord] = field(default_factory=list)


class MemoryChannelStore:
    def __init__(self) -> None:
        self.users: dict[str, UserRecord] = {}
        self.devices: dict[str, DeviceRecord] = {}
        self.notifications: dict[str, NewNotification] = {}
        self.rows: dict[str, _Row] = {}

    async def migrate(self) -> int:
        return 0

    async def close(self) -> None:
        pass

    async def create_user(self, user: NewUser) -> UserRecord:
        record = UserRecord(
            id=user.id,
            external_id=user.external_id,
            name=user.name,
            email=user.email,
            phone=user.phone,
            locale=user.locale,
            timezone=user.timezone,
            created_at=user.created_at,
            last_seq=0,
            ack_seq=0,
        )
        self.users[user.id] = record
        return record

    async def upsert_device(self, device: NewDevice) -> tuple[DeviceRecord, bool]:
        record = DeviceRecord(
            id=device.id,
            user_id=device.user_id,
            kind=device.kind,
            address=device.address,
            details=device.details,
            created_at=device.created_at,
        )
        self.devices[device.id] = record
        return record, True

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        return [d for d in self.devices.values() if d.user_id == user_id]

    async def insert_notifications(
        self, batch: Sequence[NewNotification], *, node_id: str = ""
    ) -> list[NotificationRecord]:
        records = []
        for n in batch:
            self.notifications[n.id] = n
            for d in n.deliveries:
                self.rows[d.id] = _Row(
                    ChannelDeliveryRecord(
                        id=d.id,
                        notification_id=n.id,
                        user_id=n.user_id,
                        seq=1,
                        channel=d.channel,
                        device_id=d.device_id,
                        endpoint_id=d.endpoint_id,
                        status=d.status,
                        reason=d.reason,
                        due_at=d.due_at,
                        attempts=0,
                        provider=None,
                        fallback=False,
                        provider_message_id=None,
                        last_error=None,
                        created_at=n.created_at,
                        updated_at=n.created_at,
                    ),
                    first_due_at=d.due_at,
                )
            records.append(
                NotificationRecord(
                    id=n.id,
                    user_id=n.user_id,
                    seq=1,
                    title=n.title,
                    body=n.body,
                    data=n.data,
                    category=n.category,
                    priority=n.priority,
                    created_at=n.created_at,
                )
            )
        return records

    def _address(self, row: ChannelDeliveryRecord) -> dict[str, str]:
        user = self.users[row.user_id]
        if row.channel == "email":
            return {"email": user.email} if user.email else {}
        if row.channel == "sms":
            return {"phone": user.phone} if user.phone else {}
        device = self.devices.get(row.device_id or "")
        if device is None:
            return {}
        if row.channel == "webpush":
            return {"endpoint": device.address, **device.details}
        return {"token": device.address, **device.details}

    async def lease_due_deliveries(
        self, channels: Sequence[str], *, now: int, limit: int, owner: str, lease_ms: int
    ) -> list[LeasedDelivery]:
        due = sorted(
            (
                row
                for row in self.rows.values()
                if row.record.channel in channels
                and (
                    (row.record.status in ("scheduled", "queued") and row.record.due_at <= now)
                    or (row.record.status == "sending" and (row.lease_until or 0) < now)
                )
            ),
            key=lambda row: row.record.due_at,
        )
        leased = []
        for row in due[:limit]:
            row.record = replace(row.record, status="sending", attempts=row.record.attempts + 1)
            row.owner, row.lease_until = owner, now + lease_ms
            n = self.notifications[row.record.notification_id]
            content_key = "push" if row.record.channel in PUSH else row.record.channel
            content: dict[str, str] | None = (n.channel_content or {}).get(content_key)
            data: dict[str, Any] | None = n.data
            leased.append(
                LeasedDelivery(
                    id=row.record.id,
                    notification_id=n.id,
                    user_id=n.user_id,
                    channel=row.record.channel,
                    attempts=row.record.attempts,
                    first_due_at=row.first_due_at,
                    address=self._address(row.record),
                    device_id=row.record.device_id,
                    endpoint_id=row.record.endpoint_id,
                    title=n.title,
                    body=n.body,
                    data=data,
                    content=content,
                    category=n.category,
                    priority=n.priority,
                    created_at=n.created_at,
                    expires_at=n.expires_at,
                )
            )
        return leased

    async def record_delivery_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        for o in outcomes:
            row = self.rows.get(o.delivery_id)
            if row is None or row.record.status != "sending":
                continue
            row.record = replace(
                row.record,
                status=o.status,
                due_at=o.next_due_at if o.next_due_at is not None else row.record.due_at,
                provider=o.provider,
                fallback=o.fallback,
                provider_message_id=o.provider_message_id,
                last_error=o.error,
                reason=o.error if o.status == "skipped" else row.record.reason,
                updated_at=o.at,
            )
            row.owner = row.lease_until = None
            row.history.append(
                DeliveryAttemptRecord(
                    delivery_id=o.delivery_id,
                    at=o.at,
                    status=o.status,
                    provider=o.provider,
                    provider_message_id=o.provider_message_id,
                    provider_code=o.provider_code,
                    error=o.error,
                    detail=o.detail,
                    duration_ms=o.duration_ms,
                    fallback=o.fallback,
                )
            )
            if o.remove_device and row.record.device_id:
                self.devices.pop(row.record.device_id, None)

    async def cancel_unsent_deliveries(
        self,
        user_id: str,
        *,
        notification_ids: Sequence[str] | None = None,
        up_to_seq: int | None = None,
        reason: str,
        at: int,
    ) -> int:
        raise NotImplementedError

    async def channel_deliveries_of(self, notification_id: str) -> list[ChannelDeliveryRecord]:
        return [r.record for r in self.rows.values() if r.record.notification_id == notification_id]

    async def delivery_history_of(self, notification_id: str) -> list[DeliveryAttemptRecord]:
        return [
            h
            for r in self.rows.values()
            if r.record.notification_id == notification_id
            for h in r.history
        ]

    async def record_delivery_receipt(
        self, *, provider: str, provider_message_id: str, status: str, at: int, error: str | None
    ) -> bool:
        raise NotImplementedError

    async def channel_queue_stats(self, *, now: int) -> list[ChannelQueueStats]:
        raise NotImplementedError
