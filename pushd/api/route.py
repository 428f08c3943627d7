"""The route table is data: each `Route` says its method, path, body and query types,
responses, whether it needs an API key and which roles may call it. The aiohttp router
(pushd/api/dispatch.py), the OpenAPI document and the roles table of docs/security.md
are all built from the same table, so the documentation cannot drift from the server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from pushd.access.roles import EVERY_ROLE, WRITERS

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


RouteHandler = Callable[[web.Request, Any, Any], Awaitable[Reply | web.StreamResponse]]
"""Called with the request, the decoded body and the decoded query. A `Reply` is encoded
as JSON; a route that is not JSON (a page, the metrics, a WebSocket) answers with its own
`web.StreamResponse`."""
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
    websocket: bool = False
    user_token: bool = False
    """True: end users call it with their own token (`Authorization: Bearer <user
    token>`), which the handler checks, instead of an API key; a public route."""
    """True: a GET answered `101 Switching Protocols`; no API key (public), the client
    proves who it is with a user token in its first frame (docs/protocol.md)."""
    media_type: str = "application/json"
    """The media type of the success responses' bodies, for the document."""
    description: str | None = None
    """More than the summary, for the document."""
    errors: Mapping[int, str] = field(default_factory=dict)
    """Error statuses particular to this route (status -> when), for the documentation;
    the ones every route of its kind has (401, 422, ...) are added by the generator."""
    html_errors: bool = False
    """True: the route's own errors are answered as a web page (a person followed a link)
    as well as the JSON error shape the dispatcher gives bad input; documented as both."""
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
        if self.websocket and (self.method != "GET" or not self.public):
            raise ValueError(f"{self.method} {self.path}: a WebSocket route is a public GET")
        if self.user_token and not self.public:
            raise ValueError(f"{self.method} {self.path}: a user-token route is public")
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
