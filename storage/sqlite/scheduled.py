"""Scheduled sends on SQLite: the release, one write job (BEGIN IMMEDIATE already makes
this process the only writer of the file, so two releasers never take the same row)."""

from __future__ import annotations

import sqlite3

from storage.crypto import Cipher
from storage.records import NotificationRecord
from storage.sql.scheduled import DUE_IDS, RELEASE_DUE, SET_CLAIM_SEQ, ScheduledSendsSql, due_order
from storage.sqlite.engine import SqliteEngine, fetch_all, write_transaction
from storage.sqlite.notifications import insert_in_transaction

_RELEASE_DUE = RELEASE_DUE.format(due=DUE_IDS.format(lock=""))


def _release_due(
    connection: sqlite3.Connection, now: int, limit: int, node_id: str, cipher: Cipher
) -> list[NotificationRecord]:
    with write_transaction(connection):
        rows = fetch_all(connection, _RELEASE_DUE, (now, limit))
        if not rows:
            return []
        # Opened here, on the worker thread: the event loop never pays for it.
        due = due_order(rows, cipher)
        records = insert_in_transaction(connection, [n for n, _ in due], node_id, cipher)
        for (_, claimed), record in zip(due, records, strict=True):
            if claimed:
                fetch_all(connection, SET_CLAIM_SEQ, (record.id, record.user_id, record.seq))
        return records


class SqliteScheduledSends(ScheduledSendsSql, SqliteEngine):
    """`ScheduledSends` on SQLite."""

    async def release_due(self, now: int, *, limit: int, node_id: str) -> list[NotificationRecord]:
        """See `ScheduledSends.release_due`."""
        if limit <= 0:
            return []
        cipher = self._cipher
        return await self._run(
            lambda connection: _release_due(connection, now, limit, node_id, cipher)
        )
