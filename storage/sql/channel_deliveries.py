"""Channel deliveries (`storage.areas.channel_deliveries`): SQL, row mapping, and the
reads that are one plain statement.

Leasing, outcomes, receipts and cancellation are each backend's own (PostgreSQL: one
statement with FOR UPDATE SKIP LOCKED; SQLite: a job of the single writer); the pieces
they share are here. Cancelling on read and ack happens inside `mark_read`,
`mark_all_read` and `advance_cursors` (storage/{sqlite,postgres}/notifications.py and
cursors.py) with the statements built here.
"""

# S608 (SQL built from strings): every query here is assembled from the constants of
# this module and a backend's list form; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from storage.crypto import Cipher
from storage.records import (
    ChannelDeliveryRecord,
    ChannelQueueStats,
    DeliveryAttemptRecord,
    DeliveryOutcome,
    FailedDeliveryRecord,
    LeasedDelivery,
    NewNotification,
)
from storage.sql.common import Row, check_limit, encode_json, seal, unseal
from storage.sql.engine import SqlEngine
from storage.sql.notifications import decode_data

# The statuses of a row not sent yet, written exactly as in the partial indexes of
# migration 0007: SQLite uses a partial index only for a query that repeats its terms.
PENDING = "status IN ('scheduled', 'queued')"
CANCELLABLE = f"{PENDING} AND cancel_on_read"

DELIVERY_COLUMNS = (
    "id, notification_id, user_id, seq, channel, device_id, endpoint_id, status, reason, "
    "due_at, attempts, provider, fallback, provider_message_id, last_error, created_at, "
    "updated_at, decision"
)
HISTORY_COLUMNS = (
    "delivery_id, at, status, provider, provider_message_id, provider_code, error, detail, "
    "duration_ms, fallback"
)
# What an insert writes: a planned step (`planned_steps`), then what its notification
# gives it. first_due_at is due_at, updated_at is created_at.
INSERT_DELIVERY_COLUMNS = (
    "id, channel, device_id, endpoint_id, status, reason, due_at, cancel_on_read, event, "
    "decision, first_due_at, notification_id, user_id, seq, created_at, updated_at"
)
DELIVERIES_OF_NOTIFICATION = (
    f"SELECT {DELIVERY_COLUMNS} FROM channel_deliveries WHERE notification_id = $1 "
    "ORDER BY due_at, channel, id"
)
HISTORY_OF_NOTIFICATION = (
    f"SELECT {', '.join('h.' + c for c in HISTORY_COLUMNS.split(', '))} "
    "FROM channel_delivery_history h JOIN channel_deliveries d ON d.id = h.delivery_id "
    "WHERE d.notification_id = $1 ORDER BY h.at, h.id"
)
# Walks the user's notifications in seq order (their UNIQUE (user_id, seq) index) and
# probes each one's deliveries: no index on channel_deliveries.user_id is needed.
DELIVERIES_OF_USER = (
    f"SELECT {', '.join('d.' + c for c in DELIVERY_COLUMNS.split(', '))} "
    "FROM notifications n JOIN channel_deliveries d ON d.notification_id = n.id "
    "WHERE n.user_id = $1 AND n.seq >= $2 AND (n.seq > $2 OR d.id > $3) "
    "ORDER BY n.seq, d.id LIMIT $4"
)

# A provider's receipt: its history row, then the row's new status. Only rows a provider
# took (a row still sending has no message id yet). CAST: PostgreSQL cannot tell the type
# of a parameter that only appears in a SELECT list.
RECEIVABLE = "status IN ('sent', 'delivered', 'failed')"
NOTE_RECEIPT = (
    "INSERT INTO channel_delivery_history "
    "(delivery_id, at, status, provider, provider_message_id, error, fallback) "
    "SELECT id, CAST($4 AS BIGINT), CAST($3 AS TEXT), provider, provider_message_id, "
    "CAST($5 AS TEXT), fallback FROM channel_deliveries "
    f"WHERE provider = $1 AND provider_message_id = $2 AND {RECEIVABLE} RETURNING delivery_id"
)
APPLY_RECEIPT = (
    "UPDATE channel_deliveries SET status = $3, last_error = coalesce($5, last_error), "
    f"updated_at = $4 WHERE provider = $1 AND provider_message_id = $2 AND {RECEIVABLE}"
)


