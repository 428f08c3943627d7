"""Idempotency keys (`storage.areas.idempotency`): SQL, row mapping, the methods.

Keys are inserted by each backend's `insert_notifications`, in the transaction of their
notification: SQLite with `INSERT_IDEMPOTENCY`, PostgreSQL inside its batch statement.
"""

# S608 (SQL built from strings): every query here is assembled at import time from the
# constants of this module only; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from storage.records import IdempotencyRecord
from storage.sql.common import Row, check_limit
from storage.sql.engine import SqlEngine

IDEMPOTENCY_COLUMNS = "scope, key, request_hash, notification_id, user_id, seq, created_at"
FIND_IDEMPOTENCY = (
    f"SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE scope = $1 AND key = $2"
)
DELETE_IDEMPOTENCY_IF_OLD = (
    "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND created_at < $3"
)
PURGE_IDEMPOTENCY = (
    "DELETE FROM idempotency_keys WHERE (scope, key) IN ("
    "SELECT scope, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2) RETURNING key"
)
INSERT_IDEMPOTENCY = (
    f"INSERT INTO idempotency_keys ({IDEMPOTENCY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
IDEMPOTENCY_OF_USER = (
    f"SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE user_id = $1 AND seq > $2 "
    "ORDER BY seq LIMIT $3"
)


def idempotency_from_row(row: Row) -> IdempotencyRecord:
    """A row of IDEMPOTENCY_COLUMNS."""
    return IdempotencyRecord(
        scope=row[0],
        key=row[1],
        request_hash=row[2],
        notification_id=row[3],
        user_id=row[4],
        seq=row[5],
        created_at=row[6],
    )


class IdempotencyKeysSql(SqlEngine):
    """`IdempotencyKeys`, the same on both backends."""

    async def find_idempotency(
        self, scope: str, key: str, *, not_before: int
    ) -> IdempotencyRecord | None:
        """See `IdempotencyKeys.find_idempotency`."""
        row = await self._fetch_one(FIND_IDEMPOTENCY, scope, key)
        if row is None:
            return None
        record = idempotency_from_row(row)
        if record.created_at < not_before:
            await self._write_one(DELETE_IDEMPOTENCY_IF_OLD, scope, key, not_before)
            return None
        return record

    async def purge_idempotency(self, *, before: int, limit: int) -> int:
        """See `IdempotencyKeys.purge_idempotency`."""
        check_limit(limit)
        return len(await self._write_all(PURGE_IDEMPOTENCY, before, limit))

    async def idempotency_keys_of(
        self, user_id: str, *, after_seq: int, limit: int
    ) -> list[IdempotencyRecord]:
        """See `IdempotencyKeys.idempotency_keys_of`."""
        check_limit(limit)
        rows = await self._fetch_all(IDEMPOTENCY_OF_USER, user_id, after_seq, limit)
        return [idempotency_from_row(row) for row in rows]
