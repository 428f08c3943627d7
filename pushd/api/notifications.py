"""Sending and reading notifications, their read state and their delivery records."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from aiohttp import web

from pushd.access.api_keys import API_KEY, may_read_category, require_category
from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.api.channel_tracking import channel_deliveries, channel_events
from pushd.api.deliveries import (
    as_detail,
    as_notification,
    as_scheduled_view,
    deliveries_of,
    delivery_events,
)
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.input_limits import check_notification_size
from pushd.api.pagination import NumericCursor, PageLimit, fetch_page, numeric_cursor
from pushd.api.route import Reply, Route
from pushd.api.schemas import (
    ChannelDeliveryStatus,
    DeliveryChannel,
    DeliveryEventList,
    NotificationAccepted,
    NotificationDetail,
    NotificationPage,
    ReadIds,
    ReadResult,
    ScheduledAccepted,
    ScheduledNotificationView,
    SendNotification,
)
from pushd.api.sends import SendAccepted, accept_audience_send
from pushd.api.templates import check_content_source, sent_content
from pushd.api.users import load_user
from pushd.appkeys import (
    BUS,
    CHANNELS,
    CONFIG,
    INGEST,
    LIMITS,
    METRICS,
    OPTIMISER,
    PLAN_READS,
    PLANNER,
    REQUEST_HASHER,
    STORAGE,
    WEBHOOKS,
)
from pushd.channels.webhook_events import with_accepted_webhooks
from pushd.ids import from_ms, new_id, now_ms
from pushd.ingest.group_commit import ClaimInFlightError
from pushd.ops import logs as log_context
from pushd.realtime.readsync import publish_read, publish_read_all
from pushd.routing.engagement import (
    with_decision,
)
from pushd.routing.plan import ChannelPlan, PlanError, Recipient
from storage import IdempotencyConflictError, UnknownUserError
from storage.areas.engagement import EngagementRecord
from storage.records import (
    IdempotencyClaim,
    IdempotencyRecord,
    NewNotification,
    NotificationRecord,
    PlannedDelivery,
    UserRecord,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# Sorted keys: the same JSON object in another key order is the same request.
_canonical = msgspec.json.Encoder(order="sorted")


async def _resolve_recipient(
    request: web.Request, body: SendNotification
) -> tuple[str, UserRecord | None]:
    """The recipient's id, and its row when reading it was needed (external_id)."""
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
        return user.id, user
    assert body.user_id is not None
    # No lookup here: the committer checks the user inside the insert transaction (and
    # answers 404 for an unknown one), which saves a storage round trip per request.
    return body.user_id, None


def _channel_plan(request: web.Request, body: SendNotification) -> ChannelPlan:
    try:
        return request.app[PLANNER].plan_for(body.channels, body.category)
    except PlanError as exc:
        raise validation_error(str(exc), exc.field) from None


async def _planned_deliveries(
    request: web.Request,
    plan: ChannelPlan,
    body: SendNotification,
    recipient: tuple[str, UserRecord | None],
    now: int,
    *,
    engagement: EngagementRecord | None = None,
    decision: Mapping[str, Any] | None = None,
) -> tuple[PlannedDelivery, ...]:
    """The plan's deliveries, from the user's contact fields and devices as they are
    now: what it needs (the user row, the devices only for push steps, the preferences)
    is read in ONE storage call, shared with the other requests of the same loop turn,
    and nothing without a plan. A category ordering by engagement reorders the plan
    first (pushd/routing/engagement.py; `engagement` when already read); each row
    carries `decision` (why its time) and why its order."""
    if not plan.steps:
        return ()
    planner = request.app[PLANNER]
    user_id, _ = recipient
    if body.channels is None:  # a plan the request gives is kept as given
        optimised = await request.app[OPTIMISER].order(
            plan, body.category, user_id, now_ms=now, known=engagement
        )
        plan, decision = optimised.plan, {**(decision or {}), **optimised.decision}
    # Read with the other requests of this loop turn (pushd/routing/plan_reads.py).
    context = await request.app[PLAN_READS].read(user_id, devices=plan.needs_devices)
    if context is None:
        field = "user_id" if body.user_id is not None else "external_id"
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field=field)
    found, devices, preferences = context
    addressed = Recipient(found.id, email=found.email, phone=found.phone, devices=devices)
    routing = planner.routing_for(preferences, body.category, found.timezone)
    rows = planner.expand(
        plan,
        addressed,
        priority=body.priority,
        created_at=now,
        routing=routing,
        category=body.category,
    )
    return with_decision(rows, decision or {})


