"""The operator console: one static page (pushd/ops/console.html) that polls
`GET /api/stats` with an API key the operator types in. The page itself needs no key."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from aiohttp import web

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


async def console(_request: web.Request, _body: None, _query: None) -> web.Response:
    """The operator console: a static page; the figures need an API key it asks for."""
    return web.Response(
        body=_CONSOLE, content_type="text/html", headers={"Content-Security-Policy": CONSOLE_CSP}
    )
