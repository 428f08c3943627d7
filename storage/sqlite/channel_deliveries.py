"""Channel deliveries on SQLite: leases, outcomes and cancellations as jobs of the single
writer, whose BEGIN IMMEDIATE is the lock: no two leases ever run at once, in this
process or another on the same file.

Whole lists travel as ONE JSON parameter (json_each), as in notifications.py: a
statement per row would hand the GIL back and forth per row.
"""

# S608 (SQL built from strings): the statements below are assembled at import time from
# the constants of storage.sql.channel_deliveries; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from storage.crypto import Cipher
from storage.records import DeliveryOutcome, LeasedDelivery, NewNotification, NotificationRecord
from storage.sql.channel_deliveries import (
    CANCELLABLE,
    HISTORY_COLUMNS,
    INSERT_DELIVERY_COLUMNS,
    LEASED_COLUMNS,
    LEASED_JOINS,
    PENDING,
    ChannelDeliveriesSql,
    last_outcome_per_delivery,
    leased_from_row,
    outcome_values,
    planned_steps,
)
from storage.sql.common import check_limit, encode_json, sqlite_placeholders
from storage.sql.digests import NOT_DIGEST
from storage.sql.webhook_endpoints import with_webhook_addresses
from storage.sqlite.engine import SqliteEngine, fetch_all, write_transaction

_INSERT_DELIVERIES = (
    f"INSERT INTO channel_deliveries ({INSERT_DELIVERY_COLUMNS}) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
    "value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 6, value ->> 10, "
    "value ->> 11, value ->> 12, value ->> 13, value ->> 13 FROM json_each(?1)"
)

# leasing --------------------------------------------------------------------------------

# One channel's candidates, with whether their notification has expired: due rows in due
# order, and rows whose lease ran out (their worker died mid-send); not digest rows,
# which go out together (storage/sqlite/digests.py).
_DUE = (
    "SELECT d.id, d.due_at, n.expires_at IS NOT NULL AND n.expires_at <= $2 "
    "FROM channel_deliveries d JOIN notifications n ON n.id = d.notification_id "
    f"WHERE d.channel = $1 AND d.{PENDING} AND d.due_at <= $2 AND {NOT_DIGEST} "
    "ORDER BY d.due_at LIMIT $3"
)
_LEASE_RAN_OUT = (
    "SELECT d.id, d.due_at, n.expires_at IS NOT NULL AND n.expires_at <= $2 "
    "FROM channel_deliveries d JOIN notifications n ON n.id = d.notification_id "
    f"WHERE d.channel = $1 AND d.status = 'sending' AND d.lease_until < $2 AND {NOT_DIGEST} "
    "ORDER BY d.lease_until LIMIT $3"
)
_LEASE = sqlite_placeholders(
    "UPDATE channel_deliveries SET status = 'sending', lease_owner = $2, lease_until = $3, "
    "attempts = attempts + 1, updated_at = $4 WHERE id IN (SELECT value FROM json_each($1))"
)
_LEASED = (
    f"SELECT {LEASED_COLUMNS} FROM channel_deliveries d {LEASED_JOINS} "
    "WHERE d.id IN (SELECT value FROM json_each($1))"
)

# outcomes -------------------------------------------------------------------------------

# Outcomes are JSON arrays in `outcome_values` order.
_STILL_SENDING = (
    "SELECT d.id, d.device_id FROM channel_deliveries d "
    "JOIN json_each($1) AS o ON d.id = o.value ->> 0 WHERE d.status = 'sending' "
    "AND (o.value ->> 12 IS NULL OR d.attempts = o.value ->> 12)"
)
_NOTE_OUTCOMES = sqlite_placeholders(
    f"INSERT INTO channel_delivery_history ({HISTORY_COLUMNS}) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 6, value ->> 8, "
    "value ->> 7, value ->> 9, value ->> 10, value ->> 5 FROM json_each($1)"
)
_APPLY_OUTCOMES = sqlite_placeholders(
    "UPDATE channel_deliveries SET status = o.value ->> 2, "
    "due_at = coalesce(o.value ->> 4, due_at), provider = coalesce(o.value ->> 3, provider), "
    "fallback = o.value ->> 5, "
    "provider_message_id = coalesce(o.value ->> 6, provider_message_id), "
    "last_error = o.value ->> 7, lease_owner = NULL, lease_until = NULL, "
    "attempts = CASE WHEN o.value ->> 13 THEN attempts ELSE attempts - 1 END, "
    "updated_at = o.value ->> 1 "
    "FROM json_each($1) AS o WHERE channel_deliveries.id = o.value ->> 0"
)
_REMOVE_DEVICES = sqlite_placeholders(
    "DELETE FROM devices WHERE id IN (SELECT value FROM json_each($1))"
)

