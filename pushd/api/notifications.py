"""Sending and reading notifications."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.keys import may_read_category, require_category
from pushd.api.limits import check_notification_size
from pushd.api.routing import Reply, Route
from pushd.api.schemas import (
    Notification,
    NotificationAccepted,
    NotificationPage,
    SendNotification,
    from_ms,
)
from pushd.api.users import load_user
from pushd.appkeys import INGEST, LIMITS, METRICS, STORAGE
from pushd.audit import AUDIT_DETAIL, AUDIT_TARGET
from pushd.ids import new_id, now_ms
from storage import UnknownUserError
from storage.records import NewNotification


async def _resolve_recipient(request: web.Request, body: SendNotification) -> str:
    storage = request.app[STORAGE]
    if (body.user_id is None) == (body.external_id is None):
        raise validation_error(
            "name the recipient with exactly one of user_id and external_id", "user_id"
        )
    if body.external_id is not None:
        user = await storage.get_user_by_external_id(body.external_id)
        if user is None:
            raise ApiError(
                ErrorCode.NOT_FOUND,
                f"no user with external_id {body.external_id!r}",
                field="external_id",
            )
        return user.id
    assert body.user_id is not None
    # No lookup here: the committer checks the user inside the insert transaction (and
    # answers 404 for an unknown one), which saves a storage round trip per request.
    return body.user_id


async def send_notification(request: web.Request, body: SendNotification, _query: None) -> Reply:
    if body.title is None and body.body is None:
        raise validation_error("give a title, a body, or both", "title")
    check_notification_size(body, request.app[LIMITS].config)
    require_category(request, body.category)
    user_id = await _resolve_recipient(request, body)
    await request.app[LIMITS].recipients.check(user_id, "inapp")  # 429 once over budget
    request[AUDIT_TARGET] = f"user:{user_id}"
    notification = NewNotification(
        id=new_id("ntf"),
        user_id=user_id,
        title=body.title,
        body=body.body,
        data=body.data,
        category=body.category,
        priority=body.priority,
        created_at=now_ms(),
    )
    try:
        record = await request.app[INGEST].submit(notification)
    except UnknownUserError:
        field = "user_id" if body.user_id is not None else "external_id"
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field=field) from None
    request.app[METRICS].accepted.inc({})
    request[AUDIT_DETAIL] = {"notification_id": record.id, "seq": record.seq}
    accepted = NotificationAccepted(
        id=record.id, user_id=record.user_id, seq=record.seq, created_at=from_ms(record.created_at)
    )
    return Reply(202, accepted, {"Location": f"/api/notifications/{record.id}"})


class HistoryQuery(msgspec.Struct):
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    cursor: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page."
            ),
        ]
        | None
    ) = None


async def list_user_notifications(request: web.Request, _body: None, query: HistoryQuery) -> Reply:
    storage = request.app[STORAGE]
    user = await load_user(storage, request.match_info["userId"])
    before = int(query.cursor) if query.cursor is not None else None
    records = await storage.list_notifications(user.id, before_seq=before, limit=query.limit + 1)
    more = len(records) > query.limit
    records = records[: query.limit]
    next_cursor = str(records[-1].seq) if more and records else None
    # A category-limited key sees only its categories (docs/security.md): the page may
    # then hold fewer than `limit` items while `next_cursor` still leads further.
    visible = [r for r in records if may_read_category(request, r.category)]
    return Reply(200, NotificationPage([Notification.of(r) for r in visible], next_cursor))


async def get_notification(request: web.Request, _body: None, _query: None) -> Reply:
    notification_id = request.match_info["id"]
    record = await request.app[STORAGE].get_notification(notification_id)
    # Outside a limited key's categories it is "not found", not "forbidden": a 403
    # would confirm that the id exists.
    if record is None or not may_read_category(request, record.category):
        raise ApiError(
            ErrorCode.NOT_FOUND, f"no notification with id {notification_id!r}", field="id"
        )
    return Reply(200, Notification.of(record))


ROUTES = [
    Route(
        "POST",
        "/api/notifications",
        send_notification,
        "Send a notification to one user now (202 once committed to storage)",
        {202: NotificationAccepted},
        body=SendNotification,
        errors={
            404: "No user with this user_id or external_id",
            429: "Too many notifications for this user (`limits.per_recipient`), or too many "
            "requests for this API key: retry after `Retry-After` seconds",
        },
        tag="notifications",
        action="notification.send",
    ),
    Route(
        "GET",
        "/api/notifications/user/{userId}",
        list_user_notifications,
        "A user's notifications, newest first",
        {200: NotificationPage},
        query=HistoryQuery,
        tag="notifications",
    ),
    Route(
        "GET",
        "/api/notifications/{id}",
        get_notification,
        "Get one notification",
        {200: Notification},
        tag="notifications",
    ),
]