def _expires_at(body: SendNotification, now: int) -> int | None:
    if body.ttl is not None and body.expires_at is not None:
        raise validation_error("give ttl or expires_at, not both", "ttl")
    if body.ttl is not None:
        return now + int(body.ttl) * 1000
    if body.expires_at is not None:
        expires_at = int(body.expires_at.timestamp() * 1000)
        if expires_at <= now:
            raise validation_error("expires_at is in the past", "expires_at")
        return expires_at
    return None


def _idempotency_claim(request: web.Request, body: SendNotification) -> IdempotencyClaim | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise validation_error(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is ideal)",
            IDEMPOTENCY_HEADER,
        )
    # Keyed: a plain digest would give away encrypted content (pushd/ingest/request_hash.py).
    request_hash = request.app[REQUEST_HASHER].hash(_canonical.encode(body))
    return IdempotencyClaim(scope=request[API_KEY].id, key=key, request_hash=request_hash)


def _accepted(
    notification_id: str, user_id: str, seq: int, created_at: int, *, replay: bool
) -> Reply:
    accepted = NotificationAccepted(
        id=notification_id, user_id=user_id, seq=seq, created_at=from_ms(created_at)
    )
    headers = {"Location": f"/api/notifications/{notification_id}"}
    if replay:
        headers[REPLAY_HEADER] = "true"
    return Reply(202, accepted, headers)


def _replay(request: web.Request, stored: IdempotencyRecord, body: SendNotification) -> Reply:
    if not request.app[REQUEST_HASHER].same_request(stored.request_hash, _canonical.encode(body)):
        raise ApiError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was used for a different request body: use a new key "
            "for a new notification",
            field=IDEMPOTENCY_HEADER,
        )
    return _accepted(
        stored.notification_id, stored.user_id, stored.seq, stored.created_at, replay=True
    )


def _in_use(key: str) -> ApiError:
    return ApiError(
        ErrorCode.IDEMPOTENCY_KEY_IN_USE,
        f"a request with Idempotency-Key {key!r} is still being processed: retry shortly "
        "to get its result",
        field=IDEMPOTENCY_HEADER,
        headers={"Retry-After": "1"},
    )


async def send_notification(request: web.Request, body: SendNotification, _query: None) -> Reply:
    check_content_source(body)  # title/body, or a template
    check_notification_size(body, request.app[LIMITS].config)
    require_category(request, body.category)
    plan = _channel_plan(request, body)
    now = now_ms()
    expires_at = _expires_at(body, now)
    if body.send_at is not None or body.delay is not None or body.deliver_at_local is not None:
        # Imported here, not above: scheduled builds on this module's steps.
        from pushd.api.scheduled import send_scheduled

        return await send_scheduled(request, body, plan=plan, now=now)
    if body.broadcast is not None or body.segment is not None:
        return await accept_audience_send(request, body, now=now)
    if body.topic is not None:
        # Imported here, not above: topic_send builds on this module's steps.
        from pushd.api.topic_send import send_to_topic

        return await send_to_topic(request, body, now=now)
    claim = _idempotency_claim(request, body)
    if claim is None:
        return await _send(request, body, plan=plan, expires_at=expires_at, now=now, claim=None)
    window_ms = int(request.app[CONFIG].ingest.idempotency_window * 1000)
    storage, ingest = request.app[STORAGE], request.app[INGEST]
    try:
        with ingest.claim(claim.scope, claim.key):
            stored = await storage.find_idempotency(
                claim.scope, claim.key, not_before=now - window_ms
            )
            if stored is not None:
                return _replay(request, stored, body)
            return await _send(
                request, body, plan=plan, expires_at=expires_at, now=now, claim=claim
            )
    except (ClaimInFlightError, IdempotencyConflictError):
        raise _in_use(claim.key) from None


