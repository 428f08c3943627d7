"""Outbound webhooks: each event is POSTed as JSON to an endpoint an application
registered, signed so that the endpoint can tell it comes from pushd, unaltered and
recent (docs/channels.md, "Webhooks: verifying the signature").

    Pushd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

While a secret is being rotated the endpoint has several; the header then carries one
`v1=` per secret, so that a receiver that knows either the old or the new one accepts
the request, and the old one can be dropped once every receiver has the new one.

The address of a webhook delivery is {"url", "secret"}, where `secret` lists the
endpoint's active secrets separated by commas, newest first. A comma list, rather than a
richer shape, because a `ChannelMessage` address maps names to strings, and secrets made
by `new_webhook_secret` never hold a comma. The event itself is the message's `data`:
{"id", "type", ...}, sent as it is; its id and type are also sent as `Pushd-Event-Id`
(stable across retries, for the receiver to deduplicate on) and `Pushd-Event-Type`.

The URL is the application's choice, so it passes the outbound URL check
(pushd/channels/outbound_url.py) before every request, redirects are never followed, and the
request goes to an address the check approved rather than to a second DNS answer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from secrets import token_urlsafe
from typing import Annotated, Any, Final, TypeGuard

import msgspec
from yarl import URL

from actors.channel_sender import ChannelMessage, PermanentSendError, SendReceipt
from pushd.channels.http_answer import HttpAnswer, RefusalHints, answered, refusal_error
from pushd.channels.http_client import (
    MAX_CHOSEN_ENDPOINT_ANSWER_BYTES,
    ProviderClient,
    UrlChecker,
    url_origin,
)
from pushd.config.types import NonNegativeFloat, Positive, PositiveFloat

CHANNEL: Final = "webhook"
SIGNATURE_HEADER: Final = "Pushd-Signature"
EVENT_ID_HEADER: Final = "Pushd-Event-Id"
EVENT_TYPE_HEADER: Final = "Pushd-Event-Type"
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix that marks a secret, not one


class WebhookConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How pushd sends webhooks (the endpoints themselves are registered through the
    admin API)."""

    name: Annotated[str, msgspec.Meta(min_length=1)] = "webhooks"
    timeout: PositiveFloat = 10.0
    """Seconds an endpoint has to answer, connection included; slower is a transient
    failure, retried later."""
    max_connections: Positive = 100
    """Open connections to all endpoints together."""
    secret_overlap: NonNegativeFloat = 86_400.0
    """Seconds a rotated-out secret keeps signing alongside the new one (every request
    then carries one `v1=` per secret), for receivers to take the new one."""
    disable_after: Positive = 20
    """Events to an endpoint failed for good in a row (a permanent refusal, or retries
    used up) after which it is disabled; a 410 Gone disables it at once."""
    sweep_interval: PositiveFloat = 1.0
    """Seconds between two looks for deliveries whose new status (sent, delivered,
    failed) subscribed endpoints were not told yet (`delivery.updated`)."""
    sweep_batch: Positive = 500
    """Deliveries the sweep takes per transaction."""


# Signing -------------------------------------------------------------------------


def new_webhook_secret() -> str:
    """A fresh signing secret for an endpoint: `whsec_` and 256 random bits, base64url."""
    return SECRET_PREFIX + token_urlsafe(32)


def webhook_secrets(address: Mapping[str, str]) -> tuple[str, ...]:
    """The active secrets of a webhook address, newest first (`secret`, comma-separated).
    ValueError when there is none: pushd never sends an unsigned webhook."""
    secrets = tuple(part.strip() for part in address.get("secret", "").split(","))
    if not all(secrets):
        raise ValueError(
            "the webhook endpoint has no signing secret (or an empty one in its list); "
            "rotate its secret to give it one"
        )
    return secrets


def signature_header(secrets: Sequence[str], body: bytes, timestamp: int) -> str:
    """The `Pushd-Signature` value for `body` sent at `timestamp`: `t=` then one `v1=`
    per secret (the HMAC-SHA256 of "<t>.<body>" keyed with the secret's UTF-8 bytes)."""
    signed = f"{timestamp}.".encode() + body
    return ",".join(
        [f"t={timestamp}"]
        + [f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets]
    )


