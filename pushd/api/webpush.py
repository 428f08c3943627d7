"""Web push discovery: the VAPID public key a browser subscribes with."""

from __future__ import annotations

from aiohttp import web

from pushd.api.errors import ApiError, ErrorCode
from pushd.api.route import Reply, Route
from pushd.api.schemas import VapidPublicKey
from pushd.appkeys import VAPID_PUBLIC_KEY


async def vapid_public_key(request: web.Request, _body: None, _query: None) -> Reply:
    public_key = request.app[VAPID_PUBLIC_KEY]
    if public_key is None:
        raise ApiError(
            ErrorCode.NOT_FOUND,
            "web push is not configured on this server: the operator adds a "
            "[[channels.webpush]] provider (docs/channels.md) before browsers can subscribe",
        )
    return Reply(200, VapidPublicKey(public_key), {"Cache-Control": "public, max-age=3600"})


ROUTES = [
    Route(
        "GET",
        "/api/webpush/vapid-public-key",
        vapid_public_key,
        "The VAPID public key browsers subscribe with",
        {200: VapidPublicKey},
        public=True,
        description="Pass `public_key` as `applicationServerKey` to "
        "`pushManager.subscribe()`, then register the subscription as a `webpush` device "
        "(POST /api/users/{userId}/devices). No API key: a browser page asks for it.",
        errors={404: "No web push provider is configured"},
        tag="devices",
    ),
]
