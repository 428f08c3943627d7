"""Notifications on PostgreSQL: the whole batch insert in one statement (with the batch's
planned channel deliveries), and mark_read."""

# S608 (SQL built from strings): the statements below are assembled at import time from
# the constants of storage.sql; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from storage.crypto import Cipher
from storage.errors import IdempotencyConflictError, StorageError, UnknownUserError
from storage.postgres.channel_deliveries import read_cancel_ctes
from storage.postgres.engine import PostgresEngine
from storage.records import MarkedRead, NewNotification, NotificationRecord
from storage.sql.channel_deliveries import (
    INSERT_DELIVERY_COLUMNS,
    planned_steps,
    sealed_channel_content,
)
from storage.sql.common import encode_json, seal
from storage.sql.notifications import NotificationsSql, mark_read_sql, marked_read, with_seq
from storage.sql.send_contents import (
    ADD_READERS,
    INSERT_SEND_CONTENT,
    LAST_NUMBER,
    LOOKUP_RENDERINGS,
    Renderings,
)

# The whole batch in ONE statement, so ONE round trip (it runs as its own implicit
# transaction): lock the batch's users in id order (storage/postgres/__init__.py), bump
# their last_seq, insert the notifications with seqs numbered in batch order per user,
# and store the idempotency claims. The guard divides by zero, aborting the statement
# (nothing is bumped or inserted), if a user of the batch does not exist or a claim's
# key is already stored (when no user exists at all, no row reaches the guard, and
# nothing is written either). Round trips, not CPU, bounded the cluster shape's
# throughput. {planned} is empty, or (a batch with channel plans) the insert of the
# planned deliveries, given as arrays $17.. (`planned_steps`), joined to their
# notification for its user, seq and instant.
_INSERT_BATCH_TEMPLATE = """
WITH batch AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[],
        $14::text[], $15::text[], $16::integer[]
    ) WITH ORDINALITY AS b(id, user_id, title, body, data, category, priority, created_at,
                           expires_at, claim_scope, claim_key, claim_hash, channel_content,
                           send_id, content_no, ord)
),
wanted AS (SELECT user_id, count(*) AS n FROM batch GROUP BY user_id),
locked AS (
    SELECT users.id FROM users JOIN wanted ON wanted.user_id = users.id
    ORDER BY users.id FOR UPDATE
),
bumped AS (
    UPDATE users SET last_seq = users.last_seq + wanted.n
    FROM wanted JOIN locked ON locked.id = wanted.user_id
    WHERE users.id = wanted.user_id
    RETURNING users.id, users.last_seq - wanted.n AS base
),
numbered AS (
    SELECT batch.*,
           bumped.base + row_number() OVER (PARTITION BY batch.user_id ORDER BY batch.ord) AS seq
    FROM batch JOIN bumped ON bumped.id = batch.user_id
),
saved AS (
    INSERT INTO notifications (id, user_id, seq, title, body, data, category, priority,
                               created_at, expires_at, node_id, channel_content, send_id,
                               content_no)
    SELECT id, user_id, seq, title, body, data, category, priority, created_at, expires_at, $13,
           channel_content, send_id, content_no
    FROM numbered ORDER BY ord
    RETURNING id, seq, gid
),
claimed AS (
    INSERT INTO idempotency_keys (scope, key, request_hash, notification_id, user_id, seq,
                                  created_at)
    SELECT claim_scope, claim_key, claim_hash, id, user_id, seq, created_at
    FROM numbered WHERE claim_key IS NOT NULL
    ON CONFLICT DO NOTHING RETURNING 1
){planned}
SELECT id, seq + 0 * (1 / (
           (SELECT count(*) FROM bumped) = (SELECT count(*) FROM wanted)
           AND (SELECT count(*) FROM claimed)
               = (SELECT count(*) FROM batch WHERE claim_key IS NOT NULL)
       )::int), gid
FROM saved
"""
_INSERT_BATCH = _INSERT_BATCH_TEMPLATE.format(planned="")
_INSERT_BATCH_WITH_PLANS = _INSERT_BATCH_TEMPLATE.format(
    planned=f""",
planned AS (
    INSERT INTO channel_deliveries ({INSERT_DELIVERY_COLUMNS})
    SELECT p.id, p.channel, p.device_id, p.endpoint_id, p.status, p.reason, p.due_at,
           p.cancel_on_read, p.event, p.decision, p.due_at, numbered.id, numbered.user_id,
           numbered.seq, numbered.created_at, numbered.created_at
    FROM unnest(
        $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[],
        $23::bigint[], $24::boolean[], $25::text[], $26::text[], $27::text[]
    ) AS p(id, channel, device_id, endpoint_id, status, reason, due_at, cancel_on_read, event,
           decision, notification_id)
    JOIN numbered ON numbered.id = p.notification_id
)"""
)
_LOOKUP_RENDERINGS = LOOKUP_RENDERINGS.format("= ANY($2::text[])") + " ORDER BY digest FOR UPDATE"
_EXISTING_USERS = "SELECT id FROM users WHERE id = ANY($1::text[])"
_EXISTING_CLAIMS = (
    "SELECT scope, key FROM idempotency_keys "
    "WHERE (scope, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
)
_MARK_READ = mark_read_sql("= ANY($2::text[])")
_MARK_READ_WITHIN = mark_read_sql("= ANY($2::text[])", "= ANY($4::text[])")


