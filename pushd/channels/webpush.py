"""Web push: the `webpush` channel's provider (RFC 8030), with VAPID identification
(RFC 8292) and `aes128gcm` payload encryption (RFC 8291 over RFC 8188).

One `WebPushSender` per configured provider (one VAPID key). Each send encrypts the
payload once, for that subscription only, with a fresh ECDH key pair and salt; the VAPID
JWT is signed once per push service origin and reused until shortly before it expires;
every push goes through the provider's `ProviderClient` (pushd/channels/http_client.py):
one keep-alive session with bounded connections, and only to an address the outbound URL
check approved for the endpoint's host.

Libraries: `http_ece` (web-push-libs, the ECE implementation behind pywebpush) does the
content coding and reproduces RFC 8291's worked example byte for byte; `cryptography`
makes the P-256 keys; PyJWT signs the ES256 VAPID token.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import http_ece  # type: ignore[import-untyped]
import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from actors.channel_sender import ChannelMessage, PermanentSendError, SendReceipt
from pushd.channels.http_answer import HttpAnswer, RefusalHints, answered, refusal_error
from pushd.channels.http_client import (
    MAX_CHOSEN_ENDPOINT_ANSWER_BYTES,
    ProviderClient,
    UrlChecker,
)
from pushd.channels.push_fields import alert_text
from pushd.config.types import Positive, PositiveFloat

CHANNEL: Final = "webpush"

RECORD_SIZE: Final = 4096
"""The `rs` of every push message: a push service need not accept more than 4096 octets
of body (RFC 8030 §7.2), and a push message is one record (RFC 8291 §4)."""
MAX_PLAINTEXT_BYTES: Final = RECORD_SIZE - 86 - 16 - 1
"""3993: 4096 less the header (86), the AES-GCM tag (16) and the padding delimiter (1)."""

VAPID_TOKEN_LIFETIME: Final = 12 * 3600
"""Seconds a VAPID JWT is valid; push services refuse an `exp` over 24 h away."""
VAPID_RENEW_BEFORE: Final = 3600
"""A cached JWT is replaced when less than this is left, so that a push service whose
clock runs ahead still sees it valid."""
VAPID_MAX_AUDIENCES: Final = 1024
"""Cached JWTs (one per push service origin). Endpoints come from browsers, so the
origins are not ours to bound; when full, the token signed longest ago is forgotten and
signed again on its next use."""

_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_URGENCY = {"low": "low", "normal": "normal", "high": "high", "critical": "high"}

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class WebPushProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One web push provider, i.e. one VAPID identity."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    vapid_private_key: str
    """P-256 private key: PEM (SEC 1 or PKCS #8), or the base64url raw 32-byte key that
    `npx web-push generate-vapid-keys` prints as its private key."""
    vapid_subject: str
    """Who to contact about this server's pushes: `mailto:ops@example.com` or an https
    URL (RFC 8292 §2.1)."""
    ttl: NonNegative = 86_400
    """Seconds a push service keeps a message for an offline browser when the
    notification sets no TTL."""
    timeout: PositiveFloat = 10.0
    """Seconds for one POST to the push service, connection included."""
    max_connections: Positive = 100
    """Open connections to all push services together."""

    def __post_init__(self) -> None:
        if not self.vapid_subject.startswith(("mailto:", "https://")):
            raise ValueError(
                f"vapid_subject must be a mailto: address or an https:// URL (RFC 8292), "
                f"got {self.vapid_subject!r}; push services refuse other subjects"
            )
        load_vapid_private_key(self.vapid_private_key)


# Keys and encodings ---------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """base64url without padding, as web push writes keys and tokens."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding (standard base64 is accepted too, as
    some clients send keys that way)."""
    text = text.strip().rstrip("=").replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_vapid_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """Read a VAPID private key: PEM, or base64url of the raw 32-byte scalar.

    Raises ValueError naming the likely cause; the key itself is never echoed.
    """
    try:
        if text.lstrip().startswith("-----BEGIN"):
            key: Any = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = b64url_decode(text)
            if len(raw) != 32:
                raise ValueError(f"a raw key is 32 bytes, this one decodes to {len(raw)}")
            key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    except (ValueError, TypeError) as error:
        raise ValueError(
            "vapid_private_key is not a readable P-256 private key (expected PEM without a "
            "password, or the base64url raw 32-byte key that `npx web-push "
            f"generate-vapid-keys` prints): {error}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(
            "vapid_private_key must be an EC key on P-256 (prime256v1); VAPID is ES256"
        )
    return key


def public_key_b64url(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """The public key as browsers want it: base64url of the uncompressed point (65 bytes).
    This is the `applicationServerKey` of `pushManager.subscribe`."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url_encode(point)