async def new_notification(
    request: web.Request,
    body: SendNotification,
    user_id: str,
    *,
    now: int,
    expires_at: int | None,
    claim: IdempotencyClaim | None,
    deliveries: tuple[PlannedDelivery, ...],
    user: UserRecord | None = None,
) -> NewNotification:
    """The notification `body` makes for `user_id`, with its webhook events: the same for
    a single send, a batch item (pushd/api/batch.py) and a scheduled send
    (pushd/api/scheduled.py); the fan-out builds its own (pushd/audiences/fanout.py).
    `user`: the recipient's row when already read (a template then needs no read)."""
    # A template rendered for the user.
    content = await sent_content(request, body, user_id, user=user)
    notification = NewNotification(
        id=new_id("ntf"),
        user_id=user_id,
        title=content.title,
        body=content.body,
        data=body.data,
        category=body.category,
        priority=body.priority,
        created_at=now,
        expires_at=expires_at,
        idempotency=claim,
        deliveries=deliveries,
        channel_content=content.channel_content,
    )
    return await with_accepted_webhooks(request.app[WEBHOOKS], notification)


async def _send(
    request: web.Request,
    body: SendNotification,
    *,
    plan: ChannelPlan,
    expires_at: int | None,
    now: int,
    claim: IdempotencyClaim | None,
) -> Reply:
    recipient = await _resolve_recipient(request, body)
    user_id = recipient[0]
    await request.app[LIMITS].recipients.check(user_id, "inapp")  # 429 once over budget
    request[AUDIT_TARGET] = f"user:{user_id}"
    deliveries = await _planned_deliveries(request, plan, body, recipient, now)
    notification = await new_notification(
        request,
        body,
        user_id,
        now=now,
        expires_at=expires_at,
        claim=claim,
        deliveries=deliveries,
        user=recipient[1],  # read when the request named the user by external_id
    )
    log_context.notification_id.set(notification.id)  # on the log lines from here on
    try:
        record = await request.app[INGEST].submit(notification)
    except UnknownUserError:
        field = "user_id" if body.user_id is not None else "external_id"
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field=field) from None
    if any(delivery.status == "queued" for delivery in notification.deliveries):
        request.app[CHANNELS].nudge()  # committed: due now, sent without waiting for a poll
    request.app[METRICS].accepted.inc({})
    request[AUDIT_DETAIL] = {"notification_id": record.id, "seq": record.seq}
    return _accepted(record.id, record.user_id, record.seq, record.created_at, replay=False)


class HistoryQuery(msgspec.Struct):
    limit: PageLimit = 50
    cursor: NumericCursor | None = None
    unread: Annotated[bool, msgspec.Meta(description="Only notifications not read yet.")] = False
    # The in-app delivery is not a value of `channel`: every notification has one, and
    # its status (derived from the user's cursors, with `read` and `expired`) is not one
    # of `status`'s; `unread` is its filter.
    channel: Annotated[
        DeliveryChannel | None,
        msgspec.Meta(
            description="Only notifications with a channel delivery on this channel "
            "(with `status`: one delivery on this channel in that status)."
        ),
    ] = None
    status: Annotated[
        ChannelDeliveryStatus | None,
        msgspec.Meta(
            description="Only notifications with a channel delivery in this status "
            "(with `channel`: one delivery on that channel in this status)."
        ),
    ] = None


