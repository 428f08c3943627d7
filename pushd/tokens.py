"""Short-lived signed user tokens (JWT, HS256) that WebSocket clients authenticate with."""

from __future__ import annotations

import hashlib
import time
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


class TokenSigner:
    """Issues and verifies user tokens: `sub` = user id, with `exp`, `iat`, `iss`, `aud`
    and a `kid` header naming the key (so keys can be rotated later)."""

    _ALGORITHM = "HS256"

    def __init__(
        self, secret: str, *, issuer: str, audience: str, default_ttl: int, max_ttl: int
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 characters long")
        self._secret = secret
        self._kid = hashlib.sha256(secret.encode()).hexdigest()[:12]
        self._issuer = issuer
        self._audience = audience
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl

    def issue(self, user_id: str, ttl: int | None = None) -> IssuedToken:
        """Sign a token for `user_id` valid for `ttl` seconds (default from config)."""
        now = int(time.time())
        expires_at = now + (ttl or self.default_ttl)
        claims = {
            "sub": user_id,
            "iat": now,
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
        try:
            claims = jwt.decode(
                token,
                self._secret,
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
        return subject
