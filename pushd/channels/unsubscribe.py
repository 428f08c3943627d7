"""Signed one-click unsubscribe links (RFC 8058) for email: `List-Unsubscribe` carries one,
and the route that receives the POST verifies it and stores the user's preference against the
category.

A token is `<payload>.<signature>`, both base64url without padding: the payload is the
JSON array `[user_id, category, issued_at]` (Unix seconds) and the signature is
HMAC-SHA256 over a fixed label and the encoded payload. Links do not expire: they sit in
mailboxes for years, and unsubscribing must keep working (RFC 8058 §3). The issue time
makes every link distinct. Rotating the secret invalidates old links unless the old
secret is kept in `previous_secrets`.

The same module makes the preference center's links (`PreferenceLinks`): an email's
footer carries one. They are signed the same way (pushd/access/signed_links.py) under
their own label, name only the user, and expire after `preference_center.link_max_age`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urlsplit

import msgspec

from pushd.access.signed_links import InvalidLinkTokenError, LinkSigner

_LABEL = b"pushd-unsubscribe-v1\x00"
"""Signed before the payload, so that a signature made with the same secret for another
purpose can never pass as an unsubscribe link."""
_PAYLOAD = msgspec.json.Decoder(tuple[str, str, int])
_PREFERENCE_LABEL = b"pushd-preference-center-v1\x00"
_PREFERENCE_PAYLOAD = msgspec.json.Decoder(tuple[str, int])
_ENCODE = msgspec.json.Encoder()


class InvalidUnsubscribeTokenError(InvalidLinkTokenError):
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
        self._signer = LinkSigner(
            _LABEL, secret, previous_secrets=previous_secrets, what="unsubscribe token"
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
        self._prefix = base_url + ("&" if parts.query else "?") + "token="

    def url(self, user_id: str, category: str) -> str:
        """The link that unsubscribes `user_id` from `category`."""
        return self._prefix + self.token(user_id, category)

    def token(self, user_id: str, category: str) -> str:
        """The signed token alone, as carried in the link's `token` parameter."""
        return self._signer.sign(_ENCODE.encode((user_id, category, int(time.time()))))

    def verify(self, token: str) -> Unsubscription:
        """The user and category `token` names.

        Raises `InvalidUnsubscribeTokenError` if it is malformed or its signature matches
        none of the secrets.
        """
        try:
            payload = self._signer.open(token)
        except InvalidLinkTokenError as exc:
            raise InvalidUnsubscribeTokenError(str(exc)) from None
        try:
            user_id, category, _issued_at = _PAYLOAD.decode(payload)
        except msgspec.DecodeError as error:
            # A correct signature over a bad payload means a bug in the signer, not a forgery.
            raise InvalidUnsubscribeTokenError(f"unsubscribe token payload: {error}") from None
        return Unsubscription(user_id, category)


class InvalidPreferenceLinkError(InvalidLinkTokenError):
    """The token was not made by `PreferenceLinks`, or it has expired."""


class PreferenceLinks:
    """Makes and checks the preference center's per-user links.

    The token goes in the link's fragment (`<base_url>#token=...`): browsers never send
    a fragment to a server, so it stays out of access logs, proxies and `Referer`; the
    page's script reads it and sends it in the body of its API calls. `max_age` seconds
    after it was made a link stops working (0: never).
    """

    def __init__(
        self,
        secret: bytes,
        base_url: str,
        *,
        previous_secrets: Sequence[bytes] = (),
        max_age: float = 0.0,
    ) -> None:
        self._signer = LinkSigner(
            _PREFERENCE_LABEL, secret, previous_secrets=previous_secrets, what="preference link"
        )
        self._prefix = base_url + "#token="
        self._max_age = max_age

    def url(self, user_id: str) -> str:
        """The link to `user_id`'s preference center."""
        return self._prefix + self.token(user_id)

    def token(self, user_id: str, *, issued_at: int | None = None) -> str:
        """The signed token alone (`issued_at`: Unix seconds, default now)."""
        issued = int(time.time()) if issued_at is None else issued_at
        return self._signer.sign(_ENCODE.encode((user_id, issued)))

    def verify(self, token: str) -> str:
        """The user `token` names. Raises `InvalidPreferenceLinkError` if it is
        malformed, badly signed or expired."""
        try:
            user_id, issued_at = _PREFERENCE_PAYLOAD.decode(self._signer.open(token))
        except InvalidLinkTokenError as exc:
            raise InvalidPreferenceLinkError(str(exc)) from None
        except msgspec.DecodeError as error:
            raise InvalidPreferenceLinkError(f"preference link payload: {error}") from None
        if self._max_age and time.time() - issued_at > self._max_age:
            raise InvalidPreferenceLinkError(
                "preference link has expired: open the link of a more recent email, or ask "
                "the application for a new one"
            )
        return user_id
