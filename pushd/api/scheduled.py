"""Scheduled sends (issue #13): `send_at`, `delay` or `deliver_at_local` on
`POST /api/notifications`, their cancellation, and the user's list of them.

A scheduled send is stored at once (the 202 means it is on disk) outside the user's
sequence, and released when due by pushd/ingest/release.py, which gives it the next seq.
Its channel plan is decided now, counted from the due instant: quiet hours apply at that
instant, delays count from it. The recipient's devices and addresses are those known now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from pushd.access.api_keys import API_KEY, may_read_category
from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.api.deliveries import as_scheduled_view
from pushd.api.edits import retract_released
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.notifications import (
    REPLAY_HEADER,
    _idempotency_claim,
    _in_use,
    _planned_deliveries,
    _replay,
    _resolve_recipient,
    new_notification,
)
from pushd.api.pagination import PageLimit, fetch_page
from pushd.api.route import Reply, Route
from pushd.api.schemas import (
    NotificationDetail,
    ScheduledAccepted,
    ScheduledNotificationView,
    ScheduledPage,
    SendNotification,
)
from pushd.api.users import load_user
from pushd.appkeys import CONFIG, INGEST, LIMITS, OPTIMISER, SCHEDULER, STORAGE
from pushd.ids import from_ms, now_ms
from pushd.ingest.group_commit import ClaimInFlightError
from pushd.routing.engagement import BEST
from pushd.routing.plan import ChannelPlan
from pushd.routing.schedule import ScheduleError, due_at_ms, zone_of
from storage import IdempotencyConflictError, UnknownUserError
from storage.areas.engagement import EngagementRecord
from storage.records import (
    IdempotencyClaim,
    IdempotencyRecord,
    ScheduledNotification,
    UserRecord,
)


class ScheduledQuery(msgspec.Struct):
    limit: PageLimit = 50
    cursor: (
        Annotated[
            str,
            Meta(min_length=1, max_length=64, description="`next_cursor` of the previous page."),
        ]
        | None
    ) = None


def _accepted(notification_id: str, user_id: str, due_at: int, accepted_at: int) -> Reply:
    accepted = ScheduledAccepted(
        id=notification_id,
        user_id=user_id,
        send_at=from_ms(due_at),
        created_at=from_ms(accepted_at),
    )
    return Reply(202, accepted, {"Location": f"/api/notifications/{notification_id}"})


@dataclass(frozen=True, slots=True)
class _BestTime:
    """What `deliver_at_local: "best"` chose: the HH:MM, why, and the engagement read
    (reused to order the plan: one storage read per send)."""

    clock: str
    decision: dict[str, Any]
    engagement: EngagementRecord


async def _best_time(
    request: web.Request, body: SendNotification, user: UserRecord, now: int
) -> _BestTime | None:
    if body.deliver_at_local != BEST:
        return None
    zone = zone_of(user.timezone, request.app[CONFIG].routing.default_timezone)
    clock, why, engagement = await request.app[OPTIMISER].best_clock(
        user.id, body.category, zone=zone, now_ms=now
    )
    return _BestTime(clock, why, engagement)


def _due_at(
    request: web.Request,
    body: SendNotification,
    user: UserRecord | None,
    now: int,
    best: _BestTime | None = None,
) -> int:
    try:
        due = due_at_ms(
            now_ms=now,
            send_at=body.send_at,
            delay=body.delay,
            deliver_at_local=body.deliver_at_local if best is None else best.clock,
            timezone=None if user is None else user.timezone,
            default_timezone=request.app[CONFIG].routing.default_timezone,
        )
    except ScheduleError as exc:
        raise validation_error(str(exc), exc.field) from None
    assert due is not None  # called only for a body that asks for a schedule
    return due


def _expires_at(body: SendNotification, due_at: int) -> int | None:
    """A scheduled send's expiry: `ttl` counts from the due instant, and `expires_at`
    must come after it (it would never be delivered)."""
    if body.ttl is not None:
        return due_at + int(body.ttl) * 1000
    if body.expires_at is not None:
        expires_at = int(body.expires_at.timestamp() * 1000)
        if expires_at <= due_at:
            raise validation_error("expires_at is not after the scheduled time", "expires_at")
        return expires_at
    return None


def schedule_field(body: SendNotification) -> str | None:
    """The first of `send_at`, `delay` and `deliver_at_local` the body gives, or None
    (a send made now)."""
    for name in ("send_at", "delay", "deliver_at_local"):
        if getattr(body, name) is not None:
            return name
    return None


async def send_scheduled(
    request: web.Request, body: SendNotification, *, plan: ChannelPlan, now: int
) -> Reply:
    """`POST /api/notifications` with `send_at`, `delay` or `deliver_at_local`."""
    audience = body.topic is not None or body.broadcast is not None or body.segment is not None
    if audience or (body.user_id is None and body.external_id is None):
        raise validation_error(
            "a scheduled send names one recipient with user_id or external_id (topics, "
            "segments and broadcasts are sent now)",
            schedule_field(body) or "send_at",
        )
    claim = _idempotency_claim(request, body)
    if claim is None:
        return await _schedule(request, body, plan=plan, now=now, claim=None)
    window_ms = int(request.app[CONFIG].ingest.idempotency_window * 1000)
    try:
        with request.app[INGEST].claim(claim.scope, claim.key):
            stored = await request.app[STORAGE].find_idempotency(
                claim.scope, claim.key, not_before=now - window_ms
            )
            if stored is not None:
                return await _replay_scheduled(request, stored, body)
            return await _schedule(request, body, plan=plan, now=now, claim=claim)
    except (ClaimInFlightError, IdempotencyConflictError):
        raise _in_use(claim.key) from None


async def _replay_scheduled(
    request: web.Request, stored: IdempotencyRecord, body: SendNotification
) -> Reply:
    """The first answer again. Seq 0 marks a claim still waiting for its release (or
    cancelled); once released, the claim holds the seq and the answer is the released
    notification's, as for a send made now."""
    reply = _replay(request, stored, body)  # checks the body is the same (422 if not)
    if stored.seq != 0:
        return reply
    record = await request.app[STORAGE].get_scheduled(stored.notification_id)
    if record is None:  # released between the two reads: its claim has its seq now
        return reply
    first = _accepted(record.notification.id, stored.user_id, record.due_at, record.accepted_at)
    return Reply(first.status, first.body, {**first.headers, REPLAY_HEADER: "true"})


