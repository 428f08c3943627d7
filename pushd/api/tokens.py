"""User tokens for WebSocket clients: issue, and revoke all of a user's."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from aiohttp import web

from pushd.access.api_keys import API_KEY
from pushd.access.audit_fields import AUDIT_DETAIL
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.route import Reply, Route
from pushd.api.schemas import IssueToken, TokenIssued
from pushd.api.users import load_user
from pushd.appkeys import REVOCATIONS, STORAGE, TOKENS
from pushd.ids import from_ms, now_ms


async def issue_token(request: web.Request, body: IssueToken | None, _query: None) -> Reply:
    signer = request.app[TOKENS]
    user = await load_user(request.app[STORAGE], request.match_info["userId"])
    ttl = int(body.ttl) if body is not None and body.ttl is not None else None
    if ttl is not None and ttl > signer.max_ttl:
        raise validation_error(f"ttl may be at most {signer.max_ttl} seconds", "ttl")
    # A limited key's token carries its categories: the socket sees only those.
    issued = signer.issue(user.id, ttl, request[API_KEY].categories)
    return Reply(201, TokenIssued(issued.token, datetime.fromtimestamp(issued.expires_at, tz=UTC)))


class TokensRevoked(msgspec.Struct, kw_only=True):
    user_id: str
    tokens_revoked_before: datetime
    """Every token of the user issued at or before this instant is refused."""


async def revoke_tokens(request: web.Request, _body: None, _query: None) -> Reply:
    user_id = request.match_info["userId"]
    before = now_ms()
    if not await request.app[STORAGE].revoke_user_tokens(user_id, before=before):
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field="userId")
    await request.app[REVOCATIONS].user_tokens_revoked(user_id, before)
    request[AUDIT_DETAIL] = {"tokens_revoked_before": before}
    return Reply(200, TokensRevoked(user_id=user_id, tokens_revoked_before=from_ms(before)))


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
        action="token.issue",
    ),
    Route(
        "POST",
        "/api/users/{userId}/tokens/revoke",
        revoke_tokens,
        "Revoke every token issued so far to this user and close the user's sockets on "
        "every node (close code 4505); tokens issued afterwards work",
        {200: TokensRevoked},
        tag="tokens",
        action="user.tokens_revoke",
    ),
]
