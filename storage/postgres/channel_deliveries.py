"""Channel deliveries on PostgreSQL: each write is ONE statement (one round trip, its own
transaction). Leases take rows with FOR UPDATE SKIP LOCKED, so that nodes leasing at
once never wait for each other nor get the same row; cancellations lock their rows in
id order (storage/postgres/__init__.py), since a read and an ack of the same user can
cancel the same rows at once.
"""

# S608 (SQL built from strings): the statements below are assembled at import time from
# the constants of storage.sql.channel_deliveries; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence

from storage.postgres.engine import PostgresEngine
from storage.records import DeliveryOutcome, LeasedDelivery
from storage.sql.channel_deliveries import (
    CANCELLABLE,
    HISTORY_COLUMNS,
    LEASED_COLUMNS,
    LEASED_JOINS,
    PENDING,
    ChannelDeliveriesSql,
    last_outcome_per_delivery,
    leased_from_row,
    outcome_values,
)
from storage.sql.common import check_limit
from storage.sql.digests import NOT_DIGEST
from storage.sql.webhook_endpoints import with_webhook_addresses


def cancel_ctes(selection: str, *, at: str, reason: str) -> str:
    """WITH items that cancel the rows `selection` picks (a SELECT of `d.id` FROM
    `channel_deliveries d`, cancellable rows only), each with a history row. `at` and
    `reason` are SQL expressions (a reason of this code is a literal, a caller's a
    parameter); `cancelled` holds the ids cancelled.

    FOR UPDATE takes the rows in id order, and checks the selection again on a row
    that changed meanwhile: a row a lease took in between (now sending) is left alone.
    """
    return f"""
cancelling AS ({selection} ORDER BY d.id FOR UPDATE OF d),
cancelled AS (
    UPDATE channel_deliveries SET status = 'cancelled', reason = {reason}, updated_at = {at}
    FROM cancelling WHERE channel_deliveries.id = cancelling.id
    RETURNING channel_deliveries.id
),
cancel_noted AS (
    INSERT INTO channel_delivery_history (delivery_id, at, status, detail)
    SELECT id, {at}, 'cancelled', json_build_object('reason', {reason})::text FROM cancelled
)"""


def read_cancel_ctes(*, user: str, seqs_from: str, at: str) -> str:
    """`cancel_ctes` for a read: the user's rows whose seq is one of the `seq` column of
    the WITH item `seqs_from` (the notifications just marked read)."""
    selection = (
        f"SELECT d.id FROM channel_deliveries d JOIN {seqs_from} ON d.seq = {seqs_from}.seq "
        f"WHERE d.user_id = {user} AND {CANCELLABLE}"
    )
    return cancel_ctes(selection, at=at, reason="'read'")


# `advance_cursors`: the rows each user's ack cursor passed (the WITH item `moved`:
# id, ack_seq, old_ack).
ACKED_CANCEL_CTES = cancel_ctes(
    "SELECT d.id FROM moved JOIN channel_deliveries d ON d.user_id = moved.id "
    f"AND d.seq > moved.old_ack AND d.seq <= moved.ack_seq WHERE {CANCELLABLE}",
    at="$4::bigint",
    reason="'acked'",
)

_CANCEL_UNSENT = (
    "WITH "
    + cancel_ctes(
        f"SELECT d.id FROM channel_deliveries d WHERE d.user_id = $1 AND {CANCELLABLE} "
        "AND ($2::text[] IS NULL OR d.notification_id = ANY($2::text[])) "
        "AND ($3::bigint IS NULL OR d.seq <= $3::bigint)",
        at="$4::bigint",
        reason="$5::text",
    )
    + " SELECT count(*) FROM cancelled"
)

