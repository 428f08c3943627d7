"""Short-lived signed user tokens (JWT, HS256) that WebSocket clients authenticate with.

Key rotation (docs/security.md): tokens are signed with the current secret only and name
it by `kid`; previous secrets still verify the tokens they signed (chosen by `kid`) until
they are removed from the configuration.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jwt

from pushd.ids import now_ms

CLOCK_LEEWAY = 5
"""Seconds a token's `iat` may lie in the future, and its lifetime exceed
`token_max_ttl`: the clocks of the node that issued it and the one verifying it differ."""
CATEGORIES_CLAIM = "cats"
"""The claim naming the categories a token is limited to (absent: not limited)."""
_LATEST_NUMERIC_DATE = 253_402_300_799
"""9999-12-31T23:59:59Z, the last instant a `datetime` holds: a claim beyond it is no date."""


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
    expires_at_ms: int
    """`exp` in Unix epoch milliseconds: a socket authenticated with it closes then."""
    categories: tuple[str, ...] | None = None
    """`cats`: the categories of the limited API key that issued it; its socket sees only
    notifications of those (docs/security.md). None: every category."""


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
        if default_ttl > max_ttl:
            # Verification enforces max_ttl: every default token would be refused.
            raise ValueError(
                f"auth.token_ttl ({default_ttl} s) exceeds auth.token_max_ttl ({max_ttl} s): "
                "lower token_ttl or raise token_max_ttl"
            )
        self._secret = secret
        self._kid = key_id(secret)
        # kid -> secret of every key that verifies; only `_secret` signs.
        self._verifying = {key_id(old): old for old in previous_secrets}
        self._verifying[self._kid] = secret
        self._issuer = issuer
        self._audience = audience
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl

    def issue(
        self, user_id: str, ttl: int | None = None, categories: Sequence[str] | None = None
    ) -> IssuedToken:
        """Sign a token for `user_id` valid for `ttl` seconds (default from config),
        limited to `categories` when given (the `cats` claim)."""
        issued_ms = now_ms()
        now = issued_ms // 1000
        expires_at = now + (ttl or self.default_ttl)
        claims: dict[str, object] = {
            "sub": user_id,
            # Milliseconds (RFC 7519 allows a fractional NumericDate): a revocation cuts
            # at an instant, and a token issued just after it in the same second must work.
            "iat": issued_ms / 1000,
            "exp": expires_at,
            "iss": self._issuer,
            "aud": self._audience,
        }
        if categories is not None:
            claims[CATEGORIES_CLAIM] = list(categories)
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
                # iat is checked below, with a leeway PyJWT would also give to exp.
                options={"require": ["exp", "iat", "sub", "iss", "aud"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpiredError("token expired: request a new one") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenError("invalid token: no subject")
        issued_at, expires_at = self._check_lifetime(claims)
        return VerifiedToken(
            subject, round(issued_at * 1000), round(expires_at * 1000), _categories(claims)
        )

    def _check_lifetime(self, claims: Mapping[str, object]) -> tuple[float, float]:
        """(`iat`, `exp`) if the token was issued by now and lives at most `max_ttl`
        seconds; else `TokenError`. PyJWT has already refused an `exp` in the past."""
        issued_at, expires_at = _numeric_date(claims, "iat"), _numeric_date(claims, "exp")
        if issued_at > time.time() + CLOCK_LEEWAY:
            raise TokenError("invalid token: issued in the future (iat); are the clocks synced?")
        if expires_at - issued_at > self.max_ttl + CLOCK_LEEWAY:
            raise TokenError(
                f"invalid token: its lifetime (exp - iat) exceeds auth.token_max_ttl "
                f"({self.max_ttl} s); pushd never issues such a token"
            )
        return issued_at, expires_at


def _numeric_date(claims: Mapping[str, object], name: str) -> float:
    """The claim as Unix seconds, or `TokenError` for anything that is no instant between
    1970 and 9999 (a string, a bool, NaN, infinity, 1e308), so that no arithmetic on it
    can overflow."""
    value = claims[name]
    # Compared as given (no float()): an int of 400 digits must not overflow either.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"invalid token: {name} is not a number")
    if not 0 <= value <= _LATEST_NUMERIC_DATE:  # also false for NaN
        raise TokenError(f"invalid token: {name} is out of range")
    return float(value)


def _categories(claims: Mapping[str, object]) -> tuple[str, ...] | None:
    """The `cats` claim, or None without one; `TokenError` unless a non-empty list of
    strings (an empty list would read as "no limit" in too many places)."""
    if CATEGORIES_CLAIM not in claims:
        return None
    value = claims[CATEGORIES_CLAIM]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(category, str) for category in value)
    ):
        raise TokenError(f"invalid token: {CATEGORIES_CLAIM} is not a list of categories")
    return tuple(value)