def verify_signature(
    secrets: Iterable[str],
    header: str,
    body: bytes,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """True when `header` (the Pushd-Signature value) signs `body` (the raw request
    body, before any JSON parsing) with one of `secrets`, at most `tolerance` seconds
    away from `now` (default: this machine's clock)."""
    timestamps: list[str] = []
    signatures: list[bytes] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value.encode())
    if len(timestamps) != 1:
        return False
    timestamp = timestamps[0]
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    signed = timestamp.encode() + b"." + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        if any(hmac.compare_digest(expected, signature) for signature in signatures):
            return True
    return False


# Answers -------------------------------------------------------------------------

_HINTS: Final = RefusalHints(
    transient="the endpoint is overloaded or failing, retried later",
    refused="the endpoint refused the event",
    gone="the endpoint asks not to be called again: disable it",
    gone_statuses=frozenset({410}),
    redirect="pushd does not follow redirects (their target would escape the outbound URL "
    "check): register the URL the endpoint redirects to",
    credentials="the endpoint refused the request, likely its signature check: give the "
    "receiver the endpoint's current secret",
)


def classify_answer(answer: HttpAnswer, *, origin: str, now: float) -> SendReceipt:
    """An endpoint's answer as the channel contract's outcome: a receipt for 2xx, else
    the matching `SendError` (raised)."""
    if answer.accepted:
        return SendReceipt(detail={"http_status": answer.status})
    raise refusal_error(answer, answered(_endpoint(origin), answer), _HINTS, now=now)


def _endpoint(origin: str) -> str:
    return f"webhook endpoint {origin}"


# The sender ----------------------------------------------------------------------


class WebhookSender:
    """`ChannelSender` for webhooks (see actors/channel_sender.py for the contract).

    `check_url` is the outbound URL check (`UrlChecker`); `clock` gives Unix time for
    the signature's timestamp (tests move it).
    """

    def __init__(
        self,
        config: WebhookConfig,
        *,
        check_url: UrlChecker,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._clock = clock
        self._client = ProviderClient(
            who=f"webhook sender `{config.name}`",
            timeout=config.timeout,
            max_connections=config.max_connections,
            max_body=MAX_CHOSEN_ENDPOINT_ANSWER_BYTES,
            headers={"User-Agent": "pushd-webhooks"},
            check_url=check_url,
        )

    @property
    def channel(self) -> str:
        """Always "webhook"."""
        return CHANNEL

    @property
    def provider(self) -> str:
        """The configured name."""
        return self._config.name

    async def send(self, message: ChannelMessage) -> SendReceipt:
        """Sign the event in `message.data` and POST it to `address["url"]`."""
        self._client.ensure_open()
        url, secrets, event_id, event_type, body = _request_parts(message)
        now = self._clock()
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event_id,
            EVENT_TYPE_HEADER: event_type,
            SIGNATURE_HEADER: signature_header(secrets, body, int(now)),
        }
        origin = url_origin(url)
        answer = await self._client.post(url, name=_endpoint(origin), data=body, headers=headers)
        return classify_answer(answer, origin=origin, now=now)

    async def aclose(self) -> None:
        """Close the endpoints' connections. Idempotent."""
        await self._client.aclose()


def _request_parts(message: ChannelMessage) -> tuple[URL, tuple[str, ...], str, str, bytes]:
    """URL, secrets, event id, event type and JSON body of a webhook delivery; a
    `PermanentSendError` names what is missing."""
    where = f"webhook delivery {message.delivery_id}"
    try:
        url = URL(message.address.get("url", ""))
        secrets = webhook_secrets(message.address)
    except ValueError as error:
        raise PermanentSendError(f"{where}: {error}", provider_code="bad-address") from None
    if not (url.absolute and url.host):
        raise PermanentSendError(
            f"{where}: the endpoint has no absolute URL", provider_code="bad-address"
        )
    event_id, event_type = message.data.get("id"), message.data.get("type")
    if not (_header_safe(event_id) and _header_safe(event_type)):
        raise PermanentSendError(
            f"{where}: the event in the message's data lacks a string `id` or `type` "
            "(printable ASCII, as they are also sent as headers)",
            provider_code="bad-event",
        )
    try:
        body = _encode_event(message.data)
    except (TypeError, msgspec.EncodeError) as error:
        raise PermanentSendError(
            f"{where}: the event is not JSON ({error})", provider_code="bad-event"
        ) from None
    return url, secrets, event_id, event_type, body


def _header_safe(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.isascii() and value.isprintable() and bool(value)


_encoder = msgspec.json.Encoder()


def _encode_event(event: Mapping[str, Any]) -> bytes:
    return _encoder.encode(dict(event))
