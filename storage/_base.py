"""The `Storage` methods that are one plain statement, written once for both backends.

A backend supplies three primitives (read one row, read all rows, run one write in a
transaction, each translating its driver's errors) plus what needs its own SQL or
transaction handling: lifecycle, migrations, the upsert, the seq assignment and acks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from storage import _sql
from storage.crypto import SEALED_COLUMNS, Cipher
from storage.records import (
    ApiKeyRecord,
    AuditRecord,
    CursorHistoryRecord,
    DeviceRecord,
    IdempotencyRecord,
    NewUser,
    NotificationRecord,
    UserRecord,
)


class SqlStorageBase(ABC):
    """Single-statement `Storage` methods over a backend's primitives."""

    _cipher: Cipher
    """Seals and opens the columns of `SEALED_COLUMNS` (set by the backend's constructor)."""

    @abstractmethod
    async def _fetch_one(self, sql: str, *params: Any) -> Any:
        """The first row of a read (`$1` placeholders), or None."""

    @abstractmethod
    async def _fetch_all(self, sql: str, *params: Any) -> list[Any]:
        """Every row of a read (`$1` placeholders)."""

    @abstractmethod
    async def _write_one(self, sql: str, *params: Any) -> Any:
        """Run one write in its own transaction; its first RETURNING row, or None.

        A uniqueness violation raises `ConflictError` naming the column.
        """

    @abstractmethod
    async def _write_all(self, sql: str, *params: Any) -> list[Any]:
        """Run one write in its own transaction; every RETURNING row."""

    @abstractmethod
    async def _write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """Run the statements in order in ONE transaction; each one's RETURNING rows."""

    @abstractmethod
    def _in_list(self, param: int) -> str:
        """The backend's `IN <list>` form for a list of texts passed as parameter `param`
        (made by `_list_param`)."""

    @abstractmethod
    def _list_param(self, values: Sequence[str]) -> Any:
        """A list of texts as a parameter for `_in_list`."""

    async def ping(self) -> None:
        """See `Storage.ping`."""
        await self._fetch_one("SELECT 1")

    async def create_user(self, user: NewUser) -> UserRecord:
        """See `Storage.create_user`."""
        row = await self._write_one(_sql.INSERT_USER, *_sql.user_params(user, self._cipher))
        return _sql.user_from_row(row, self._cipher)

    async def get_user(self, user_id: str) -> UserRecord | None:
        """See `Storage.get_user`."""
        row = await self._fetch_one(_sql.GET_USER, user_id)
        return None if row is None else _sql.user_from_row(row, self._cipher)

    async def get_user_by_external_id(self, external_id: str) -> UserRecord | None:
        """See `Storage.get_user_by_external_id`."""
        row = await self._fetch_one(_sql.GET_USER_BY_EXTERNAL_ID, external_id)
        return None if row is None else _sql.user_from_row(row, self._cipher)

    async def list_users(self, *, after_id: str | None, limit: int) -> list[UserRecord]:
        """See `Storage.list_users`."""
        _sql.check_limit(limit)
        if after_id is None:
            rows = await self._fetch_all(_sql.LIST_USERS_FIRST, limit)
        else:
            rows = await self._fetch_all(_sql.LIST_USERS_AFTER, after_id, limit)
        return [_sql.user_from_row(row, self._cipher) for row in rows]

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        """See `Storage.list_devices`."""
        rows = await self._fetch_all(_sql.LIST_DEVICES, user_id)
        return [_sql.device_from_row(row) for row in rows]

    async def delete_device(self, user_id: str, device_id: str) -> bool:
        """See `Storage.delete_device`."""
        return await self._write_one(_sql.DELETE_DEVICE, device_id, user_id) is not None

    async def get_notification(self, notification_id: str) -> NotificationRecord | None:
        """See `Storage.get_notification`."""
        row = await self._fetch_one(_sql.GET_NOTIFICATION, notification_id)
        return None if row is None else _sql.notification_from_row(row, self._cipher)

    def _category_filter(self, categories: Sequence[str] | None) -> _sql.CategoryFilter | None:
        """`categories` of a call as this backend passes a list, None for every category."""
        if categories is None:
            return None
        return _sql.CategoryFilter(self._in_list, self._list_param(categories))

    async def list_notifications(
        self,
        user_id: str,
        *,
        before_seq: int | None,
        limit: int,
        unread_only: bool = False,
        categories: Sequence[str] | None = None,
    ) -> list[NotificationRecord]:
        """See `Storage.list_notifications`."""
        _sql.check_limit(limit)
        sql, params = _sql.user_notifications_query(
            user_id,
            seq_below=before_seq,
            unread_only=unread_only,
            categories=self._category_filter(categories),
            newest_first=True,
            limit=limit,
        )
        rows = await self._fetch_all(sql, *params)
        return [_sql.notification_from_row(row, self._cipher) for row in rows]

    async def count_unread(self, user_id: str, *, categories: Sequence[str] | None = None) -> int:
        """See `Storage.count_unread`."""
        sql, params = _sql.count_unread_query(user_id, self._category_filter(categories))
        count: int = (await self._fetch_one(sql, *params))[0]
        return count

    async def notifications_after(
        self,
        user_id: str,
        *,
        after_seq: int,
        limit: int,
        categories: Sequence[str] | None = None,
    ) -> list[NotificationRecord]:
        """See `Storage.notifications_after`."""
        _sql.check_limit(limit)
        sql, params = _sql.user_notifications_query(
            user_id,
            seq_above=after_seq,
            categories=self._category_filter(categories),
            newest_first=False,
            limit=limit,
        )
        rows = await self._fetch_all(sql, *params)
        return [_sql.notification_from_row(row, self._cipher) for row in rows]

    async def mark_all_read(
        self, user_id: str, at: int, *, categories: Sequence[str] | None = None
    ) -> tuple[int, int]:
        """See `Storage.mark_all_read`."""
        within = self._category_filter(categories)
        if within is None:
            row = await self._fetch_one(_sql.LAST_SEQ, user_id)
            if row is None:
                return 0, 0
            through_seq: int = row[0]
            marked = await self._write_all(_sql.MARK_ALL_READ, user_id, through_seq, at)
            return len(marked), through_seq
        # Up to the newest seq of those categories, not last_seq: that one counts the
        # notifications of every category.
        sql, params = _sql.newest_seq_within_query(user_id, within)
        through_seq = int((await self._fetch_one(sql, *params))[0])
        if through_seq == 0:
            return 0, 0
        sql, params = _sql.mark_all_read_within_query(user_id, through_seq, at, within)
        return len(await self._write_all(sql, *params)), through_seq

    async def mark_dropped(
        self, user_id: str, *, first_seq: int, last_seq: int, reason: str, at: int
    ) -> None:
        """See `Storage.mark_dropped`."""
        await self._write_one(_sql.MARK_DROPPED, user_id, first_seq, last_seq, reason, at)

    async def find_idempotency(
        self, scope: str, key: str, *, not_before: int
    ) -> IdempotencyRecord | None:
        """See `Storage.find_idempotency`."""
        row = await self._fetch_one(_sql.FIND_IDEMPOTENCY, scope, key)
        if row is None:
            return None
        record = _sql.idempotency_from_row(row)
        if record.created_at < not_before:
            await self._write_one(_sql.DELETE_IDEMPOTENCY_IF_OLD, scope, key, not_before)
            return None
        return record

    async def purge_idempotency(self, *, before: int, limit: int) -> int:
        """See `Storage.purge_idempotency`."""
        _sql.check_limit(limit)
        return len(await self._write_all(_sql.PURGE_IDEMPOTENCY, before, limit))

    async def get_relay_mark(self, node_id: str) -> int | None:
        """See `Storage.get_relay_mark`."""
        row = await self._fetch_one(_sql.GET_RELAY_MARK, node_id)
        return None if row is None else int(row[0])

    async def set_relay_mark(self, node_id: str, published_gid: int) -> None:
        """See `Storage.set_relay_mark`."""
        await self._write_one(_sql.SET_RELAY_MARK, node_id, published_gid)

    async def unpublished_notifications(
        self, node_id: str, *, after_gid: int, limit: int
    ) -> list[NotificationRecord]:
        """See `Storage.unpublished_notifications`."""
        _sql.check_limit(limit)
        rows = await self._fetch_all(_sql.UNPUBLISHED, node_id, after_gid, limit)
        return [_sql.notification_from_row(row, self._cipher) for row in rows]

    async def max_gid(self, node_id: str) -> int:
        """See `Storage.max_gid`."""
        return int((await self._fetch_one(_sql.MAX_GID, node_id))[0])

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """See `Storage.create_api_key`."""
        await self._write_one(_sql.INSERT_API_KEY, *_sql.api_key_params(key))

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """See `Storage.find_api_key`."""
        row = await self._fetch_one(_sql.FIND_API_KEY, key_hash)
        return None if row is None else _sql.api_key_from_row(row)

    async def count_api_keys(self) -> int:
        """See `Storage.count_api_keys`."""
        count: int = (await self._fetch_one(_sql.COUNT_API_KEYS))[0]
        return count

    # access control (issue #4) ----------------------------------------------------------

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """See `Storage.list_api_keys`."""
        return [_sql.api_key_from_row(row) for row in await self._fetch_all(_sql.LIST_API_KEYS)]

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """See `Storage.get_api_key`."""
        row = await self._fetch_one(_sql.GET_API_KEY, key_id)
        return None if row is None else _sql.api_key_from_row(row)

    async def get_user_and_token_cutoff(self, user_id: str) -> tuple[UserRecord, int] | None:
        """See `Storage.get_user_and_token_cutoff`."""
        row = await self._fetch_one(_sql.GET_USER_AND_TOKEN_CUTOFF, user_id)
        return None if row is None else _sql.user_and_token_cutoff_from_row(row, self._cipher)

    async def revoke_user_tokens(self, user_id: str, *, before: int) -> bool:
        """See `Storage.revoke_user_tokens`."""
        return await self._write_one(_sql.REVOKE_USER_TOKENS, user_id, before) is not None

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: int | None = None,
        until: int | None = None,
        before_id: int | None = None,
        limit: int,
    ) -> list[AuditRecord]:
        """See `Storage.list_audit`."""
        _sql.check_limit(limit)
        sql, params = _sql.list_audit_query(
            actor=actor,
            action=action,
            target=target,
            since=since,
            until=until,
            before_id=before_id,
            limit=limit,
        )
        return [_sql.audit_from_row(row) for row in await self._fetch_all(sql, *params)]

    async def purge_audit(self, *, before: int, limit: int) -> int:
        """See `Storage.purge_audit`."""
        _sql.check_limit(limit)
        return len(await self._write_all(_sql.PURGE_AUDIT, before, limit))

    # data protection (issue #4) ---------------------------------------------------------

    async def erase_user(self, user_id: str, *, batch_size: int) -> bool:
        """See `Storage.erase_user`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        while await self._write_all(_sql.ERASE_NOTIFICATIONS, user_id, batch_size):
            pass
        results = await self._write_many([(sql, (user_id,)) for sql in _sql.ERASE_USER])
        return bool(results[-1])

    async def idempotency_keys_of(
        self, user_id: str, *, after_seq: int, limit: int
    ) -> list[IdempotencyRecord]:
        """See `Storage.idempotency_keys_of`."""
        _sql.check_limit(limit)
        rows = await self._fetch_all(_sql.IDEMPOTENCY_OF_USER, user_id, after_seq, limit)
        return [_sql.idempotency_from_row(row) for row in rows]

    async def cursor_history_of(
        self, user_id: str, *, after: tuple[str, int] | None, limit: int
    ) -> list[CursorHistoryRecord]:
        """See `Storage.cursor_history_of`."""
        _sql.check_limit(limit)
        cursor, seq = after if after is not None else ("", -1)
        rows = await self._fetch_all(_sql.CURSOR_HISTORY_OF_USER, user_id, cursor, seq, limit)
        return [_sql.cursor_history_from_row(row) for row in rows]

    async def purge_notifications(
        self,
        *,
        created_before: int,
        limit: int,
        category: str | None = None,
        except_categories: Sequence[str] = (),
    ) -> int:
        """See `Storage.purge_notifications`. The batch is chosen by a read, then deleted
        in one transaction: a row another node deleted in between is not counted."""
        _sql.check_limit(limit)
        listed = list(except_categories) if category is None else [category]
        select = _sql.purge_candidates_sql(self._in_list(2), others=category is None)
        candidates = await self._fetch_all(select, created_before, self._list_param(listed), limit)
        if not candidates:
            return 0
        ids = [row[0] for row in candidates]
        users = sorted({row[1] for row in candidates})
        deleted, _ = await self._write_many(
            [
                (_sql.delete_notifications_sql(self._in_list(1)), (self._list_param(ids),)),
                (
                    _sql.purge_cursor_history_sql(self._in_list(1)),
                    (self._list_param(users), _sql.NO_SEQ),
                ),
            ]
        )
        return len(deleted)

    async def count_not_under_active_key(self) -> int:
        """See `Storage.count_not_under_active_key`."""
        prefix = _sql.active_prefix(self._cipher)
        total = 0
        for table in SEALED_COLUMNS:
            row = await self._fetch_one(_sql.count_not_under_key_sql(table), prefix, len(prefix))
            total += int(row[0])
        return total

    async def rekey_batch(self, table: str, *, after_id: str, limit: int) -> tuple[int, str | None]:
        """See `Storage.rekey_batch`. Read, resealed here, written in one transaction:
        sealed columns are written only at insert (and by a rekey, which writes the same
        plaintext under the same key), so nothing can change them between the two."""
        if table not in SEALED_COLUMNS:
            raise ValueError(f"table {table!r} has no sealed columns: {list(SEALED_COLUMNS)}")
        _sql.check_limit(limit)
        prefix = _sql.active_prefix(self._cipher)
        rows = await self._fetch_all(
            _sql.rekey_select_sql(table), after_id, prefix, len(prefix), limit
        )
        if not rows:
            return 0, None
        update = _sql.rekey_update_sql(table)
        resealed = [(update, _sql.reseal_row(table, row, self._cipher)) for row in rows]
        await self._write_many(resealed)
        return len(rows), rows[-1][0]
