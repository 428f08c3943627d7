"""Google OAuth2 for a service account: the JWT bearer grant (RFC 7523) that Google
documents for server-to-server calls (FCM HTTP v1 among them).

An RS256 JWT signed with the account's private key (iss = the account, aud = the token
endpoint, the API's scope, an hour of lifetime) is exchanged at the token endpoint for an
access token valid about an hour. `ServiceAccountTokens` caches it until shortly before
it expires, and one caller at a time refreshes it, so that a burst of sends after expiry
costs one grant, not one per send.

PyJWT signs the assertion and the FCM provider's `ProviderClient`
(pushd/channels/http_client.py) posts it. Google's google-auth library does the same
grant but blocks the event loop (it uses requests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.channel_sender import PermanentSendError, SendError, TransientSendError
from pushd.channels.http_answer import HttpAnswer, is_transient_status
from pushd.channels.http_client import ProviderClient
from pushd.config.types import ConfigError

DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 3600
"""The longest a grant assertion may live; Google refuses more."""
REFRESH_MARGIN_SECONDS = 60.0
"""An access token is replaced this long before it expires, so that a send started just
before expiry does not arrive with a token that has meanwhile expired."""


class ServiceAccount(msgspec.Struct, kw_only=True):
    """The fields of a Google service-account key file that the grant needs (the file
    has more, which are ignored)."""

    client_email: str
    private_key: str
    private_key_id: str = ""
    project_id: str = ""
    token_uri: str = DEFAULT_TOKEN_URL


def load_service_account(*, file: str, inline: str, where: str) -> ServiceAccount:
    """The service account whose JSON key is in `file` or, inline, in `inline`.

    Raises `ConfigError`, beginning with `where` (e.g. "FCM provider `main`"), when
    neither or both are set, or the file cannot be read or is not a service-account key.
    """
    if bool(file) == bool(inline):
        raise ConfigError(
            f"{where}: set exactly one of `service_account_file` (path of the JSON key) "
            "and `service_account_json` (the key itself)"
        )
    source = file or "service_account_json"
    try:
        raw = Path(file).read_bytes() if file else inline.encode()
    except OSError as exc:
        raise ConfigError(f"{where}: {source} cannot be read: {exc.strerror}") from None
    try:
        return msgspec.json.decode(raw, type=ServiceAccount)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigError(
            f"{where}: {source} is not a service-account key ({exc}); download one from "
            "the Firebase console (Project settings > Service accounts)"
        ) from None


def _rsa_private_key(account: ServiceAccount, where: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(account.private_key.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{where}: the service account's private_key is not a PEM private key ({exc})"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{where}: the service account's private_key is not an RSA key")
    return key


class _TokenGrant(msgspec.Struct):
    access_token: str
    expires_in: int = 3600


class _OAuthError(msgspec.Struct):
    error: str = ""
    error_description: str = ""


class ServiceAccountTokens:
    """Access tokens for one service account, cached until `REFRESH_MARGIN_SECONDS`
    before they expire. Callers that find no valid token wait for the one refresh in
    progress instead of starting their own.

    `current` and `replace` raise `TransientSendError` when the token endpoint cannot
    be reached or answers 429/5xx, and `PermanentSendError` when it refuses the
    account's assertion (a revoked key, a deleted account, a clock far off).
    """

    def __init__(
        self,
        *,
        where: str,
        account: ServiceAccount,
        scope: str,
        token_url: str,
        client: ProviderClient,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._where = where
        self._account = account
        self._scope = scope
        self._key = _rsa_private_key(account, self._where)
        self._token_url = token_url
        self._client = client
        self._clock = clock
        self._wall_clock = wall_clock
        self._token: str | None = None
        self._expires_at = 0.0  # by `clock`
        self._lock = asyncio.Lock()

    async def current(self) -> str:
        """A valid access token: the cached one, else a new one from the token endpoint."""
        if (token := self._valid()) is not None:
            return token
        async with self._lock:
            # Whoever held the lock before may have refreshed it meanwhile.
            if (token := self._valid()) is not None:
                return token
            return await self._grant()

    async def replace(self, refused: str) -> str:
        """A new access token instead of `refused`, which the API answered 401 to; when
        another caller has already replaced it, that caller's token."""
        async with self._lock:
            if self._token != refused and (token := self._valid()) is not None:
                return token
            self._token = None
            return await self._grant()

    def _valid(self) -> str | None:
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        return None

    def _assertion(self) -> str:
        issued = int(self._wall_clock())
        claims = {
            "iss": self._account.client_email,
            "scope": self._scope,
            "aud": self._token_url,
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME_SECONDS,
        }
        key_id = self._account.private_key_id
        return jwt.encode(
            claims, self._key, algorithm="RS256", headers={"kid": key_id} if key_id else None
        )

    async def _grant(self) -> str:
        asked_at = self._clock()  # the token's lifetime counts from before the request
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": self._assertion()}
        answer = await self._client.post(
            self._token_url,
            name=f"{self._where}: the OAuth token endpoint {self._token_url}",
            data=form,
            unreachable_code="oauth-unreachable",
        )
        if answer.status == 200:
            try:
                grant = msgspec.json.decode(answer.body, type=_TokenGrant)
            except (msgspec.ValidationError, msgspec.DecodeError):
                raise TransientSendError(
                    f"{self._where}: the OAuth token endpoint answered 200 without an "
                    f"access token ({answer.body[:200]!r}); retried later",
                    provider_code="oauth-bad-answer",
                ) from None
            self._token = grant.access_token
            self._expires_at = asked_at + max(0.0, grant.expires_in - REFRESH_MARGIN_SECONDS)
            return grant.access_token
        raise self._grant_error(answer)

    def _grant_error(self, answer: HttpAnswer) -> SendError:
        try:
            refusal = msgspec.json.decode(answer.body, type=_OAuthError)
        except (msgspec.ValidationError, msgspec.DecodeError):
            refusal = _OAuthError()
        status = answer.status
        said = f"{status} {refusal.error} {refusal.error_description}".strip()
        if is_transient_status(status):
            return TransientSendError(
                f"{self._where}: the OAuth token endpoint answered {said}; retried later",
                provider_code=f"oauth-{status}",
                retry_after=answer.retry_after(),
            )
        return PermanentSendError(
            f"{self._where}: the OAuth token endpoint {self._token_url} refused service "
            f"account {self._account.client_email} ({said}). The key may have been revoked "
            "or the account deleted (create a new key), or this machine's clock is off "
            "(Google refuses assertions not issued within minutes of its own time)",
            provider_code=f"oauth-{refusal.error or status}",
        )
