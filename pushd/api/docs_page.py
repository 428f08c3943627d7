"""`GET /docs`: the API reference in a browser, rendered from the OpenAPI document by a
small script pushd serves itself (pushd/ops/static/docs.{html,js}).

Not Swagger UI (the `swagger-ui-bundle` package): it ships Swagger UI 4.15.5 of 2022,
a 1 MB bundle whose code builds functions from strings (`Function("return this")`
fallbacks, refused without 'unsafe-eval'), for a page that lists operations. This one
is a few kilobytes under the same strict policy as the console (pushd/ops/console.py).
The page is public; the document it renders (`GET /api/openapi.json`) needs an API key
of any role, which the page asks for.
"""

from __future__ import annotations

from aiohttp import web

from pushd.api.route import Route
from pushd.ops.console import page


async def api_reference(_request: web.Request, _body: None, _query: None) -> web.Response:
    """The API reference page; the document it renders needs an API key it asks for."""
    return page("docs")


ROUTES = [
    Route(
        "GET",
        "/docs",
        api_reference,
        "The API reference: this document rendered in a browser",
        {200: str},
        public=True,
        media_type="text/html",
        description="A static page whose script fetches `/api/openapi.json` with the API "
        "key it asks for, and lists the operations by tag with their roles, parameters "
        "and schemas.",
        tag="system",
    ),
]
