"""Notifications (`storage.areas.notifications`): SQL, row mapping, one-statement methods.

`insert_notifications` and `mark_read` are each backend's own (seq assignment in one
transaction, lists as parameters); their shared pieces are here. Marking read also
cancels the channel deliveries not sent yet, in the same transaction: each backend's
`_mark_read_and_cancel` runs the marking statements built here.
"""

# S608 (SQL built from strings): every query here is assembled from the constants of
# this module and a backend's list form; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgspec

from storage.crypto import Cipher
from storage.jsondepth import CEILING, within_depth
from storage.records import MarkedRead, NewNotification, NotificationRecord
from storage.sql.common import Row, check_limit, encode_json, seal, unseal
from storage.sql.engine import SqlEngine
from storage.sql.send_contents import SHARED_CHANNEL_CONTENT, SHARED_COLUMNS, SHARED_JOIN

log = logging.getLogger("pushd.storage")
_data_decoder = msgspec.json.Decoder(dict[str, Any])

# A notification's own columns, then (SHARED_COLUMNS) its shared content's: a fanned-out
# notification's title, body and data are in `send_contents` (migration 0019), and a
# read selects FROM NOTIFICATIONS_FROM, which joins them.
OWN_COLUMNS = (
    "id, user_id, seq, title, body, data, category, priority, created_at, expires_at, "
    "read_at, dropped_at, dropped_reason, gid, version, updated_at, retracted_at"
)
NOTIFICATION_COLUMNS = f"{OWN_COLUMNS}, {SHARED_COLUMNS}"
NOTIFICATIONS_FROM = f"notifications {SHARED_JOIN}"
# What an edit and a retract return: they take the row off its shared content, so there
# is none to join.
RETURNED_COLUMNS = f"{OWN_COLUMNS}, NULL, NULL, NULL, NULL"
# What an insert writes (read_at and the drop mark start empty; PostgreSQL makes the gid).
NOTIFICATION_INSERT_COLUMNS = (
    "id, user_id, seq, title, body, data, category, priority, created_at, expires_at, node_id"
)
# The marking statements below share a shape that `_mark_read_and_cancel` relies on:
# $1 is the user, $3 the instant, and the last column each returns is the seq.
GET_NOTIFICATION = f"SELECT {NOTIFICATION_COLUMNS} FROM {NOTIFICATIONS_FROM} WHERE id = $1"
MARK_ALL_READ = (
    "UPDATE notifications SET read_at = $3 "
    "WHERE user_id = $1 AND read_at IS NULL AND seq <= $2 RETURNING seq"
)
LAST_SEQ = "SELECT last_seq FROM users WHERE id = $1"
# Edits (migration 0016). The version guard makes a read-merge-write of a partial edit
# safe against a concurrent one: the second writer finds no row and reads again. A
# fanned-out notification is copied on write: its row gets the new content and the
# channel content of its shared one ($7, resealed for the row), and leaves the shared
# one, which its send's other recipients keep reading.
UPDATE_CONTENT = (
    "UPDATE notifications SET title = $2, body = $3, data = $4, version = version + 1, "
    "updated_at = $5, "
    "channel_content = CASE WHEN content_no IS NULL THEN channel_content ELSE $7 END, "
    "content_no = NULL WHERE id = $1 AND retracted_at IS NULL AND version = $6 "
    f"RETURNING {RETURNED_COLUMNS}"
)
# Run after UPDATE_CONTENT in its transaction, only if it wrote ($2, $4 its instant and
# new version): one new push step per device whose first step was sent, due now, so that
# the device gets the edited content under the same collapse key (the notification id,
# actors/channel_outcomes.py) and its push service or OS replaces the first one where it
# still can. A device with a step still to send gets none (that one reads the new
# content). The id is the first step's plus `.v<version>` ($3), so one edit adds it once.
RESEND_PUSH = (
    "INSERT INTO channel_deliveries (id, notification_id, user_id, seq, channel, device_id, "
    "status, due_at, first_due_at, cancel_on_read, created_at, updated_at) "
    "SELECT d.id || $3, d.notification_id, d.user_id, d.seq, d.channel, d.device_id, "
    "'queued', n.updated_at, n.updated_at, d.cancel_on_read, n.updated_at, n.updated_at "
    "FROM channel_deliveries d JOIN notifications n ON n.id = d.notification_id "
    "WHERE d.notification_id = $1 AND n.version = $4 AND n.updated_at = $2 "
    "AND d.channel IN ('webpush', 'fcm', 'apns') AND d.status IN ('sent', 'delivered') "
    "AND d.id NOT LIKE '%.v%' "
    "AND NOT EXISTS (SELECT 1 FROM channel_deliveries p WHERE p.notification_id = $1 "
    "AND p.device_id = d.device_id AND p.status IN ('scheduled', 'queued', 'sending'))"
)
RETRACT = (
    "UPDATE notifications SET title = NULL, body = NULL, data = NULL, channel_content = NULL, "
    "content_no = NULL, version = version + 1, updated_at = $2, retracted_at = $2 "
    f"WHERE id = $1 AND retracted_at IS NULL RETURNING {RETURNED_COLUMNS}"
)
# Run after RETRACT in its transaction: the notification's row is locked (PostgreSQL)
# by then, and a step leased meanwhile is `sending`, not matched, and goes out as leased.
# The history rows are those the update just cancelled: reason `retracted` at this
# instant (a notification is retracted once).
CANCEL_RETRACTED_DELIVERIES = (
    "UPDATE channel_deliveries SET status = 'cancelled', reason = 'retracted', updated_at = $2 "
    "WHERE notification_id = $1 AND status IN ('scheduled', 'queued') "
    "AND EXISTS (SELECT 1 FROM notifications WHERE id = $1 AND retracted_at = $2)"
)
NOTE_RETRACTED_DELIVERIES = (
    "INSERT INTO channel_delivery_history (delivery_id, at, status, detail) "
    "SELECT id, updated_at, 'cancelled', '{\"reason\": \"retracted\"}' "
    "FROM channel_deliveries WHERE notification_id = $1 AND status = 'cancelled' "
    "AND reason = 'retracted' AND updated_at = $2"
)
MARK_DROPPED = (
    "UPDATE notifications SET dropped_at = $5, dropped_reason = $4 "
    "WHERE user_id = $1 AND seq >= $2 AND seq <= $3 AND dropped_at IS NULL"
)