def vapid_public_key(config: WebPushProviderConfig) -> str:
    """What `GET /api/webpush/vapid-public-key` answers for this provider."""
    return public_key_b64url(load_vapid_private_key(config.vapid_private_key))


def endpoint_origin(endpoint: str) -> str:
    """The origin of a push endpoint (scheme://host[:port], default port omitted): the
    VAPID audience, and what errors name instead of the secret endpoint path."""
    parts = urlsplit(endpoint)
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("a push endpoint is an absolute http(s) URL")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


# Encryption (RFC 8291) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    """A browser's push subscription: where to POST and the keys to encrypt for."""

    endpoint: str
    public_key: ec.EllipticCurvePublicKey
    """The subscription's `p256dh` key."""
    auth_secret: bytes

    @classmethod
    def from_address(cls, address: Mapping[str, str]) -> Subscription:
        """Read a device's {"endpoint", "p256dh", "auth"}; ValueError names what is wrong."""
        missing = [name for name in ("endpoint", "p256dh", "auth") if not address.get(name)]
        if missing:
            raise ValueError(f"webpush address lacks {', '.join(missing)}")
        try:
            point = b64url_decode(address["p256dh"])
            # from_encoded_point checks that the point is on P-256 (RFC 8291 §7).
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            auth_secret = b64url_decode(address["auth"])
        except ValueError as error:
            raise ValueError(f"webpush p256dh or auth is not a valid key: {error}") from None
        if len(auth_secret) != 16:
            raise ValueError(f"webpush auth secret is 16 bytes, got {len(auth_secret)}")
        return cls(address["endpoint"], public_key, auth_secret)


