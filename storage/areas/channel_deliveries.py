"""Channel deliveries (issue #12): what is due on which channel, where and when.

Storage is the truth, the bus only the wake-up (DESIGN.md §4a): every step of a
notification's channel plan is a row committed WITH the notification
(`NewNotification.deliveries`, same transaction as `insert_notifications`), and workers
lease due rows from here; nothing that must happen later lives only in memory.

Statuses: scheduled (due later) -> queued (due) -> sending (leased) -> sent, then
delivered or failed when a provider reports a receipt; failed at once on a permanent
error; back to queued with a later due_at on a transient one. skipped (no address,
opted out) and cancelled (read, acked, expired) rows were never sent. Rows with reason
'digest' go out together, one message per digest (`lease_due_digests`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.records import (
    ChannelDeliveryRecord,
    ChannelQueueStats,
    DeliveryAttemptRecord,
    DeliveryOutcome,
    FailedDeliveryRecord,
    LeasedDelivery,
)


class ChannelDeliveries(Protocol):
    """The durable queue of channel deliveries and their history."""

    async def lease_due_deliveries(
        self, channels: Sequence[str], *, now: int, limit: int, owner: str, lease_ms: int
    ) -> list[LeasedDelivery]:
        """Take up to `limit` rows of these channels that are due (scheduled or queued
        with due_at <= now) or whose lease has run out (sending, lease_until < now: a
        worker died mid-send), oldest due first; mark them sending, leased to `owner`
        until now + lease_ms, attempts + 1. Two callers never get the same row while its
        lease runs (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the single writer). Rows
        whose notification has expired are not returned: they become cancelled (reason
        expired) in the same transaction."""
        ...

    async def lease_due_digests(
        self, channels: Sequence[str], *, now: int, limit: int, owner: str, lease_ms: int
    ) -> list[list[LeasedDelivery]]:
        """Take up to `limit` due digests of these channels, each WHOLE: a digest is the
        rows with reason 'digest' of one (user, channel, notification category), due
        when one of them is due or its lease ran out; its lease takes every unsent row
        of it, due or not (the window runs until this lease), marks them sending like
        `lease_due_deliveries`, and returns them oldest notification first. Rows of
        expired notifications become cancelled instead. A row committed after the lease
        is not in it and opens the next window: each row is in exactly one digest (two
        nodes never split one: PostgreSQL, an advisory lock per digest, not waited for;
        SQLite, the single writer). `lease_due_deliveries` never takes digest rows."""
        ...

    async def record_delivery_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """Apply a batch in ONE transaction: each row's status, due_at (retry),
        provider, fallback, provider_message_id and last error, lease cleared, attempts
        - 1 when no send was attempted (`send_attempted` false); one history row each;
        the device of each `remove_device` outcome deleted. An outcome for a row that is
        no longer sending (cancelled or erased meanwhile), or no longer under the lease
        its `attempt` names, is ignored."""
        ...

    async def cancel_unsent_deliveries(
        self,
        user_id: str,
        *,
        notification_ids: Sequence[str] | None = None,
        up_to_seq: int | None = None,
        reason: str,
        at: int,
    ) -> int:
        """Cancel the user's cancel_on_read rows still scheduled or queued, of these
        notifications or of every seq <= up_to_seq; return how many. `mark_read`,
        `mark_all_read` and `advance_cursors` (acks) do the same inside their own
        transactions, so that a read or ack on any node stops the steps not yet sent."""
        ...

    async def channel_deliveries_of(self, notification_id: str) -> list[ChannelDeliveryRecord]:
        """Every channel delivery of the notification, by due_at then channel."""
        ...

    async def delivery_history_of(self, notification_id: str) -> list[DeliveryAttemptRecord]:
        """Every history row of every delivery of the notification, oldest first."""
        ...

    async def record_delivery_receipt(
        self, *, provider: str, provider_message_id: str, status: str, at: int, error: str | None
    ) -> bool:
        """A provider's receipt (an SMS status callback): set `status` ("delivered" or
        "failed") on the row sent with that provider message id and append a history row;
        False when no row matches."""
        ...

    async def channel_queue_stats(self, *, now: int) -> list[ChannelQueueStats]:
        """Per channel with rows: due, scheduled and sending counts, oldest due_at."""
        ...

    async def latest_failed_deliveries(
        self, *, before: int | None, limit: int, scan: int
    ) -> list[FailedDeliveryRecord]:
        """Up to `limit` history rows with status failed, newest first, among the `scan`
        history rows before the history id `before` (None: the newest). The scan bounds
        the cost (a range of the primary key, whatever the share of failures): fewer
        than `limit` rows does not mean there are no older failures."""
        ...
