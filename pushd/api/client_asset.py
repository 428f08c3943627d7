"""`GET /client.js`: the JavaScript client (pushd/client/pushd-client.js), served by
pushd itself so that a page can `import { PushdClient } from "/client.js"` with no CDN
and no build step (docs/clients.md)."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Final

from aiohttp import web

from pushd.api.route import Route

CLIENT_SCRIPT: Final = resources.files("pushd.client").joinpath("pushd-client.js").read_bytes()
# The file changes only with pushd itself: a strong validator of its bytes, and a short
# lifetime so that an upgraded server's client reaches browsers within minutes.
_ETAG: Final = f'"{hashlib.sha256(CLIENT_SCRIPT).hexdigest()[:32]}"'
_HEADERS: Final = {
    "Cache-Control": "public, max-age=300",
    "ETag": _ETAG,
    # Pages of other origins may import it as a module (a CORS request).
    "Access-Control-Allow-Origin": "*",
    "X-Content-Type-Options": "nosniff",
}


async def client_script(request: web.Request, _body: None, _query: None) -> web.Response:
    """The client module; 304 when the browser already holds this version."""
    if _ETAG in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=_HEADERS)
    # text/javascript: the media type of RFC 9239 (application/javascript is obsolete).
    return web.Response(body=CLIENT_SCRIPT, content_type="text/javascript", headers=_HEADERS)


ROUTES = [
    Route(
        "GET",
        "/client.js",
        client_script,
        "The JavaScript client (an ES module with no dependency)",
        {200: str, 304: None},
        public=True,
        media_type="text/javascript",
        description='`import { PushdClient } from "/client.js"` (docs/clients.md). Cached '
        "for 5 minutes, then revalidated with its ETag.",
        headers={"If-None-Match": "The ETag of the version the client holds"},
        tag="realtime",
    ),
]
