"""What the SQLite and PostgreSQL backends share: SQL text, row <-> record mapping, JSON
encoding and the seq assignment of `insert_notifications`.

SQL is written once with PostgreSQL's `$1` placeholders; `sqlite_placeholders` turns
them into SQLite's equivalent `?1`. Rows are read by position, in the order of the
`*_COLUMNS` lists, which every SELECT and RETURNING here uses.
"""

# S608 (SQL built from strings): every query here is assembled at import time from the
# constants of this module only; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, NamedTuple, Protocol

import msgspec

from storage.crypto import PREFIX, SEALED_COLUMNS, Cipher
from storage.errors import ConflictError
from storage.jsondepth import CEILING, within_depth
from storage.records import (
    ApiKeyRecord,
    AuditRecord,
    CursorHistoryRecord,
    CursorTimes,
    DeviceRecord,
    IdempotencyRecord,
    MarkedRead,
    NewAuditRecord,
    NewDevice,
    NewNotification,
    NewUser,
    NotificationRecord,
    UserRecord,
)


class Row(Protocol):
    """A result row of either driver (sqlite3 tuple, asyncpg Record), read by position."""

    def __getitem__(self, index: int, /) -> Any: ...


# Built once: msgspec encoders/decoders are cheap to reuse and costly to rebuild per row.
_json_encoder = msgspec.json.Encoder()
_details_decoder = msgspec.json.Decoder(dict[str, str])
_data_decoder = msgspec.json.Decoder(dict[str, Any])

log = logging.getLogger("pushd.storage")
_categories_decoder = msgspec.json.Decoder(tuple[str, ...])


def encode_json(value: object) -> str:
    """JSON text for a TEXT column."""
    return _json_encoder.encode(value).decode()


def now_ms() -> int:
    """The current time as Unix epoch milliseconds."""
    return time.time_ns() // 1_000_000


@cache
def sqlite_placeholders(sql: str) -> str:
    """`$1` -> `?1`: SQLite would read `$1` as a *named* parameter."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


def seal(cipher: Cipher, value: str | None, column: str, row_id: str) -> str | None:
    """`value` as stored in `column` (`table.column`) of the row `row_id`."""
    return None if value is None else cipher.seal(value, f"{column}:{row_id}")


def unseal(cipher: Cipher, stored: str | None, column: str, row_id: str) -> str | None:
    """The value behind what `seal` stored."""
    return None if stored is None else cipher.open(stored, f"{column}:{row_id}")


def check_limit(limit: int) -> None:
    """Refuse a negative limit: SQLite reads it as 'no limit', PostgreSQL as an error."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def conflict(table: str, field: str) -> ConflictError:
    """The error for a uniqueness violation on `table.field`."""
    return ConflictError(
        f"{table}.{field} must be unique and another row already has this value",
        field=field,
    )


# users ---------------------------------------------------------------------------------

USER_COLUMNS = (
    "id, external_id, name, email, phone, locale, timezone, created_at, last_seq, ack_seq, sent_seq"
)
INSERT_USER = (
    "INSERT INTO users (id, external_id, name, email, phone, locale, timezone, created_at) "
    f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {USER_COLUMNS}"
)
GET_USER = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1"
GET_USER_BY_EXTERNAL_ID = f"SELECT {USER_COLUMNS} FROM users WHERE external_id = $1"
LIST_USERS_FIRST = f"SELECT {USER_COLUMNS} FROM users ORDER BY id LIMIT $1"
LIST_USERS_AFTER = f"SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"


def user_params(user: NewUser, cipher: Cipher) -> tuple[Any, ...]:
    """Parameters of INSERT_USER, contact fields sealed (external_id stays plaintext: it
    is looked up by equality and must stay unique)."""
    return (
        user.id,
        user.external_id,
        seal(cipher, user.name, "users.name", user.id),
        seal(cipher, user.email, "users.email", user.id),
        seal(cipher, user.phone, "users.phone", user.id),
        user.locale,
        user.timezone,
        user.created_at,
    )


