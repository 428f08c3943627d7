"""Notifications on SQLite: the batch insert with its seq assignment (and the batch's
planned channel deliveries), and mark_read.

Seqs are numbered in Python here (PostgreSQL numbers them in SQL): the bump runs under
BEGIN IMMEDIATE, which already serialises every writer of the file.
"""

# S608 (SQL built from strings): the statements below are assembled at import time from
# the column lists of storage.sql.notifications; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from storage.crypto import Cipher
from storage.errors import IdempotencyConflictError, UnknownUserError
from storage.records import MarkedRead, NewNotification, NotificationRecord
from storage.sql.channel_deliveries import sealed_channel_content
from storage.sql.common import encode_json, sqlite_placeholders
from storage.sql.idempotency import INSERT_IDEMPOTENCY
from storage.sql.notifications import (
    NOTIFICATION_INSERT_COLUMNS,
    NotificationsSql,
    mark_read_sql,
    marked_read,
    notification_params,
    with_seq,
)
from storage.sql.send_contents import (
    ADD_READERS,
    INSERT_SEND_CONTENT,
    LAST_NUMBER,
    LOOKUP_RENDERINGS,
    Renderings,
)
from storage.sqlite.channel_deliveries import cancel_read, insert_deliveries
from storage.sqlite.engine import SqliteEngine, fetch_all, integrity_error, write_transaction

# The json_each() forms of PostgreSQL's unnest(): one statement for a whole mapping.
# BEGIN IMMEDIATE already serialises writers, so no lock order is needed here.
_BUMP_LAST_SEQS = (
    "UPDATE users SET last_seq = last_seq + given.value FROM json_each(?1) AS given "
    "WHERE users.id = given.key"
)
# The gid counter raised by the batch size, and the users' raised last_seqs as ONE JSON
# object, in one row of one statement. The sqlite3 module releases the GIL at every step
# of a statement and every row it reads, and under load each time this thread waits to
# take it back from the busy event loop: `RETURNING` a row per user made each commit
# wait about as many times as the batch had users.
_BUMP_GID_AND_READ_SEQS = (
    "UPDATE counters SET value = value + ?1 WHERE name = 'notification_gid' "
    "RETURNING value, (SELECT json_group_object(id, last_seq) FROM users "
    "WHERE id IN (SELECT key FROM json_each(?2)))"
)
# The whole batch as ONE JSON array of rows, inserted by ONE statement: executemany
# would step once per row, and every step releases and re-takes the GIL, which under
# load queued this thread behind the event loop once per row.
_INSERT_NOTIFICATIONS = (
    f"INSERT INTO notifications ({NOTIFICATION_INSERT_COLUMNS}, gid, channel_content, send_id, "
    "content_no) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
    "value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, "
    "value ->> 12, value ->> 13, value ->> 14 FROM json_each(?1)"
)
# A batch's shared contents (storage/sql/send_contents.py), before the rows reading them.
_LOOKUP_RENDERINGS = LOOKUP_RENDERINGS.format("IN (SELECT value FROM json_each($2))")
_INSERT_SEND_CONTENTS = sqlite_placeholders(INSERT_SEND_CONTENT)
_ADD_READERS = sqlite_placeholders(ADD_READERS)
_MARK_READ = mark_read_sql("IN (SELECT value FROM json_each($2))")
_MARK_READ_WITHIN = mark_read_sql(
    "IN (SELECT value FROM json_each($2))", "IN (SELECT value FROM json_each($4))"
)
_seqs_decoder = msgspec.json.Decoder(dict[str, int])


def _count_per_user(batch: Sequence[NewNotification]) -> dict[str, int]:
    """How many notifications each user of the batch gets."""
    return dict(Counter(notification.user_id for notification in batch))


def _assign_seqs(
    batch: Sequence[NewNotification],
    counts: Mapping[str, int],
    last_seqs: Mapping[str, int],
    first_gid: int,
) -> list[NotificationRecord]:
    """The batch's records, in batch order, with their seqs and gids.

    `last_seqs` holds each user's `last_seq` after it was raised by `counts[user]`
    under the row lock, so the user's seqs are the `counts[user]` values ending there.
    A user missing from `last_seqs` does not exist: `UnknownUserError`, and the caller's
    transaction rolls back.
    """
    for notification in batch:
        if notification.user_id not in last_seqs:
            raise UnknownUserError(notification.user_id)
    seq = {user_id: last_seqs[user_id] - count for user_id, count in counts.items()}
    records = []
    for offset, notification in enumerate(batch):
        seq[notification.user_id] += 1
        records.append(with_seq(notification, seq[notification.user_id], first_gid + offset))
    return records


