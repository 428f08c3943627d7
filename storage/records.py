"""Rows as the storage layer hands them out. Timestamps are Unix epoch milliseconds (UTC)."""

from __future__ import annotations

from typing import Any

import msgspec


class NewUser(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    external_id: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    created_at: int


class UserRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    external_id: str | None
    name: str | None
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    created_at: int
    last_seq: int
    """Highest seq ever assigned to this user's notifications (0 = none yet)."""
    ack_seq: int
    """Highest seq the user's clients acknowledged (cumulative)."""
    sent_seq: int = 0
    """Highest seq written to any of the user's sockets (cumulative)."""


class NewDevice(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    kind: str
    """`webpush`, `fcm` or `apns`; validated at the edge."""
    address: str
    """What identifies the device at its provider: the web push endpoint or the FCM/APNs token."""
    details: dict[str, str]
    """Kind-specific extras: web push keys (`p256dh`, `auth`), APNs `topic`."""
    created_at: int


class DeviceRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    kind: str
    address: str
    details: dict[str, str]
    created_at: int


class NewNotification(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    title: str | None = None
    body: str | None = None
    data: dict[str, Any] | None = None
    category: str | None = None
    priority: str = "normal"
    created_at: int
    expires_at: int | None = None
    """Not delivered after this instant (epoch ms); None: never expires."""
    idempotency: IdempotencyClaim | None = None
    """Stored with the notification in the same transaction, when given."""


class IdempotencyClaim(msgspec.Struct, frozen=True, kw_only=True):
    """An `Idempotency-Key` to record for the notification it arrived with."""

    scope: str
    """Whose key it is (the API key id): two callers' keys never collide."""
    key: str
    request_hash: str


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored `Idempotency-Key` and the notification it produced."""

    scope: str
    key: str
    request_hash: str
    notification_id: str
    user_id: str
    seq: int
    created_at: int


class NotificationRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    seq: int
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    category: str | None
    priority: str
    created_at: int
    expires_at: int | None = None
    read_at: int | None = None
    dropped_at: int | None = None
    """When a socket was sent a `gap` over it instead (it will never be delivered)."""
    dropped_reason: str | None = None
    """`expired` or `not_retained`, with `dropped_at`."""
    gid: int = 0
    """Global commit order (for the outbox relay); 0 where not read."""
    data_unreadable: bool = False
    """The stored `data` could not be decoded (nested deeper than
    `storage.jsondepth.CEILING`, or not a JSON object): `data` is None instead."""


class MarkedRead(msgspec.Struct, frozen=True, kw_only=True):
    """A notification that `Storage.mark_read` marked read: its id and category (read
    sync tells only the sockets that may see that category)."""

    id: str
    category: str | None


class CursorTimes(msgspec.Struct, frozen=True, kw_only=True):
    """When a user's cursors first reached one seq (epoch ms), None if not yet."""

    sent_at: int | None
    acked_at: int | None


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    role: str
    key_hash: str
    """Hex SHA-256 of the secret key; the key itself is never stored."""
    created_at: int
    revoked_at: int | None = None
    categories: tuple[str, ...] | None = None
    """Notification categories the key is limited to; None: not limited."""


# access control (issue #4) ------------------------------------------------------------


class NewAuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One audited action, before the database numbers it."""

    at: int
    actor: str
    """Who: `key:<id>` (API key), `user:<id>` (token subject), `cli`, or `anonymous`."""
    action: str
    """What, as `noun.verb`: `user.create`, `notification.send`, `key.revoke`, ..."""
    target: str | None = None
    """On what: `user:<id>`, `key:<id>`, ..."""
    source: str | None = None
    """The peer address of the request (None for the CLI)."""
    result: str
    """The HTTP status as text (`"202"`, `"403"`), or `ok` / `error` for the CLI."""
    detail: dict[str, Any] | None = None


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    """Assigned by the database in insertion order; the pagination cursor."""
    at: int
    actor: str
    action: str
    target: str | None
    source: str | None
    result: str
    detail: dict[str, Any] | None


# data protection (issue #4) ------------------------------------------------------------


class CursorHistoryRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One advance of a user's cursor (`sent` or `acked`) to `seq`, at `at`."""

    cursor: str
    seq: int
    at: int