async def _schedule(
    request: web.Request,
    body: SendNotification,
    *,
    plan: ChannelPlan,
    now: int,
    claim: IdempotencyClaim | None,
) -> Reply:
    storage = request.app[STORAGE]
    user_id, user = await _resolve_recipient(request, body)
    field = "user_id" if body.user_id is not None else "external_id"
    if user is None and body.deliver_at_local is not None:
        user = await storage.get_user(user_id)  # its time zone decides the instant
        if user is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field=field)
    best = None if user is None else await _best_time(request, body, user, now)
    due_at = _due_at(request, body, user, now, best)
    expires_at = _expires_at(body, due_at)
    await request.app[LIMITS].recipients.check(user_id, "inapp")  # 429 once over budget
    request[AUDIT_TARGET] = f"user:{user_id}"
    # Planned as if sent at the due instant: delays and quiet hours count from it.
    deliveries = await _planned_deliveries(
        request,
        plan,
        body,
        (user_id, user),
        due_at,
        engagement=None if best is None else best.engagement,
        decision=None if best is None else {"time": best.decision},
    )
    notification = await new_notification(
        request,
        body,
        user_id,
        now=due_at,
        expires_at=expires_at,
        claim=claim,
        deliveries=deliveries,
    )
    try:
        await storage.schedule_notification(
            ScheduledNotification(
                notification=notification,
                due_at=due_at,
                accepted_at=now,
                decision=None if best is None else {"time": best.decision},
            )
        )
    except UnknownUserError:
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field=field) from None
    request.app[SCHEDULER].wake(due_at)
    request[AUDIT_DETAIL] = {"notification_id": notification.id, "send_at": due_at}
    if best is not None:
        request[AUDIT_DETAIL]["time"] = best.decision
    return _accepted(notification.id, user_id, due_at, now)


async def scheduled_view(
    request: web.Request, notification_id: str
) -> ScheduledNotificationView | None:
    """The scheduled (or cancelled) notification with this id as the API shows it, or
    None (unknown, released, or outside the key's categories)."""
    record = await request.app[STORAGE].get_scheduled(notification_id)
    if record is None or not may_read_category(request, record.notification.category):
        return None
    return as_scheduled_view(record)


async def cancel_notification(request: web.Request, _body: None, _query: None) -> Reply:
    notification_id = request.match_info["id"]
    storage = request.app[STORAGE]
    found = await storage.get_scheduled(notification_id)
    if found is not None and may_read_category(request, found.notification.category):
        request[AUDIT_TARGET] = f"user:{found.notification.user_id}"
        cancelled = await storage.cancel_scheduled(notification_id, now_ms())
        if cancelled is not None:
            request[AUDIT_DETAIL] = {"notification_id": notification_id}
            return Reply(200, as_scheduled_view(cancelled))
    released = await storage.get_notification(notification_id)
    if released is not None and may_read_category(request, released.category):
        return await retract_released(request, released)
    raise ApiError(ErrorCode.NOT_FOUND, f"no notification with id {notification_id!r}", field="id")


async def list_user_scheduled(request: web.Request, _body: None, query: ScheduledQuery) -> Reply:
    storage = request.app[STORAGE]
    user = await load_user(storage, request.match_info["userId"])
    categories = request[API_KEY].categories
    page = await fetch_page(
        lambda limit: storage.list_scheduled(
            user.id, after_id=query.cursor, limit=limit, categories=categories
        ),
        query.limit,
        key=lambda record: record.notification.id,
    )
    return Reply(200, ScheduledPage([as_scheduled_view(r) for r in page.items], page.next_cursor))


ROUTES = [
    Route(
        "DELETE",
        "/api/notifications/{id}",
        cancel_notification,
        "Cancel a scheduled send before its time, or retract a released notification",
        {200: ScheduledNotificationView | NotificationDetail},
        description="A send made with `send_at`, `delay` or `deliver_at_local` and not "
        "released yet is cancelled (status `cancelled`, a `ScheduledNotificationView`). "
        "A released notification is retracted (audit action `notification.retract`): its "
        "title, body and data are removed, `retracted_at` is set, channel steps not sent "
        "yet are cancelled (reason `retracted`) and connected sockets of clients speaking "
        "protocol 1.3 get a `retracted` frame; the answer is its `NotificationDetail`. "
        "Doing either again answers the same.",
        errors={404: "No notification with this id (or outside the key's categories)"},
        tag="notifications",
        action="notification.cancel",
    ),
    Route(
        "GET",
        "/api/notifications/user/{userId}/scheduled",
        list_user_scheduled,
        "A user's scheduled sends not released yet, and cancelled ones, in accept order",
        {200: ScheduledPage},
        description="Released ones leave this list and appear in "
        "`GET /api/notifications/user/{userId}` with their seq.",
        query=ScheduledQuery,
        tag="notifications",
    ),
]
