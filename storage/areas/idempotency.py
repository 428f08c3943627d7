"""Idempotency keys: a retried POST finds the notification its first attempt committed."""

from __future__ import annotations

from typing import Protocol

from storage.records import IdempotencyRecord


class IdempotencyKeys(Protocol):
    """The stored `Idempotency-Key`s. They are written only by
    `Notifications.insert_notifications`, in the transaction of their notification."""

    async def find_idempotency(
        self, scope: str, key: str, *, not_before: int
    ) -> IdempotencyRecord | None:
        """The stored key, or None. A key stored before `not_before` has expired: it is
        deleted and None is returned."""
        ...

    async def purge_idempotency(self, *, before: int, limit: int) -> int:
        """Delete up to `limit` keys stored before `before`; return how many."""
        ...

    async def idempotency_keys_of(
        self, user_id: str, *, after_seq: int, limit: int
    ) -> list[IdempotencyRecord]:
        """The stored Idempotency-Keys whose notification went to the user, with
        `seq > after_seq`, in seq order, at most `limit` (a page of a user's export)."""
        ...
