"""Topics and their subscribers: the admin routes (API key), and a user's own
subscribe and unsubscribe with their user token. Sending to a topic is
pushd/api/topic_send.py."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.user_token_auth import authenticate_user_token
from pushd.api.errors import ApiError, ErrorCode
from pushd.api.pagination import PageLimit, fetch_page
from pushd.api.route import Reply, Route
from pushd.api.users import load_user
from pushd.appkeys import STORAGE
from pushd.ids import from_ms, now_ms
from storage import ConflictError, Storage
from storage.records import NewTopic, TopicRecord, TopicSubscription

Meta = msgspec.Meta

TopicSlug = Annotated[
    str,
    Meta(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        description="Lower-case slug, 1-64 chars: the topic's id in URLs and sends.",
    ),
]
MAX_BULK_SUBSCRIBE = 1000


class CreateTopic(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    slug: TopicSlug
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    self_subscribe: Annotated[
        bool,
        Meta(
            description="true: users may subscribe and unsubscribe themselves with their "
            "user token (PUT/DELETE /api/me/topics/{topic})."
        ),
    ] = False


class Topic(msgspec.Struct, kw_only=True):
    slug: str
    name: str
    self_subscribe: bool
    created_at: datetime

    @classmethod
    def of(cls, record: TopicRecord) -> Topic:
        return cls(
            slug=record.slug,
            name=record.name,
            self_subscribe=record.self_subscribe,
            created_at=from_ms(record.created_at),
        )


class TopicPage(msgspec.Struct):
    items: list[Topic]
    next_cursor: str | None


class Subscription(msgspec.Struct, kw_only=True):
    topic: str
    user_id: str
    subscribed_at: datetime

    @classmethod
    def of(cls, record: TopicSubscription) -> Subscription:
        return cls(
            topic=record.topic, user_id=record.user_id, subscribed_at=from_ms(record.created_at)
        )


class SubscriptionPage(msgspec.Struct):
    items: list[Subscription]
    next_cursor: str | None


class Subscribed(msgspec.Struct, kw_only=True):
    topic: str
    user_id: str
    created: Annotated[bool, Meta(description="false: the user was already subscribed.")]


class BulkSubscribe(msgspec.Struct, forbid_unknown_fields=True):
    user_ids: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=64)]],
        Meta(min_length=1, max_length=MAX_BULK_SUBSCRIBE),
    ]


class SubscribeResult(msgspec.Struct, kw_only=True):
    user_id: str
    outcome: Literal["subscribed", "already_subscribed", "unknown_user"]


class BulkSubscribeResult(msgspec.Struct, kw_only=True):
    results: Annotated[
        list[SubscribeResult], Meta(description="One per distinct id, in the order given.")
    ]


class TopicsPageQuery(msgspec.Struct):
    limit: PageLimit = 50
    cursor: Annotated[str, Meta(max_length=255)] | None = None


async def load_topic(storage: Storage, slug: str) -> TopicRecord:
    """The topic or a 404 naming it."""
    topic = await storage.get_topic(slug)
    if topic is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no topic {slug!r}: create it first", field="topic")
    return topic


# topics ------------------------------------------------------------------------------


async def create_topic(request: web.Request, body: CreateTopic, _query: None) -> Reply:
    new = NewTopic(
        slug=body.slug, name=body.name, self_subscribe=body.self_subscribe, created_at=now_ms()
    )
    try:
        topic = await request.app[STORAGE].create_topic(new)
    except ConflictError:
        raise ApiError(
            ErrorCode.CONFLICT, f"topic {body.slug!r} exists: choose another slug", field="slug"
        ) from None
    request[AUDIT_TARGET] = f"topic:{topic.slug}"
    return Reply(201, Topic.of(topic), {"Location": f"/api/topics/{topic.slug}"})


async def list_topics(request: web.Request, _body: None, query: TopicsPageQuery) -> Reply:
    storage = request.app[STORAGE]
    page = await fetch_page(
        lambda limit: storage.list_topics(after_slug=query.cursor, limit=limit),
        query.limit,
        key=lambda topic: topic.slug,
    )
    return Reply(200, TopicPage([Topic.of(t) for t in page.items], page.next_cursor))


async def get_topic(request: web.Request, _body: None, _query: None) -> Reply:
    return Reply(200, Topic.of(await load_topic(request.app[STORAGE], request.match_info["topic"])))


async def delete_topic(request: web.Request, _body: None, _query: None) -> Reply:
    slug = request.match_info["topic"]
    request[AUDIT_TARGET] = f"topic:{slug}"
    if not await request.app[STORAGE].delete_topic(slug):
        raise ApiError(ErrorCode.NOT_FOUND, f"no topic {slug!r}", field="topic")
    return Reply(204)


# subscribers -------------------------------------------------------------------------


async def _subscribe_one(request: web.Request, slug: str, user_id: str) -> Reply:
    storage = request.app[STORAGE]
    await load_topic(storage, slug)
    outcome = (await storage.subscribe(slug, [user_id], at=now_ms()))[user_id]
    if outcome == "unknown_user":
        # Or the topic was deleted meanwhile: say which.
        await load_topic(storage, slug)
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field="userId")
    request[AUDIT_TARGET] = f"user:{user_id}"
    request[AUDIT_DETAIL] = {"topic": slug}
    created = outcome == "subscribed"
    return Reply(201 if created else 200, Subscribed(topic=slug, user_id=user_id, created=created))


async def _unsubscribe_one(request: web.Request, slug: str, user_id: str) -> Reply:
    storage = request.app[STORAGE]
    request[AUDIT_TARGET] = f"user:{user_id}"
    request[AUDIT_DETAIL] = {"topic": slug}
    # Idempotent, so that a retried unsubscribe succeeds; an unknown topic is still a 404.
    if not await storage.unsubscribe(slug, user_id):
        await load_topic(storage, slug)
    return Reply(204)


async def add_subscriber(request: web.Request, _body: None, _query: None) -> Reply:
    return await _subscribe_one(request, request.match_info["topic"], request.match_info["userId"])


async def remove_subscriber(request: web.Request, _body: None, _query: None) -> Reply:
    return await _unsubscribe_one(
        request, request.match_info["topic"], request.match_info["userId"]
    )


async def add_subscribers(request: web.Request, body: BulkSubscribe, _query: None) -> Reply:
    storage, slug = request.app[STORAGE], request.match_info["topic"]
    await load_topic(storage, slug)
    outcomes = await storage.subscribe(slug, body.user_ids, at=now_ms())
    results = [SubscribeResult(user_id=u, outcome=o) for u, o in outcomes.items()]
    request[AUDIT_TARGET] = f"topic:{slug}"
    request[AUDIT_DETAIL] = {"subscribed": sum(r.outcome == "subscribed" for r in results)}
    return Reply(200, BulkSubscribeResult(results=results))


async def list_subscribers(request: web.Request, _body: None, query: TopicsPageQuery) -> Reply:
    storage, slug = request.app[STORAGE], request.match_info["topic"]
    await load_topic(storage, slug)
    page = await fetch_page(
        lambda limit: storage.list_subscribers(slug, after_user_id=query.cursor, limit=limit),
        query.limit,
        key=lambda subscription: subscription.user_id,
    )
    return Reply(200, SubscriptionPage([Subscription.of(s) for s in page.items], page.next_cursor))


async def list_user_topics(request: web.Request, _body: None, query: TopicsPageQuery) -> Reply:
    storage = request.app[STORAGE]
    user = await load_user(storage, request.match_info["userId"])
    page = await fetch_page(
        lambda limit: storage.topics_of_user(user.id, after_slug=query.cursor, limit=limit),
        query.limit,
        key=lambda subscription: subscription.topic,
    )
    return Reply(200, SubscriptionPage([Subscription.of(s) for s in page.items], page.next_cursor))


# a user's own subscriptions, with their user token ------------------------------------


async def _token_user(request: web.Request) -> str:
    """The user whose token the request carries (401 otherwise). A category-limited
    token (`cats`) may subscribe too: a topic send still reaches its socket only in its
    categories."""
    return (await authenticate_user_token(request)).user_id


async def _self_service_topic(request: web.Request) -> tuple[str, str]:
    user_id = await _token_user(request)
    slug = request.match_info["topic"]
    topic = await load_topic(request.app[STORAGE], slug)
    if not topic.self_subscribe:
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"topic {slug!r} does not let users subscribe themselves (self_subscribe is "
            "false): the application subscribes users with its API key",
            field="topic",
        )
    return slug, user_id


async def subscribe_self(request: web.Request, _body: None, _query: None) -> Reply:
    slug, user_id = await _self_service_topic(request)
    return await _subscribe_one(request, slug, user_id)


async def unsubscribe_self(request: web.Request, _body: None, _query: None) -> Reply:
    slug, user_id = await _self_service_topic(request)
    return await _unsubscribe_one(request, slug, user_id)


_SELF_SERVICE_NOTE = (
    "Authenticated with the user's own token (`Authorization: Bearer <user token>`, as "
    "issued by `POST /api/users/{userId}/tokens`), not an API key. Only for a topic with "
    "`self_subscribe: true` (403 otherwise)."
)

_SELF_SERVICE_ERRORS = {
    401: "No user token, or one that is invalid, expired or revoked",
    403: "The topic does not allow self_subscribe",
    404: "No such topic",
    429: "Too many invalid user tokens from this address: retry after Retry-After seconds",
}

ROUTES = [
    Route(
        "POST",
        "/api/topics",
        create_topic,
        "Create a topic",
        {201: Topic},
        body=CreateTopic,
        errors={409: "A topic with this slug exists"},
        tag="topics",
        action="topic.create",
    ),
    Route(
        "GET",
        "/api/topics",
        list_topics,
        "List topics (by slug)",
        {200: TopicPage},
        query=TopicsPageQuery,
        tag="topics",
    ),
    Route("GET", "/api/topics/{topic}", get_topic, "Get a topic", {200: Topic}, tag="topics"),
    Route(
        "DELETE",
        "/api/topics/{topic}",
        delete_topic,
        "Delete a topic and all its subscriptions",
        {204: None},
        tag="topics",
        action="topic.delete",
    ),
    Route(
        "PUT",
        "/api/topics/{topic}/subscribers/{userId}",
        add_subscriber,
        "Subscribe a user to a topic (201 new, 200 already subscribed)",
        {201: Subscribed, 200: Subscribed},
        tag="topics",
        action="topic.subscribe",
    ),
    Route(
        "DELETE",
        "/api/topics/{topic}/subscribers/{userId}",
        remove_subscriber,
        "Unsubscribe a user from a topic (204 whether or not they were subscribed)",
        {204: None},
        tag="topics",
        action="topic.unsubscribe",
    ),
    Route(
        "POST",
        "/api/topics/{topic}/subscribers",
        add_subscribers,
        f"Subscribe up to {MAX_BULK_SUBSCRIBE} users at once (one transaction); a result per id",
        {200: BulkSubscribeResult},
        body=BulkSubscribe,
        tag="topics",
        action="topic.subscribe_bulk",
    ),
    Route(
        "GET",
        "/api/topics/{topic}/subscribers",
        list_subscribers,
        "List a topic's subscribers (by user id)",
        {200: SubscriptionPage},
        query=TopicsPageQuery,
        tag="topics",
    ),
    Route(
        "GET",
        "/api/users/{userId}/topics",
        list_user_topics,
        "List the topics a user is subscribed to (by slug)",
        {200: SubscriptionPage},
        query=TopicsPageQuery,
        tag="topics",
    ),
    Route(
        "PUT",
        "/api/me/topics/{topic}",
        subscribe_self,
        "Subscribe yourself to a topic, with your user token (201 new, 200 already)",
        {201: Subscribed, 200: Subscribed},
        description=_SELF_SERVICE_NOTE,
        errors=_SELF_SERVICE_ERRORS,
        public=True,
        user_token=True,
        tag="topics",
        action="topic.subscribe_self",
    ),
    Route(
        "DELETE",
        "/api/me/topics/{topic}",
        unsubscribe_self,
        "Unsubscribe yourself from a topic, with your user token (204 whether or not "
        "you were subscribed)",
        {204: None},
        description=_SELF_SERVICE_NOTE,
        errors=_SELF_SERVICE_ERRORS,
        public=True,
        user_token=True,
        tag="topics",
        action="topic.unsubscribe_self",
    ),
]
