"""The route table is data: each `Route` says its method, path, body and query types,
responses and whether it needs an API key. The aiohttp router and the OpenAPI document
are both built from the same table, so the documentation cannot drift from the server."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from pushd.api.errors import ApiError, ErrorCode, from_msgspec


@dataclass(frozen=True, slots=True)
class Reply:
    """What a handler returns: a status, a body Struct (or None) and extra headers."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


RouteHandler = Callable[[web.Request, Any, Any], Awaitable[Reply]]
Authenticator = Callable[[web.Request], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    """One API operation."""

    method: str
    path: str
    handler: RouteHandler
    summary: str
    responses: Mapping[int, Any]
    """Success status -> body type (None for no body). Error responses are added."""
    body: Any = None
    """Type the JSON request body is decoded into (None: no body)."""
    body_required: bool = True
    query: type[msgspec.Struct] | None = None
    public: bool = False
    """True: no API key needed."""
    errors: Mapping[int, str] = field(default_factory=dict)
    """Error statuses particular to this route (status -> when), for the documentation;
    the ones every route of its kind has (401, 422, ...) are added by the generator."""
    tag: str = "api"
    headers: Mapping[str, str] = field(default_factory=dict)
    """Optional request headers the route reads (name -> description), for the document."""

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


_encoder = msgspec.json.Encoder()


def encode_reply(reply: Reply) -> web.Response:
    if reply.body is None:
        return web.Response(status=reply.status, headers=reply.headers)
    return web.Response(
        status=reply.status,
        body=_encoder.encode(reply.body),
        content_type="application/json",
        headers=reply.headers,
    )


async def _decode_body(
    request: web.Request, route: Route, decoder: msgspec.json.Decoder[Any]
) -> Any:
    raw = await request.read()  # raises 413 past client_max_size
    if not raw.strip():
        if route.body_required:
            raise ApiError(
                ErrorCode.INVALID_JSON, "this route needs a JSON object as request body", field="$"
            )
        return None
    content_type = request.content_type
    if content_type not in ("application/json", "application/octet-stream", "") and not (
        content_type.endswith("+json")
    ):
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"send the body as application/json, not {content_type}",
        )
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from None
    except msgspec.DecodeError as exc:
        raise ApiError(ErrorCode.INVALID_JSON, f"request body is not valid JSON: {exc}") from None


def _decode_query(request: web.Request, query_type: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.convert(dict(request.query), query_type, strict=False)
    except msgspec.ValidationError as exc:
        api_error = from_msgspec(exc)
        raise ApiError(
            ErrorCode.INVALID_QUERY, f"query parameter: {api_error.message}", field=api_error.field
        ) from None


def _bind(
    route: Route, authenticate: Authenticator
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    decoder: msgspec.json.Decoder[Any] | None = (
        msgspec.json.Decoder(route.body) if route.body is not None else None
    )

    async def endpoint(request: web.Request) -> web.StreamResponse:
        if not route.public:
            await authenticate(request)
        body = await _decode_body(request, route, decoder) if decoder is not None else None
        query = _decode_query(request, route.query) if route.query is not None else None
        return encode_reply(await route.handler(request, body, query))

    endpoint.__name__ = route.operation_id
    return endpoint


def add_routes(app: web.Application, routes: Sequence[Route], authenticate: Authenticator) -> None:
    """Register every route of the table on the app."""
    for route in routes:
        app.router.add_route(route.method, route.path, _bind(route, authenticate))
