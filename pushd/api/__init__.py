"""The HTTP API: the route table, its handlers, errors and the OpenAPI document."""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from importlib.metadata import version
from typing import Any, cast

import msgspec
from aiohttp import web

from pushd.api import (
    audit,
    batch,
    categories,
    client_asset,
    docs_page,
    edits,
    gdpr,
    key_admin,
    notifications,
    preference_center,
    preferences,
    scheduled,
    segments,
    sends,
    sms_receipts,
    stats,
    templates,
    tokens,
    topics,
    unsubscribe,
    users,
    webhooks,
    webpush,
)
from pushd.api.dispatch import add_routes
from pushd.api.openapi import build_openapi
from pushd.api.route import Reply, Route
from pushd.api.schemas import ComponentHealth, Health, known_timezones
from pushd.appkeys import BUS, OPENAPI, STATE, STORAGE
from pushd.realtime import sse, ws
from pushd.state import StateUnavailableError
from storage import StorageError

__all__ = ["ROUTES", "add_routes", "describe_api"]


async def healthcheck(request: web.Request, _body: None, _query: None) -> Reply:
    """200 when storage answers, the bus is connected and the shared state answers, else
    503 naming the culprit."""
    storage_health = ComponentHealth(ok=True, backend=request.app[STORAGE].__class__.__name__)
    try:
        await request.app[STORAGE].ping()
    except StorageError as exc:
        storage_health = ComponentHealth(ok=False, backend=storage_health.backend, error=str(exc))
    bus = request.app[BUS]
    bus_ok = await bus.healthy()
    # The bus is wrapped to be counted (pushd/ops/metrics.py): name what it wraps.
    backend = getattr(bus, "backend", type(bus).__name__)
    bus_health = ComponentHealth(
        ok=bus_ok, backend=backend, error=None if bus_ok else "bus not connected"
    )
    state = request.app[STATE]
    state_health = ComponentHealth(ok=True, backend=state.__class__.__name__)
    try:
        await state.ping()
    except StateUnavailableError as exc:
        state_health = ComponentHealth(ok=False, backend=state_health.backend, error=str(exc))
    ok = storage_health.ok and bus_health.ok and state_health.ok
    return Reply(
        200 if ok else 503,
        Health("ok" if ok else "unavailable", storage_health, bus_health, state_health),
        {} if ok else {"Retry-After": "5"},
    )


async def openapi(request: web.Request, _body: None, _query: None) -> Reply:
    return Reply(200, request.app[OPENAPI])


def websocket(request: web.Request, _body: None, _query: None) -> Awaitable[web.StreamResponse]:
    """Real-time delivery (pushd/realtime/ws.py). Hands back the socket's coroutine
    rather than awaiting it: a frame here would live as long as the socket."""
    return ws.websocket(request)


async def server_sent_events(
    request: web.Request, _body: None, query: sse.StreamQuery
) -> web.StreamResponse:
    """Real-time delivery as Server-Sent Events (pushd/realtime/sse.py)."""
    return await sse.stream_notifications(request, query)


def describe_api(token_max_ttl: int) -> dict[str, Any]:
    """This server's OpenAPI document (the token lifetime limit is configuration): a
    copy of its own for each caller, which may edit it (input_limits.document_limits)."""
    return cast(dict[str, Any], msgspec.json.decode(_openapi_json(token_max_ttl)))


@functools.cache
def _openapi_json(token_max_ttl: int) -> bytes:
    # Built once per process: the routes are fixed, and generating every schema took
    # about 40 ms (each test app starts one server).
    return msgspec.json.encode(
        build_openapi(
            ROUTES,
            version=version("pushd"),
            token_max_ttl=token_max_ttl,
            timezones=known_timezones(),
        )
    )


ROUTES: list[Route] = [
    Route(
        "GET",
        "/api/healthcheck",
        healthcheck,
        "Storage, bus and shared state health",
        {200: Health, 503: Health},
        public=True,
        tag="system",
    ),
    Route(
        "GET",
        "/api/openapi.json",
        openapi,
        "This OpenAPI document",
        {200: dict[str, Any]},
        tag="system",
    ),
    *users.ROUTES,
    *gdpr.ROUTES,
    *preferences.ROUTES,
    *categories.ROUTES,
    *preference_center.ROUTES,
    *tokens.ROUTES,
    *batch.ROUTES,
    *notifications.ROUTES,
    *scheduled.ROUTES,
    *edits.ROUTES,
    *webpush.ROUTES,
    *webhooks.ROUTES,
    *topics.ROUTES,
    *segments.ROUTES,
    *sends.ROUTES,
    *templates.ROUTES,
    *unsubscribe.ROUTES,
    *sms_receipts.ROUTES,
    *stats.ROUTES,
    *docs_page.ROUTES,
    *key_admin.ROUTES,
    *audit.ROUTES,
    *client_asset.ROUTES,
    Route(
        "GET",
        "/ws",
        websocket,
        "The WebSocket: notifications in real time",
        {101: None},
        websocket=True,
        public=True,
        description="Upgrade to a WebSocket (protocol 1.2, docs/protocol.md). No API key: "
        "the client's first frame is `auth` with a user token (POST "
        "/api/users/{userId}/tokens).",
        errors={400: "Not a WebSocket upgrade request"},
        tag="realtime",
    ),
    Route(
        "GET",
        "/sse",
        server_sent_events,
        "Server-Sent Events: notifications in real time without a WebSocket",
        {200: str},
        query=sse.StreamQuery,
        media_type="text/event-stream",
        public=True,
        user_token=True,
        description="The socket's stream as `text/event-stream` (docs/protocol.md, "
        '"Server-Sent Events"): one event per frame, `id:` = the seq covered, resumed '
        "after `Last-Event-ID`. The user token comes as `Authorization: Bearer <user "
        "token>`, or as `?token=` for EventSource (it can then show in proxies' logs).",
        errors={
            401: "No user token, or one that is invalid, expired or revoked",
            422: "Last-Event-ID is not a seq",
            429: "Too many sockets and streams for this user on this node, or too many "
            "invalid user tokens from this address: retry after Retry-After seconds",
        },
        headers={"Last-Event-ID": "The seq of the last event received (EventSource sends it)"},
        tag="realtime",
    ),
]
