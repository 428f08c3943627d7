"""Live figures for operators: `GET /api/stats` (JSON), `GET /metrics` (Prometheus,
pushd/ops/metrics.py), and the console's pages and assets (pushd/ops/console.py):
`GET /console` charts `/metrics` and learns the key's role from `/api/stats`;
`GET /console/inbox` shows one user's notifications through the JavaScript client."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web

from pushd.access.api_keys import API_KEY
from pushd.access.roles import ADMIN_ONLY, Role
from pushd.api.pagination import NumericCursor, fetch_page, numeric_cursor
from pushd.api.route import Reply, Route
from pushd.appkeys import BUS, CURSORS, INGEST, MAILBOXES, METRICS, SOCKETS, STORAGE
from pushd.ids import from_ms
from pushd.ops.console import ASSETS_PATH, console, console_asset, console_inbox


class Stats(msgspec.Struct, kw_only=True):
    """Counters since this process started, and gauges of now."""

    uptime_seconds: float
    notifications_accepted: int
    notifications_committed: int
    commit_batches: int
    bus_published: int
    bus_publish_failures: int
    outbox_relayed: int
    outbox_relaying: bool
    cursor_flushes: int
    frames_handed_to_mailboxes: int
    websockets_open: int
    mailbox_actors: int
    bus_healthy: bool
    key_role: Annotated[
        Role,
        msgspec.Meta(
            description="The role of the API key that asked: the console shows what it may do."
        ),
    ]


async def stats(request: web.Request, _body: None, _query: None) -> Reply:
    app = request.app
    instruments, ingest = app[METRICS], app[INGEST]
    return Reply(
        200,
        Stats(
            uptime_seconds=round(time.monotonic() - instruments.started_at, 3),
            notifications_accepted=instruments.total(instruments.accepted),
            notifications_committed=ingest.committed,
            commit_batches=ingest.batches,
            bus_published=ingest.published,
            bus_publish_failures=ingest.publish_failures,
            outbox_relayed=ingest.relayed,
            outbox_relaying=ingest.relaying,
            cursor_flushes=app[CURSORS].flushes,
            frames_handed_to_mailboxes=instruments.total(instruments.mailbox_handoffs),
            websockets_open=len(app[SOCKETS]),
            mailbox_actors=len(app[MAILBOXES]),
            bus_healthy=await app[BUS].healthy(),
            key_role=request[API_KEY].role,  # type: ignore[arg-type]  # one of ROLES
        ),
    )


# How many delivery attempts (history rows) one page of failures looks through: the
# page's cost stays bounded however rare failures are (storage, `latest_failed_deliveries`).
FAILURE_SCAN = 10_000


class FailuresQuery(msgspec.Struct, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    cursor: NumericCursor | None = None


class FailedDelivery(msgspec.Struct, kw_only=True):
    """A channel delivery that failed, and why (its history row of the failure)."""

    delivery_id: str
    notification_id: str
    user_id: str
    channel: str
    provider: str | None
    provider_code: Annotated[
        str | None, msgspec.Meta(description="The provider's own error code, when it gave one.")
    ]
    error: str | None
    failed_at: datetime
    attempts: int


class FailedDeliveries(msgspec.Struct, kw_only=True):
    items: list[FailedDelivery]
    next_cursor: Annotated[
        str | None,
        msgspec.Meta(
            description="Pass as `cursor` for older failures; null: none among the "
            f"{FAILURE_SCAN:,} attempts before the last one shown."
        ),
    ]


async def latest_failed_deliveries(
    request: web.Request, _body: None, query: FailuresQuery
) -> Reply:
    storage = request.app[STORAGE]
    page = await fetch_page(
        lambda limit: storage.latest_failed_deliveries(
            before=numeric_cursor(query.cursor), limit=limit, scan=FAILURE_SCAN
        ),
        query.limit,
        key=lambda record: record.history_id,
    )
    items = [
        FailedDelivery(
            delivery_id=record.delivery_id,
            notification_id=record.notification_id,
            user_id=record.user_id,
            channel=record.channel,
            provider=record.provider,
            provider_code=record.provider_code,
            error=record.error,
            failed_at=from_ms(record.at),
            attempts=record.attempts,
        )
        for record in page.items
    ]
    return Reply(200, FailedDeliveries(items=items, next_cursor=page.next_cursor))


async def metrics(request: web.Request, _body: None, _query: None) -> web.StreamResponse:
    """This process's Prometheus metrics."""
    return await request.app[METRICS].handle(request)


ROUTES = [
    Route(
        "GET",
        "/api/stats",
        stats,
        "Live counters and gauges of this process",
        {200: Stats},
        tag="system",
    ),
    Route(
        "GET",
        "/api/channel-deliveries/failed",
        latest_failed_deliveries,
        "The latest failed channel deliveries with their errors, newest first",
        {200: FailedDeliveries},
        query=FailuresQuery,
        description=f"The failures among the last {FAILURE_SCAN:,} delivery attempts (before "
        "`cursor`): a permanent error, the last retry of a transient one, or a provider's "
        "failed receipt. Admin only: it names users and notifications of every category.",
        tag="system",
        roles=ADMIN_ONLY,
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics of this process",
        {200: str},
        media_type="text/plain",
        description="The Prometheus text exposition format (version 0.0.4); every metric "
        "is listed in docs/metrics.md.",
        tag="system",
    ),
    Route(
        "GET",
        "/console",
        console,
        "The operator console: live charts, channel queues, a test send",
        {200: str},
        public=True,
        media_type="text/html",
        description="A static page; the figures it fetches (`/metrics`, `/api/stats`) need "
        "an API key, which it asks for. What it shows depends on the key's role.",
        tag="system",
    ),
    Route(
        "GET",
        "/console/inbox",
        console_inbox,
        "The demo inbox: one user's notifications arriving live",
        {200: str},
        public=True,
        media_type="text/html",
        description="A static page using the JavaScript client (`/client.js`); it asks for "
        "an API key that may issue user tokens, and a user id.",
        tag="system",
    ),
    Route(
        "GET",
        ASSETS_PATH + "/{asset}",
        console_asset,
        "A script or style sheet of the console, the inbox and the API reference",
        {200: str},
        public=True,
        media_type="text/javascript",
        errors={404: "No such asset"},
        tag="system",
    ),
]
