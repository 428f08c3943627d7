"""API keys and revocations on PostgreSQL: the last-admin check under row locks."""

from __future__ import annotations

from storage.errors import LastAdminKeyError
from storage.postgres.engine import PostgresEngine
from storage.records import ApiKeyRecord
from storage.sql.access import (
    GET_API_KEY,
    LOCK_LIVE_ADMIN_KEYS,
    REVOKE_API_KEY,
    ApiKeysAndRevocationsSql,
    api_key_from_row,
)


class PostgresApiKeysAndRevocations(ApiKeysAndRevocationsSql, PostgresEngine):
    """`ApiKeysAndRevocations` on PostgreSQL."""

    async def revoke_api_key(self, key_id: str, *, at: int) -> ApiKeyRecord | None:
        """See `ApiKeysAndRevocations.revoke_api_key`."""
        async with self._transaction() as connection:
            row = await connection.fetchrow(GET_API_KEY, key_id)
            if row is None:
                return None
            # A key's role never changes, so only admin keys need the lock: every live
            # admin key, locked before the check, so that two concurrent revocations see
            # each other's result instead of each counting the other as still live.
            if row[2] == "admin":
                live = {found[0] for found in await connection.fetch(LOCK_LIVE_ADMIN_KEYS)}
                if key_id in live and not live - {key_id}:
                    raise LastAdminKeyError(key_id)
            revoked = await connection.fetchrow(REVOKE_API_KEY, key_id, at)
        assert revoked is not None  # keys are never deleted, and it existed above
        return api_key_from_row(revoked)
