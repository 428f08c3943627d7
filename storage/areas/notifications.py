"""Notifications: the per-user sequence, reads and pages, read state and drop marks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from storage.records import MarkedRead, NewNotification, NotificationRecord


class Notifications(Protocol):
    """Each user's notifications, numbered by a per-user `seq`.

    `categories` (of a key or token limited to categories, docs/security.md): given, a
    method sees only notifications whose category is one of them (never one without a
    category), and the filter is part of the query: a `limit` counts only those, and
    nothing returned or counted reveals another category. None: every notification.
    """

    async def insert_notifications(
        self, batch: Sequence[NewNotification], *, node_id: str = ""
    ) -> list[NotificationRecord]:
        """Commit a batch of notifications in ONE transaction and return their records,
        in the order given.

        Each gets the next `seq` of its user: strictly increasing per user, gap-free, in
        batch order, and correct under concurrent writers from several processes (the
        user's `last_seq` is incremented under a row lock). Each also gets a `gid`,
        increasing in commit order across the whole database, and records `node_id` as
        the node that committed it (for `unpublished_notifications`). A notification's
        `idempotency` claim is stored in the same transaction. Either every row is
        committed or none is. Raises (nothing written) `UnknownUserError` if a user does
        not exist, `IdempotencyConflictError` if a claim's (scope, key) is already
        stored, `ConflictError(field="id")` if a notification id is already taken.
        """
        ...

    async def get_notification(self, notification_id: str) -> NotificationRecord | None:
        """The notification with this id, or None."""
        ...

    async def list_notifications(
        self,
        user_id: str,
        *,
        before_seq: int | None,
        limit: int,
        unread_only: bool = False,
        categories: Sequence[str] | None = None,
        delivery_channel: str | None = None,
        delivery_status: str | None = None,
    ) -> list[NotificationRecord]:
        """The user's notifications newest first (seq descending), only those with
        `seq < before_seq` when given, only unread ones with `unread_only`, only of
        `categories` when given, at most `limit`.

        With `delivery_channel` and/or `delivery_status`, only those with at least one
        channel delivery (storage/areas/channel_deliveries.py) on that channel and/or in
        that status; given both, the same delivery matches both. Like the other filters
        it is part of the query: `limit` counts only the notifications that match."""
        ...

    async def count_unread(self, user_id: str, *, categories: Sequence[str] | None = None) -> int:
        """How many of the user's notifications (of `categories`, when given) are not
        marked read."""
        ...

    async def notifications_after(
        self,
        user_id: str,
        *,
        after_seq: int,
        limit: int,
        categories: Sequence[str] | None = None,
    ) -> list[NotificationRecord]:
        """The user's notifications with `seq > after_seq` (of `categories`, when
        given), oldest first, at most `limit` (for replaying to a client that resumes)."""
        ...

    async def mark_read(
        self,
        user_id: str,
        ids: Sequence[str],
        at: int,
        *,
        categories: Sequence[str] | None = None,
    ) -> list[MarkedRead]:
        """Set `read_at = at` on those of `ids` that are the user's, of `categories`
        when given, and not read yet; return them (in `ids` order). Other ids (other
        users', other categories', unknown) are ignored."""
        ...

    async def mark_all_read(
        self, user_id: str, at: int, *, categories: Sequence[str] | None = None
    ) -> tuple[int, int]:
        """Mark every unread notification of the user read; return (how many were
        marked, the seq they run up to): the user's `last_seq`, or with `categories`
        the seq of the user's newest notification of those categories (0 if none).
        (0, 0) for an unknown user."""
        ...

    async def mark_dropped(
        self, user_id: str, *, first_seq: int, last_seq: int, reason: str, at: int
    ) -> None:
        """Record that the user's notifications `first_seq..last_seq` will not be
        delivered (`reason`: `expired` or `not_retained`): `dropped_at`/`dropped_reason`
        are set where not set yet. Missing rows are ignored."""
        ...

    async def update_notification(
        self,
        notification_id: str,
        *,
        title: str | None,
        body: str | None,
        data: dict[str, Any] | None,
        expected_version: int,
        at: int,
    ) -> NotificationRecord | None:
        """Replace the content (title, body, data: all three, sealed like at insert) of
        the notification if it is not retracted and still at `expected_version`; raise
        its version by one and set `updated_at = at`; return the new record. None (nothing
        written) if it is unknown, retracted, or was changed meanwhile (its version moved
        on: read it again). Its channel deliveries not sent yet read the content when
        they are sent, so they send the new one. In the same transaction, each push
        device (webpush, fcm, apns) whose first step was sent, and that has no step still
        to send, gets a new `queued` step due `at`, id `<first step's id>.v<version>`."""
        ...

    async def retract_notification(
        self, notification_id: str, at: int
    ) -> NotificationRecord | None:
        """In ONE transaction: clear the content of the notification (title, body, data
        and channel_content become null; the row stays, so seqs stay gap-free), set
        `retracted_at = updated_at = at`, raise its version by one, and cancel its channel
        deliveries not sent yet (status `cancelled`, reason `retracted`, with a history
        row). Return the retracted record; None if it is unknown or already retracted
        (nothing written)."""
        ...
