"""Erasure, retention and rekeying (`storage.areas.data_protection`): SQL and the
methods, the same on both backends (SQLite adds a checkpoint after an erasure)."""

# S608 (SQL built from strings): table and column names come from `SEALED_COLUMNS` and
# the constants of this module, lists from a backend's list form; values always travel
# as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.crypto import PREFIX, SEALED_COLUMNS, Cipher
from storage.sql.common import NO_SEQ, Row, check_limit, seal, unseal
from storage.sql.engine import SqlEngine

# erasure -------------------------------------------------------------------------------

# Everything about one user, each a statement of one transaction (the user row last).
# The user's notifications are deleted before, in batches (ERASE_NOTIFICATIONS): a long
# history must not hold the database in one transaction. Every table with a user id is
# here, but channel_deliveries (and its history), which go with their notifications (ON
# DELETE CASCADE, by the index on notification_id: the table has none on user_id);
# tests/storage/test_data_protection_contract.py fails for a table that is not.
ERASE_NOTIFICATIONS = (
    "DELETE FROM notifications WHERE id IN ("
    "SELECT id FROM notifications WHERE user_id = $1 ORDER BY seq LIMIT $2) RETURNING id"
)
ERASE_USER = (
    "DELETE FROM idempotency_keys WHERE user_id = $1",
    "DELETE FROM cursor_history WHERE user_id = $1",
    "DELETE FROM devices WHERE user_id = $1",
    "DELETE FROM channel_preferences WHERE user_id = $1",
    "DELETE FROM user_preferences WHERE user_id = $1",
    "DELETE FROM scheduled_notifications WHERE user_id = $1",
    "DELETE FROM notifications WHERE user_id = $1",
    "DELETE FROM users WHERE id = $1 RETURNING id",
)

# retention -----------------------------------------------------------------------------


def purge_candidates_sql(in_list: str, *, others: bool) -> str:
    """The oldest notifications created before $1 whose category is in the list $2 (or,
    `others`, is not in it, or null), at most $3: (id, user_id). `in_list` is the
    backend's `IN list` form for $2."""
    category = (
        f"(category IS NULL OR NOT (category {in_list}))" if others else f"category {in_list}"
    )
    return (
        "SELECT id, user_id FROM notifications "
        f"WHERE created_at < $1 AND {category} ORDER BY created_at LIMIT $3"
    )


def delete_notifications_sql(in_list: str) -> str:
    """Delete the notifications whose ids are in the list $1."""
    return f"DELETE FROM notifications WHERE id {in_list} RETURNING id"


def purge_cursor_history_sql(in_list: str) -> str:
    """For the users in the list $1: delete the cursor history below their oldest
    remaining notification (all of it when none remains, `NO_SEQ` as $2): `cursor_times`
    only reads rows at or above a seq that still exists."""
    return (
        f"DELETE FROM cursor_history WHERE user_id {in_list} AND seq < coalesce(("
        "SELECT min(n.seq) FROM notifications n WHERE n.user_id = cursor_history.user_id), $2)"
    )


# rekeying ------------------------------------------------------------------------------


def active_prefix(cipher: Cipher) -> str:
    """What every value sealed under the cipher's active key starts with."""
    if cipher.active_key_id is None:
        raise ValueError("rekeying needs an active key: encryption is off")
    return f"{PREFIX}{cipher.active_key_id}:"


def _not_under(columns: tuple[str, ...], prefix: int, length: int) -> str:
    # Compared with substr, not LIKE: a key id may hold `_`, a LIKE wildcard.
    return " OR ".join(
        f"({column} IS NOT NULL AND substr({column}, 1, ${length}) <> ${prefix})"
        for column in columns
    )


def count_not_under_key_sql(table: str) -> str:
    """Rows of `table` with a sealed column not under the key `$1` (prefix, then its
    length as $2): plaintext rows or rows of an older key."""
    return f"SELECT count(*) FROM {table} WHERE {_not_under(SEALED_COLUMNS[table], 1, 2)}"


