"""APNs: Apple's provider API, `POST {base_url}/3/device/{token}`, with token-based
authentication.

APNs speaks only HTTP/2 over TLS (ALPN "h2"), which aiohttp's client does not; httpx
with `http2=True` (built on the `h2` library) does. One `httpx.AsyncClient` per provider
keeps one connection open, on which concurrent sends are multiplexed as streams, as
Apple asks providers to do instead of opening a connection per notification.

The provider token is an ES256 JWT (header kid = the key's id; claims iss = the team,
iat) signed with the .p8 key from the developer account. Apple refuses one older than an
hour (403 ExpiredProviderToken) and a new one more often than every 20 minutes (429
TooManyProviderTokenUpdates), so one token is reused for every send and renewed after 50
minutes.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import httpx
import jwt
import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors.channel_sender import (
    AddressGoneError,
    ChannelMessage,
    PermanentSendError,
    SendError,
    SendReceipt,
    TransientSendError,
)
from pushd.channels.http_answer import HttpAnswer, RefusalHints, refusal_error
from pushd.channels.push_fields import apns_aps, apns_headers
from pushd.config.types import ConfigError, PositiveFloat

APNS_PRODUCTION_URL = "https://api.push.apple.com"
APNS_SANDBOX_URL = "https://api.sandbox.push.apple.com"
TOKEN_RENEW_AFTER_SECONDS = 50 * 60
"""A provider token is replaced once this old: well inside Apple's one hour."""
TOKEN_MIN_AGE_SECONDS = 20 * 60
"""Apple refuses a new provider token sooner than this after the previous one."""
GONE_REASONS = frozenset(
    {"Unregistered", "ExpiredToken", "BadDeviceToken", "DeviceTokenNotForTopic"}
)
_DEVICE_TOKEN = re.compile(r"[0-9A-Fa-f]{1,200}")


class ApnsProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One APNs provider: a signing key of an Apple developer team."""

    name: str
    team_id: str
    """The 10-character Team ID of the developer account."""
    key_id: str
    """The 10-character id of the APNs authentication key."""
    private_key: str
    """The .p8 key: a path to the file, or its PEM text inline."""
    base_url: str = APNS_PRODUCTION_URL
    """Production; https://api.sandbox.push.apple.com for development builds of the app."""
    topic: str = ""
    """The apns-topic (the app's bundle id) for devices whose address names none."""
    timeout: PositiveFloat = 10.0
    """Seconds allowed to each step of a send: connecting, writing, reading the answer."""
    ca_file: str = ""
    """CA bundle (PEM) to verify the server with instead of the system's; for tests."""


def load_signing_key(config: ApnsProviderConfig) -> ec.EllipticCurvePrivateKey:
    """The P-256 key of `config.private_key` (a path or inline PEM).

    Raises `ConfigError` naming the provider when the file cannot be read or holds no
    P-256 private key.
    """
    where = f"APNs provider `{config.name}`"
    pem = config.private_key
    if "-----BEGIN" not in pem:
        try:
            pem = Path(pem).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{where}: private_key is neither PEM text nor a readable .p8 file ({exc})"
            ) from None
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{where}: private_key is not a PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(
            f"{where}: private_key is not a P-256 key; use the .p8 APNs key from the "
            "Apple developer account (Certificates, Identifiers & Profiles > Keys)"
        )
    return key