@cache
def _marking_and_cancelling(marking: str) -> str:
    """A marking statement of storage/sql/notifications.py ($1 the user, $3 the instant,
    the seq last) and the cancellation of the channel deliveries of what it marked."""
    cancelling = read_cancel_ctes(user="$1", seqs_from="marked", at="$3::bigint")
    return f"WITH marked AS ({marking}), {cancelling} SELECT * FROM marked"


async def _explain_refused_batch(
    connection: PoolConnectionProxy[asyncpg.Record], batch: Sequence[NewNotification]
) -> None:
    """Raise what made the batch statement write nothing: a missing user, else a claim
    whose key is already stored."""
    user_ids = [n.user_id for n in batch]
    existing = {row[0] for row in await connection.fetch(_EXISTING_USERS, user_ids)}
    for notification in batch:
        if notification.user_id not in existing:
            raise UnknownUserError(notification.user_id)
    claims = [n.idempotency for n in batch if n.idempotency is not None]
    taken = await connection.fetch(
        _EXISTING_CLAIMS, [c.scope for c in claims], [c.key for c in claims]
    )
    if taken:
        raise IdempotencyConflictError(taken[0][0], taken[0][1])
    # Two claims of the same batch with one key: the second one conflicts.
    seen: set[tuple[str, str]] = set()
    for claim in claims:
        if (claim.scope, claim.key) in seen:
            raise IdempotencyConflictError(claim.scope, claim.key)
        seen.add((claim.scope, claim.key))
    raise StorageError("PostgreSQL refused a notification batch for no known reason")


