"""The dispatcher: registers every `Route` of the table (pushd/api/route.py) on the
aiohttp router, and serves each call the same way: API key and role check, msgspec
decoding of the body and query (422 names the field), the handler, the JSON encoding of
its `Reply`, and the audit record of every state-changing call
(pushd/access/audit_recorder.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from aiohttp import web

from pushd.access.api_keys import API_KEY
from pushd.access.audit_recorder import record_call
from pushd.access.roles import ROLES
from pushd.api.errors import ApiError, ErrorCode, from_msgspec
from pushd.api.input_limits import check_json_depth
from pushd.api.route import Authenticator, Reply, Route, Streamed
from pushd.appkeys import CONFIG

log = logging.getLogger("pushd.api")


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
    check_json_depth(raw, request.app[CONFIG].limits)  # before the decoder recurses
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

    async def serve(request: web.Request) -> web.StreamResponse:
        if not route.public:
            await authenticate(request)
            _authorize(request, route)
        body = await _decode_body(request, route, decoder) if decoder is not None else None
        query = _decode_query(request, route.query) if route.query is not None else None
        reply = await route.handler(request, body, query)
        if isinstance(reply, web.StreamResponse):
            return reply  # not JSON: the route answered itself
        if isinstance(reply.body, Streamed):
            return await _stream(request, reply, reply.body)
        return encode_reply(reply)

    if not route.audited:
        serve.__name__ = route.operation_id
        return serve

    async def audited(request: web.Request) -> web.StreamResponse:
        return await record_call(request, route.audit_action, serve)

    audited.__name__ = route.operation_id
    return audited


async def _stream(request: web.Request, reply: Reply, body: Streamed) -> web.StreamResponse:
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    response.content_type = "application/json"
    await response.prepare(request)
    try:
        async for chunk in body.chunks:
            await response.write(chunk)
    except ConnectionError:
        return response  # the client went away
    except Exception:
        # The status is sent: the only way left to say "failed" is to cut the body short.
        log.exception("%s %s failed while streaming its answer", request.method, request.path)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


def _authorize(request: web.Request, route: Route) -> None:
    """Raise a 403 unless the authenticated key's role may call this route."""
    role = request[API_KEY].role
    if role not in route.roles:
        needed = " or ".join(role for role in ROLES if role in route.roles)
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"{route.method} {route.path} needs an API key with role {needed}; this key has "
            f"role {role!r}. Use another key, or ask an admin for one (POST /api/keys).",
        )


def add_routes(app: web.Application, routes: Sequence[Route], authenticate: Authenticator) -> None:
    """Register every route of the table on the app."""
    for route in routes:
        app.router.add_route(route.method, route.path, _bind(route, authenticate))
