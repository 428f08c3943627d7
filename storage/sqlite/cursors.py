"""Delivery cursors on SQLite: every user's cursors read and moved in one write job, which
also cancels the channel deliveries the ack cursors passed."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

import msgspec

from storage.records import CursorTimes
from storage.sql.common import NO_SEQ, encode_json
from storage.sql.cursors import (
    DeliveryCursorsSql,
    cursor_times_from_rows,
    cursor_times_sql,
    first_seq_outside_sql,
    merge_cursors,
)
from storage.sqlite.channel_deliveries import cancel_acked
from storage.sqlite.engine import SqliteEngine, fetch_one, write_transaction

# Every user's cursors as ONE row (a JSON array of [id, sent, ack, last]): a row per user
# would be a GIL hand-off per user on the worker thread (see _BUMP_GID_AND_READ_SEQS in
# storage/sqlite/notifications.py), a thousand per flush with a thousand users online.
_CURSORS_OF = (
    "SELECT json_group_array(json_array(id, sent_seq, ack_seq, last_seq)) FROM users "
    "WHERE id IN (SELECT value FROM json_each(?1))"
)
_SET_CURSORS = (
    "UPDATE users SET sent_seq = given.value ->> 0, ack_seq = given.value ->> 1 "
    "FROM json_each(?1) AS given WHERE users.id = given.key"
)
_INSERT_HISTORY = (
    "INSERT INTO cursor_history (user_id, cursor, seq, at) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1) WHERE true "
    "ON CONFLICT DO NOTHING"
)
_FIRST_SEQ_OUTSIDE = first_seq_outside_sql("IN (SELECT value FROM json_each($3))")
_CURSOR_TIMES = cursor_times_sql("json_each($2) AS s", "value")
_cursors_decoder = msgspec.json.Decoder(list[tuple[str, int, int, int]])


def _cursor_limit(
    connection: sqlite3.Connection, user_id: str, cursor: int, within: str | None
) -> int:
    """How far a cursor at `cursor` may move for a socket limited to the categories of
    `within` (a JSON list): just below the first notification of another category."""
    if within is None:
        return NO_SEQ
    (first_outside,) = fetch_one(connection, _FIRST_SEQ_OUTSIDE, (user_id, cursor, within))
    return NO_SEQ if first_outside is None else first_outside - 1


def _advance_cursors(
    connection: sqlite3.Connection,
    wanted: Mapping[str, tuple[int, int]],
    at: int,
    within: str | None,
) -> None:
    with write_transaction(connection):
        (found,) = connection.execute(_CURSORS_OF, (encode_json(list(wanted)),)).fetchone()
        current = _cursors_decoder.decode(found)
        moved: dict[str, tuple[int, int]] = {}
        history: list[tuple[str, str, int]] = []
        acked_moves: list[tuple[str, int, int]] = []
        for user_id, sent_seq, ack_seq, last_seq in current:
            sent, acked = wanted[user_id]
            sent = min(sent, _cursor_limit(connection, user_id, sent_seq, within))
            acked = min(acked, _cursor_limit(connection, user_id, ack_seq, within))
            new_sent = max(sent_seq, min(sent, last_seq))
            new_ack = max(ack_seq, min(acked, last_seq))
            if new_sent > sent_seq:
                history.append((user_id, "sent", new_sent))
            if new_ack > ack_seq:
                history.append((user_id, "acked", new_ack))
                acked_moves.append((user_id, ack_seq, new_ack))
            if (new_sent, new_ack) != (sent_seq, ack_seq):
                moved[user_id] = (new_sent, new_ack)
        if moved:
            connection.execute(_SET_CURSORS, (encode_json(moved),))
            connection.execute(_INSERT_HISTORY, (encode_json(history), at))
            cancel_acked(connection, acked_moves, at)


class SqliteDeliveryCursors(DeliveryCursorsSql, SqliteEngine):
    """`DeliveryCursors` on SQLite."""

    async def advance_cursors(
        self,
        *,
        sent: Mapping[str, int],
        acked: Mapping[str, int],
        at: int,
        within: Sequence[str] | None = None,
    ) -> None:
        """See `DeliveryCursors.advance_cursors`."""
        wanted = merge_cursors(sent, acked)
        listed = None if within is None else self._list_param(within)
        if wanted:
            await self._run(lambda connection: _advance_cursors(connection, wanted, at, listed))

    async def cursor_times(self, user_id: str, seqs: Sequence[int]) -> dict[int, CursorTimes]:
        """See `DeliveryCursors.cursor_times`."""
        if not seqs:
            return {}
        rows = await self._fetch_all(_CURSOR_TIMES, user_id, encode_json(list(seqs)))
        return cursor_times_from_rows(rows)
