"""Scheduled sends: notifications accepted now, committed to the mailbox when due."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.records import NotificationRecord, ScheduledNotification, ScheduledRecord


class ScheduledSends(Protocol):
    """Notifications waiting for their due instant, outside the per-user sequence.

    A scheduled notification has its id from the start but no `seq`: it takes the next
    seq of its user when it is released, so that seq order stays delivery order. Its
    content is sealed at rest like a notification's. The rows go with their user
    (erasure) and are listed by the user's export.
    """

    async def schedule_notification(self, scheduled: ScheduledNotification) -> None:
        """Store one scheduled notification (status `scheduled`) and its idempotency
        claim, if any (with seq 0), in ONE transaction.

        Raises (nothing written) `UnknownUserError` if the user does not exist,
        `IdempotencyConflictError` if the claim's (scope, key) is already stored,
        `ConflictError(field="id")` if the id is taken by another scheduled one.
        """
        ...

    async def release_due(self, now: int, *, limit: int, node_id: str) -> list[NotificationRecord]:
        """Release at most `limit` scheduled notifications due at or before `now`, in
        ONE transaction: each is inserted as a notification (same id, the next seq of
        its user, a gid, `node_id` as committing node, its planned deliveries), its
        scheduled row is deleted and its idempotency claim gets the seq. Returns their
        records, in due order (ties by id), which is also their seq order per user.

        Exactly once across processes: a row is released by one transaction only; two
        concurrent callers take disjoint rows (PostgreSQL: rows locked by another are
        skipped, not waited for; SQLite: the single writer). A cancelled row is never
        released.
        """
        ...

    async def cancel_scheduled(self, notification_id: str, at: int) -> ScheduledRecord | None:
        """Mark the scheduled notification cancelled (`cancelled_at = at`) and return
        it; an already cancelled one is returned unchanged. None when no scheduled row
        has this id (unknown, or released: the caller tells them apart with
        `get_notification`). A release and a cancel of the same row never both win."""
        ...

    async def get_scheduled(self, notification_id: str) -> ScheduledRecord | None:
        """The scheduled or cancelled notification with this id, or None (unknown or
        released)."""
        ...

    async def list_scheduled(
        self,
        user_id: str,
        *,
        after_id: str | None,
        limit: int,
        categories: Sequence[str] | None = None,
    ) -> list[ScheduledRecord]:
        """The user's scheduled and cancelled notifications in id order (which is accept
        order), only those with `id > after_id` when given, only of `categories` when
        given (never one without a category then), at most `limit`."""
        ...