def history_of_deliveries_sql(id_list: str) -> str:
    """The history of the deliveries in the list $1 (`id_list`, the backend's form)."""
    return (
        f"SELECT {HISTORY_COLUMNS} FROM channel_delivery_history WHERE delivery_id {id_list} "
        "ORDER BY delivery_id, id"
    )


# The failures among a range of history ids (the primary key): `latest_failed_deliveries`.
LATEST_FAILURES = (
    "SELECT h.id, h.delivery_id, d.notification_id, d.user_id, d.channel, h.provider, "
    "h.provider_code, h.error, h.at, d.attempts FROM channel_delivery_history h "
    "JOIN channel_deliveries d ON d.id = h.delivery_id "
    "WHERE h.id < $1 AND h.id >= $2 AND h.status = 'failed' ORDER BY h.id DESC LIMIT $3"
)
NEXT_HISTORY_ID = "SELECT coalesce(max(id), 0) + 1 FROM channel_delivery_history"

# Due, scheduled and sending counts per channel. Two scans, each of one partial index:
# one scan with `status IN (three statuses)` would read the whole table, sent rows too.
# CAST: PostgreSQL's sum of a bigint is a numeric.
QUEUE_STATS = f"""
SELECT channel, CAST(sum(due) AS BIGINT), CAST(sum(scheduled) AS BIGINT),
       CAST(sum(sending) AS BIGINT), min(oldest_due_at)
FROM (
    SELECT channel, count(*) FILTER (WHERE due_at <= $1) AS due,
           count(*) FILTER (WHERE due_at > $1) AS scheduled, 0 AS sending,
           min(due_at) FILTER (WHERE due_at <= $1) AS oldest_due_at
    FROM channel_deliveries WHERE {PENDING} GROUP BY channel
    UNION ALL
    SELECT channel, 0, 0, count(*), NULL FROM channel_deliveries
    WHERE status = 'sending' GROUP BY channel
) AS per_status
GROUP BY channel ORDER BY channel
"""

# What a lease reads per row, from the delivery `d`, its notification `n`, its user `u`,
# its device `dev` (None when gone) and the shared content `c` of a fanned-out
# notification (migration 0019: then n's content columns are null).
LEASED_COLUMNS = (
    "d.id, d.notification_id, d.user_id, d.channel, d.attempts, d.first_due_at, "
    "d.device_id, d.endpoint_id, d.event, n.title, n.body, n.data, n.channel_content, "
    "n.category, n.priority, n.created_at, n.expires_at, u.email, u.phone, dev.kind, "
    "dev.address, dev.details, c.id, c.title, c.body, c.data, c.channel_content"
)
LEASED_JOINS = (
    "JOIN notifications n ON n.id = d.notification_id "
    "LEFT JOIN send_contents c ON c.send_id = n.send_id AND c.number = n.content_no "
    "LEFT JOIN users u ON u.id = d.user_id "
    "LEFT JOIN devices dev ON dev.id = d.device_id AND dev.user_id = d.user_id"
)

# The part of `channel_content` each channel sends.
_CONTENT_PART = {"webpush": "push", "fcm": "push", "apns": "push", "email": "email", "sms": "sms"}
# Where a device's address goes in `LeasedDelivery.address`, per channel (= device kind).
_DEVICE_ADDRESS_KEY = {"webpush": "endpoint", "fcm": "token", "apns": "token"}

_content_decoder = msgspec.json.Decoder(dict[str, dict[str, str]])
_object_decoder = msgspec.json.Decoder(dict[str, Any])
_details_decoder = msgspec.json.Decoder(dict[str, str])


# inserting ------------------------------------------------------------------------------


def sealed_channel_content(notification: NewNotification, cipher: Cipher) -> str | None:
    """`notifications.channel_content` as stored (None for a notification of a send:
    its content is shared, storage/sql/send_contents.py)."""
    content = notification.channel_content
    if notification.send_id is not None:
        return None
    if content is None:
        return None
    return seal(cipher, encode_json(content), "notifications.channel_content", notification.id)


def planned_steps(
    batch: Sequence[NewNotification], cipher: Cipher
) -> list[tuple[NewNotification, tuple[Any, ...]]]:
    """Each planned delivery of the batch with its notification, as (id, channel,
    device_id, endpoint_id, status, reason, due_at, cancel_on_read, event sealed,
    decision)."""
    steps = []
    for notification in batch:
        for step in notification.deliveries:
            event = None if step.event is None else encode_json(step.event)
            values = (
                step.id,
                step.channel,
                step.device_id,
                step.endpoint_id,
                step.status,
                step.reason,
                step.due_at,
                step.cancel_on_read,
                seal(cipher, event, "channel_deliveries.event", step.id),
                None if step.decision is None else encode_json(step.decision),
            )
            steps.append((notification, values))
    return steps


