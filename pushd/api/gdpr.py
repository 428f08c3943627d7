"""GDPR: a user's export (right of access) and erasure (right to erasure); README "GDPR".

The export is one JSON document, streamed: it is read from storage a bounded page at a
time and written as it goes, so a user with 100,000 notifications never sits in memory
at once. The erasure deletes every row about the user, closes their sockets on every
node and pseudonymises the audit trail.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.failed_auth import ANONYMOUS_ACTOR
from pushd.access.roles import ADMIN_ONLY
from pushd.api.audit import AuditEntry
from pushd.api.channel_tracking import channel_deliveries, channel_events
from pushd.api.deliveries import as_detail, as_scheduled_view, deliveries_of
from pushd.api.preferences import Preferences, preferences_view
from pushd.api.route import Reply, Route, Streamed
from pushd.api.schemas import (
    DeliveryEvent,
    Device,
    NotificationDetail,
    ScheduledNotificationView,
    User,
)
from pushd.api.topics import Subscription
from pushd.api.users import load_user
from pushd.appkeys import AUDIT, CONFIG, PLANNER, REVOCATIONS, STORAGE
from pushd.ids import from_ms, now_ms, opt_from_ms
from pushd.routing.preferences import RoutingPolicy
from storage import Storage
from storage.records import AuditRecord, CursorHistoryRecord, PreferencesRecord, UserRecord

Meta = msgspec.Meta

# Rows read from storage per page while an export is written.
EXPORT_PAGE_SIZE = 500


class CursorState(msgspec.Struct, kw_only=True):
    last_seq: Annotated[int, Meta(description="Seq of the user's newest notification.")]
    sent_seq: Annotated[int, Meta(description="Highest seq written to one of their sockets.")]
    ack_seq: Annotated[int, Meta(description="Highest seq their clients acknowledged.")]
    tokens_revoked_before: Annotated[
        datetime | None, Meta(description="Tokens issued up to this instant are refused.")
    ]


class CursorAdvance(msgspec.Struct, kw_only=True):
    cursor: Literal["sent", "acked"]
    seq: int
    at: datetime


class ExportedIdempotencyKey(msgspec.Struct, kw_only=True):
    scope: Annotated[str, Meta(description="The id of the API key that sent it.")]
    key: str
    request_hash: str
    notification_id: str
    seq: int
    created_at: datetime


class UserExport(msgspec.Struct, kw_only=True):
    """Everything pushd holds about one user."""

    exported_at: datetime
    user: User
    cursors: CursorState
    devices: list[Device]
    preferences: Annotated[
        Preferences,
        Meta(
            description="What the user chose to receive (the preferences API's view), "
            "including the channels unsubscribed from by an email's link."
        ),
    ]
    topics: Annotated[
        list[Subscription], Meta(description="The topics the user is subscribed to, by slug.")
    ]
    notifications: Annotated[
        list[NotificationDetail],
        Meta(description="Newest first, each with its read state and delivery records."),
    ]
    scheduled_notifications: Annotated[
        list[ScheduledNotificationView],
        Meta(description="Scheduled sends not released yet, and cancelled ones, in accept order."),
    ]
    channel_delivery_history: Annotated[
        list[DeliveryEvent],
        Meta(
            description="Every attempt and status change of the deliveries beyond the "
            "socket (e-mail, push, SMS, webhooks), by notification and delivery, oldest "
            "first."
        ),
    ]
    cursor_history: Annotated[
        list[CursorAdvance], Meta(description="When the delivery cursors moved, by cursor.")
    ]
    idempotency_keys: list[ExportedIdempotencyKey]
    audit: Annotated[
        list[AuditEntry],
        Meta(
            description="Audit records of calls with a valid API key naming the user (as "
            "target or actor), newest first."
        ),
    ]


_encoder = msgspec.json.Encoder()


def _field(name: str, value: Any, *, first: bool = False) -> bytes:
    return (b"" if first else b",") + _encoder.encode(name) + b":" + _encoder.encode(value)


def _items(items: list[Any], *, first: bool) -> bytes:
    """The elements of a JSON array, without its brackets, after earlier ones if any."""
    if not items:
        return b""
    inner = _encoder.encode(items)[1:-1]
    return inner if first else b"," + inner


async def _array(name: str, pages: AsyncIterator[list[Any]]) -> AsyncIterator[bytes]:
    yield b"," + _encoder.encode(name) + b":["
    first = True
    async for page in pages:
        if page:
            yield _items(page, first=first)
            first = False
    yield b"]"


async def _topic_pages(storage: Storage, user_id: str) -> AsyncIterator[list[Subscription]]:
    after: str | None = None
    while True:
        page = await storage.topics_of_user(user_id, after_slug=after, limit=EXPORT_PAGE_SIZE)
        if not page:
            return
        yield [Subscription.of(s) for s in page]
        after = page[-1].topic


async def _notification_pages(
    storage: Storage, user: UserRecord
) -> AsyncIterator[list[NotificationDetail]]:
    before: int | None = None
    while True:
        records = await storage.list_notifications(
            user.id, before_seq=before, limit=EXPORT_PAGE_SIZE
        )
        if not records:
            return
        deliveries = await deliveries_of(storage, user, records, now_ms())
        # One query per notification: an export is rare, and a page is 200 at most.
        channels = [await channel_deliveries(storage, r.id) for r in records]
        yield [as_detail(r, d, c) for r, d, c in zip(records, deliveries, channels, strict=True)]
        before = records[-1].seq


async def _scheduled_pages(
    storage: Storage, user_id: str
) -> AsyncIterator[list[ScheduledNotificationView]]:
    after: str | None = None
    while True:
        page = await storage.list_scheduled(user_id, after_id=after, limit=EXPORT_PAGE_SIZE)
        if not page:
            return
        yield [as_scheduled_view(r) for r in page]
        after = page[-1].notification.id


def _advance(record: CursorHistoryRecord) -> CursorAdvance:
    cursor: Any = record.cursor  # `sent` or `acked`, as advance_cursors writes it
    return CursorAdvance(cursor=cursor, seq=record.seq, at=from_ms(record.at))


async def _history_pages(storage: Storage, user_id: str) -> AsyncIterator[list[CursorAdvance]]:
    after: tuple[str, int] | None = None
    while True:
        page = await storage.cursor_history_of(user_id, after=after, limit=EXPORT_PAGE_SIZE)
        if not page:
            return
        yield [_advance(h) for h in page]
        after = (page[-1].cursor, page[-1].seq)


async def _channel_history_pages(
    storage: Storage, user_id: str
) -> AsyncIterator[list[DeliveryEvent]]:
    after: tuple[int, str] | None = None
    while True:
        page = await storage.channel_deliveries_of_user(
            user_id, after=after, limit=EXPORT_PAGE_SIZE
        )
        if not page:
            return
        history = await storage.delivery_history_of_deliveries([d.id for d in page])
        yield channel_events(page, [row for d in page for row in history[d.id]])
        after = (page[-1].seq, page[-1].id)


async def _idempotency_pages(
    storage: Storage, user_id: str
) -> AsyncIterator[list[ExportedIdempotencyKey]]:
    after = -1  # a scheduled send's key has seq 0 until its release
    while True:
        page = await storage.idempotency_keys_of(user_id, after_seq=after, limit=EXPORT_PAGE_SIZE)
        if not page:
            return
        yield [
            ExportedIdempotencyKey(
                scope=k.scope,
                key=k.key,
                request_hash=k.request_hash,
                notification_id=k.notification_id,
                seq=k.seq,
                created_at=from_ms(k.created_at),
            )
            for k in page
        ]
        after = page[-1].seq


async def _audit_pages(storage: Storage, subject: str) -> AsyncIterator[list[AuditEntry]]:
    # As target, then as actor (records naming it as both were in the first pass). Only
    # records of callers with a valid key: a caller without one names no target today,
    # but older versions stored the path's user of such calls, unverified.
    for as_actor in (False, True):
        before: int | None = None
        while True:
            records: list[AuditRecord] = await storage.list_audit(
                target=None if as_actor else subject,
                actor=subject if as_actor else None,
                before_id=before,
                limit=EXPORT_PAGE_SIZE,
            )
            if not records:
                break
            yield [
                AuditEntry.of(r)
                for r in records
                if r.actor != ANONYMOUS_ACTOR and not (as_actor and r.target == subject)
            ]
            before = records[-1].id


async def _export_document(
    storage: Storage, user: UserRecord, tokens_revoked_before: int, policy: RoutingPolicy
) -> AsyncIterator[bytes]:
    cursors = CursorState(
        last_seq=user.last_seq,
        sent_seq=user.sent_seq,
        ack_seq=user.ack_seq,
        tokens_revoked_before=opt_from_ms(tokens_revoked_before or None),
    )
    devices = [Device.of(d) for d in await storage.list_devices(user.id)]
    yield b"{" + _field("exported_at", from_ms(now_ms()), first=True)
    yield _field("user", User.of(user))
    yield _field("cursors", cursors)
    yield _field("devices", devices)
    # None: erased meanwhile; the document stays whole, with nothing chosen.
    preferences = await storage.get_preferences(user.id) or PreferencesRecord(user_id=user.id)
    yield _field("preferences", preferences_view(preferences, policy, None))
    async for chunk in _array("topics", _topic_pages(storage, user.id)):
        yield chunk
    async for chunk in _array("notifications", _notification_pages(storage, user)):
        yield chunk
    async for chunk in _array("scheduled_notifications", _scheduled_pages(storage, user.id)):
        yield chunk
    async for chunk in _array("channel_delivery_history", _channel_history_pages(storage, user.id)):
        yield chunk
    async for chunk in _array("cursor_history", _history_pages(storage, user.id)):
        yield chunk
    async for chunk in _array("idempotency_keys", _idempotency_pages(storage, user.id)):
        yield chunk
    async for chunk in _array("audit", _audit_pages(storage, f"user:{user.id}")):
        yield chunk
    yield b"}"


async def export_user(request: web.Request, _body: None, _query: None) -> Reply:
    storage = request.app[STORAGE]
    user_id = request.match_info["userId"]
    found = await storage.get_user_and_token_cutoff(user_id)
    if found is None:
        await load_user(storage, user_id)  # the 404
    assert found is not None
    # Read-your-writes: audit records this node queued about the user are in the export.
    await request.app[AUDIT].flush()
    policy = request.app[PLANNER].policy
    return Reply(200, Streamed(_export_document(storage, *found, policy)))


async def erase_user(request: web.Request, _body: None, _query: None) -> Reply:
    storage, user_id = request.app[STORAGE], request.match_info["userId"]
    # The audit record of this very call must not name the user either.
    pseudonym = f"user:erased-{secrets.token_hex(8)}"
    request[AUDIT_TARGET] = pseudonym
    existed = await storage.erase_user(user_id, batch_size=request.app[CONFIG].retention.batch_size)
    # After the erasure: a socket attaching meanwhile reads the user next, and finds none.
    await request.app[REVOCATIONS].user_erased(user_id)
    # Records this node queued about the user are written first, so that they are
    # pseudonymised too (docs/security.md says what other nodes may still write).
    await request.app[AUDIT].flush()
    await storage.pseudonymise_audit(f"user:{user_id}", pseudonym)
    request[AUDIT_DETAIL] = {"existed": existed}
    return Reply(204)


ROUTES = [
    Route(
        "GET",
        "/api/users/{userId}/export",
        export_user,
        "Everything pushd holds about the user, as one JSON document (GDPR right of access)",
        {200: UserExport},
        tag="users",
        roles=ADMIN_ONLY,
    ),
    Route(
        "DELETE",
        "/api/users/{userId}",
        erase_user,
        "Erase the user and everything about them (GDPR right to erasure): devices, topic "
        "subscriptions, "
        "notifications, delivery history, idempotency keys; close their sockets on every "
        "node (4503); pseudonymise the audit trail. Idempotent: 204 whether or not the "
        "user (still) exists",
        {204: None},
        tag="users",
        roles=ADMIN_ONLY,
        action="user.erase",
    ),
]
