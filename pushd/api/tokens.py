"""User tokens for WebSocket clients."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from pushd.api.errors import validation_error
from pushd.api.routing import Reply, Route
from pushd.api.schemas import IssueToken, TokenIssued
from pushd.api.users import load_user
from pushd.appkeys import STORAGE, TOKENS


async def issue_token(request: web.Request, body: IssueToken | None, _query: None) -> Reply:
    signer = request.app[TOKENS]
    user = await load_user(request.app[STORAGE], request.match_info["userId"])
    ttl = body.ttl if body is not None else None
    if ttl is not None and ttl > signer.max_ttl:
        raise validation_error(f"ttl may be at most {signer.max_ttl} seconds", "ttl")
    issued = signer.issue(user.id, ttl)
    return Reply(201, TokenIssued(issued.token, datetime.fromtimestamp(issued.expires_at, tz=UTC)))


ROUTES = [
    Route(
        "POST",
        "/api/users/{userId}/tokens",
        issue_token,
        "Issue a short-lived token a WebSocket client of this user authenticates with",
        {201: TokenIssued},
        body=IssueToken,
        body_required=False,
        tag="tokens",
    ),
]
