"""HTTP requests in the metrics: one counter by route template, method and status, and
a latency histogram by route template and method (pushd/ops/metrics.py).

The route label is the template the router matched (`/api/users/{userId}`), never the
raw path: a path carries ids, and one series per id would grow without bound. Requests
no route matched (404, 405 from the router) share the label `unmatched`; methods other
than the standard ones share `OTHER`. Installed just inside the request-id middleware,
so that it sees the status the error middleware answered with.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from pushd.ops.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_EVENT_STREAM = "text/event-stream"


def route_template(request: web.Request) -> str:
    """The matched route's template (its canonical form), or `UNMATCHED`."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return UNMATCHED if resource is None else resource.canonical


def http_metrics_middleware(metrics: Metrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware counting into `metrics`."""

    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status, long_lived = 500, False  # an exception that escapes becomes a 500
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            status = exc.status
            raise
        else:
            status = response.status
            long_lived = isinstance(response, web.WebSocketResponse) or (
                response.content_type == _EVENT_STREAM
            )
            return response
        finally:
            method = request.method if request.method in _METHODS else "OTHER"
            seconds = None if long_lived else time.perf_counter() - started
            metrics.http_request(route_template(request), method, status, seconds)

    return count_requests


def install_http_metrics(app: web.Application, metrics: Metrics) -> None:
    """Add the middleware to `app` (before it starts) unless the hot-path instruments
    are off (`metrics.hot_path = false`)."""
    if metrics.hot_path:
        # Second: just inside the request-id middleware, which stays outermost.
        app.middlewares.insert(1, http_metrics_middleware(metrics))
