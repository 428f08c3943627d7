"""`POST /api/notifications` with `topic`: one notification to each subscriber.

Each subscriber gets a notification of their own (their own seq, acks, replay, tracking
and channel plan), exactly as if it had been sent to them alone. The subscribers are read
page by page (`ingest.batch_max_items` at a time, in user id order); each page's
notifications are built, then committed in one transaction through the group commit
(`NotificationIngest.submit_many`), before the next page is read. So memory holds one
page at a time whatever the topic's size, each transaction is bounded, and single sends
arriving meanwhile are committed between (or with) the pages. The 202 comes once every
page is committed; it counts the recipients instead of listing 100,000 ids.

Who receives it: the subscribers of each page as that page is read. A user subscribing
during the send is included if their id sorts after the page being read.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.rate_limits import RateLimitedError
from pushd.api.errors import ApiError, validation_error
from pushd.api.notifications import IDEMPOTENCY_HEADER, _planned_deliveries, new_notification
from pushd.api.route import Reply
from pushd.api.schemas import SendNotification, TopicSendAccepted
from pushd.api.templates import RecipientGoneError
from pushd.api.topics import load_topic
from pushd.appkeys import CHANNELS, CONFIG, INGEST, LIMITS, METRICS, STORAGE
from pushd.ids import from_ms, new_id
from pushd.routing.plan import ChannelPlan
from storage import UnknownUserError
from storage.records import NewNotification, NotificationRecord


class _Send:
    """What every recipient's notification shares."""

    def __init__(
        self, body: SendNotification, plan: ChannelPlan, now: int, expires_at: int | None
    ) -> None:
        self.body = body
        self.plan = plan
        self.now = now
        self.expires_at = expires_at


async def _notification_for(
    request: web.Request, send: _Send, user_id: str
) -> NewNotification | None:
    """The subscriber's notification; None to skip them (over budget, or erased)."""
    body = send.body
    try:
        await request.app[LIMITS].recipients.check(user_id, "inapp")
        deliveries = await _planned_deliveries(request, send.plan, body, (user_id, None), send.now)
    except (RateLimitedError, ApiError):  # the ApiError is the 404 of an erased user
        return None
    try:
        return await new_notification(
            request,
            body,
            user_id,
            now=send.now,
            expires_at=send.expires_at,
            claim=None,
            deliveries=deliveries,
        )
    except RecipientGoneError:  # erased since the page was read (a template reads the user)
        return None


async def _send_page(request: web.Request, send: _Send, user_ids: list[str]) -> tuple[int, int]:
    """Commit one page's notifications in one transaction; (committed, skipped)."""
    built = await asyncio.gather(*(_notification_for(request, send, u) for u in user_ids))
    notifications = [n for n in built if n is not None]
    results = await request.app[INGEST].submit_many(notifications)
    committed = sum(1 for r in results if isinstance(r, NotificationRecord))
    for result in results:
        # Only a user erased since the page was read fails alone; anything else (storage
        # down) failed the whole transaction and is the request's error.
        if isinstance(result, Exception) and not _erased(result):
            raise result
    if any(d.status == "queued" for n in notifications for d in n.deliveries):
        request.app[CHANNELS].nudge()
    return committed, len(user_ids) - committed


def _erased(error: Exception) -> bool:
    return isinstance(error, UnknownUserError)


async def send_to_topic(
    request: web.Request,
    body: SendNotification,
    *,
    plan: ChannelPlan,
    now: int,
    expires_at: int | None,
) -> Reply:
    """Fan `body` out to the subscribers of `body.topic` (checked by the caller like a
    single send: content, size, category)."""
    assert body.topic is not None
    if body.user_id is not None or body.external_id is not None:
        raise validation_error("give one of user_id, external_id and topic", "topic")
    if IDEMPOTENCY_HEADER in request.headers:
        raise validation_error(
            "Idempotency-Key is not supported with topic: a topic send is many notifications",
            IDEMPOTENCY_HEADER,
        )
    storage = request.app[STORAGE]
    topic = await load_topic(storage, body.topic)
    send = _Send(body, plan, now, expires_at)
    page_size = request.app[CONFIG].ingest.batch_max_items
    send_id = new_id("snd")
    request[AUDIT_TARGET] = f"topic:{topic.slug}"
    recipients = skipped = 0
    after: str | None = None
    while True:
        page = await storage.list_subscribers(topic.slug, after_user_id=after, limit=page_size)
        if not page:
            break
        committed, left_out = await _send_page(request, send, [s.user_id for s in page])
        recipients += committed
        skipped += left_out
        after = page[-1].user_id
        if len(page) < page_size:
            break
    if recipients:
        request.app[METRICS].accepted.add({}, recipients)
    request[AUDIT_DETAIL] = {"send_id": send_id, "recipients": recipients, "skipped": skipped}
    accepted = TopicSendAccepted(
        send_id=send_id,
        topic=topic.slug,
        recipients=recipients,
        skipped=skipped,
        created_at=from_ms(now),
    )
    return Reply(202, accepted)