async def list_user_notifications(request: web.Request, _body: None, query: HistoryQuery) -> Reply:
    storage = request.app[STORAGE]
    user = await load_user(storage, request.match_info["userId"])
    # A category-limited key sees only its categories (docs/security.md), filtered in
    # the query: pages are full, and no cursor or count reveals another category.
    categories = request[API_KEY].categories
    page = await fetch_page(
        lambda limit: storage.list_notifications(
            user.id,
            before_seq=numeric_cursor(query.cursor),
            limit=limit,
            unread_only=query.unread,
            categories=categories,
            delivery_channel=query.channel,
            delivery_status=query.status,
        ),
        query.limit,
        key=lambda record: record.seq,
    )
    deliveries = await deliveries_of(storage, user, page.items, now_ms())
    items = [as_notification(r, d) for r, d in zip(page.items, deliveries, strict=True)]
    unread = await storage.count_unread(user.id, categories=categories)
    # Sends scheduled for later have no seq yet: the first page lists them apart.
    scheduled = (
        await storage.list_scheduled(
            user.id, after_id=None, limit=query.limit, categories=categories
        )
        if query.cursor is None
        else []
    )
    return Reply(
        200,
        NotificationPage(
            items, page.next_cursor, unread, [as_scheduled_view(r) for r in scheduled]
        ),
    )


async def _load_notification(request: web.Request) -> NotificationRecord:
    notification_id = request.match_info["id"]
    record = await request.app[STORAGE].get_notification(notification_id)
    # Outside a limited key's categories it is "not found", not "forbidden": a 403
    # would confirm that the id exists.
    if record is None or not may_read_category(request, record.category):
        raise ApiError(
            ErrorCode.NOT_FOUND, f"no notification with id {notification_id!r}", field="id"
        )
    return record


async def _detail(request: web.Request, record: NotificationRecord) -> NotificationDetail:
    storage = request.app[STORAGE]
    user = await load_user(storage, record.user_id)
    [delivery] = await deliveries_of(storage, user, [record], now_ms())
    return as_detail(record, delivery, await channel_deliveries(storage, record.id))


async def get_notification(request: web.Request, _body: None, _query: None) -> Reply:
    try:
        record = await _load_notification(request)
    except ApiError:
        # Not in the mailbox: a scheduled send not released yet (or cancelled) has its id.
        from pushd.api.scheduled import scheduled_view

        scheduled = await scheduled_view(request, request.match_info["id"])
        if scheduled is None:
            raise
        return Reply(200, scheduled)
    return Reply(200, await _detail(request, record))


async def get_notification_events(request: web.Request, _body: None, _query: None) -> Reply:
    record = await _load_notification(request)
    storage = request.app[STORAGE]
    user = await load_user(storage, record.user_id)
    [delivery] = await deliveries_of(storage, user, [record], now_ms())
    events = delivery_events(delivery)
    history = await storage.delivery_history_of(record.id)
    if history:
        events += channel_events(await storage.channel_deliveries_of(record.id), history)
    events.sort(key=lambda event: event.at)  # stable: each delivery's order is kept
    return Reply(200, DeliveryEventList(events))


async def mark_notification_read(request: web.Request, _body: None, _query: None) -> Reply:
    record = await _load_notification(request)
    app = request.app
    marked = await app[STORAGE].mark_read(record.user_id, [record.id], now_ms())
    if marked:
        await publish_read(app[BUS], record.user_id, marked)
    return Reply(200, await _detail(request, record))


async def mark_user_notifications_read(
    request: web.Request, body: ReadIds | None, _query: None
) -> Reply:
    app = request.app
    storage = app[STORAGE]
    user = await load_user(storage, request.match_info["userId"])
    # A category-limited key marks only its categories; other ids are ignored like
    # unknown ones, and a read-all runs up to its own newest seq (docs/security.md).
    categories = request[API_KEY].categories
    if body is not None:
        marked = await storage.mark_read(user.id, body.ids, now_ms(), categories=categories)
        if marked:
            await publish_read(app[BUS], user.id, marked)
        return Reply(200, ReadResult(marked=len(marked)))
    count, through_seq = await storage.mark_all_read(user.id, now_ms(), categories=categories)
    if count:
        await publish_read_all(app[BUS], user.id, through_seq, categories)
    return Reply(200, ReadResult(marked=count, through_seq=through_seq))


