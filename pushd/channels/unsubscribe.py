"""Signed one-click unsubscribe links (RFC 8058) for email: `List-Unsubscribe` carries one,
and the route that receives the POST verifies it and stores the user's preference against the
category.

A token is `<payload>.<signature>`, both base64url without padding: the payload is the
JSON array `[user_id, category, issued_at]` (Unix seconds) and the signature is
HMAC-SHA256 over a fixed label and the encoded payload. Links do not expire: they sit in
mailboxes for years, and unsubscribing must keep working (RFC 8058 §3). The issue time
makes every link distinct. Rotating the secret invalidates old links unless the old
secret is kept in `previous_secrets`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

import msgspec

MIN_SECRET_BYTES = 32
_LABEL = b"pushd-unsubscribe-v1\x00"
"""Signed before the payload, so that a signature made with the same secret for another
purpose can never pass as an unsubscribe link."""
_PAYLOAD = msgspec.json.Decoder(tuple[str, str, int])
_ENCODE = msgspec.json.Encoder()


class InvalidUnsubscribeTokenError(ValueError):
    """The token was not made by `UnsubscribeLinks.url` with a secret this server holds."""


class Unsubscription(NamedTuple):
    """What a valid unsubscribe token asks for."""

    user_id: str
    category: str


class UnsubscribeLinks:
    """Makes and checks unsubscribe links.

    `base_url` is the public HTTPS address of the route that takes them (RFC 8058 requires
    HTTPS); the token goes in its `token` query parameter.
    """

    def __init__(
        self, secret: bytes, base_url: str, *, previous_secrets: Sequence[bytes] = ()
    ) -> None:
        for candidate in (secret, *previous_secrets):
            if len(candidate) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"an unsubscribe secret must be at least {MIN_SECRET_BYTES} bytes long: "
                    "a short one lets anyone forge links that unsubscribe other users"
                )
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.netloc or parts.fragment:
            raise ValueError(
                f"unsubscribe base URL {base_url!r} must be an absolute https:// URL "
                "without a fragment (RFC 8058 one-click unsubscribe requires HTTPS)"
            )
        if any(character.isspace() or character in "<>\"'" for character in base_url):
            raise ValueError(
                f"unsubscribe base URL {base_url!r} contains whitespace, quotes or angle "
                "brackets, which cannot appear in a List-Unsubscribe header"
            )
        self._secrets = (secret, *previous_secrets)
        self._prefix = base_url + ("&" if parts.query else "?") + "token="

    def url(self, user_id: str, category: str) -> str:
        """The link that unsubscribes `user_id` from `category`."""
        return self._prefix + self.token(user_id, category)

    def token(self, user_id: str, category: str) -> str:
        """The signed token alone, as carried in the link's `token` parameter."""
        payload = _b64encode(_ENCODE.encode((user_id, category, int(time.time()))))
        return f"{payload}.{_b64encode(_sign(self._secrets[0], payload))}"

    def verify(self, token: str) -> Unsubscription:
        """The user and category `token` names.

        Raises `InvalidUnsubscribeTokenError` if it is malformed or its signature matches
        none of the secrets.
        """
        payload, dot, signature_text = token.partition(".")
        if not dot or not token.isascii():
            raise InvalidUnsubscribeTokenError(
                "unsubscribe token is malformed: expected <payload>.<signature> in base64url; "
                "the link was probably cut short when it was copied"
            )
        signature = _b64decode(signature_text)
        if not any(hmac.compare_digest(signature, _sign(key, payload)) for key in self._secrets):
            raise InvalidUnsubscribeTokenError(
                "unsubscribe token has a bad signature: the link was altered, or it was "
                "signed with a secret this server no longer holds (keep rotated secrets "
                "in previous_secrets)"
            )
        try:
            user_id, category, _issued_at = _PAYLOAD.decode(_b64decode(payload))
        except msgspec.DecodeError as error:
            # A correct signature over a bad payload means a bug in the signer, not a forgery.
            raise InvalidUnsubscribeTokenError(f"unsubscribe token payload: {error}") from None
        return Unsubscription(user_id, category)


def _sign(secret: bytes, payload: str) -> bytes:
    return hmac.digest(secret, _LABEL + payload.encode("ascii"), hashlib.sha256)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidUnsubscribeTokenError(
            "unsubscribe token is not base64url: the link was altered or cut short"
        ) from None
