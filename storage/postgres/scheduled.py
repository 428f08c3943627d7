"""Scheduled sends on PostgreSQL: the release, one transaction on one connection.

The due rows are taken with `FOR UPDATE SKIP LOCKED`: a node releasing at the same
time takes the next rows instead of waiting for these, and a row is deleted by the
transaction that inserts its notification, so each is released exactly once whatever
the number of nodes. No leader is needed."""

from __future__ import annotations

from storage.postgres.engine import PostgresEngine
from storage.postgres.notifications import insert_batch
from storage.records import NotificationRecord
from storage.sql.scheduled import DUE_IDS, RELEASE_DUE, SET_CLAIM_SEQ, ScheduledSendsSql, due_order

# The due ids are taken ONCE, in a materialized CTE: left inside `IN (...)`, the planner
# may run the locking subquery again per candidate row (a nested loop), and with SKIP
# LOCKED each run skips the rows the previous one locked and returns the next ones, so
# the release would take every due row and ignore `limit` (seen once the table grew a
# column, migration 0018).
# S608: built from this module's and storage/sql/scheduled.py's constants only.
_TAKE_DUE = DUE_IDS.format(lock=" FOR UPDATE SKIP LOCKED")
_RELEASE_DUE = f"WITH due AS MATERIALIZED ({_TAKE_DUE}) " + RELEASE_DUE.format(  # noqa: S608
    due="SELECT id FROM due"
)


class PostgresScheduledSends(ScheduledSendsSql, PostgresEngine):
    """`ScheduledSends` on PostgreSQL."""

    async def release_due(self, now: int, *, limit: int, node_id: str) -> list[NotificationRecord]:
        """See `ScheduledSends.release_due`."""
        if limit <= 0:
            return []
        async with self._transaction() as connection:
            rows = await connection.fetch(_RELEASE_DUE, now, limit)
            if not rows:
                return []
            due = due_order(rows, self._cipher)
            records = await insert_batch(connection, [n for n, _ in due], node_id, self._cipher)
            claimed = [
                (record.id, record.user_id, record.seq)
                for (_, has_claim), record in zip(due, records, strict=True)
                if has_claim
            ]
            if claimed:
                await connection.executemany(SET_CLAIM_SEQ, claimed)
            return records