def _insert_notifications(
    connection: sqlite3.Connection,
    batch: Sequence[NewNotification],
    node_id: str,
    cipher: Cipher,
) -> list[NotificationRecord]:
    with write_transaction(connection):
        return insert_in_transaction(connection, batch, node_id, cipher)


def insert_in_transaction(
    connection: sqlite3.Connection,
    batch: Sequence[NewNotification],
    node_id: str,
    cipher: Cipher,
) -> list[NotificationRecord]:
    """`insert_notifications` inside the caller's write transaction (the release of
    scheduled sends, storage/sqlite/scheduled.py, inserts in its own)."""
    counts = _count_per_user(batch)
    counts_json = encode_json(counts)
    connection.execute(_BUMP_LAST_SEQS, (counts_json,))
    # A counter, not max(gid) + 1: a gid must never be handed out twice, even after
    # the newest rows were deleted, or the relay would take a new row for a published one.
    last_gid, last_seqs = connection.execute(
        _BUMP_GID_AND_READ_SEQS, (len(batch), counts_json)
    ).fetchone()
    records = _assign_seqs(
        batch, counts, _seqs_decoder.decode(last_seqs), last_gid - len(batch) + 1
    )
    try:
        # Sealed here, on the worker thread: the event loop never pays for it.
        numbers = _store_renderings(connection, batch, cipher)
        rows = encode_json(
            [
                (
                    *notification_params(r, node_id, cipher, shared=number is not None),
                    r.gid,
                    sealed_channel_content(n, cipher),
                    n.send_id,
                    number,
                )
                for n, r, number in zip(batch, records, numbers, strict=True)
            ]
        )
        connection.execute(_INSERT_NOTIFICATIONS, (rows,))
        insert_deliveries(connection, batch, records, cipher)
    except sqlite3.IntegrityError as exc:
        raise integrity_error(exc) from exc
    for notification, record in zip(batch, records, strict=True):
        if notification.idempotency is not None:
            _claim_idempotency(connection, notification, record)
    return records


def _store_renderings(
    connection: sqlite3.Connection, batch: Sequence[NewNotification], cipher: Cipher
) -> list[int | None]:
    """Store the batch's shared contents (new renderings, readers added to stored ones)
    and return each notification's `content_no` (storage/sql/send_contents.py)."""
    renderings = Renderings(batch)
    for send_id in renderings.sends:
        digests = encode_json(renderings.digests_of(send_id))
        stored = dict(fetch_all(connection, _LOOKUP_RENDERINGS, (send_id, digests)))
        last = fetch_all(connection, LAST_NUMBER, (send_id,))[0][0]
        inserts, additions = renderings.rows_for(send_id, stored, last, cipher)
        connection.executemany(_INSERT_SEND_CONTENTS, inserts)
        connection.executemany(_ADD_READERS, additions)
    return renderings.numbers


def _claim_idempotency(
    connection: sqlite3.Connection, notification: NewNotification, record: NotificationRecord
) -> None:
    claim = notification.idempotency
    assert claim is not None
    params = (claim.scope, claim.key, claim.request_hash, record.id)
    try:
        fetch_all(
            connection,
            INSERT_IDEMPOTENCY,
            (*params, record.user_id, record.seq, record.created_at),
        )
    except sqlite3.IntegrityError as exc:
        raise IdempotencyConflictError(claim.scope, claim.key) from exc


class SqliteNotifications(NotificationsSql, SqliteEngine):
    """`Notifications` on SQLite."""

    async def insert_notifications(
        self, batch: Sequence[NewNotification], *, node_id: str = ""
    ) -> list[NotificationRecord]:
        """See `Notifications.insert_notifications`; BEGIN IMMEDIATE is the row lock here."""
        if not batch:
            return []
        rows = tuple(batch)  # the caller may reuse its list while the worker reads this
        cipher = self._cipher
        return await self._run(
            lambda connection: _insert_notifications(connection, rows, node_id, cipher)
        )

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
        listed = encode_json(list(ids))
        if categories is None:
            rows = await self._mark_read_and_cancel(_MARK_READ, user_id, listed, at)
        else:
            within = self._list_param(categories)
            rows = await self._mark_read_and_cancel(_MARK_READ_WITHIN, user_id, listed, at, within)
        return marked_read(ids, rows)

    async def _mark_read_and_cancel(self, sql: str, *params: Any) -> list[Any]:
        """See `NotificationsSql._mark_read_and_cancel`: one write job."""

        def mark(connection: sqlite3.Connection) -> list[Any]:
            with write_transaction(connection):
                rows = fetch_all(connection, sql, params)
                cancel_read(connection, params[0], [row[-1] for row in rows], params[2])
                return rows

        return await self._run(mark)
