"""Erasure, retention and rekeying on SQLite: the shared methods, and a checkpoint after
an erasure."""

from __future__ import annotations

from storage.sql.data_protection import DataProtectionSql
from storage.sqlite.engine import SqliteEngine, checkpoint


class SqliteDataProtection(DataProtectionSql, SqliteEngine):
    """`DataProtection` on SQLite."""

    async def erase_user(self, user_id: str, *, batch_size: int) -> bool:
        """See `DataProtection.erase_user`. Then the WAL is checkpointed and emptied: its
        older page images still held the erased rows (secure_delete zeroes them in the
        file)."""
        existed = await super().erase_user(user_id, batch_size=batch_size)
        await self._run(checkpoint)
        return existed
