"""Short-lived signed user tokens (JWT, HS256) that WebSocket clients authenticate with.

Key rotation (docs/security.md): tokens are signed with the current secret only and name
it by `kid`; previous secrets still verify the tokens they signed (chosen by `kid`) until
they are removed from the configuration.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import jwt


class TokenError(Exception):
    """The token cannot be used."""


class TokenExpiredError(TokenError):
    """The token was valid but its `exp` has passed: get a new one."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: int
    """Unix seconds."""


@dataclass(frozen=True)
class VerifiedToken:
    """What a valid token says."""

    user_id: str
    issued_at_ms: int
    """`iat` in Unix epoch milliseconds, compared with the user's token revocation."""


def key_id(secret: str) -> str:
    """The `kid` naming a secret: a short hash, so that the secret itself never shows."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class TokenSigner:
    """Issues and verifies user tokens: `sub` = user id, with `exp`, `iat`, `iss`, `aud`
    and a `kid` header naming the key (so keys can be rotated later)."""

    _ALGORITHM = "HS256"

    def __init__(
        self,
        secret: str,
        *,
        issuer: str,
        audience: str,
        default_ttl: int,
        max_ttl: int,
        previous_secrets: Sequence[str] = (),
    ) -> None:
        for candidate in (secret, *previous_secrets):
            if len(candidate) < 32:
                raise ValueError("every token secret must be at least 32 characters long")
        self._secret = secret
        self._kid = key_id(secret)
        # kid -> secret of every key that verifies; only `_secret` signs.
        self._verifying = {key_id(old): old for old in previous_secrets}
        self._verifying[self._kid] = secret
        self._issuer = issuer
        self._audience = audience
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl

    def issue(self, user_id: str, ttl: int | None = None) -> IssuedToken:
        """Sign a token for `user_id` valid for `ttl` seconds (default from config)."""
        now_ms = time.time_ns() // 1_000_000
        now = now_ms // 1000
        expires_at = now + (ttl or self.default_ttl)
        claims = {
            "sub": user_id,
            # Milliseconds (RFC 7519 allows a fractional NumericDate): a revocation cuts
            # at an instant, and a token issued just after it in the same second must work.
            "iat": now_ms / 1000,
            "exp": expires_at,
            "iss": self._issuer,
            "aud": self._audience,
        }
        token = jwt.encode(
            claims, self._secret, algorithm=self._ALGORITHM, headers={"kid": self._kid}
        )
        return IssuedToken(token, expires_at)

    def verify(self, token: str) -> str:
        """Return the user id of a valid token; raise `TokenExpiredError` or `TokenError`."""
        return self.verify_claims(token).user_id

    def verify_claims(self, token: str) -> VerifiedToken:
        """What a valid token says; raise `TokenExpiredError` or `TokenError`.

        The key is chosen by the token's `kid` among the current and previous secrets; a
        token without `kid` is checked with the current secret.
        """
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        secret = self._secret if kid is None else self._verifying.get(str(kid))
        if secret is None:
            raise TokenError(
                "invalid token: signed by a key this server does not have (rotated out?)"
            )
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[self._ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpiredError("token expired: request a new one") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenError("invalid token: no subject")
        issued_at = claims["iat"]
        if not isinstance(issued_at, int | float):
            raise TokenError("invalid token: iat is not a number")
        return VerifiedToken(subject, round(issued_at * 1000))
