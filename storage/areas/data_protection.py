"""Data protection duties that cut across tables: erasure, retention and rekeying, and the
export's pages of a user's channel deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.records import ChannelDeliveryRecord, DeliveryAttemptRecord


class DataProtection(Protocol):
    """Erasing a user from every table, purging old notifications, and resealing the
    columns of `storage/crypto.py` `SEALED_COLUMNS` under the active key.

    A notification's channel deliveries and their history go with it (ON DELETE
    CASCADE), in the same transaction, whether an erasure or a purge deletes it."""

    async def erase_user(self, user_id: str, *, batch_size: int) -> bool:
        """Delete the user and every row about them in every table; return whether the
        user existed.

        The user's notifications go first, `batch_size` per transaction (a long history
        must not hold the database in one transaction), then their devices, channel
        preferences, cursor history, idempotency keys, remaining notifications and the user
        row in one
        transaction. Idempotent: an unknown user is a no-op returning False; an erasure
        cut short (crash) is completed by calling it again. Notifications committed for
        the user meanwhile are erased too, or refused (`UnknownUserError`) once the user
        row is gone. The audit trail is not touched: call `pseudonymise_audit`.
        """
        ...

    async def purge_notifications(
        self,
        *,
        created_before: int,
        limit: int,
        category: str | None = None,
        except_categories: Sequence[str] = (),
    ) -> int:
        """Delete up to `limit` notifications created before `created_before`, oldest
        first, in ONE transaction; return how many.

        With `category`, only notifications of that category; without, only those whose
        category is null or not in `except_categories`. The same transaction deletes the
        cursor history of their users below each user's oldest remaining notification
        (delivery times of remaining notifications stay right).
        """
        ...

    async def count_not_under_active_key(self) -> int:
        """How many rows hold a sealed column (storage/crypto.py `SEALED_COLUMNS`) that is
        not sealed under the cipher's active key: plaintext rows written before
        encryption, and rows of older keys. Raises `ValueError` when encryption is off."""
        ...

    async def rekey_batch(self, table: str, *, after_id: str, limit: int) -> tuple[int, str | None]:
        """Reseal under the active key up to `limit` rows of `table` (a key of
        `SEALED_COLUMNS`) with `id > after_id` that are not under it yet, in id order, in
        ONE short transaction. Return how many rows were rewritten and the id to pass as
        `after_id` next, or None when no row of the table is left after it.

        Safe while the server runs (sealed columns are never updated elsewhere; a row
        deleted meanwhile is skipped) and idempotent: a rekey interrupted at any point
        is completed by starting again. Raises `EncryptionError` for a value whose key is
        not in the ring, `ValueError` when encryption is off.
        """
        ...

    async def channel_deliveries_of_user(
        self, user_id: str, *, after: tuple[int, str] | None, limit: int
    ) -> list[ChannelDeliveryRecord]:
        """The user's channel deliveries ordered by (seq, id), after `after` (that
        pair, exclusive), at most `limit` (a page of a user's export)."""
        ...

    async def delivery_history_of_deliveries(
        self, delivery_ids: Sequence[str]
    ) -> dict[str, list[DeliveryAttemptRecord]]:
        """The history of each of these deliveries, oldest first, in ONE query (a page
        of the export's deliveries); [] for a delivery without history or unknown."""
        ...