def user_from_row(row: Row, cipher: Cipher) -> UserRecord:
    """A row of USER_COLUMNS."""
    user_id = row[0]
    return UserRecord(
        id=user_id,
        external_id=row[1],
        name=unseal(cipher, row[2], "users.name", user_id),
        email=unseal(cipher, row[3], "users.email", user_id),
        phone=unseal(cipher, row[4], "users.phone", user_id),
        locale=row[5],
        timezone=row[6],
        created_at=row[7],
        last_seq=row[8],
        ack_seq=row[9],
        sent_seq=row[10],
    )


# devices -------------------------------------------------------------------------------

DEVICE_COLUMNS = "id, user_id, kind, address, details, created_at"
# upsert_device runs these two in one transaction: the insert tells by returning a row
# whether it created one, which a single INSERT ... ON CONFLICT DO UPDATE cannot tell
# portably.
INSERT_DEVICE = (
    f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
    f"ON CONFLICT (user_id, kind, address) DO NOTHING RETURNING {DEVICE_COLUMNS}"
)
REPLACE_DEVICE_DETAILS = (
    "UPDATE devices SET details = $4 WHERE user_id = $1 AND kind = $2 AND address = $3 "
    f"RETURNING {DEVICE_COLUMNS}"
)
LIST_DEVICES = f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at, id"
DELETE_DEVICE = "DELETE FROM devices WHERE id = $1 AND user_id = $2 RETURNING id"


def device_params(device: NewDevice) -> tuple[Any, ...]:
    """Parameters of INSERT_DEVICE."""
    return (
        device.id,
        device.user_id,
        device.kind,
        device.address,
        encode_json(device.details),
        device.created_at,
    )


def replace_details_params(device: NewDevice) -> tuple[Any, ...]:
    """Parameters of REPLACE_DEVICE_DETAILS."""
    return (device.user_id, device.kind, device.address, encode_json(device.details))


def device_from_row(row: Row) -> DeviceRecord:
    """A row of DEVICE_COLUMNS."""
    return DeviceRecord(
        id=row[0],
        user_id=row[1],
        kind=row[2],
        address=row[3],
        details=_details_decoder.decode(row[4]),
        created_at=row[5],
    )


# notifications -------------------------------------------------------------------------

NOTIFICATION_COLUMNS = (
    "id, user_id, seq, title, body, data, category, priority, created_at, expires_at, "
    "read_at, dropped_at, dropped_reason, gid"
)
# What an insert writes (read_at and the drop mark start empty; PostgreSQL makes the gid).
NOTIFICATION_INSERT_COLUMNS = (
    "id, user_id, seq, title, body, data, category, priority, created_at, expires_at, node_id"
)
GET_NOTIFICATION = f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1"
MARK_ALL_READ = (
    "UPDATE notifications SET read_at = $3 "
    "WHERE user_id = $1 AND read_at IS NULL AND seq <= $2 RETURNING seq"
)
LAST_SEQ = "SELECT last_seq FROM users WHERE id = $1"
MARK_DROPPED = (
    "UPDATE notifications SET dropped_at = $5, dropped_reason = $4 "
    "WHERE user_id = $1 AND seq >= $2 AND seq <= $3 AND dropped_at IS NULL"
)
UNPUBLISHED = (
    f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE node_id = $1 AND gid > $2 "
    "ORDER BY gid LIMIT $3"
)
MAX_GID = "SELECT coalesce(max(gid), 0) FROM notifications WHERE node_id = $1"
GET_RELAY_MARK = "SELECT published_gid FROM relay_marks WHERE node_id = $1"
SET_RELAY_MARK = (
    "INSERT INTO relay_marks (node_id, published_gid) VALUES ($1, $2) "
    "ON CONFLICT (node_id) DO UPDATE SET published_gid = excluded.published_gid "
    "WHERE relay_marks.published_gid < excluded.published_gid"
)


