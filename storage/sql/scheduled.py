"""Scheduled sends (`storage.areas.scheduled`): SQL, the sealed payload, the methods
both backends share. `release_due` is each backend's own (storage/sqlite/scheduled.py,
storage/postgres/scheduled.py): it inserts notifications inside its transaction."""

# S608 (SQL built from strings): every query here is assembled from the constants of
# this module and a backend's list form; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from storage.crypto import Cipher
from storage.errors import ConflictError, IdempotencyConflictError, UnknownUserError
from storage.records import NewNotification, ScheduledNotification, ScheduledRecord
from storage.sql.common import Row, check_limit, encode_json, seal, unseal
from storage.sql.engine import SqlEngine

PAYLOAD_COLUMN = "scheduled_notifications.payload"
SCHEDULED_COLUMNS = "id, user_id, status, due_at, payload, accepted_at, cancelled_at, decision"
# Both inserts write nothing for a user that does not exist (no row returned), instead
# of failing on the foreign key: the caller can then say which user.
INSERT_SCHEDULED = (
    "INSERT INTO scheduled_notifications (id, user_id, status, due_at, category, priority, "
    "payload, has_claim, accepted_at, decision) "
    "SELECT $1, $2, 'scheduled', $3, $4, $5, $6, $7, $8, $9 "
    "WHERE EXISTS (SELECT 1 FROM users WHERE id = $2) RETURNING id"
)
INSERT_SCHEDULED_CLAIM = (
    "INSERT INTO idempotency_keys (scope, key, request_hash, notification_id, user_id, seq, "
    "created_at) SELECT $1, $2, $3, $4, $5, 0, $6 WHERE EXISTS (SELECT 1 FROM users WHERE id = $5)"
)
GET_SCHEDULED = f"SELECT {SCHEDULED_COLUMNS} FROM scheduled_notifications WHERE id = $1"
CANCEL_SCHEDULED = (
    "UPDATE scheduled_notifications SET status = 'cancelled', cancelled_at = $2 "
    f"WHERE id = $1 AND status = 'scheduled' RETURNING {SCHEDULED_COLUMNS}"
)
# The due rows a release takes, oldest due first; {lock} is PostgreSQL's row lock.
DUE_IDS = (
    "SELECT id FROM scheduled_notifications WHERE status = 'scheduled' AND due_at <= $1 "
    "ORDER BY due_at LIMIT $2{lock}"
)
RELEASE_DUE = (
    "DELETE FROM scheduled_notifications WHERE status = 'scheduled' AND id IN ({due}) "
    "RETURNING id, due_at, payload, has_claim"
)

_payload_encoder = msgspec.json.Encoder()
_payload_decoder = msgspec.json.Decoder(NewNotification)
_decision_decoder = msgspec.json.Decoder(dict[str, Any])


def seal_payload(notification: NewNotification, cipher: Cipher) -> str:
    """The notification as stored in `payload`: its JSON (without the claim, which has
    its own row), sealed like notification content."""
    unclaimed = msgspec.structs.replace(notification, idempotency=None)
    text = _payload_encoder.encode(unclaimed).decode()
    sealed = seal(cipher, text, PAYLOAD_COLUMN, notification.id)
    assert sealed is not None
    return sealed


def open_payload(stored: str, notification_id: str, cipher: Cipher) -> NewNotification:
    """The notification behind `seal_payload`'s value."""
    text = unseal(cipher, stored, PAYLOAD_COLUMN, notification_id)
    assert text is not None
    return _payload_decoder.decode(text)


def scheduled_from_row(row: Row, cipher: Cipher) -> ScheduledRecord:
    """A row of SCHEDULED_COLUMNS."""
    return ScheduledRecord(
        notification=open_payload(row[4], row[0], cipher),
        status=row[2],
        due_at=row[3],
        accepted_at=row[5],
        cancelled_at=row[6],
        decision=None if row[7] is None else _decision_decoder.decode(row[7]),
    )


def due_order(rows: Sequence[Row], cipher: Cipher) -> list[tuple[NewNotification, bool]]:
    """The rows RELEASE_DUE returned as notifications in due order (ties by id), each
    with whether it holds an idempotency claim: the order their seqs are taken in."""
    ordered = sorted(rows, key=lambda row: (row[1], row[0]))
    return [(open_payload(row[2], row[0], cipher), bool(row[3])) for row in ordered]


class ScheduledSendsSql(SqlEngine):
    """`ScheduledSends` but `release_due`, which each backend writes itself."""

    async def schedule_notification(self, scheduled: ScheduledNotification) -> None:
        """See `ScheduledSends.schedule_notification`."""
        notification = scheduled.notification
        claim = notification.idempotency
        statements: list[tuple[str, Sequence[Any]]] = []
        if claim is not None:
            statements.append(
                (
                    INSERT_SCHEDULED_CLAIM,
                    (
                        claim.scope,
                        claim.key,
                        claim.request_hash,
                        notification.id,
                        notification.user_id,
                        scheduled.accepted_at,
                    ),
                )
            )
        statements.append(
            (
                INSERT_SCHEDULED,
                (
                    notification.id,
                    notification.user_id,
                    scheduled.due_at,
                    notification.category,
                    notification.priority,
                    seal_payload(notification, self._cipher),
                    claim is not None,
                    scheduled.accepted_at,
                    None if scheduled.decision is None else encode_json(scheduled.decision),
                ),
            )
        )
        try:
            results = await self._write_many(statements)
        except ConflictError as exc:
            if claim is not None and "idempotency_keys" in str(exc):
                raise IdempotencyConflictError(claim.scope, claim.key) from exc
            raise
        if not results[-1]:
            raise UnknownUserError(notification.user_id)

    async def cancel_scheduled(self, notification_id: str, at: int) -> ScheduledRecord | None:
        """See `ScheduledSends.cancel_scheduled`."""
        row = await self._write_one(CANCEL_SCHEDULED, notification_id, at)
        if row is None:
            return await self.get_scheduled(notification_id)
        return scheduled_from_row(row, self._cipher)

    async def get_scheduled(self, notification_id: str) -> ScheduledRecord | None:
        """See `ScheduledSends.get_scheduled`."""
        row = await self._fetch_one(GET_SCHEDULED, notification_id)
        return None if row is None else scheduled_from_row(row, self._cipher)

    async def list_scheduled(
        self,
        user_id: str,
        *,
        after_id: str | None,
        limit: int,
        categories: Sequence[str] | None = None,
    ) -> list[ScheduledRecord]:
        """See `ScheduledSends.list_scheduled`."""
        check_limit(limit)
        params: list[Any] = [user_id]
        clauses = ["user_id = $1"]
        if after_id is not None:
            params.append(after_id)
            clauses.append(f"id > ${len(params)}")
        if categories is not None:
            params.append(self._list_param(categories))
            clauses.append(f"category {self._in_list(len(params))}")
        params.append(limit)
        sql = (
            f"SELECT {SCHEDULED_COLUMNS} FROM scheduled_notifications "
            f"WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ${len(params)}"
        )
        rows = await self._fetch_all(sql, *params)
        return [scheduled_from_row(row, self._cipher) for row in rows]


# A released claim's seq (it was stored with 0); by the index on (user_id, seq).
SET_CLAIM_SEQ = (
    "UPDATE idempotency_keys SET seq = $3 WHERE user_id = $2 AND seq = 0 AND notification_id = $1"
)
