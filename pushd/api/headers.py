"""Headers on every response: security headers, and CORS for the configured origins
(`http.cors_origins`), including the answer to browsers' preflight `OPTIONS` requests."""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import web

from pushd.api.errors import Handler
from pushd.appkeys import CONFIG

# The API and error responses are JSON, never a page: nothing may load, run or frame.
# Pages (the console) set their own, narrower-than-nothing-but-enough policy.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HSTS = "max-age=31536000"
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Defaults a page may replace with its own. Responses carry users' data and live
# figures: no cache may keep them.
_DEFAULT_HEADERS = {"Content-Security-Policy": API_CSP, "Cache-Control": "no-store"}
# What a browser page may send and read besides the CORS-safelisted headers.
# Last-Event-ID: a script that reads `GET /sse` with fetch resumes with it.
ALLOWED_REQUEST_HEADERS = (
    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id"
)
EXPOSED_RESPONSE_HEADERS = "Location, Retry-After, WWW-Authenticate, X-Request-Id"
PREFLIGHT_MAX_AGE = "600"


def allowed_origin(request: web.Request) -> str | None:
    """The `Access-Control-Allow-Origin` value for this request, or None: no `Origin`,
    or one that is not configured."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    origins = request.app[CONFIG].http.cors_origins
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


def security_headers(*, secure: bool) -> dict[str, str]:
    """The security headers of a response the app never sees (a request the HTTP parser
    refused is answered below the app: pushd/process/http_server.py); `secure`: over TLS."""
    headers = {**_SECURITY_HEADERS, **_DEFAULT_HEADERS}
    if secure:
        headers["Strict-Transport-Security"] = HSTS
    return headers


async def add_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: runs for every response, errors and 404s included."""
    headers = response.headers
    headers.update(_SECURITY_HEADERS)
    for name, value in _DEFAULT_HEADERS.items():
        headers.setdefault(name, value)
    if request.secure:
        headers["Strict-Transport-Security"] = HSTS
    origin = allowed_origin(request)
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = EXPOSED_RESPONSE_HEADERS
    if request.app[CONFIG].http.cors_origins and origin != "*":
        # The answer depends on the Origin header: caches must not mix them up.
        headers.add("Vary", "Origin")


@web.middleware
def cors_preflight(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Answer a CORS preflight for an existing route with 204, before authentication:
    browsers send it without credentials. Allowed origins get the Allow-* headers (added
    with Allow-Origin by `add_response_headers`); others get none, so the browser refuses.

    A plain function that hands back the handler's awaitable, not a coroutine awaiting
    it: a middleware coroutine stays alive, frame and all, for as long as the request
    runs, and a WebSocket's request runs as long as the socket is open.
    """
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return handler(request)
    unmatched = request.match_info.http_exception
    if not isinstance(unmatched, web.HTTPMethodNotAllowed):
        return handler(request)  # unknown route (404), or a real OPTIONS route
    return _preflight(request, unmatched)


async def _preflight(
    request: web.Request, unmatched: web.HTTPMethodNotAllowed
) -> web.StreamResponse:
    headers = {}
    if allowed_origin(request) is not None:
        headers = {
            "Access-Control-Allow-Methods": ", ".join(sorted(unmatched.allowed_methods)),
            "Access-Control-Allow-Headers": ALLOWED_REQUEST_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        }
    return web.Response(status=204, headers=headers)
