"""Live figures for operators, three routes: `GET /api/stats` (JSON), `GET /metrics`
(Prometheus, pushd/ops/metrics.py) and `GET /console`, the page that polls
`/api/stats` (pushd/ops/console.py)."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from pushd.api.route import Reply, Route
from pushd.appkeys import BUS, CURSORS, INGEST, MAILBOXES, METRICS, SOCKETS
from pushd.ops.console import console


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
        ),
    )


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
        "/metrics",
        metrics,
        "Prometheus metrics of this process",
        {200: str},
        media_type="text/plain",
        description="The Prometheus text exposition format (version 0.0.4); every metric "
        "is listed in docs/architecture.md.",
        tag="system",
    ),
    Route(
        "GET",
        "/console",
        console,
        "The operator console: a page of live figures (polls /api/stats)",
        {200: str},
        public=True,
        media_type="text/html",
        description="A static page; the figures it fetches need an API key, which it asks for.",
        tag="system",
    ),
]