def encrypt_payload(
    plaintext: bytes,
    public_key: ec.EllipticCurvePublicKey,
    auth_secret: bytes,
    *,
    salt: bytes | None = None,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """The `aes128gcm` body of one push message for one subscription (RFC 8291 §3-4):
    header (salt, rs, the sender's public key as keyid) and a single record.

    `salt` and `sender_key` are fresh random values unless given: only a test that
    reproduces the RFC's example gives them. Reusing them would reuse an AES-GCM key.
    """
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise ValueError(
            f"push payload is {len(plaintext)} bytes; at most {MAX_PLAINTEXT_BYTES} fit in "
            "one 4096-byte push message"
        )
    body: bytes = http_ece.encrypt(
        plaintext,
        salt=salt if salt is not None else os.urandom(16),
        private_key=sender_key
        if sender_key is not None
        else ec.generate_private_key(ec.SECP256R1()),
        dh=public_key,
        auth_secret=auth_secret,
        rs=RECORD_SIZE,
        version="aes128gcm",
    )
    return body


class PushPayload(msgspec.Struct):
    """What the service worker's `push` event receives, as JSON."""

    id: str
    title: str | None
    body: str | None
    data: dict[str, Any]


_payload_encoder = msgspec.json.Encoder()


def push_payload(message: ChannelMessage) -> bytes:
    """The JSON a browser gets: the per-channel content given with the notification
    wins over its title and body."""
    title, body = alert_text(message)
    payload = PushPayload(
        id=message.notification_id, title=title, body=body, data=dict(message.data)
    )
    return _payload_encoder.encode(payload)


def push_topic(collapse_key: str) -> str:
    """The `Topic` header for a collapse key: the key itself when it is already at most
    32 base64url characters (RFC 8030 §5.4), otherwise 32 characters of its SHA-256.
    Hashing, rather than dropping characters, keeps distinct keys distinct."""
    if _TOPIC.fullmatch(collapse_key):
        return collapse_key
    return b64url_encode(hashlib.sha256(collapse_key.encode()).digest())[:32]


# VAPID (RFC 8292) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SignedToken:
    authorization: str
    expires_at: float


class VapidSigner:
    """Makes the `Authorization: vapid t=..., k=...` header for a push service origin.

    Signing an ES256 JWT costs about as much CPU as encrypting a payload (some 150 us),
    so a token is signed once per origin and reused until `VAPID_RENEW_BEFORE` before
    its expiry.
    """

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        subject: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._private_key = private_key
        self._subject = subject
        self._clock = clock
        self.public_key = public_key_b64url(private_key)
        """base64url uncompressed point: the `k` of the header."""
        self._tokens: dict[str, _SignedToken] = {}

    def authorization(self, audience: str) -> str:
        """The header value for push service origin `audience`."""
        now = self._clock()
        cached = self._tokens.get(audience)
        if cached is not None and cached.expires_at - now > VAPID_RENEW_BEFORE:
            return cached.authorization
        expires_at = int(now) + VAPID_TOKEN_LIFETIME
        claims = {"aud": audience, "exp": expires_at, "sub": self._subject}
        token = jwt.encode(claims, self._private_key, algorithm="ES256")
        self._tokens.pop(audience, None)
        if len(self._tokens) >= VAPID_MAX_AUDIENCES:
            del self._tokens[next(iter(self._tokens))]
        signed = _SignedToken(f"vapid t={token}, k={self.public_key}", expires_at)
        self._tokens[audience] = signed
        return signed.authorization


# Answers ----------------------------------------------------------------------------

_HINTS: Final = RefusalHints(
    transient="the push service is overloaded or failing, retry later",
    refused="the push service refused the message",
    gone="the browser unsubscribed or the subscription expired: remove it",
    gone_statuses=frozenset({404, 410}),
    by_status={
        413: "the payload is too large for this push service: shorten the notification's "
        "push title/body or data"
    },
    redirect="push endpoints must not redirect (pushd does not follow redirects, whose "
    "target escaped the outbound URL check)",
    credentials="the push service refused the VAPID identification: check "
    "vapid_private_key (it must be the key the browser subscribed with) and vapid_subject",
)


def classify_answer(answer: HttpAnswer, *, origin: str, now: float) -> SendReceipt:
    """A push service's answer as the channel contract's outcome: a receipt for 2xx,
    else the matching `SendError` (raised)."""
    if answer.accepted:
        return SendReceipt(provider_message_id=answer.headers.get("Location"))
    raise refusal_error(answer, answered(origin, answer), _HINTS, now=now)


# The sender -------------------------------------------------------------------------


class WebPushSender:
    """`ChannelSender` for web push (see actors/channel_sender.py for the contract).

    `check_url` is the outbound URL check (`UrlChecker`), run on every endpoint before it
    is contacted; the push goes to an address it approved. `clock` gives Unix time
    (tests move it).
    """

    def __init__(
        self,
        config: WebPushProviderConfig,
        *,
        check_url: UrlChecker,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._clock = clock
        self._vapid = VapidSigner(
            load_vapid_private_key(config.vapid_private_key), config.vapid_subject, clock=clock
        )
        self._client = ProviderClient(
            who=f"web push provider `{config.name}`",
            timeout=config.timeout,
            max_connections=config.max_connections,
            max_body=MAX_CHOSEN_ENDPOINT_ANSWER_BYTES,
            check_url=check_url,
            refused_code="endpoint_refused",
        )

    @property
    def channel(self) -> str:
        """Always "webpush"."""
        return CHANNEL

    @property
    def provider(self) -> str:
        """The configured provider name."""
        return self._config.name

    @property
    def vapid_public_key(self) -> str:
        """The applicationServerKey browsers subscribe with (base64url, 65 bytes)."""
        return self._vapid.public_key

    async def send(self, message: ChannelMessage) -> SendReceipt:
        """Encrypt `message` for its subscription and POST it to the push service."""
        self._client.ensure_open()
        try:
            subscription = Subscription.from_address(message.address)
            origin = endpoint_origin(subscription.endpoint)
        except ValueError as error:
            raise PermanentSendError(f"{error}; the device's subscription is unusable") from None
        try:
            body = encrypt_payload(
                push_payload(message), subscription.public_key, subscription.auth_secret
            )
        except ValueError as error:
            raise PermanentSendError(str(error), provider_code="payload_too_large") from None
        answer = await self._client.post(
            subscription.endpoint,
            name=f"push endpoint {origin}",
            data=body,
            headers=self._headers(message, origin),
        )
        return classify_answer(answer, origin=origin, now=self._clock())

    async def aclose(self) -> None:
        """Close the push services' connections. Idempotent."""
        await self._client.aclose()

    def _headers(self, message: ChannelMessage, origin: str) -> dict[str, str]:
        ttl = self._config.ttl if message.ttl_seconds is None else max(0, message.ttl_seconds)
        headers = {
            "Authorization": self._vapid.authorization(origin),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(ttl),
            "Urgency": _URGENCY.get(message.priority, "normal"),
        }
        if message.collapse_key:
            headers["Topic"] = push_topic(message.collapse_key)
        return headers