class CategoryFilter(NamedTuple):
    """The `categories` of a `Notifications` call as a backend passes them: its `IN
    <list>` form for a placeholder number, and the list as a parameter. A null category
    is never in the list."""

    in_list: Callable[[int], str]
    param: Any

    def clause(self, params: list[Any]) -> str:
        """`category IN <list>`, the list appended to `params` as the next placeholder."""
        params.append(self.param)
        return f"category {self.in_list(len(params))}"


class DeliveryFilter(NamedTuple):
    """The `delivery_channel` and `delivery_status` of `list_notifications`: a
    notification matches when one of its channel deliveries has both (each when given)."""

    channel: str | None
    status: str | None

    def clause(self, params: list[Any]) -> str:
        """An EXISTS on the notification's deliveries, its values appended to `params`:
        one probe of their (notification_id, channel[, status]) index (migration 0009)
        per notification the walk in seq order meets."""
        terms = ["d.notification_id = notifications.id"]
        for column, value in (("channel", self.channel), ("status", self.status)):
            if value is not None:
                params.append(value)
                terms.append(f"d.{column} = ${len(params)}")
        return f"EXISTS (SELECT 1 FROM channel_deliveries d WHERE {' AND '.join(terms)})"


def user_notifications_query(
    user_id: str,
    *,
    seq_above: int | None = None,
    seq_below: int | None = None,
    unread_only: bool = False,
    categories: CategoryFilter | None = None,
    deliveries: DeliveryFilter | None = None,
    newest_first: bool,
    limit: int,
) -> tuple[str, list[Any]]:
    """The SELECT of `list_notifications` (newest first) and `notifications_after` and
    its parameters: one condition per filter given, the category and delivery filters
    included, so that `limit` counts only the rows the caller may see."""
    params: list[Any] = [user_id]
    clauses = ["user_id = $1"]
    for condition, value in (("seq >", seq_above), ("seq <", seq_below)):
        if value is not None:
            params.append(value)
            clauses.append(f"{condition} ${len(params)}")
    if unread_only:
        clauses.append("read_at IS NULL")
    if categories is not None:
        clauses.append(categories.clause(params))
    if deliveries is not None:
        clauses.append(deliveries.clause(params))
    params.append(limit)
    order = "seq DESC" if newest_first else "seq"
    sql = (
        f"SELECT {NOTIFICATION_COLUMNS} FROM {NOTIFICATIONS_FROM} "
        f"WHERE {' AND '.join(clauses)} "
        f"ORDER BY {order} LIMIT ${len(params)}"
    )
    return sql, params


