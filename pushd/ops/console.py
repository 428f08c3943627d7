"""The operator console and the demo inbox: static pages served by pushd itself.

- `GET /console`: live charts over the last five minutes, computed in the browser from
  `GET /metrics` (counter deltas for rates, histogram bucket deltas for p50/p99, like
  PromQL's `histogram_quantile`), per-channel queue depth and breaker state, and a
  form to send a test notification. The key's role (from `GET /api/stats`) decides what
  is shown: no send form for a reader; the latest failed deliveries
  (`GET /api/channel-deliveries/failed`) and the API keys for an admin only.
- `GET /console/inbox`: one user's notifications arriving live through the JavaScript
  client (`GET /client.js`), with the unread count and mark-as-read.
- `GET /console/assets/{asset}`: their scripts and style sheet (pushd/ops/static/), and
  those of the API reference at `GET /docs` (pushd/api/docs_page.py).

The pages run only the scripts served here: no inline code, no CDN, so the
Content-Security-Policy needs neither hashes nor 'unsafe-inline'. The pages need no key
to load; every figure they fetch needs the API key the operator types in, kept in the
tab's sessionStorage.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

from pushd.api.errors import ApiError, ErrorCode

_STATIC = resources.files("pushd.ops").joinpath("static")
_CONTENT_TYPES: Final = {".js": "text/javascript", ".css": "text/css"}


def _read_assets() -> dict[str, tuple[bytes, str]]:
    """Every script and style sheet of the pages, read once: name -> (body, type)."""
    assets = {}
    for entry in _STATIC.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if suffix in _CONTENT_TYPES:
            assets[entry.name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])
    return assets


_ASSETS: Final = _read_assets()
_PAGES: Final = {
    name: _STATIC.joinpath(f"{name}.html").read_bytes() for name in ("console", "inbox", "docs")
}
ASSETS_PATH: Final = "/console/assets"
# The pages run only scripts and styles of this origin (no inline code, nothing from
# elsewhere) and call only this origin, WebSockets to it included; nothing may frame
# them, and they submit no form anywhere (their forms are handled by their scripts).
PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def page(name: str) -> web.Response:
    """One of the static pages (console, inbox, docs) under the pages' policy."""
    return web.Response(
        body=_PAGES[name], content_type="text/html", headers={"Content-Security-Policy": PAGE_CSP}
    )


async def console(_request: web.Request, _body: None, _query: None) -> web.Response:
    """The operator console: a static page; the figures need an API key it asks for."""
    return page("console")


async def console_inbox(_request: web.Request, _body: None, _query: None) -> web.Response:
    """The demo inbox: a static page; it asks for an API key and a user id."""
    return page("inbox")


async def console_asset(request: web.Request, _body: None, _query: None) -> web.Response:
    """A script or style sheet of the pages (a fixed set, read at import)."""
    found = _ASSETS.get(request.match_info["asset"])
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no asset {request.match_info['asset']!r}")
    body, content_type = found
    return web.Response(body=body, content_type=content_type)
