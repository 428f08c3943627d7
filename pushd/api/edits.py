"""Edit and retract of sent notifications (issue #13, point 7): `PATCH
/api/notifications/{id}` stores new content under the next version, and `DELETE` of a
released notification (pushd/api/scheduled.py cancels one not released yet) retracts it.

Both are stored first, then told to the user's connected sockets through the bus as
`updated` / `retracted` frames (docs/protocol.md); the channel steps not sent yet read the
stored content when they are sent, so they send the new one, and a retract cancels them.
A push already sent is sent again on edit under the same collapse key; other channels'
sent steps are not (docs/routing.md, "Edit and retract").
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from aiohttp import web
from msgspec import Meta

from pushd.access.audit_fields import AUDIT_ACTION, AUDIT_DETAIL, AUDIT_TARGET
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.input_limits import check_notification_size
from pushd.api.notifications import _detail, _load_notification
from pushd.api.route import Reply, Route
from pushd.api.schemas import NotificationDetail
from pushd.appkeys import BUS, CONFIG, STORAGE
from pushd.ids import now_ms
from pushd.realtime.edit_sync import publish_edit
from storage.records import NotificationRecord

# Two edits of one notification at once each read, merge and write under the version
# they read; the loser reads again. More than a few losses in a row is a client loop.
_EDIT_ATTEMPTS = 3


class NotificationEdit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """New content for a sent notification: any of `title`, `body` and `data` (null
    clears it); a field left out keeps its value. At least one is required, and the
    result must keep a title or a body."""

    __openapi_extra__: ClassVar[dict[str, Any]] = {"minProperties": 1}

    title: Annotated[str, Meta(max_length=1024)] | msgspec.UnsetType | None = msgspec.UNSET
    body: Annotated[str, Meta(max_length=16384)] | msgspec.UnsetType | None = msgspec.UNSET
    data: (
        Annotated[
            dict[str, Any], Meta(description="Free-form JSON object handed to the client as is.")
        ]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET


class EditedContent(msgspec.Struct, frozen=True):
    """A notification's content once an edit is applied to it."""

    title: str | None
    body: str | None
    data: dict[str, Any] | None


def _edited(record: NotificationRecord, edit: NotificationEdit) -> EditedContent:
    def pick(given: Any, kept: Any) -> Any:
        return kept if given is msgspec.UNSET else given

    content = EditedContent(
        title=pick(edit.title, record.title),
        body=pick(edit.body, record.body),
        data=pick(edit.data, record.data),
    )
    if content.title is None and content.body is None:
        raise validation_error(
            "the edited notification would have neither a title nor a body: keep one", "title"
        )
    return content


def _retracted_error(record: NotificationRecord) -> ApiError:
    return ApiError(
        ErrorCode.RETRACTED,
        f"notification {record.id!r} was retracted: its content is gone and cannot be "
        "edited; send a new notification instead",
        field="id",
    )


async def update_notification(request: web.Request, edit: NotificationEdit, _query: None) -> Reply:
    if all(value is msgspec.UNSET for value in (edit.title, edit.body, edit.data)):
        raise validation_error("give at least one of title, body and data to change", "title")
    storage = request.app[STORAGE]
    for _attempt in range(_EDIT_ATTEMPTS):
        record = await _load_notification(request)  # 404, also outside the key's categories
        request[AUDIT_TARGET] = f"user:{record.user_id}"
        if record.retracted_at is not None:
            raise _retracted_error(record)
        content = _edited(record, edit)
        check_notification_size(content, request.app[CONFIG].limits)
        updated = await storage.update_notification(
            record.id,
            title=content.title,
            body=content.body,
            data=content.data,
            expected_version=record.version,
            at=now_ms(),
        )
        if updated is not None:
            request[AUDIT_DETAIL] = {"notification_id": record.id, "version": updated.version}
            await publish_edit(request.app[BUS], updated)
            return Reply(200, await _detail(request, updated))
    raise ApiError(
        ErrorCode.CONFLICT,
        f"notification {record.id!r} was changed by {_EDIT_ATTEMPTS} other edits meanwhile: "
        "read it again before editing",
        field="id",
    )


async def retract_released(request: web.Request, record: NotificationRecord) -> Reply:
    """`DELETE /api/notifications/{id}` of a released notification the key may see:
    retract it, tell the user's sockets, answer its record. Retracting it again answers
    the same record and changes nothing."""
    request[AUDIT_ACTION] = "notification.retract"
    request[AUDIT_TARGET] = f"user:{record.user_id}"
    request[AUDIT_DETAIL] = {"notification_id": record.id}
    if record.retracted_at is None:
        retracted = await request.app[STORAGE].retract_notification(record.id, now_ms())
        if retracted is not None:
            await publish_edit(request.app[BUS], retracted)
            record = retracted
        else:  # retracted meanwhile by another call, which told the sockets
            record = await _load_notification(request)
    return Reply(200, await _detail(request, record))


ROUTES = [
    Route(
        "PATCH",
        "/api/notifications/{id}",
        update_notification,
        "Edit a sent notification: new title, body or data under the next `version`",
        {200: NotificationDetail},
        body=NotificationEdit,
        description="Connected sockets of clients speaking protocol 1.3 get an `updated` "
        "frame; replay and history show the current version. Channel steps not sent yet "
        "send the new content; a push already sent (web push, FCM, APNs) is sent again "
        "under the same collapse key (the notification id); email, SMS and webhook steps "
        "already sent are not. A notification's own `content` for a channel (email "
        "subject, SMS text, ...) is not changed.",
        errors={
            404: "No notification with this id (or outside the key's categories)",
            409: "Retracted (`retracted`), or edited concurrently several times (`conflict`)",
        },
        tag="notifications",
        action="notification.update",
    ),
]