class ProviderTokens:
    """The provider token of one signing key: reused for every send, renewed once
    `TOKEN_RENEW_AFTER_SECONDS` old. Synchronous (signing takes microseconds), so
    concurrent sends cannot renew it twice."""

    def __init__(
        self,
        *,
        team_id: str,
        key_id: str,
        key: ec.EllipticCurvePrivateKey,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._team_id = team_id
        self._key_id = key_id
        self._key = key
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0

    def current(self) -> str:
        """The token to send now."""
        now = self._clock()
        if self._token is None or now - self._issued_at >= TOKEN_RENEW_AFTER_SECONDS:
            return self._issue(now)
        return self._token

    def replace_expired(self, refused: str) -> str | None:
        """A token instead of `refused`, which APNs called expired; None when `refused`
        is younger than `TOKEN_MIN_AGE_SECONDS`: APNs then thinks it over an hour old,
        so this machine's clock is behind, and a new token would be refused as well (and
        count against the 20-minute limit)."""
        if refused != self._token:  # another send has renewed it meanwhile
            return self.current()
        now = self._clock()
        if now - self._issued_at < TOKEN_MIN_AGE_SECONDS:
            return None
        return self._issue(now)

    def _issue(self, now: float) -> str:
        self._issued_at = now
        self._token = jwt.encode(
            {"iss": self._team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self._key_id},
        )
        return self._token


class _Refusal(msgspec.Struct):
    reason: str = ""


def _reason(answer: HttpAnswer) -> str:
    if answer.status == 200:
        return ""
    try:
        return msgspec.json.decode(answer.body, type=_Refusal).reason
    except (msgspec.ValidationError, msgspec.DecodeError):
        return ""


_PERMANENT_HINTS = {
    "InvalidProviderToken": "the team_id, key_id or .p8 key is wrong, or the key was "
    "revoked in the developer account",
    "MissingTopic": "set the provider's topic (the app's bundle id) or the device's topic",
    "TopicDisallowed": "this key's team may not push to the topic; check the bundle id",
    "BadTopic": "the topic is not a bundle id of this team",
    "PayloadTooLarge": "APNs accepts at most 4 KB of payload; send less data",
    "BadCollapseId": "the collapse key is refused",
}


_HINTS: Final = RefusalHints(
    transient="retried later",
    refused="retrying the same notification cannot succeed",
    gone="the app was uninstalled, or the token is not one APNs issued for this topic and "
    "environment (production vs sandbox), so the device is removed",
    gone_statuses=frozenset({410}),
)


def _refusal_error(provider: str, answer: HttpAnswer) -> SendError:
    """The `SendError` for an APNs answer other than 200 (and other than an
    ExpiredProviderToken the caller retries with a new token)."""
    reason = _reason(answer)
    said = f"APNs provider `{provider}` answered {answer.status} {reason}".rstrip()
    return refusal_error(
        answer,
        said,
        _HINTS,
        provider_code=reason or None,
        gone=reason in GONE_REASONS,
        hint=_PERMANENT_HINTS.get(reason),
    )


_JSON = msgspec.json.Encoder()


def apns_payload(message: ChannelMessage) -> bytes:
    """The JSON payload: the notification's data at the top level, and `aps`."""
    payload: dict[str, Any] = {key: value for key, value in message.data.items() if key != "aps"}
    payload["aps"] = apns_aps(message)
    return _JSON.encode(payload)


class ApnsSender:
    """`ChannelSender` for one APNs signing key, over one HTTP/2 connection.

    The key is read when the sender is made (a `ConfigError` names what is wrong);
    `clock` is the wall clock (token age, iat and apns-expiration).
    """

    def __init__(
        self, config: ApnsProviderConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._config = config
        self._clock = clock
        self._tokens = ProviderTokens(
            team_id=config.team_id, key_id=config.key_id, key=load_signing_key(config), clock=clock
        )
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True
        )
        self._client = httpx.AsyncClient(
            http2=True, base_url=config.base_url, timeout=config.timeout, verify=verify
        )

    @property
    def channel(self) -> str:
        """Always "apns"."""
        return "apns"

    @property
    def provider(self) -> str:
        """The configured name of this provider."""
        return self._config.name

    async def send(self, message: ChannelMessage) -> SendReceipt:
        """Send `message` to its device token; the receipt carries the apns-id."""
        path = f"/3/device/{self._device_token(message)}"
        headers = {"apns-topic": self._topic(message), **apns_headers(message, now=self._clock())}
        payload = apns_payload(message)
        provider_token = self._tokens.current()
        answer = await self._post(path, headers, payload, provider_token)
        if _reason(answer) == "ExpiredProviderToken":
            renewed = self._tokens.replace_expired(provider_token)
            if renewed is None:
                raise PermanentSendError(
                    f"APNs provider `{self.provider}` called a provider token expired that "
                    "was issued under 20 minutes ago: this machine's clock is behind "
                    "Apple's by more than 40 minutes; set the clock right (NTP)",
                    provider_code="ExpiredProviderToken",
                )
            answer = await self._post(path, headers, payload, renewed)
            if _reason(answer) == "ExpiredProviderToken":
                raise PermanentSendError(
                    f"APNs provider `{self.provider}` called a freshly issued provider "
                    "token expired: this machine's clock is off; set it right (NTP)",
                    provider_code="ExpiredProviderToken",
                )
        if answer.status == 200:
            return SendReceipt(provider_message_id=answer.headers.get("apns-id"))
        raise _refusal_error(self.provider, answer)

    async def aclose(self) -> None:
        """Close the HTTP/2 connection. Idempotent."""
        await self._client.aclose()

    def _device_token(self, message: ChannelMessage) -> str:
        token = message.address.get("token", "")
        if not _DEVICE_TOKEN.fullmatch(token):
            # What APNs would answer; checked here so that no text reaches the URL path.
            raise AddressGoneError(
                f"delivery {message.delivery_id}: {token[:80]!r} is not an APNs device "
                "token (hexadecimal), so the device is removed",
                provider_code="BadDeviceToken",
            )
        return token

    def _topic(self, message: ChannelMessage) -> str:
        topic = message.address.get("topic") or self._config.topic
        if not topic:
            raise PermanentSendError(
                f"APNs provider `{self.provider}`: delivery {message.delivery_id} has no "
                "topic; set the provider's `topic` to the app's bundle id, or register the "
                "device with its topic",
                provider_code="MissingTopic",
            )
        return topic

    async def _post(
        self, path: str, headers: dict[str, str], payload: bytes, provider_token: str
    ) -> HttpAnswer:
        try:
            response = await self._client.post(
                path,
                content=payload,
                headers={**headers, "authorization": f"bearer {provider_token}"},
            )
        except httpx.TransportError as exc:
            raise TransientSendError(
                f"APNs provider `{self.provider}`: {self._config.base_url} cannot be reached "
                f"({exc!r}); retried later",
                provider_code="unreachable",
            ) from exc
        return HttpAnswer(response.status_code, response.headers, response.content)