def count_unread_query(user_id: str, categories: CategoryFilter | None) -> tuple[str, list[Any]]:
    """The count of `Notifications.count_unread` and its parameters."""
    params: list[Any] = [user_id]
    within = "" if categories is None else f" AND {categories.clause(params)}"
    sql = f"SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL{within}"
    return sql, params


def newest_seq_within_query(user_id: str, categories: CategoryFilter) -> tuple[str, list[Any]]:
    """The seq of the user's newest notification of `categories` (0 if none)."""
    params: list[Any] = [user_id]
    within = categories.clause(params)
    sql = f"SELECT coalesce(max(seq), 0) FROM notifications WHERE user_id = $1 AND {within}"
    return sql, params


def mark_all_read_within_query(
    user_id: str, through_seq: int, at: int, categories: CategoryFilter
) -> tuple[str, list[Any]]:
    """MARK_ALL_READ for the notifications of `categories` only."""
    params: list[Any] = [user_id, through_seq, at]
    within = categories.clause(params)
    sql = (
        "UPDATE notifications SET read_at = $3 "
        f"WHERE user_id = $1 AND read_at IS NULL AND seq <= $2 AND {within} RETURNING seq"
    )
    return sql, params


def mark_read_sql(id_list: str, category_list: str | None = None) -> str:
    """MARK_READ for a backend's way of passing a list as $2 (`= ANY($2::text[])`, or
    `IN (SELECT value FROM json_each($2))`); with `category_list` (the same form for
    $4), only notifications of those categories."""
    within = "" if category_list is None else f" AND category {category_list}"
    return (
        "UPDATE notifications SET read_at = $3 "
        f"WHERE user_id = $1 AND id {id_list} AND read_at IS NULL{within} "
        "RETURNING id, category, seq"
    )


def marked_read(ids: Sequence[str], rows: list[Any]) -> list[MarkedRead]:
    """The rows MARK_READ returned, in `ids` order (each id once)."""
    categories = {row[0]: row[1] for row in rows}
    return [MarkedRead(id=i, category=categories[i]) for i in dict.fromkeys(ids) if i in categories]


def notification_params(
    record: NotificationRecord, node_id: str, cipher: Cipher, *, shared: bool = False
) -> tuple[Any, ...]:
    """One notification as values in NOTIFICATION_INSERT_COLUMNS order, content sealed;
    `shared` (its content is in `send_contents`): no content of its own."""
    if shared:
        return (
            record.id,
            record.user_id,
            record.seq,
            None,
            None,
            None,
            record.category,
            record.priority,
            record.created_at,
            record.expires_at,
            node_id,
        )
    data = None if record.data is None else encode_json(record.data)
    return (
        record.id,
        record.user_id,
        record.seq,
        seal(cipher, record.title, "notifications.title", record.id),
        seal(cipher, record.body, "notifications.body", record.id),
        seal(cipher, data, "notifications.data", record.id),
        record.category,
        record.priority,
        record.created_at,
        record.expires_at,
        node_id,
    )