# Candidates per channel (LATERAL: each channel's own partial index, in due order), due
# rows and rows whose lease ran out (not digest rows: storage/postgres/digests.py),
# locked or skipped; those of an expired notification
# are cancelled, the `limit` oldest due of the others leased and returned with what
# sending needs. Locked candidates left over are released at the end of the statement.
_LEASE = f"""
WITH wanted AS (SELECT DISTINCT unnest($1::text[]) AS channel),
candidates AS (
    SELECT c.id, c.due_at, c.notification_id FROM wanted CROSS JOIN LATERAL (
        SELECT id, due_at, notification_id FROM channel_deliveries
        WHERE channel = wanted.channel AND {PENDING} AND due_at <= $2::bigint
            AND {NOT_DIGEST}
        ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED
    ) AS c
    UNION ALL
    SELECT c.id, c.due_at, c.notification_id FROM wanted CROSS JOIN LATERAL (
        SELECT id, due_at, notification_id FROM channel_deliveries
        WHERE channel = wanted.channel AND status = 'sending' AND lease_until < $2::bigint
            AND {NOT_DIGEST}
        ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED
    ) AS c
),
judged AS (
    -- A subquery per candidate, not a join: the planner, which cannot tell how few the
    -- candidates are, hashed the whole notifications table for a join.
    SELECT id, due_at, coalesce((
        SELECT n.expires_at <= $2::bigint FROM notifications n
        WHERE n.id = candidates.notification_id
    ), FALSE) AS expired
    FROM candidates
),
picked AS (SELECT id FROM judged WHERE NOT expired ORDER BY due_at, id LIMIT $3),
leased AS (
    UPDATE channel_deliveries d
    SET status = 'sending', lease_owner = $4, lease_until = $2::bigint + $5::bigint,
        attempts = d.attempts + 1, updated_at = $2::bigint
    FROM picked WHERE d.id = picked.id
    RETURNING d.*
),
expired AS (
    UPDATE channel_deliveries
    SET status = 'cancelled', reason = 'expired', lease_owner = NULL, lease_until = NULL,
        updated_at = $2::bigint
    FROM judged WHERE channel_deliveries.id = judged.id AND judged.expired
    RETURNING channel_deliveries.id
),
expired_noted AS (
    INSERT INTO channel_delivery_history (delivery_id, at, status, detail)
    SELECT id, $2::bigint, 'cancelled', json_build_object('reason', 'expired')::text
    FROM expired
)
SELECT {LEASED_COLUMNS} FROM leased AS d {LEASED_JOINS} ORDER BY d.due_at, d.id
"""

# The batch as arrays in `outcome_values` order. Only rows still sending take their
# outcome; each gets a history row, and a dead address's device goes.
_RECORD_OUTCOMES = f"""
WITH given AS (
    SELECT * FROM unnest(
        $1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::boolean[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::boolean[],
        $13::bigint[], $14::boolean[]
    ) AS g(id, at, status, provider, next_due_at, fallback, provider_message_id, error,
           provider_code, detail, duration_ms, remove_device, attempt, send_attempted)
),
applied AS (
    UPDATE channel_deliveries d
    SET status = g.status, due_at = coalesce(g.next_due_at, d.due_at),
        provider = coalesce(g.provider, d.provider), fallback = g.fallback,
        provider_message_id = coalesce(g.provider_message_id, d.provider_message_id),
        last_error = g.error, lease_owner = NULL, lease_until = NULL, updated_at = g.at,
        attempts = d.attempts - CASE WHEN g.send_attempted THEN 0 ELSE 1 END
    FROM given g WHERE d.id = g.id AND d.status = 'sending'
        AND (g.attempt IS NULL OR d.attempts = g.attempt)
    RETURNING d.id, d.user_id, d.device_id
),
noted AS (
    INSERT INTO channel_delivery_history ({HISTORY_COLUMNS})
    SELECT g.id, g.at, g.status, g.provider, g.provider_message_id, g.provider_code, g.error,
           g.detail, g.duration_ms, g.fallback
    FROM given g JOIN applied ON applied.id = g.id
)
DELETE FROM devices USING applied JOIN given g ON g.id = applied.id
WHERE g.remove_device AND devices.id = applied.device_id AND devices.user_id = applied.user_id
"""


class PostgresChannelDeliveries(ChannelDeliveriesSql, PostgresEngine):
    """`ChannelDeliveries` on PostgreSQL."""

    async def lease_due_deliveries(
        self, channels: Sequence[str], *, now: int, limit: int, owner: str, lease_ms: int
    ) -> list[LeasedDelivery]:
        """See `ChannelDeliveries.lease_due_deliveries`."""
        check_limit(limit)
        if not channels or limit == 0:
            return []
        rows = await self._fetch_all(_LEASE, list(channels), now, limit, owner, lease_ms)
        leased = [leased_from_row(row, self._cipher) for row in rows]
        return await with_webhook_addresses(self, leased, now)

    async def record_delivery_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """See `ChannelDeliveries.record_delivery_outcomes`."""
        if not outcomes:
            return
        given = [outcome_values(outcome) for outcome in last_outcome_per_delivery(outcomes)]
        columns = [list(column) for column in zip(*given, strict=True)]
        async with self._connection() as connection:
            await connection.execute(_RECORD_OUTCOMES, *columns)

    async def cancel_unsent_deliveries(
        self,
        user_id: str,
        *,
        notification_ids: Sequence[str] | None = None,
        up_to_seq: int | None = None,
        reason: str,
        at: int,
    ) -> int:
        """See `ChannelDeliveries.cancel_unsent_deliveries`; with neither filter, every
        unsent cancel_on_read row of the user."""
        listed = None if notification_ids is None else list(notification_ids)
        params = (user_id, listed, up_to_seq, at, reason)
        row = await self._fetch_one(_CANCEL_UNSENT, *params)
        return int(row[0])