def rekey_select_sql(table: str) -> str:
    """The next rows of `table` to rekey: id above $1, not under the key $2 (length $3),
    in id order, at most $4."""
    columns = SEALED_COLUMNS[table]
    return (
        f"SELECT id, {', '.join(columns)} FROM {table} "
        f"WHERE id > $1 AND ({_not_under(columns, 2, 3)}) ORDER BY id LIMIT $4"
    )


def rekey_update_sql(table: str) -> str:
    """Write the resealed columns of one row ($1 = id)."""
    columns = SEALED_COLUMNS[table]
    sets = ", ".join(f"{column} = ${n}" for n, column in enumerate(columns, start=2))
    return f"UPDATE {table} SET {sets} WHERE id = $1"


def reseal_row(table: str, row: Row, cipher: Cipher) -> tuple[Any, ...]:
    """Parameters of rekey_update_sql for a row of rekey_select_sql: each column opened
    with whatever key sealed it, then sealed under the active key."""
    row_id = row[0]
    values = []
    for index, column in enumerate(SEALED_COLUMNS[table], start=1):
        name = f"{table}.{column}"
        values.append(seal(cipher, unseal(cipher, row[index], name, row_id), name, row_id))
    return (row_id, *values)


class DataProtectionSql(SqlEngine):
    """`DataProtection`, the same on both backends."""

    async def erase_user(self, user_id: str, *, batch_size: int) -> bool:
        """See `DataProtection.erase_user`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        while await self._write_all(ERASE_NOTIFICATIONS, user_id, batch_size):
            pass
        results = await self._write_many([(sql, (user_id,)) for sql in ERASE_USER])
        return bool(results[-1])

    async def purge_notifications(
        self,
        *,
        created_before: int,
        limit: int,
        category: str | None = None,
        except_categories: Sequence[str] = (),
    ) -> int:
        """See `DataProtection.purge_notifications`. The batch is chosen by a read, then
        deleted in one transaction: a row another node deleted in between is not counted."""
        check_limit(limit)
        listed = list(except_categories) if category is None else [category]
        select = purge_candidates_sql(self._in_list(2), others=category is None)
        candidates = await self._fetch_all(select, created_before, self._list_param(listed), limit)
        if not candidates:
            return 0
        ids = [row[0] for row in candidates]
        users = sorted({row[1] for row in candidates})
        deleted, _ = await self._write_many(
            [
                (delete_notifications_sql(self._in_list(1)), (self._list_param(ids),)),
                (purge_cursor_history_sql(self._in_list(1)), (self._list_param(users), NO_SEQ)),
            ]
        )
        return len(deleted)

    async def count_not_under_active_key(self) -> int:
        """See `DataProtection.count_not_under_active_key`."""
        prefix = active_prefix(self._cipher)
        total = 0
        for table in SEALED_COLUMNS:
            row = await self._fetch_one(count_not_under_key_sql(table), prefix, len(prefix))
            total += int(row[0])
        return total

    async def rekey_batch(self, table: str, *, after_id: str, limit: int) -> tuple[int, str | None]:
        """See `DataProtection.rekey_batch`. Read, resealed here, written in one
        transaction: sealed columns are written only at insert (and by a rekey, which
        writes the same plaintext under the same key), so nothing can change them
        between the two."""
        if table not in SEALED_COLUMNS:
            raise ValueError(f"table {table!r} has no sealed columns: {list(SEALED_COLUMNS)}")
        check_limit(limit)
        prefix = active_prefix(self._cipher)
        rows = await self._fetch_all(rekey_select_sql(table), after_id, prefix, len(prefix), limit)
        if not rows:
            return 0, None
        update = rekey_update_sql(table)
        resealed = [(update, reseal_row(table, row, self._cipher)) for row in rows]
        await self._write_many(resealed)
        return len(rows), rows[-1][0]