async def insert_batch(
    connection: PoolConnectionProxy[asyncpg.Record],
    batch: Sequence[NewNotification],
    node_id: str,
    cipher: Cipher,
) -> list[NotificationRecord]:
    """`insert_notifications` of a non-empty batch on `connection` (in the caller's
    transaction when it has one: the release of scheduled sends,
    storage/postgres/scheduled.py)."""
    claims = [n.idempotency for n in batch]
    # Sealed on the event loop: about 10 µs per notification (docs/architecture.md),
    # less than a thread hand-off would cost for a typical batch. A notification of a
    # send has its content sealed once per rendering, in `send_contents`.
    own = [n.send_id is None for n in batch]
    columns = [
        [n.id for n in batch],
        [n.user_id for n in batch],
        [
            seal(cipher, n.title, "notifications.title", n.id) if mine else None
            for n, mine in zip(batch, own, strict=True)
        ],
        [
            seal(cipher, n.body, "notifications.body", n.id) if mine else None
            for n, mine in zip(batch, own, strict=True)
        ],
        [
            None
            if n.data is None or not mine
            else seal(cipher, encode_json(n.data), "notifications.data", n.id)
            for n, mine in zip(batch, own, strict=True)
        ],
        [n.category for n in batch],
        [n.priority for n in batch],
        [n.created_at for n in batch],
        [n.expires_at for n in batch],
        [None if c is None else c.scope for c in claims],
        [None if c is None else c.key for c in claims],
        [None if c is None else c.request_hash for c in claims],
    ]
    params: list[Any] = [
        *columns,
        node_id,
        [sealed_channel_content(n, cipher) for n in batch],
        [n.send_id for n in batch],
        [None] * len(batch),  # $16: the content numbers, set below for a send's batch
    ]
    sql = _INSERT_BATCH
    steps = planned_steps(batch, cipher)
    if steps:
        sql = _INSERT_BATCH_WITH_PLANS
        params += [list(column) for column in zip(*(values for _, values in steps), strict=True)]
        params.append([notification.id for notification, _ in steps])
    renderings = Renderings(batch)
    try:
        if renderings.sends:
            # The contents first, then the rows that read them, in one transaction (a
            # savepoint inside the caller's): a few more round trips, for sends only.
            async with connection.transaction():
                params[15] = await _store_renderings(connection, renderings, cipher)
                rows = await connection.fetch(sql, *params)
        else:
            rows = await connection.fetch(sql, *params)
    except asyncpg.DivisionByZeroError:
        rows = []  # the guard: nothing was written
    if len(rows) != len(batch):
        await _explain_refused_batch(connection, batch)
    saved = {row[0]: (row[1], row[2]) for row in rows}
    return [with_seq(n, *saved[n.id]) for n in batch]


async def _store_renderings(
    connection: PoolConnectionProxy[asyncpg.Record], renderings: Renderings, cipher: Cipher
) -> list[int | None]:
    """Store the batch's shared contents and return each notification's `content_no`
    (storage/sql/send_contents.py). The stored renderings are locked until the batch
    commits: a deletion taking their last reader away (the triggers of migration 0019)
    waits, then sees their count raised; one that got there first has deleted the row,
    which the lookup then does not find, and it is stored again."""
    for send_id in renderings.sends:
        found = await connection.fetch(_LOOKUP_RENDERINGS, send_id, renderings.digests_of(send_id))
        stored = {row[0]: row[1] for row in found}
        last = await connection.fetchval(LAST_NUMBER, send_id)
        inserts, additions = renderings.rows_for(send_id, stored, last, cipher)
        if inserts:
            await connection.executemany(INSERT_SEND_CONTENT, inserts)
        if additions:
            await connection.executemany(ADD_READERS, additions)
    return renderings.numbers


class PostgresNotifications(NotificationsSql, PostgresEngine):
    """`Notifications` on PostgreSQL."""

    async def insert_notifications(
        self, batch: Sequence[NewNotification], *, node_id: str = ""
    ) -> list[NotificationRecord]:
        """See `Notifications.insert_notifications`: one statement whatever the batch size."""
        if not batch:
            return []
        async with self._connection() as connection:
            return await insert_batch(connection, batch, node_id, self._cipher)

    async def mark_read(
        self,
        user_id: str,
        ids: Sequence[str],
        at: int,
        *,
        categories: Sequence[str] | None = None,
    ) -> list[MarkedRead]:
        """See `Notifications.mark_read`."""
        if not ids:
            return []
        if categories is None:
            rows = await self._mark_read_and_cancel(_MARK_READ, user_id, list(ids), at)
        else:
            rows = await self._mark_read_and_cancel(
                _MARK_READ_WITHIN, user_id, list(ids), at, list(categories)
            )
        return marked_read(ids, rows)

    async def _mark_read_and_cancel(self, sql: str, *params: Any) -> list[Any]:
        """See `NotificationsSql._mark_read_and_cancel`: the marking statement becomes
        the first WITH item of one statement that also cancels."""
        return await self._fetch_all(_marking_and_cancelling(sql), *params)