# outcomes -------------------------------------------------------------------------------


def last_outcome_per_delivery(outcomes: Sequence[DeliveryOutcome]) -> list[DeliveryOutcome]:
    """One outcome per delivery, the last given: a row takes one new status per batch."""
    return list({outcome.delivery_id: outcome for outcome in outcomes}.values())


def outcome_values(outcome: DeliveryOutcome) -> tuple[Any, ...]:
    """An outcome as (id, at, status, provider, next_due_at, fallback,
    provider_message_id, error, provider_code, detail, duration_ms, remove_device,
    attempt, send_attempted)."""
    return (
        outcome.delivery_id,
        outcome.at,
        outcome.status,
        outcome.provider,
        outcome.next_due_at,
        outcome.fallback,
        outcome.provider_message_id,
        outcome.error,
        outcome.provider_code,
        None if outcome.detail is None else encode_json(outcome.detail),
        outcome.duration_ms,
        outcome.remove_device,
        outcome.attempt,
        outcome.send_attempted,
    )


# reading --------------------------------------------------------------------------------


def delivery_from_row(row: Row) -> ChannelDeliveryRecord:
    """A row of DELIVERY_COLUMNS."""
    return ChannelDeliveryRecord(
        id=row[0],
        notification_id=row[1],
        user_id=row[2],
        seq=row[3],
        channel=row[4],
        device_id=row[5],
        endpoint_id=row[6],
        status=row[7],
        reason=row[8],
        due_at=row[9],
        attempts=row[10],
        provider=row[11],
        fallback=bool(row[12]),
        provider_message_id=row[13],
        last_error=row[14],
        created_at=row[15],
        updated_at=row[16],
        decision=None if row[17] is None else _object_decoder.decode(row[17]),
    )


def attempt_from_row(row: Row) -> DeliveryAttemptRecord:
    """A row of HISTORY_COLUMNS."""
    return DeliveryAttemptRecord(
        delivery_id=row[0],
        at=row[1],
        status=row[2],
        provider=row[3],
        provider_message_id=row[4],
        provider_code=row[5],
        error=row[6],
        detail=None if row[7] is None else _object_decoder.decode(row[7]),
        duration_ms=row[8],
        fallback=bool(row[9]),
    )


def stats_from_row(row: Row) -> ChannelQueueStats:
    """A row of QUEUE_STATS."""
    return ChannelQueueStats(
        channel=row[0],
        due=int(row[1]),
        scheduled=int(row[2]),
        sending=int(row[3]),
        oldest_due_at=row[4],
    )


def _address(row: Row, cipher: Cipher) -> dict[str, str]:
    """Where a leased row goes (`LeasedDelivery.address`), {} when that is gone. Only
    the contact field the channel uses is opened."""
    channel, user_id = row[3], row[2]
    if channel == "email":
        email = unseal(cipher, row[17], "users.email", user_id)
        return {} if email is None else {"email": email}
    if channel == "sms":
        phone = unseal(cipher, row[18], "users.phone", user_id)
        return {} if phone is None else {"phone": phone}
    key = _DEVICE_ADDRESS_KEY.get(channel)
    if key is not None and row[19] == channel:
        return {key: row[20], **_details_decoder.decode(row[21])}
    # A webhook's address (its endpoint's url and secrets) is filled in after the lease
    # (storage/sql/webhook_endpoints.py `with_webhook_addresses`).
    return {}


