"""API keys and revocations (`storage.areas.access`): SQL, row mapping, one-statement
methods. `revoke_api_key` is each backend's own (its check and write are one step)."""

# S608 (SQL built from strings): every query here is assembled at import time from the
# constants of the storage.sql modules only; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

import msgspec

from storage.crypto import Cipher
from storage.records import ApiKeyRecord, UserRecord
from storage.sql.common import Row, encode_json
from storage.sql.engine import SqlEngine
from storage.sql.users import USER_COLUMNS, user_from_row

_categories_decoder = msgspec.json.Decoder(tuple[str, ...])

# API keys ------------------------------------------------------------------------------

API_KEY_COLUMNS = "id, name, role, key_hash, created_at, revoked_at, categories, may_broadcast"
INSERT_API_KEY = f"INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
FIND_API_KEY = f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
COUNT_API_KEYS = "SELECT count(*) FROM api_keys"
LIST_API_KEYS = f"SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
GET_API_KEY = f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"
# Locks every live admin key, in id order so that concurrent revocations queue instead of
# deadlocking; the lock makes "is another admin key left?" and the revocation one step.
LOCK_LIVE_ADMIN_KEYS = (
    "SELECT id FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL ORDER BY id FOR UPDATE"
)
LIVE_ADMIN_KEYS = "SELECT id FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL"
# coalesce: revoking twice keeps the first instant.
REVOKE_API_KEY = (
    f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 "
    f"RETURNING {API_KEY_COLUMNS}"
)


def api_key_params(key: ApiKeyRecord) -> tuple[Any, ...]:
    """Parameters of INSERT_API_KEY."""
    categories = None if key.categories is None else encode_json(key.categories)
    return (
        key.id,
        key.name,
        key.role,
        key.key_hash,
        key.created_at,
        key.revoked_at,
        categories,
        key.may_broadcast,
    )


def api_key_from_row(row: Row) -> ApiKeyRecord:
    """A row of API_KEY_COLUMNS."""
    return ApiKeyRecord(
        id=row[0],
        name=row[1],
        role=row[2],
        key_hash=row[3],
        created_at=row[4],
        revoked_at=row[5],
        categories=None if row[6] is None else _categories_decoder.decode(row[6]),
        may_broadcast=bool(row[7]),
    )


# user tokens ---------------------------------------------------------------------------

_USER_COLUMN_COUNT = len(USER_COLUMNS.split(","))
GET_USER_AND_TOKEN_CUTOFF = f"SELECT {USER_COLUMNS}, tokens_revoked_before FROM users WHERE id = $1"
REVOKE_USER_TOKENS = (
    "UPDATE users SET tokens_revoked_before = CASE WHEN tokens_revoked_before > $2 "
    "THEN tokens_revoked_before ELSE $2 END WHERE id = $1 RETURNING id"
)


def user_and_token_cutoff_from_row(row: Row, cipher: Cipher) -> tuple[UserRecord, int]:
    """A row of GET_USER_AND_TOKEN_CUTOFF."""
    return user_from_row(row, cipher), row[_USER_COLUMN_COUNT]


class ApiKeysAndRevocationsSql(SqlEngine):
    """`ApiKeysAndRevocations` but `revoke_api_key`, which each backend writes itself."""

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """See `ApiKeysAndRevocations.create_api_key`."""
        await self._write_one(INSERT_API_KEY, *api_key_params(key))

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """See `ApiKeysAndRevocations.find_api_key`."""
        row = await self._fetch_one(FIND_API_KEY, key_hash)
        return None if row is None else api_key_from_row(row)

    async def count_api_keys(self) -> int:
        """See `ApiKeysAndRevocations.count_api_keys`."""
        count: int = (await self._fetch_one(COUNT_API_KEYS))[0]
        return count

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """See `ApiKeysAndRevocations.list_api_keys`."""
        return [api_key_from_row(row) for row in await self._fetch_all(LIST_API_KEYS)]

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """See `ApiKeysAndRevocations.get_api_key`."""
        row = await self._fetch_one(GET_API_KEY, key_id)
        return None if row is None else api_key_from_row(row)

    async def get_user_and_token_cutoff(self, user_id: str) -> tuple[UserRecord, int] | None:
        """See `ApiKeysAndRevocations.get_user_and_token_cutoff`."""
        row = await self._fetch_one(GET_USER_AND_TOKEN_CUTOFF, user_id)
        return None if row is None else user_and_token_cutoff_from_row(row, self._cipher)

    async def revoke_user_tokens(self, user_id: str, *, before: int) -> bool:
        """See `ApiKeysAndRevocations.revoke_user_tokens`."""
        return await self._write_one(REVOKE_USER_TOKENS, user_id, before) is not None
