"""The route table is data: each `Route` says its method, path, body and query types,
responses, whether it needs an API key and which roles may call it. The aiohttp router,
the OpenAPI document and the roles table of docs/security.md are all built from the same
table, so the documentation cannot drift from the server. The dispatcher here also
records every state-changing call in the audit trail (pushd/access/audit_writer.py)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from pushd.access.api_keys import API_KEY, REVOKED_KEY
from pushd.access.audit_writer import AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.rate_limits import RateLimitedError, client_network
from pushd.api.errors import ApiError, ErrorCode, from_msgspec
from pushd.api.input_limits import check_json_depth
from pushd.appkeys import AUDIT, CONFIG
from pushd.ids import now_ms
from storage import StorageUnavailableError
from storage.records import NewAuditRecord

log = logging.getLogger("pushd.api")

# Roles of API keys (docs/security.md). A role is a set of routes, listed per route in
# the table below (`Route.roles`), not a hierarchy checked in handlers.
ADMIN = "admin"
PUBLISHER = "publisher"
READER = "reader"
ROLES = (ADMIN, PUBLISHER, READER)
EVERY_ROLE = frozenset(ROLES)
WRITERS = frozenset({ADMIN, PUBLISHER})
ADMIN_ONLY = frozenset({ADMIN})
# The default of `Route.roles`, recognised by identity and replaced by the method's default.
_BY_METHOD: frozenset[str] = frozenset({"<by method>"})


@dataclass(frozen=True, slots=True)
class Reply:
    """What a handler returns: a status, a body Struct (or None) and extra headers."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Streamed:
    """A `Reply.body` written piece by piece, for documents too big to build in memory
    (a user's export): `chunks` yields the JSON text of ONE document of the route's
    response type, in parts. A failure after the first part cuts the connection, so the
    client sees an incomplete body, never a truncated document that looks whole."""

    chunks: AsyncIterator[bytes]


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
    roles: frozenset[str] = _BY_METHOD
    """Roles of the API keys that may call it. Default: GET → every role, any other
    method → publisher and admin. Empty for public routes (no key at all)."""
    action: str | None = None
    """The audit trail's name for what a non-GET route does (`user.create`); default:
    the handler's name. GET routes are not audited: they change nothing."""

    def __post_init__(self) -> None:
        if self.roles is _BY_METHOD:
            default = (
                frozenset() if self.public else EVERY_ROLE if self.method == "GET" else WRITERS
            )
            object.__setattr__(self, "roles", default)
        unknown = self.roles - EVERY_ROLE
        if unknown:
            raise ValueError(f"{self.method} {self.path}: unknown roles {sorted(unknown)}")

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def audited(self) -> bool:
        """Whether calls are recorded in the audit trail: every state-changing one."""
        return self.method != "GET"

    @property
    def audit_action(self) -> str:
        return self.action or self.operation_id

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
        if isinstance(reply.body, Streamed):
            return await _stream(request, reply, reply.body)
        return encode_reply(reply)

    async def endpoint(request: web.Request) -> web.StreamResponse:
        if not route.audited:
            return await serve(request)
        return await _audited(request, route, serve)

    endpoint.__name__ = route.operation_id
    return endpoint


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


def _status_of(exc: BaseException) -> int:
    """The status error_middleware answers for an exception leaving a route."""
    if isinstance(exc, ApiError):
        return exc.kind.status
    if isinstance(exc, RateLimitedError):
        return ErrorCode.RATE_LIMITED.status
    if isinstance(exc, StorageUnavailableError):
        return ErrorCode.STORAGE_UNAVAILABLE.status
    if isinstance(exc, web.HTTPException):
        return exc.status
    return ErrorCode.INTERNAL.status


async def _audited(
    request: web.Request,
    route: Route,
    serve: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Serve the request, then queue its audit record (failed calls included), so that
    no handler has to remember to. Cancellation is not recorded: nothing can be awaited
    then, and aiohttp only cancels handlers on a forced shutdown."""
    try:
        response = await serve(request)
    except Exception as exc:
        await _record(request, route, _status_of(exc))
        raise
    await _record(request, route, response.status)
    return response


async def _record(request: web.Request, route: Route, status: int) -> None:
    key = request.get(API_KEY)
    if key is None:
        # Authentication failed (every audited route needs a key): tallied per source,
        # not one record each (anyone could fill storage), and no target, since the
        # path of a caller without a valid key names anything it likes.
        revoked = request.get(REVOKED_KEY)
        request.app[AUDIT].record_failed_auth(
            key_id=None if revoked is None else revoked.id,
            source=client_network(request.remote),
            action=route.audit_action,
            result=str(status),
            at=now_ms(),
        )
        return
    target = request.get(AUDIT_TARGET)
    if target is None and "userId" in request.match_info:
        target = f"user:{request.match_info['userId']}"
    await request.app[AUDIT].record(
        NewAuditRecord(
            at=now_ms(),
            actor=f"key:{key.id}",
            action=route.audit_action,
            target=target,
            source=request.remote,
            result=str(status),
            detail=request.get(AUDIT_DETAIL),
        )
    )


def add_routes(app: web.Application, routes: Sequence[Route], authenticate: Authenticator) -> None:
    """Register every route of the table on the app."""
    for route in routes:
        app.router.add_route(route.method, route.path, _bind(route, authenticate))