def leased_from_row(row: Row, cipher: Cipher) -> LeasedDelivery:
    """A row of LEASED_COLUMNS: the notification's content is its own, or, when it
    reads a shared content, that content's (sealed for its row of `send_contents`)."""
    delivery_id, notification_id, channel = row[0], row[1], row[3]
    event = unseal(cipher, row[8], "channel_deliveries.event", delivery_id)
    if row[22] is None:
        table, sealed_for, first = "notifications", notification_id, 9
    else:
        table, sealed_for, first = "send_contents", row[22], 23
    stored_content = [row[first + offset] for offset in range(4)]
    data = unseal(cipher, stored_content[2], f"{table}.data", sealed_for)
    content: dict[str, str] | None = None
    part = _CONTENT_PART.get(channel)
    if part is not None and stored_content[3] is not None:
        stored = unseal(cipher, stored_content[3], f"{table}.channel_content", sealed_for)
        content = _content_decoder.decode(stored or "{}").get(part)
    return LeasedDelivery(
        id=delivery_id,
        notification_id=notification_id,
        user_id=row[2],
        channel=channel,
        attempts=row[4],
        first_due_at=row[5],
        address=_address(row, cipher),
        device_id=row[6],
        endpoint_id=row[7],
        title=unseal(cipher, stored_content[0], f"{table}.title", sealed_for),
        body=unseal(cipher, stored_content[1], f"{table}.body", sealed_for),
        data=decode_data(data, notification_id)[0],
        content=content,
        category=row[13],
        priority=row[14],
        created_at=row[15],
        expires_at=row[16],
        event=None if event is None else _object_decoder.decode(event),
    )


class ChannelDeliveriesSql(SqlEngine):
    """The reads and receipts of `ChannelDeliveries`, and the export's pages of
    `DataProtection`; each backend adds leases, outcomes and cancellation."""

    async def channel_deliveries_of(self, notification_id: str) -> list[ChannelDeliveryRecord]:
        """See `ChannelDeliveries.channel_deliveries_of`."""
        rows = await self._fetch_all(DELIVERIES_OF_NOTIFICATION, notification_id)
        return [delivery_from_row(row) for row in rows]

    async def delivery_history_of(self, notification_id: str) -> list[DeliveryAttemptRecord]:
        """See `ChannelDeliveries.delivery_history_of`."""
        rows = await self._fetch_all(HISTORY_OF_NOTIFICATION, notification_id)
        return [attempt_from_row(row) for row in rows]

    async def channel_queue_stats(self, *, now: int) -> list[ChannelQueueStats]:
        """See `ChannelDeliveries.channel_queue_stats`."""
        return [stats_from_row(row) for row in await self._fetch_all(QUEUE_STATS, now)]

    async def latest_failed_deliveries(
        self, *, before: int | None, limit: int, scan: int
    ) -> list[FailedDeliveryRecord]:
        """See `ChannelDeliveries.latest_failed_deliveries`."""
        check_limit(limit)
        if before is None:
            before = int((await self._fetch_one(NEXT_HISTORY_ID))[0])
        rows = await self._fetch_all(LATEST_FAILURES, before, before - scan, limit)
        return [
            FailedDeliveryRecord(
                history_id=row[0],
                delivery_id=row[1],
                notification_id=row[2],
                user_id=row[3],
                channel=row[4],
                provider=row[5],
                provider_code=row[6],
                error=row[7],
                at=row[8],
                attempts=row[9],
            )
            for row in rows
        ]

    async def record_delivery_receipt(
        self, *, provider: str, provider_message_id: str, status: str, at: int, error: str | None
    ) -> bool:
        """See `ChannelDeliveries.record_delivery_receipt`. Both statements pick the same
        rows: a receipt changes nothing the other writers pick rows by."""
        params = (provider, provider_message_id, status, at, error)
        noted, _ = await self._write_many([(NOTE_RECEIPT, params), (APPLY_RECEIPT, params)])
        return bool(noted)

    async def channel_deliveries_of_user(
        self, user_id: str, *, after: tuple[int, str] | None, limit: int
    ) -> list[ChannelDeliveryRecord]:
        """See `DataProtection.channel_deliveries_of_user`."""
        check_limit(limit)
        seq, delivery_id = after if after is not None else (0, "")
        rows = await self._fetch_all(DELIVERIES_OF_USER, user_id, seq, delivery_id, limit)
        return [delivery_from_row(row) for row in rows]

    async def delivery_history_of_deliveries(
        self, delivery_ids: Sequence[str]
    ) -> dict[str, list[DeliveryAttemptRecord]]:
        """See `DataProtection.delivery_history_of_deliveries`."""
        found: dict[str, list[DeliveryAttemptRecord]] = {i: [] for i in delivery_ids}
        if not delivery_ids:
            return found
        sql = history_of_deliveries_sql(self._in_list(1))
        for row in await self._fetch_all(sql, self._list_param(delivery_ids)):
            found[row[0]].append(attempt_from_row(row))
        return found
