"""Signed tokens carried in links a person follows without an account: an email's
one-click unsubscribe link (pushd/channels/unsubscribe.py) and the preference center's
link (`PreferenceLinks`, same module).

A token is `<payload>.<signature>`, both base64url without padding; the signature is
HMAC-SHA256 over a label and the encoded payload. Each kind of link has its own label,
so that a token signed for one purpose can never pass as another. Verification tries
the current secret, then the previous ones, so a secret rotation keeps old links working
as long as the old secret is kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

MIN_SECRET_BYTES = 32


class InvalidLinkTokenError(ValueError):
    """The token was not made by this signer with a secret this server holds."""


class LinkSigner:
    """Signs and checks the tokens of one kind of link (`label`), named `what` in errors
    (e.g. "unsubscribe token")."""

    def __init__(
        self, label: bytes, secret: bytes, *, previous_secrets: Sequence[bytes] = (), what: str
    ) -> None:
        for candidate in (secret, *previous_secrets):
            if len(candidate) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"a {what} secret must be at least {MIN_SECRET_BYTES} bytes long: a "
                    "short one lets anyone forge links that act for other users"
                )
        self._label = label
        self._secrets = (secret, *previous_secrets)
        self._what = what

    def sign(self, payload: bytes) -> str:
        """The token carrying `payload`, signed with the current secret."""
        encoded = _b64encode(payload)
        return f"{encoded}.{_b64encode(self._signature(self._secrets[0], encoded))}"

    def open(self, token: str) -> bytes:
        """The payload of `token`. Raises `InvalidLinkTokenError` if it is malformed or
        its signature matches none of the secrets."""
        payload, dot, signature_text = token.partition(".")
        if not dot or not token.isascii():
            raise InvalidLinkTokenError(
                f"{self._what} is malformed: expected <payload>.<signature> in base64url; "
                "the link was probably cut short when it was copied"
            )
        signature = self._decode(signature_text)
        if not any(
            hmac.compare_digest(signature, self._signature(key, payload)) for key in self._secrets
        ):
            raise InvalidLinkTokenError(
                f"{self._what} has a bad signature: the link was altered, or it was signed "
                "with a secret this server no longer holds (keep rotated secrets in "
                "previous_secrets)"
            )
        return self._decode(payload)

    def _signature(self, secret: bytes, payload: str) -> bytes:
        return hmac.digest(secret, self._label + payload.encode("ascii"), hashlib.sha256)

    def _decode(self, text: str) -> bytes:
        try:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise InvalidLinkTokenError(
                f"{self._what} is not base64url: the link was altered or cut short"
            ) from None


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