def decode_data(stored: str | None, notification_id: str) -> tuple[dict[str, Any] | None, bool]:
    """The JSON object of `notifications.data`, and whether it was unreadable (then None):
    one stored value that cannot be decoded must not break every listing and export that
    holds it. Too deep a value (stored before `limits.json_max_depth` existed) is
    measured first, so that the decoder never recurses into it."""
    if stored is None:
        return None, False
    if within_depth(stored, CEILING):
        try:
            return _data_decoder.decode(stored), False
        except msgspec.DecodeError:
            pass
    log.warning(
        "notification %s: its stored data is not a JSON object nested at most %d levels; "
        "it is shown as null with data_unreadable = true",
        notification_id,
        CEILING,
    )
    return None, True


def notification_from_row(row: Row, cipher: Cipher) -> NotificationRecord:
    """A row of NOTIFICATION_COLUMNS: the content is the row's own, or, when the row
    reads a shared content, that content's (sealed for its row of `send_contents`)."""
    notification_id, content_id = row[0], row[17]
    if content_id is None:
        table, sealed_for, stored = "notifications", notification_id, (row[3], row[4], row[5])
    else:
        table, sealed_for, stored = "send_contents", content_id, (row[18], row[19], row[20])
    data, unreadable = decode_data(
        unseal(cipher, stored[2], f"{table}.data", sealed_for), notification_id
    )
    return NotificationRecord(
        id=notification_id,
        user_id=row[1],
        seq=row[2],
        title=unseal(cipher, stored[0], f"{table}.title", sealed_for),
        body=unseal(cipher, stored[1], f"{table}.body", sealed_for),
        data=data,
        data_unreadable=unreadable,
        category=row[6],
        priority=row[7],
        created_at=row[8],
        expires_at=row[9],
        read_at=row[10],
        dropped_at=row[11],
        dropped_reason=row[12],
        gid=row[13],
        version=row[14],
        updated_at=row[15],
        retracted_at=row[16],
    )


def with_seq(notification: NewNotification, seq: int, gid: int) -> NotificationRecord:
    """The record of a notification committed with this seq and gid."""
    return NotificationRecord(
        id=notification.id,
        user_id=notification.user_id,
        seq=seq,
        title=notification.title,
        body=notification.body,
        data=notification.data,
        category=notification.category,
        priority=notification.priority,
        created_at=notification.created_at,
        expires_at=notification.expires_at,
        gid=gid,
    )