class CategoryFilter(NamedTuple):
    """The `categories` of a `Storage` call as a backend passes them: its `IN <list>`
    form for a placeholder number, and the list as a parameter. A null category is
    never in the list."""

    in_list: Callable[[int], str]
    param: Any

    def clause(self, params: list[Any]) -> str:
        """`category IN <list>`, the list appended to `params` as the next placeholder."""
        params.append(self.param)
        return f"category {self.in_list(len(params))}"


def user_notifications_query(
    user_id: str,
    *,
    seq_above: int | None = None,
    seq_below: int | None = None,
    unread_only: bool = False,
    categories: CategoryFilter | None = None,
    newest_first: bool,
    limit: int,
) -> tuple[str, list[Any]]:
    """The SELECT of `list_notifications` (newest first) and `notifications_after` and
    its parameters: one condition per filter given, the category filter included, so
    that `limit` counts only the rows the caller may see."""
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
    params.append(limit)
    order = "seq DESC" if newest_first else "seq"
    sql = (
        f"SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE {' AND '.join(clauses)} "
        f"ORDER BY {order} LIMIT ${len(params)}"
    )
    return sql, params


def count_unread_query(user_id: str, categories: CategoryFilter | None) -> tuple[str, list[Any]]:
    """The count of `Storage.count_unread` and its parameters."""
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
        f"WHERE user_id = $1 AND id {id_list} AND read_at IS NULL{within} RETURNING id, category"
    )


def marked_read(ids: Sequence[str], rows: list[Any]) -> list[MarkedRead]:
    """The rows MARK_READ returned, in `ids` order (each id once)."""
    categories = {row[0]: row[1] for row in rows}
    return [MarkedRead(id=i, category=categories[i]) for i in dict.fromkeys(ids) if i in categories]


def first_seq_outside_sql(category_list: str) -> str:
    """The seq of the user $1's first notification above $2 whose category is not in
    the list $3 (`category_list`, the backend's form for $3), or NULL: a cursor of a
    socket limited to those categories stops below it (`advance_cursors`)."""
    return (
        "SELECT min(seq) FROM notifications WHERE user_id = $1 AND seq > $2 "
        f"AND (category IS NULL OR NOT (category {category_list}))"
    )


def cursor_times_sql(seq_source: str, seq_column: str) -> str:
    """CURSOR_TIMES for a backend's list of seqs as $2 (a table `s` with `seq_column`).

    The cursors only move forward, so the first history row at or above a seq carries
    the time the cursor reached it.
    """
    first_at = (
        "(SELECT h.at FROM cursor_history h WHERE h.user_id = $1 AND h.cursor = '{0}' "
        f"AND h.seq >= s.{seq_column} ORDER BY h.seq LIMIT 1)"
    )
    return (
        f"SELECT s.{seq_column}, {first_at.format('sent')}, {first_at.format('acked')} "
        f"FROM {seq_source}"
    )


def notification_params(
    record: NotificationRecord, node_id: str, cipher: Cipher
) -> tuple[Any, ...]:
    """One notification as values in NOTIFICATION_INSERT_COLUMNS order, content sealed."""
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


