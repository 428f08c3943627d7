"""HTTP routes that end users call with their own token instead of an API key
(`Authorization: Bearer <user token>`, `Route.user_token`): an application's page in
the browser (CORS: `http.cors_origins`) reads or changes what belongs to that user.

The token is the one WebSocket clients authenticate with (pushd/access/user_tokens.py),
checked the same way: signature, lifetime, and the user's token revocation cutoff.
"""

from __future__ import annotations

from aiohttp import web

from pushd.access.audit_fields import AUDIT_ACTOR
from pushd.access.user_tokens import TokenError, TokenExpiredError, VerifiedToken
from pushd.api.errors import ApiError, ErrorCode
from pushd.api.public_proofs import spend_failed_proof
from pushd.appkeys import STORAGE, TOKENS


def _bearer(request: web.Request) -> tuple[str, str]:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme, token


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        ErrorCode.UNAUTHORIZED,
        message,
        headers={"WWW-Authenticate": 'Bearer realm="pushd", error="invalid_token"'},
    )


async def authenticate_user_token(request: web.Request, token: str | None = None) -> VerifiedToken:
    """What the request's user token says, or a 401 that names the fix: no token, an
    invalid one (which spends the source's budget of failed proofs, then 429), an
    expired one, or one revoked (or of an erased user: the same answer, which reveals
    neither). The audit trail names the user as the actor. `token`: one the request
    carries elsewhere than in `Authorization` (`GET /sse?token=`, for EventSource)."""
    scheme, token = ("bearer", token) if token is not None else _bearer(request)
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized(
            "send the user's own token as `Authorization: Bearer <user token>` (the "
            "application's backend gets one from POST /api/users/{userId}/tokens)"
        )
    try:
        verified = request.app[TOKENS].verify_claims(token.strip())
    except TokenExpiredError:
        raise _unauthorized("the user token has expired: get a new one") from None
    except TokenError as exc:
        await spend_failed_proof(request, "user tokens")
        raise _unauthorized(f"the user token is not valid ({exc}): get a new one") from None
    found = await request.app[STORAGE].get_user_and_token_cutoff(verified.user_id)
    if found is None or verified.issued_at_ms <= found[1]:
        raise _unauthorized("the user token was revoked: get a new one")
    request[AUDIT_ACTOR] = f"user:{verified.user_id}"
    return verified