# cancelling -----------------------------------------------------------------------------


def _cancel_statements(selection: str, count: int) -> tuple[str, str]:
    """The history insert and the update that cancel the rows `selection` picks (a
    SELECT of delivery ids named `id`, with `count` parameters); the instant and the
    reason come after those."""
    at, reason = f"${count + 1}", f"${count + 2}"
    note = (
        "INSERT INTO channel_delivery_history (delivery_id, at, status, detail) "
        f"SELECT id, {at}, 'cancelled', json_object('reason', {reason}) FROM ({selection})"
    )
    update = (
        f"UPDATE channel_deliveries SET status = 'cancelled', reason = {reason}, "
        f"lease_owner = NULL, lease_until = NULL, updated_at = {at} WHERE id IN ({selection})"
    )
    return sqlite_placeholders(note), sqlite_placeholders(update)


# The rows of the user $1 of the seqs in the list $2 (a read).
_CANCEL_SEQS = _cancel_statements(
    "SELECT id FROM channel_deliveries WHERE user_id = $1 "
    f"AND seq IN (SELECT value FROM json_each($2)) AND {CANCELLABLE}",
    2,
)
# Of each [user, above, through] of the list $1, the rows with above < seq <= through
# (an ack cursor's move).
_CANCEL_RANGES = _cancel_statements(
    "SELECT channel_deliveries.id FROM json_each($1) AS m JOIN channel_deliveries "
    "ON channel_deliveries.user_id = m.value ->> 0 AND channel_deliveries.seq > m.value ->> 1 "
    f"AND channel_deliveries.seq <= m.value ->> 2 WHERE {CANCELLABLE}",
    1,
)
# The rows whose ids are in the list $1 (a lease's expired candidates, locked by the
# write transaction: no status to check).
_CANCEL_IDS = _cancel_statements("SELECT value AS id FROM json_each($1)", 1)
# `cancel_unsent_deliveries`: the user $1's rows, of the notifications in the list $2
# and up to the seq $3, each when given.
_CANCEL_UNSENT = _cancel_statements(
    f"SELECT id FROM channel_deliveries WHERE user_id = $1 AND {CANCELLABLE} "
    "AND ($2 IS NULL OR notification_id IN (SELECT value FROM json_each($2))) "
    "AND ($3 IS NULL OR seq <= $3)",
    3,
)


def _cancel(
    connection: sqlite3.Connection,
    statements: tuple[str, str],
    params: Sequence[Any],
    at: int,
    reason: str,
) -> int:
    """Run a pair of `_cancel_statements` inside the caller's write transaction; how
    many rows were cancelled. With none to cancel (the usual read), the history insert
    finds nothing in the partial index and the update is not run."""
    note, update = statements
    if not connection.execute(note, (*params, at, reason)).rowcount:
        return 0
    cancelled: int = connection.execute(update, (*params, at, reason)).rowcount
    return cancelled


def cancel_read(connection: sqlite3.Connection, user_id: str, seqs: Sequence[int], at: int) -> None:
    """Cancel the user's unsent cancel_on_read rows of `seqs` (just marked read)."""
    if seqs:
        _cancel(connection, _CANCEL_SEQS, (user_id, encode_json(list(seqs))), at, "read")


def cancel_acked(
    connection: sqlite3.Connection, moves: Sequence[tuple[str, int, int]], at: int
) -> None:
    """Cancel, for each (user, old ack, new ack), the user's unsent cancel_on_read rows
    of the seqs the ack cursor just passed."""
    if moves:
        _cancel(connection, _CANCEL_RANGES, (encode_json(moves),), at, "acked")


