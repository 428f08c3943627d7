"""Digests on PostgreSQL (storage/sql/digests.py): one transaction per lease.

Two nodes may see the same digest due at once. Each takes a transaction-scoped advisory
lock per digest it wants, without waiting (`pg_try_advisory_xact_lock`): the loser skips
that digest this round, so a digest is never split between two leases; then the rows
of the locked digests are locked in id order (as cancellations lock them), leased, and
the lock goes with the commit. A notification committed after the lease's statements
ran is not among them: it stays unsent and opens the next window.
"""

# S608 (SQL built from strings): assembled at import time from constants; values always
# travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence

from storage.postgres.channel_deliveries import cancel_ctes
from storage.postgres.engine import PostgresEngine
from storage.records import LeasedDelivery
from storage.sql.channel_deliveries import LEASED_COLUMNS, LEASED_JOINS
from storage.sql.common import check_limit
from storage.sql.digests import (
    MEMBER_COLUMNS,
    digest_name,
    digests_from_rows,
    due_digests_sql,
    key_columns,
    pick_members,
)

_DUE_DIGESTS = due_digests_sql("= ANY($1::text[])")
# Arbitrary, fixed: the advisory lock space of digests (a hash shared with another use
# of advisory locks would only make one of them skip a round).
_LOCK_SPACE = 6_017
_LOCK_DIGESTS = (
    "SELECT k.ord FROM unnest($1::text[]) WITH ORDINALITY AS k(name, ord) "
    f"WHERE pg_try_advisory_xact_lock(hashtextextended(k.name, {_LOCK_SPACE}))"
)
# The rows of the digests ($1 users, $3 channels, $4 categories; $2 now), in two
# statements so that each uses its partial index: the unsent rows
# (channel_deliveries_digest_pending), then the rows whose lease ran out.
_MEMBERS_FROM = (
    f"SELECT {MEMBER_COLUMNS} "
    "FROM unnest($1::text[], $3::text[], $4::text[]) AS k(user_id, channel, category) "
    "JOIN channel_deliveries d ON d.user_id = k.user_id AND d.channel = k.channel "
    "JOIN notifications n ON n.id = d.notification_id "
    "AND n.category IS NOT DISTINCT FROM k.category "
)
_UNSENT_MEMBERS = (
    _MEMBERS_FROM + "WHERE d.status IN ('scheduled', 'queued') AND d.reason = 'digest' "
    "ORDER BY d.id FOR UPDATE OF d"
)
_RAN_OUT_MEMBERS = (
    _MEMBERS_FROM + "WHERE d.status = 'sending' AND d.lease_until < $2::bigint "
    "AND d.reason = 'digest' ORDER BY d.id FOR UPDATE OF d"
)
_LEASE = (
    "UPDATE channel_deliveries SET status = 'sending', lease_owner = $2, lease_until = $3, "
    "attempts = attempts + 1, updated_at = $4 WHERE id = ANY($1::text[])"
)
_CANCEL_EXPIRED = (
    "WITH "
    + cancel_ctes(
        "SELECT d.id FROM channel_deliveries d WHERE d.id = ANY($1::text[])",
        at="$2::bigint",
        reason="'expired'",
    )
    + " SELECT count(*) FROM cancelled"
)
_LEASED = (
    f"SELECT {LEASED_COLUMNS} FROM channel_deliveries d {LEASED_JOINS} WHERE d.id = ANY($1::text[])"
)


class PostgresDigests(PostgresEngine):
    """`ChannelDeliveries.lease_due_digests` on PostgreSQL."""

    async def lease_due_digests(
        self, channels: Sequence[str], *, now: int, limit: int, owner: str, lease_ms: int
    ) -> list[list[LeasedDelivery]]:
        """See `ChannelDeliveries.lease_due_digests`."""
        check_limit(limit)
        if not channels or limit == 0:
            return []
        # Outside the transaction: the usual answer is none, in one round trip. The
        # digests found are checked again under their locks (`pick_members`).
        keys = await self._fetch_all(_DUE_DIGESTS, list(channels), now, limit)
        if not keys:
            return []
        async with self._transaction() as connection:
            names = [digest_name(*key) for key in keys]
            locked = {row[0] - 1 for row in await connection.fetch(_LOCK_DIGESTS, names)}
            if not locked:
                return []
            users, wanted, categories = key_columns([k for i, k in enumerate(keys) if i in locked])
            members = [
                *await connection.fetch(_UNSENT_MEMBERS, users, now, wanted, categories),
                *await connection.fetch(_RAN_OUT_MEMBERS, users, now, wanted, categories),
            ]
            lease, expired = pick_members(members)
            if expired:
                await connection.fetch(_CANCEL_EXPIRED, expired, now)
            if not lease:
                return []
            await connection.execute(_LEASE, lease, owner, now + lease_ms, now)
            rows = await connection.fetch(_LEASED, lease)
        return digests_from_rows(rows, self._cipher)