ROUTES = [
    Route(
        "POST",
        "/api/notifications",
        send_notification,
        "Send a notification to one user, or to each subscriber of a `topic`, now (202 "
        "once committed to storage). With an "
        "`Idempotency-Key` header, a repeat of the same request returns the first answer "
        "(header `Idempotent-Replayed: true`); the same key with another body is a 422, "
        "and while the first is still in progress a 409 with `Retry-After`.",
        {202: NotificationAccepted | SendAccepted | ScheduledAccepted},
        body=SendNotification,
        description="Beyond the socket, the notification follows its channel plan: the "
        "request's `channels`, else the one configured for its category (docs/channels.md). "
        "Its deliveries are committed with it; `GET /api/notifications/{id}` shows them. "
        "With `topic`, each subscriber gets a notification of their own: the send is "
        "stored and the 202 (a `SendAccepted` with `send_id`, `topic` and `created_at`, "
        "`Location: /api/sends/{id}`) comes at once; the subscribers are reached in the "
        "background, and `recipients`/`skipped` are at `GET /api/sends/{id}`. With a "
        "`template`, the 202 fixes its version and each subscriber gets it rendered for "
        "them. `Idempotency-Key` is refused with `topic`. With `send_at`, `delay` "
        "or `deliver_at_local` (one recipient), it is stored at once and committed to the "
        "mailbox when due: the 202 is a `ScheduledAccepted` (`status: scheduled`, no seq "
        "yet), and `DELETE /api/notifications/{id}` cancels it until then.",
        errors={
            404: "No user with this user_id or external_id, or no such topic",
            409: "The same Idempotency-Key is still being processed (retry after Retry-After)",
            429: "Too many notifications for this user (`limits.per_recipient`), or too many "
            "requests for this API key: retry after `Retry-After` seconds",
        },
        headers={
            IDEMPOTENCY_HEADER: "Optional. Makes retries safe: 1 to 255 visible ASCII "
            "characters, remembered for `ingest.idempotency_window` seconds per API key."
        },
        tag="notifications",
        action="notification.send",
    ),
    Route(
        "GET",
        "/api/notifications/user/{userId}",
        list_user_notifications,
        "A user's notifications, newest first, with their in-app status and the unread "
        "count; the first page also lists the sends scheduled for later (`scheduled`)",
        {200: NotificationPage},
        description="`channel` and `status` keep the notifications that have a channel "
        "delivery matching both (each when given), as `GET /api/notifications/{id}` lists "
        "them in `channel_deliveries`. Pages stay full and cursors name only listed "
        "notifications; `unread_count` counts all of the user's unread ones.",
        query=HistoryQuery,
        tag="notifications",
    ),
    Route(
        "GET",
        "/api/notifications/{id}",
        get_notification,
        "Get one notification with its delivery records: in-app, and every channel step",
        {200: NotificationDetail | ScheduledNotificationView},
        description="A scheduled send not released yet, or cancelled, is answered as a "
        "`ScheduledNotificationView` (`status` `scheduled` or `cancelled`, `seq` null).",
        tag="notifications",
    ),
    Route(
        "GET",
        "/api/notifications/{id}/events",
        get_notification_events,
        "The delivery history of one notification (every status transition and attempt, "
        "on every channel)",
        {200: DeliveryEventList},
        tag="notifications",
    ),
    Route(
        "POST",
        "/api/notifications/{id}/read",
        mark_notification_read,
        "Mark one notification read (synced to the user's sockets as a `read` frame)",
        {200: NotificationDetail},
        tag="notifications",
        action="notification.read",
    ),
    Route(
        "POST",
        "/api/users/{userId}/notifications/read-all",
        mark_user_notifications_read,
        "Mark every notification of the user read, or only `ids` when given (synced to "
        "the user's sockets as a `read` frame)",
        {200: ReadResult},
        body=ReadIds,
        body_required=False,
        tag="notifications",
        action="notification.read_all",
    ),
]