def insert_deliveries(
    connection: sqlite3.Connection,
    batch: Sequence[NewNotification],
    records: Sequence[NotificationRecord],
    cipher: Cipher,
) -> None:
    """Insert the batch's planned deliveries (its notifications just committed as
    `records`), in one statement; nothing at all when no notification has a plan."""
    if not any(notification.deliveries for notification in batch):
        return
    committed = {record.id: record for record in records}
    rows = []
    for notification, values in planned_steps(batch, cipher):
        record = committed[notification.id]
        rows.append((*values, record.id, record.user_id, record.seq, record.created_at))
    connection.execute(_INSERT_DELIVERIES, (encode_json(rows),))


def _lease(
    connection: sqlite3.Connection,
    channels: Sequence[str],
    lease: tuple[int, int, str, int],
    cipher: Cipher,
) -> list[LeasedDelivery]:
    now, limit, owner, lease_ms = lease
    with write_transaction(connection):
        found: list[Any] = []
        for channel in dict.fromkeys(channels):
            found += fetch_all(connection, _DUE, (channel, now, limit))
            found += fetch_all(connection, _LEASE_RAN_OUT, (channel, now, limit))
        expired = [row[0] for row in found if row[2]]
        if expired:
            _cancel(connection, _CANCEL_IDS, (encode_json(expired),), now, "expired")
        picked = [row[0] for row in sorted((r for r in found if not r[2]), key=_due_order)]
        picked = picked[:limit]
        if not picked:
            return []
        ids = encode_json(picked)
        connection.execute(_LEASE, (ids, owner, now + lease_ms, now))
        rows = fetch_all(connection, _LEASED, (ids,))
    order = {delivery_id: index for index, delivery_id in enumerate(picked)}
    rows.sort(key=lambda row: order[row[0]])
    return [leased_from_row(row, cipher) for row in rows]


def _due_order(candidate: Any) -> tuple[int, str]:
    return candidate[1], candidate[0]


def _record_outcomes(connection: sqlite3.Connection, outcomes: Sequence[DeliveryOutcome]) -> None:
    given = [outcome_values(outcome) for outcome in last_outcome_per_delivery(outcomes)]
    with write_transaction(connection):
        sending = dict(fetch_all(connection, _STILL_SENDING, (encode_json(given),)))
        applied = [values for values in given if values[0] in sending]
        if not applied:
            return
        listed = encode_json(applied)
        connection.execute(_NOTE_OUTCOMES, (listed,))
        connection.execute(_APPLY_OUTCOMES, (listed,))
        gone = [sending[values[0]] for values in applied if values[11] and sending[values[0]]]
        if gone:
            connection.execute(_REMOVE_DEVICES, (encode_json(gone),))


class SqliteChannelDeliveries(ChannelDeliveriesSql, SqliteEngine):
    """`ChannelDeliveries` on SQLite."""

    async def lease_due_deliveries(
        self, channels: Sequence[str], *, now: int, limit: int, owner: str, lease_ms: int
    ) -> list[LeasedDelivery]:
        """See `ChannelDeliveries.lease_due_deliveries`; the write transaction is the lock."""
        check_limit(limit)
        if not channels or limit == 0:
            return []
        wanted, lease, cipher = tuple(channels), (now, limit, owner, lease_ms), self._cipher
        leased = await self._run(lambda connection: _lease(connection, wanted, lease, cipher))
        return await with_webhook_addresses(self, leased, now)

    async def record_delivery_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """See `ChannelDeliveries.record_delivery_outcomes`."""
        if outcomes:
            given = tuple(outcomes)
            await self._run(lambda connection: _record_outcomes(connection, given))

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
        listed = None if notification_ids is None else encode_json(list(notification_ids))
        params = (user_id, listed, up_to_seq)

        def cancel(connection: sqlite3.Connection) -> int:
            with write_transaction(connection):
                return _cancel(connection, _CANCEL_UNSENT, params, at, reason)

        return await self._run(cancel)
