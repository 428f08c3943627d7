"""Sends (`storage.areas.sends`): SQL, row mapping and the methods, the same on both
backends. Each lease and progress change is one conditional UPDATE: whether it took
effect is whether it returned a row, so two nodes never both carry a send on."""

# S608 (SQL built from strings): every query here is assembled from the constants of this
# module and the backend's `_in_list` placeholder form; values travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from storage.crypto import Cipher
from storage.records import NewSend, SendChunk, SendDeliveryCount, SendRecord
from storage.sql.common import Row, check_limit, encode_json, seal, unseal
from storage.sql.engine import SqlEngine

SEND_COLUMNS = (
    "id, audience, content, category, api_key_id, status, cursor_user_id, resolved, "
    "committed, skipped, error, created_at, updated_at, finished_at"
)
INSERT_SEND = (
    "INSERT INTO sends (id, audience, content, category, api_key_id, status, created_at, "
    f"updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) RETURNING {SEND_COLUMNS}"
)
GET_SEND = f"SELECT {SEND_COLUMNS} FROM sends WHERE id = $1"
UNFINISHED_SENDS = (
    "SELECT id FROM sends WHERE finished_at IS NULL "
    "AND (lease_node IS NULL OR lease_node = $1 OR lease_until < $2) "
    "ORDER BY created_at, id LIMIT $3"
)
LEASE_SEND = (
    "UPDATE sends SET lease_node = $2, lease_until = $4 "
    "WHERE id = $1 AND finished_at IS NULL "
    "AND (lease_node IS NULL OR lease_node = $2 OR lease_until < $3) "
    f"RETURNING {SEND_COLUMNS}"
)
RECORD_CHUNK = (
    "UPDATE sends SET cursor_user_id = $3, resolved = resolved + $4, "
    "committed = committed + $5, skipped = skipped + $6, status = 'running', "
    "updated_at = $7, lease_until = $8 "
    "WHERE id = $1 AND lease_node = $2 AND finished_at IS NULL RETURNING id"
)
FINISH_SEND = (
    "UPDATE sends SET status = $3, error = $4, finished_at = $5, updated_at = $5, "
    "lease_node = NULL, lease_until = 0 "
    "WHERE id = $1 AND lease_node = $2 AND finished_at IS NULL RETURNING id"
)
# Both served by the unique index notifications (send_id, user_id) of migration 0015.
DELIVERY_COUNTS = (
    "SELECT d.channel, d.status, count(*) FROM notifications n "
    "JOIN channel_deliveries d ON d.notification_id = n.id "
    "WHERE n.send_id = $1 GROUP BY d.channel, d.status ORDER BY d.channel, d.status"
)
ACKED = (
    "SELECT count(*) FROM notifications n JOIN users u ON u.id = n.user_id "
    "WHERE n.send_id = $1 AND n.seq <= u.ack_seq"
)

_audience_decoder = msgspec.json.Decoder(dict[str, Any])


def send_from_row(row: Row, cipher: Cipher) -> SendRecord:
    """A row of SEND_COLUMNS."""
    send_id = row[0]
    content = unseal(cipher, row[2], "sends.content", send_id)
    assert content is not None  # NOT NULL
    return SendRecord(
        id=send_id,
        audience=_audience_decoder.decode(row[1]),
        content=content,
        category=row[3],
        api_key_id=row[4],
        status=row[5],
        cursor_user_id=row[6],
        resolved=row[7],
        committed=row[8],
        skipped=row[9],
        error=row[10],
        created_at=row[11],
        updated_at=row[12],
        finished_at=row[13],
    )


class SendsSql(SqlEngine):
    """`Sends`."""

    async def create_send(self, send: NewSend) -> SendRecord:
        """See `Sends.create_send`."""
        row = await self._write_one(
            INSERT_SEND,
            send.id,
            encode_json(send.audience),
            seal(self._cipher, send.content, "sends.content", send.id),
            send.category,
            send.api_key_id,
            send.created_at,
        )
        return send_from_row(row, self._cipher)

    async def get_send(self, send_id: str) -> SendRecord | None:
        """See `Sends.get_send`."""
        row = await self._fetch_one(GET_SEND, send_id)
        return None if row is None else send_from_row(row, self._cipher)

    async def unfinished_sends(self, *, node_id: str, now: int, limit: int) -> list[str]:
        """See `Sends.unfinished_sends`."""
        check_limit(limit)
        rows = await self._fetch_all(UNFINISHED_SENDS, node_id, now, limit)
        return [row[0] for row in rows]

    async def lease_send(
        self, send_id: str, *, node_id: str, now: int, until: int
    ) -> SendRecord | None:
        """See `Sends.lease_send`."""
        row = await self._write_one(LEASE_SEND, send_id, node_id, now, until)
        return None if row is None else send_from_row(row, self._cipher)

    async def record_send_chunk(
        self, send_id: str, chunk: SendChunk, *, node_id: str, now: int, until: int
    ) -> bool:
        """See `Sends.record_send_chunk`."""
        row = await self._write_one(
            RECORD_CHUNK,
            send_id,
            node_id,
            chunk.cursor_user_id,
            chunk.resolved,
            chunk.committed,
            chunk.skipped,
            now,
            until,
        )
        return row is not None

    async def finish_send(
        self, send_id: str, *, node_id: str, status: str, error: str | None, now: int
    ) -> bool:
        """See `Sends.finish_send`."""
        row = await self._write_one(FINISH_SEND, send_id, node_id, status, error, now)
        return row is not None

    async def users_sent(self, send_id: str, user_ids: Sequence[str]) -> set[str]:
        """See `Sends.users_sent`."""
        if not user_ids:
            return set()
        sql = f"SELECT user_id FROM notifications WHERE send_id = $1 AND user_id {self._in_list(2)}"
        rows = await self._fetch_all(sql, send_id, self._list_param(user_ids))
        return {row[0] for row in rows}

    async def send_delivery_counts(self, send_id: str) -> list[SendDeliveryCount]:
        """See `Sends.send_delivery_counts`."""
        rows = await self._fetch_all(DELIVERY_COUNTS, send_id)
        return [SendDeliveryCount(channel=r[0], status=r[1], count=int(r[2])) for r in rows]

    async def send_acked(self, send_id: str) -> int:
        """See `Sends.send_acked`."""
        return int((await self._fetch_one(ACKED, send_id))[0])
