"""The HTTP API: the route table, its handlers, errors and the OpenAPI document."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from aiohttp import web

from pushd.api import (
    audit,
    batch,
    categories,
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
from pushd.realtime import ws
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
    bus_health = ComponentHealth(
        ok=bus_ok, backend=bus.__class__.__name__, error=None if bus_ok else "bus not connected"
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


async def websocket(request: web.Request, _body: None, _query: None) -> web.StreamResponse:
    """Real-time delivery (pushd/realtime/ws.py)."""
    return await ws.websocket(request)


def describe_api(token_max_ttl: int) -> dict[str, Any]:
    """This server's OpenAPI document (the token lifetime limit is configuration)."""
    return build_openapi(
        ROUTES, version=version("pushd"), token_max_ttl=token_max_ttl, timezones=known_timezones()
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
    *webpush.ROUTES,
    *webhooks.ROUTES,
    *topics.ROUTES,
    *segments.ROUTES,
    *sends.ROUTES,
    *templates.ROUTES,
    *unsubscribe.ROUTES,
    *sms_receipts.ROUTES,
    *stats.ROUTES,
    *key_admin.ROUTES,
    *audit.ROUTES,
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
]
