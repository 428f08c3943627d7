"""Verification of user tokens (pushd/access/user_tokens.py, through PyJWT): the
signature and header checks, every claim check, the lifetime rule and
out-of-range claims. Tokens are signed here by hand, as a forger holding a leaked secret
would, so that the header and claims can be anything the JWT format allows."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from pushd.access.user_tokens import TokenError, TokenExpiredError, TokenSigner, key_id

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


# The checks of the signature and the header ------------------------------------------------
# `forged` MACs the token with HS256 under SECRET whatever its header says, so that each
# token below is refused only by the check it is about: drop that check, and it verifies.


def forged(
    header: dict[str, Any], *, secret: str = SECRET, claims: dict[str, Any] | None = None
) -> str:
    now = time.time()
    base = {"sub": "usr_1", "iat": now, "exp": now + 60, "iss": "pushd", "aud": "pushd-ws"}

    def segment(value: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signing_input = segment(header) + b"." + segment({**base, **(claims or {})})
    mac = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


def test_a_hand_made_token_verifies_so_the_refusals_below_are_each_for_one_check(
    signer: TokenSigner,
) -> None:
    assert signer.verify_claims(forged({"alg": "HS256", "typ": "JWT"})).user_id == "usr_1"
    assert signer.verify_claims(forged({"alg": "HS256", "kid": key_id(SECRET)})).user_id


@pytest.mark.parametrize("alg", ["none", "None", "HS512", "RS256", "hs256"])
def test_only_hs256_is_accepted_whatever_the_header_claims(signer: TokenSigner, alg: str) -> None:
    """Guards algorithm confusion: the `alg` a forger writes is never believed."""
    with pytest.raises(TokenError, match=r"(?i)alg"):
        signer.verify_claims(forged({"alg": alg}))


def test_an_unsigned_token_is_refused(signer: TokenSigner) -> None:
    header_and_claims = forged({"alg": "none"}).rpartition(".")[0]
    with pytest.raises(TokenError):
        signer.verify_claims(header_and_claims + ".")


def test_a_tampered_payload_or_signature_is_refused(signer: TokenSigner) -> None:
    header, payload, signature = signer.issue("usr_1").token.split(".")
    other_payload = signer.issue("usr_2").token.split(".")[1]
    with pytest.raises(TokenError, match=r"(?i)signature"):
        signer.verify_claims(f"{header}.{other_payload}.{signature}")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(TokenError, match=r"(?i)signature"):
        signer.verify_claims(f"{header}.{payload}.{flipped}")
    with pytest.raises(TokenError, match=r"(?i)signature"):
        signer.verify_claims(forged({"alg": "HS256"}, secret="another-secret-" * 4))


def test_the_kid_chooses_among_the_current_and_previous_secrets() -> None:
    old_secret = "previous-token-secret-0123456789abcdef"
    rotated = TokenSigner(
        SECRET,
        issuer="pushd",
        audience="pushd-ws",
        default_ttl=60,
        max_ttl=MAX_TTL,
        previous_secrets=[old_secret],
    )
    assert rotated.verify_claims(
        forged({"alg": "HS256", "kid": key_id(old_secret)}, secret=old_secret)
    )
    # Without a kid, only the current secret is tried.
    with pytest.raises(TokenError, match=r"(?i)signature"):
        rotated.verify_claims(forged({"alg": "HS256"}, secret=old_secret))
    # The kid names the key: a token of one secret does not verify under the other's kid.
    with pytest.raises(TokenError, match=r"(?i)signature"):
        rotated.verify_claims(forged({"alg": "HS256", "kid": key_id(SECRET)}, secret=old_secret))
    removed = TokenSigner(SECRET, issuer="pushd", audience="pushd-ws", default_ttl=60, max_ttl=60)
    with pytest.raises(TokenError, match="rotated out"):
        removed.verify_claims(
            forged({"alg": "HS256", "kid": key_id(old_secret)}, secret=old_secret)
        )


def test_a_critical_header_extension_is_refused(signer: TokenSigner) -> None:
    with pytest.raises(TokenError, match="critical"):
        signer.verify_claims(forged({"alg": "HS256", "crit": ["exp"], "exp": 1}))


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b", "a.b.c.d", "é.b.c", "!!!!.e30.sig", "e30.e30.sig", ""],
    ids=["no-dots", "two-parts", "four-parts", "non-ascii", "bad-base64", "no-alg", "empty"],
)
def test_a_malformed_token_is_a_token_error(signer: TokenSigner, token: str) -> None:
    with pytest.raises(TokenError):
        signer.verify_claims(token)


# The checks of the claims ------------------------------------------------------------------


def test_an_expired_token_says_so(signer: TokenSigner) -> None:
    now = time.time()
    with pytest.raises(TokenExpiredError):
        signer.verify_claims(signed(iat=now - 100, exp=now - 1))


def test_a_token_not_valid_yet_is_refused(signer: TokenSigner) -> None:
    with pytest.raises(TokenError, match="nbf"):
        signer.verify_claims(signed(nbf=time.time() + 60))
    assert signer.verify_claims(signed(nbf=time.time() - 1)).user_id == "usr_1"


def test_issuer_and_audience_must_be_this_servers(signer: TokenSigner) -> None:
    with pytest.raises(TokenError, match="iss"):
        signer.verify_claims(signed(iss="someone-else"))
    with pytest.raises(TokenError, match=r"(?i)aud"):
        signer.verify_claims(signed(aud="another-service"))
    with pytest.raises(TokenError, match=r"(?i)aud"):
        signer.verify_claims(signed(aud=["another-service"]))
    with pytest.raises(TokenError, match=r"(?i)aud"):  # a string is not searched
        signer.verify_claims(signed(aud="not-pushd-ws"))
    assert signer.verify_claims(signed(aud=["another-service", "pushd-ws"])).user_id == "usr_1"


@pytest.mark.parametrize("claim", ["sub", "iat", "exp", "iss", "aud"])
def test_every_required_claim_must_be_there(signer: TokenSigner, claim: str) -> None:
    token = forged({"alg": "HS256"}, claims={claim: None})  # null: the wrong type
    with pytest.raises(TokenError):
        signer.verify_claims(token)
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    del claims[claim]
    without = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match=claim):
        signer.verify_claims(without)


def test_an_empty_subject_is_refused(signer: TokenSigner) -> None:
    with pytest.raises(TokenError, match="subject"):
        signer.verify_claims(signed(sub=""))


@pytest.mark.parametrize("cats", [[], "billing", [1], None], ids=["empty", "str", "int", "null"])
def test_a_malformed_categories_claim_is_refused(signer: TokenSigner, cats: object) -> None:
    with pytest.raises(TokenError):
        signer.verify_claims(signed(cats=cats))


def test_categories_come_from_the_cats_claim(signer: TokenSigner) -> None:
    assert signer.verify_claims(signed(cats=["billing", "news"])).categories == ("billing", "news")
    assert signer.verify_claims(signer.issue("usr_1", categories=["news"]).token).categories == (
        "news",
    )
    assert signer.verify_claims(signed()).categories is None
