"""Verification of user tokens (pushd/access/user_tokens.py): the lifetime rule and out-of-range
claims. Tokens are signed here by hand, as a forger holding a leaked secret would, so
that the claims can be anything the JWT format allows."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from pushd.access.user_tokens import TokenError, TokenExpiredError, TokenSigner

SECRET = "unit-test-token-secret-0123456789abcdef"
MAX_TTL = 3600
YEAR = 365 * 86400


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET, issuer="pushd", audience="pushd-ws", default_ttl=60, max_ttl=MAX_TTL)


def signed(**claims: Any) -> str:
    now = time.time()
    base = {"sub": "usr_1", "iat": now, "exp": now + 60, "iss": "pushd", "aud": "pushd-ws"}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


def test_an_issued_token_verifies_with_its_expiry(signer: TokenSigner) -> None:
    issued = signer.issue("usr_1", ttl=MAX_TTL)
    verified = signer.verify_claims(issued.token)
    assert verified.user_id == "usr_1"
    assert verified.expires_at_ms == issued.expires_at * 1000
    assert verified.expires_at_ms - verified.issued_at_ms <= MAX_TTL * 1000


def test_a_token_living_longer_than_token_max_ttl_is_refused(signer: TokenSigner) -> None:
    """Guards issue #10: a token with `exp` 31 years ahead was accepted, so a leaked
    secret (or a backend bug) made tokens that outlived every rotation."""
    now = time.time()
    with pytest.raises(TokenError, match="lifetime"):
        signer.verify_claims(signed(iat=now, exp=now + 31 * YEAR))
    with pytest.raises(TokenError, match="lifetime"):
        signer.verify_claims(signed(iat=now, exp=now + MAX_TTL + 60))


def test_a_token_issued_in_the_future_is_refused(signer: TokenSigner) -> None:
    now = time.time()
    with pytest.raises(TokenError, match="future"):
        signer.verify_claims(signed(iat=now + 600, exp=now + 700))
    # A node whose clock is a little ahead still issues usable tokens.
    signer.verify_claims(signed(iat=now + 2, exp=now + 60))


@pytest.mark.parametrize(
    "iat",
    [-1e308, 1e308, float("inf"), float("-inf"), float("nan"), -(10**400), 10**400, True, -1],
    ids=["-1e308", "1e308", "inf", "-inf", "nan", "-10**400", "10**400", "true", "-1"],
)
def test_an_absurd_iat_is_a_token_error(signer: TokenSigner, iat: object) -> None:
    """Guards issue #10: `iat = -1e308` raised OverflowError (an unhandled error on the
    socket) instead of a TokenError (close code 4501)."""
    token = signed(iat=iat)
    with pytest.raises(TokenError) as caught:
        signer.verify_claims(token)
    assert not isinstance(caught.value, TokenExpiredError)


@pytest.mark.parametrize(
    "exp",
    [1e308, float("inf"), float("nan"), 10**400, "soon"],
    ids=["1e308", "inf", "nan", "10**400", "string"],
)
def test_an_absurd_exp_is_a_token_error(signer: TokenSigner, exp: object) -> None:
    with pytest.raises(TokenError):
        signer.verify_claims(signed(exp=exp))


def test_a_default_ttl_above_the_maximum_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="token_max_ttl"):
        TokenSigner(SECRET, issuer="pushd", audience="pushd-ws", default_ttl=7200, max_ttl=3600)
