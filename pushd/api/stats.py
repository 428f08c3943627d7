"""Live figures for operators: `GET /api/stats` (JSON) and the `/console` page that
polls it."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from importlib import resources

import msgspec
from aiohttp import web

from pushd.api.routing import Reply, Route
from pushd.appkeys import BUS, CURSORS, INGEST, MAILBOXES, METRICS, SOCKETS


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
    metrics, ingest = app[METRICS], app[INGEST]
    return Reply(
        200,
        Stats(
            uptime_seconds=round(time.monotonic() - metrics.started_at, 3),
            notifications_accepted=metrics.total(metrics.accepted),
            notifications_committed=ingest.committed,
            commit_batches=ingest.batches,
            bus_published=ingest.published,
            bus_publish_failures=ingest.publish_failures,
            outbox_relayed=ingest.relayed,
            outbox_relaying=ingest.relaying,
            cursor_flushes=app[CURSORS].flushes,
            frames_handed_to_mailboxes=metrics.total(metrics.delivered),
            websockets_open=len(app[SOCKETS]),
            mailbox_actors=len(app[MAILBOXES]),
            bus_healthy=await app[BUS].healthy(),
        ),
    )


_CONSOLE = resources.files("pushd.ops").joinpath("console.html").read_bytes()


def _inline_hashes(html: bytes, tag: str) -> str:
    blocks = re.findall(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), html, re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(block).digest()).decode()}'" for block in blocks
    )


# The page's own inline <script> and <style> (by hash, so nothing injected can run), and
# fetches to this origin; nothing else.
CONSOLE_CSP = (
    f"default-src 'none'; script-src {_inline_hashes(_CONSOLE, 'script')}; "
    f"style-src {_inline_hashes(_CONSOLE, 'style')}; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


async def console(_request: web.Request) -> web.Response:
    """The operator console: a static page; the figures need an API key it asks for."""
    return web.Response(
        body=_CONSOLE, content_type="text/html", headers={"Content-Security-Policy": CONSOLE_CSP}
    )


ROUTES = [
    Route(
        "GET",
        "/api/stats",
        stats,
        "Live counters and gauges of this process",
        {200: Stats},
        tag="system",
    ),
]
