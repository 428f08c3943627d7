"""API keys and revocations on SQLite: the last-admin check and the revocation in one
write job."""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.errors import LastAdminKeyError
from storage.records import ApiKeyRecord
from storage.sql.access import (
    GET_API_KEY,
    LIVE_ADMIN_KEYS,
    REVOKE_API_KEY,
    ApiKeysAndRevocationsSql,
    api_key_from_row,
)
from storage.sqlite.engine import SqliteEngine, fetch_all, fetch_one, write_transaction


def _revoke_api_key(connection: sqlite3.Connection, key_id: str, at: int) -> Any:
    # BEGIN IMMEDIATE serialises writers of the file: the check and the revocation are
    # one step (PostgreSQL needs row locks for the same).
    with write_transaction(connection):
        row = fetch_one(connection, GET_API_KEY, (key_id,))
        if row is None:
            return None
        key = api_key_from_row(row)
        if key.role == "admin" and key.revoked_at is None:
            live = {found[0] for found in fetch_all(connection, LIVE_ADMIN_KEYS, ())}
            if not live - {key_id}:
                raise LastAdminKeyError(key_id)
        return fetch_one(connection, REVOKE_API_KEY, (key_id, at))


class SqliteApiKeysAndRevocations(ApiKeysAndRevocationsSql, SqliteEngine):
    """`ApiKeysAndRevocations` on SQLite."""

    async def revoke_api_key(self, key_id: str, *, at: int) -> ApiKeyRecord | None:
        """See `ApiKeysAndRevocations.revoke_api_key`."""
        row = await self._run(lambda connection: _revoke_api_key(connection, key_id, at))
        return None if row is None else api_key_from_row(row)