def _decode_data(stored: str | None, notification_id: str) -> tuple[dict[str, Any] | None, bool]:
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
    """A row of NOTIFICATION_COLUMNS."""
    notification_id = row[0]
    data, unreadable = _decode_data(
        unseal(cipher, row[5], "notifications.data", notification_id), notification_id
    )
    return NotificationRecord(
        id=notification_id,
        user_id=row[1],
        seq=row[2],
        title=unseal(cipher, row[3], "notifications.title", notification_id),
        body=unseal(cipher, row[4], "notifications.body", notification_id),
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


def cursor_times_from_rows(rows: list[Any]) -> dict[int, CursorTimes]:
    """Rows of cursor_times_sql by seq."""
    return {row[0]: CursorTimes(sent_at=row[1], acked_at=row[2]) for row in rows}


# idempotency keys ----------------------------------------------------------------------

IDEMPOTENCY_COLUMNS = "scope, key, request_hash, notification_id, user_id, seq, created_at"
FIND_IDEMPOTENCY = (
    f"SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE scope = $1 AND key = $2"
)
DELETE_IDEMPOTENCY_IF_OLD = (
    "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND created_at < $3"
)
PURGE_IDEMPOTENCY = (
    "DELETE FROM idempotency_keys WHERE (scope, key) IN ("
    "SELECT scope, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2) RETURNING key"
)
INSERT_IDEMPOTENCY = (
    f"INSERT INTO idempotency_keys ({IDEMPOTENCY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


def idempotency_from_row(row: Row) -> IdempotencyRecord:
    """A row of IDEMPOTENCY_COLUMNS."""
    return IdempotencyRecord(
        scope=row[0],
        key=row[1],
        request_hash=row[2],
        notification_id=row[3],
        user_id=row[4],
        seq=row[5],
        created_at=row[6],
    )


def merge_cursors(sent: Mapping[str, int], acked: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """{user: (sent, acked)} with 0 (moves nothing) where one of the two is not given."""
    return {user: (sent.get(user, 0), acked.get(user, 0)) for user in {*sent, *acked}}


# API keys ------------------------------------------------------------------------------

API_KEY_COLUMNS = "id, name, role, key_hash, created_at, revoked_at, categories"
INSERT_API_KEY = f"INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
FIND_API_KEY = f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
COUNT_API_KEYS = "SELECT count(*) FROM api_keys"


def api_key_params(key: ApiKeyRecord) -> tuple[Any, ...]:
    """Parameters of INSERT_API_KEY."""
    categories = None if key.categories is None else encode_json(key.categories)
    return (key.id, key.name, key.role, key.key_hash, key.created_at, key.revoked_at, categories)


def api_key_from_row(row: Row) -> ApiKeyRecord:
    """A row of API_KEY_COLUMNS."""
    return ApiKeyRecord(
        id=row[0],
        name=row[1],
        role=row[2],
        key_hash=row[3],
        created_at=row[4],
        revoked_at=row[5],
        categories=None if row[6] is None else _categories_decoder.decode(row[6]),
    )


# access control (issue #4) ---------------------------------------------------------------

LIST_API_KEYS = f"SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
GET_API_KEY = f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"
# Locks every live admin key, in id order so that concurrent revocations queue instead of
# deadlocking; the lock makes "is another admin key left?" and the revocation one step.
LOCK_LIVE_ADMIN_KEYS = (
    "SELECT id FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL ORDER BY id FOR UPDATE"
)
LIVE_ADMIN_KEYS = "SELECT id FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL"
# coalesce: revoking twice keeps the first instant.
REVOKE_API_KEY = (
    f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 "
    f"RETURNING {API_KEY_COLUMNS}"
)

_USER_COLUMN_COUNT = len(USER_COLUMNS.split(","))
GET_USER_AND_TOKEN_CUTOFF = f"SELECT {USER_COLUMNS}, tokens_revoked_before FROM users WHERE id = $1"
REVOKE_USER_TOKENS = (
    "UPDATE users SET tokens_revoked_before = CASE WHEN tokens_revoked_before > $2 "
    "THEN tokens_revoked_before ELSE $2 END WHERE id = $1 RETURNING id"
)


def user_and_token_cutoff_from_row(row: Row, cipher: Cipher) -> tuple[UserRecord, int]:
    """A row of GET_USER_AND_TOKEN_CUTOFF."""
    return user_from_row(row, cipher), row[_USER_COLUMN_COUNT]


AUDIT_COLUMNS = "id, at, actor, action, target, source, result, detail"
PSEUDONYMISE_AUDIT = (
    "UPDATE audit_log SET "
    "actor = CASE WHEN actor = $1 THEN $2 ELSE actor END, "
    "target = CASE WHEN target = $1 THEN $2 ELSE target END "
    "WHERE actor = $1 OR target = $1 RETURNING id"
)
# No order: every record older than the instant is due, and without one the scan stops
# after `limit` matches whatever the indexes.
PURGE_AUDIT = (
    "DELETE FROM audit_log WHERE id IN ("
    "SELECT id FROM audit_log WHERE at < $1 LIMIT $2) RETURNING id"
)

# Bounds of a stored audit record (Storage.append_audit): a caller's input (a path's
# made-up id) must not decide how much a record costs. 200 is also the longest value
# `GET /api/audit` takes as a filter, so a truncated value can still be asked for.
AUDIT_TEXT_MAX_CHARS = 200
AUDIT_DETAIL_MAX_BYTES = 1024
TRUNCATED = "…[truncated]"
# Escaping in JSON at most doubles text that is already JSON (`"` and `\` get a `\`),
# so a prefix of this many bytes always fits, with the key names, in the bound.
_DETAIL_PREFIX_BYTES = (AUDIT_DETAIL_MAX_BYTES - 64) // 2


def _bounded_text(value: str | None) -> str | None:
    if value is None or len(value) <= AUDIT_TEXT_MAX_CHARS:
        return value
    return value[: AUDIT_TEXT_MAX_CHARS - len(TRUNCATED)] + TRUNCATED


def _bounded_detail(detail: dict[str, Any] | None) -> str | None:
    if detail is None:
        return None
    encoded = _json_encoder.encode(detail)
    if len(encoded) <= AUDIT_DETAIL_MAX_BYTES:
        return encoded.decode()
    prefix = encoded[:_DETAIL_PREFIX_BYTES].decode(errors="ignore")  # no half character
    return encode_json({"truncated": True, "prefix": prefix})


def audit_params(record: NewAuditRecord) -> tuple[Any, ...]:
    """One new audit record as values in AUDIT_COLUMNS order, without `id`, each field
    within its bound (longer texts cut, with `TRUNCATED` at the end)."""
    return (
        record.at,
        _bounded_text(record.actor),
        _bounded_text(record.action),
        _bounded_text(record.target),
        _bounded_text(record.source),
        _bounded_text(record.result),
        _bounded_detail(record.detail),
    )


def audit_from_row(row: Row) -> AuditRecord:
    """A row of AUDIT_COLUMNS."""
    detail = row[7]
    return AuditRecord(
        id=row[0],
        at=row[1],
        actor=row[2],
        action=row[3],
        target=row[4],
        source=row[5],
        result=row[6],
        detail=None if detail is None else _data_decoder.decode(detail),
    )


def list_audit_query(
    *,
    actor: str | None,
    action: str | None,
    target: str | None,
    since: int | None,
    until: int | None,
    before_id: int | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """The SELECT of `Storage.list_audit` and its parameters: one condition per filter
    given (column names and operators are constants; values travel as parameters)."""
    conditions = (
        ("actor =", actor),
        ("action =", action),
        ("target =", target),
        ("at >=", since),
        ("at <", until),
        ("id <", before_id),
    )
    clauses: list[str] = []
    params: list[Any] = []
    for condition, value in conditions:
        if value is not None:
            params.append(value)
            clauses.append(f"{condition} ${len(params)}")
    params.append(limit)
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log {where}ORDER BY id DESC LIMIT ${len(params)}"
    return sql, params


# data protection (issue #4): rekey, erasure, export, retention ----------------------------


def active_prefix(cipher: Cipher) -> str:
    """What every value sealed under the cipher's active key starts with."""
    if cipher.active_key_id is None:
        raise ValueError("rekeying needs an active key: encryption is off")
    return f"{PREFIX}{cipher.active_key_id}:"


def _not_under(columns: tuple[str, ...], prefix: int, length: int) -> str:
    # Compared with substr, not LIKE: a key id may hold `_`, a LIKE wildcard.
    return " OR ".join(
        f"({column} IS NOT NULL AND substr({column}, 1, ${length}) <> ${prefix})"
        for column in columns
    )


def count_not_under_key_sql(table: str) -> str:
    """Rows of `table` with a sealed column not under the key `$1` (prefix, then its
    length as $2): plaintext rows or rows of an older key."""
    return f"SELECT count(*) FROM {table} WHERE {_not_under(SEALED_COLUMNS[table], 1, 2)}"


def rekey_select_sql(table: str) -> str:
    """The next rows of `table` to rekey: id above $1, not under the key $2 (length $3),
    in id order, at most $4."""
    columns = SEALED_COLUMNS[table]
    return (
        f"SELECT id, {', '.join(columns)} FROM {table} "
        f"WHERE id > $1 AND ({_not_under(columns, 2, 3)}) ORDER BY id LIMIT $4"
    )


def rekey_update_sql(table: str) -> str:
    """Write the resealed columns of one row ($1 = id)."""
    columns = SEALED_COLUMNS[table]
    sets = ", ".join(f"{column} = ${n}" for n, column in enumerate(columns, start=2))
    return f"UPDATE {table} SET {sets} WHERE id = $1"


def reseal_row(table: str, row: Row, cipher: Cipher) -> tuple[Any, ...]:
    """Parameters of rekey_update_sql for a row of rekey_select_sql: each column opened
    with whatever key sealed it, then sealed under the active key."""
    row_id = row[0]
    values = []
    for index, column in enumerate(SEALED_COLUMNS[table], start=1):
        name = f"{table}.{column}"
        values.append(seal(cipher, unseal(cipher, row[index], name, row_id), name, row_id))
    return (row_id, *values)


# Everything about one user, each a statement of one transaction (the user row last).
# The user's notifications are deleted before, in batches (ERASE_NOTIFICATIONS): a long
# history must not hold the database in one transaction. Every table with a user id is
# here; tests/storage/test_gdpr_contract.py fails for a table that is not.
ERASE_NOTIFICATIONS = (
    "DELETE FROM notifications WHERE id IN ("
    "SELECT id FROM notifications WHERE user_id = $1 ORDER BY seq LIMIT $2) RETURNING id"
)
ERASE_USER = (
    "DELETE FROM idempotency_keys WHERE user_id = $1",
    "DELETE FROM cursor_history WHERE user_id = $1",
    "DELETE FROM devices WHERE user_id = $1",
    "DELETE FROM notifications WHERE user_id = $1",
    "DELETE FROM users WHERE id = $1 RETURNING id",
)
IDEMPOTENCY_OF_USER = (
    f"SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE user_id = $1 AND seq > $2 "
    "ORDER BY seq LIMIT $3"
)
# CAST, not `::`: the same text runs on SQLite.
CURSOR_HISTORY_OF_USER = (
    "SELECT cursor, seq, at FROM cursor_history WHERE user_id = $1 "
    "AND (cursor, seq) > (CAST($2 AS TEXT), CAST($3 AS BIGINT)) ORDER BY cursor, seq LIMIT $4"
)


def cursor_history_from_row(row: Row) -> CursorHistoryRecord:
    """A row of CURSOR_HISTORY_OF_USER."""
    return CursorHistoryRecord(cursor=row[0], seq=row[1], at=row[2])


def purge_candidates_sql(in_list: str, *, others: bool) -> str:
    """The oldest notifications created before $1 whose category is in the list $2 (or,
    `others`, is not in it, or null), at most $3: (id, user_id). `in_list` is the
    backend's `IN list` form for $2."""
    category = (
        f"(category IS NULL OR NOT (category {in_list}))" if others else f"category {in_list}"
    )
    return (
        "SELECT id, user_id FROM notifications "
        f"WHERE created_at < $1 AND {category} ORDER BY created_at LIMIT $3"
    )


def delete_notifications_sql(in_list: str) -> str:
    """Delete the notifications whose ids are in the list $1."""
    return f"DELETE FROM notifications WHERE id {in_list} RETURNING id"


# No seq above this is ever stored (a BIGINT holds 2^63 - 1).
NO_SEQ = 2**62


def purge_cursor_history_sql(in_list: str) -> str:
    """For the users in the list $1: delete the cursor history below their oldest
    remaining notification (all of it when none remains, `NO_SEQ` as $2): `cursor_times`
    only reads rows at or above a seq that still exists."""
    return (
        f"DELETE FROM cursor_history WHERE user_id {in_list} AND seq < coalesce(("
        "SELECT min(n.seq) FROM notifications n WHERE n.user_id = cursor_history.user_id), $2)"
    )