class NotificationsSql(SqlEngine):
    """`Notifications` but `insert_notifications` and `mark_read`, which each backend
    writes itself."""

    @abstractmethod
    async def _mark_read_and_cancel(self, sql: str, *params: Any) -> list[Any]:
        """Run a marking statement of this module (`$1` the user, `$3` the instant, the
        seq last in each row it returns) and, in the same transaction, cancel the user's
        unsent cancel_on_read channel deliveries of the seqs it marked (reason "read");
        return its rows."""

    async def get_notification(self, notification_id: str) -> NotificationRecord | None:
        """See `Notifications.get_notification`."""
        row = await self._fetch_one(GET_NOTIFICATION, notification_id)
        return None if row is None else notification_from_row(row, self._cipher)

    def _category_filter(self, categories: Sequence[str] | None) -> CategoryFilter | None:
        """`categories` of a call as this backend passes a list, None for every category."""
        if categories is None:
            return None
        return CategoryFilter(self._in_list, self._list_param(categories))

    async def list_notifications(
        self,
        user_id: str,
        *,
        before_seq: int | None,
        limit: int,
        unread_only: bool = False,
        categories: Sequence[str] | None = None,
        delivery_channel: str | None = None,
        delivery_status: str | None = None,
    ) -> list[NotificationRecord]:
        """See `Notifications.list_notifications`."""
        check_limit(limit)
        deliveries = None
        if delivery_channel is not None or delivery_status is not None:
            deliveries = DeliveryFilter(delivery_channel, delivery_status)
        sql, params = user_notifications_query(
            user_id,
            seq_below=before_seq,
            unread_only=unread_only,
            categories=self._category_filter(categories),
            deliveries=deliveries,
            newest_first=True,
            limit=limit,
        )
        rows = await self._fetch_all(sql, *params)
        return [notification_from_row(row, self._cipher) for row in rows]

    async def count_unread(self, user_id: str, *, categories: Sequence[str] | None = None) -> int:
        """See `Notifications.count_unread`."""
        sql, params = count_unread_query(user_id, self._category_filter(categories))
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
        """See `Notifications.notifications_after`."""
        check_limit(limit)
        sql, params = user_notifications_query(
            user_id,
            seq_above=after_seq,
            categories=self._category_filter(categories),
            newest_first=False,
            limit=limit,
        )
        rows = await self._fetch_all(sql, *params)
        return [notification_from_row(row, self._cipher) for row in rows]

    async def mark_all_read(
        self, user_id: str, at: int, *, categories: Sequence[str] | None = None
    ) -> tuple[int, int]:
        """See `Notifications.mark_all_read`."""
        within = self._category_filter(categories)
        if within is None:
            row = await self._fetch_one(LAST_SEQ, user_id)
            if row is None:
                return 0, 0
            through_seq: int = row[0]
            marked = await self._mark_read_and_cancel(MARK_ALL_READ, user_id, through_seq, at)
            return len(marked), through_seq
        # Up to the newest seq of those categories, not last_seq: that one counts the
        # notifications of every category.
        sql, params = newest_seq_within_query(user_id, within)
        through_seq = int((await self._fetch_one(sql, *params))[0])
        if through_seq == 0:
            return 0, 0
        sql, params = mark_all_read_within_query(user_id, through_seq, at, within)
        return len(await self._mark_read_and_cancel(sql, *params)), through_seq

    async def mark_dropped(
        self, user_id: str, *, first_seq: int, last_seq: int, reason: str, at: int
    ) -> None:
        """See `Notifications.mark_dropped`."""
        await self._write_one(MARK_DROPPED, user_id, first_seq, last_seq, reason, at)

    async def update_notification(
        self,
        notification_id: str,
        *,
        title: str | None,
        body: str | None,
        data: dict[str, Any] | None,
        expected_version: int,
        at: int,
    ) -> NotificationRecord | None:
        """See `Notifications.update_notification`."""
        stored_data = None if data is None else encode_json(data)
        version = expected_version + 1
        shared = await self._fetch_one(SHARED_CHANNEL_CONTENT, notification_id)
        content_id = None if shared is None else shared[0]
        channel_content = None
        if content_id is not None:
            # Copied on write: resealed for this notification's row.
            opened = unseal(self._cipher, shared[1], "send_contents.channel_content", content_id)
            channel_content = seal(
                self._cipher, opened, "notifications.channel_content", notification_id
            )
        updated, _resent = await self._write_many(
            [
                (
                    UPDATE_CONTENT,
                    (
                        notification_id,
                        seal(self._cipher, title, "notifications.title", notification_id),
                        seal(self._cipher, body, "notifications.body", notification_id),
                        seal(self._cipher, stored_data, "notifications.data", notification_id),
                        at,
                        expected_version,
                        channel_content,
                    ),
                ),
                (RESEND_PUSH, (notification_id, at, f".v{version}", version)),
            ]
        )
        return notification_from_row(updated[0], self._cipher) if updated else None

    async def retract_notification(
        self, notification_id: str, at: int
    ) -> NotificationRecord | None:
        """See `Notifications.retract_notification`."""
        retracted, _cancelled, _noted = await self._write_many(
            [
                (RETRACT, (notification_id, at)),
                (CANCEL_RETRACTED_DELIVERIES, (notification_id, at)),
                (NOTE_RETRACTED_DELIVERIES, (notification_id, at)),
            ]
        )
        return notification_from_row(retracted[0], self._cipher) if retracted else None
