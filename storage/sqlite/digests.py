"""Digests on SQLite (storage/sql/digests.py): the lease is one job of the single
writer, whose BEGIN IMMEDIATE is the lock: an insert commits before or after it, never
during, so each row is in exactly one digest."""

# S608 (SQL built from strings): assembled at import time from constants; values always
# travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage.crypto import Cipher
from storage.records import LeasedDelivery
from storage.sql.channel_deliveries import LEASED_COLUMNS, LEASED_JOINS
from storage.sql.common import check_limit, encode_json, sqlite_placeholders
from storage.sql.digests import MEMBER_COLUMNS, digests_from_rows, due_digests_sql, pick_members
from storage.sqlite.channel_deliveries import _CANCEL_IDS, _cancel
from storage.sqlite.engine import SqliteEngine, fetch_all, write_transaction

_DUE_DIGESTS = due_digests_sql("IN (SELECT value FROM json_each($1))")
# The rows of the digests in the list $1 of [user, channel, category] ($2 now): unsent
# (channel_deliveries_digest_pending), then those whose lease ran out.
_MEMBERS_FROM = (
    f"SELECT {MEMBER_COLUMNS} FROM json_each($1) AS k "
    "JOIN channel_deliveries d ON d.user_id = k.value ->> 0 AND d.channel = k.value ->> 1 "
    "JOIN notifications n ON n.id = d.notification_id AND n.category IS (k.value ->> 2) "
)
_UNSENT_MEMBERS = (
    _MEMBERS_FROM + "WHERE d.status IN ('scheduled', 'queued') AND d.reason = 'digest'"
)
_RAN_OUT_MEMBERS = (
    _MEMBERS_FROM + "WHERE d.status = 'sending' AND d.lease_until < $2 AND d.reason = 'digest'"
)
_LEASE = sqlite_placeholders(
    "UPDATE channel_deliveries SET status = 'sending', lease_owner = $2, lease_until = $3, "
    "attempts = attempts + 1, updated_at = $4 WHERE id IN (SELECT value FROM json_each($1))"
)
_LEASED = (
    f"SELECT {LEASED_COLUMNS} FROM channel_deliveries d {LEASED_JOINS} "
    "WHERE d.id IN (SELECT value FROM json_each($1))"
)


def _lease_digests(
    connection: sqlite3.Connection,
    channels: Sequence[str],
    lease: tuple[int, int, str, int],
    cipher: Cipher,
) -> list[list[LeasedDelivery]]:
    now, limit, owner, lease_ms = lease
    with write_transaction(connection):
        keys = fetch_all(connection, _DUE_DIGESTS, (encode_json(list(channels)), now, limit))
        if not keys:
            return []
        listed = encode_json([list(key) for key in keys])
        members = [
            *fetch_all(connection, _UNSENT_MEMBERS, (listed, now)),
            *fetch_all(connection, _RAN_OUT_MEMBERS, (listed, now)),
        ]
        leased, expired = pick_members(members)
        if expired:
            _cancel(connection, _CANCEL_IDS, (encode_json(expired),), now, "expired")
        if not leased:
            return []
        ids = encode_json(leased)
        connection.execute(_LEASE, (ids, owner, now + lease_ms, now))
        rows = fetch_all(connection, _LEASED, (ids,))
    return digests_from_rows(rows, cipher)


class SqliteDigests(SqliteEngine):
    """`ChannelDeliveries.lease_due_digests` on SQLite."""

    async def lease_due_digests(
        self, channels: Sequence[str], *, now: int, limit: int, owner: str, lease_ms: int
    ) -> list[list[LeasedDelivery]]:
        """See `ChannelDeliveries.lease_due_digests`; the write transaction is the lock."""
        check_limit(limit)
        if not channels or limit == 0:
            return []
        wanted, lease, cipher = tuple(channels), (now, limit, owner, lease_ms), self._cipher
        return await self._run(lambda connection: _lease_digests(connection, wanted, lease, cipher))
