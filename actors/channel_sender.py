"""What a channel worker needs from a provider: one `ChannelSender` per configured
provider (an SMTP relay, a web push service, FCM, APNs, an SMS API, a webhook endpoint).
The edge (`pushd/channels/`) implements it; `actors/` never imports a provider library.

Every sender classifies its provider's answers into the three outcomes a worker acts on:

- it returns a `SendReceipt`: the provider accepted the message;
- it raises `TransientSendError`: try again later (timeouts, 5xx, 429, connection
  refused), no earlier than `retry_after` seconds when the provider said so;
- it raises `PermanentSendError`: retrying the same message cannot help (a malformed
  address, a payload the provider refuses, bad credentials); `AddressGoneError`, a kind
  of it, says the address itself is dead (an unsubscribed browser, an uninstalled app)
  and the device must be removed.

Anything else a sender raises is a bug in the sender; the worker treats it as transient
and logs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """One delivery of one notification to one address on one channel."""

    delivery_id: str
    notification_id: str
    user_id: str
    channel: str
    """"email", "webpush", "fcm", "apns", "sms" or "webhook"."""
    address: Mapping[str, str]
    """Where to: email {"email"}; webpush {"endpoint", "p256dh", "auth"}; fcm {"token"};
    apns {"token", "topic"}; sms {"phone"} (E.164); webhook {"url", "secret"}."""
    title: str | None
    body: str | None
    data: Mapping[str, Any] = field(default_factory=dict)
    content: Mapping[str, str] = field(default_factory=dict)
    """Per-channel content given by the sender of the notification, which wins over
    title/body: email {"subject", "html", "text"}, push {"title", "body"}, sms {"text"}."""
    priority: str = "normal"
    """"low", "normal", "high" or "critical"."""
    category: str | None = None
    collapse_key: str | None = None
    """Newer messages with the same key replace older undelivered ones (push Topic,
    FCM collapse_key, apns-collapse-id)."""
    ttl_seconds: int | None = None
    """How long the provider may hold the message for an offline device; None: the
    provider's default."""
    created_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """The provider accepted the message."""

    provider_message_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    """What is worth recording on the delivery (e.g. SMS segments and encoding)."""


class SendError(Exception):
    """The provider did not accept the message. `provider_code` is the provider's own
    error code or HTTP status, for the delivery's history."""

    def __init__(self, message: str, *, provider_code: str | None = None) -> None:
        super().__init__(message)
        self.provider_code = provider_code


class TransientSendError(SendError):
    """Retry later: no earlier than `retry_after` seconds when the provider said so."""

    def __init__(
        self, message: str, *, provider_code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, provider_code=provider_code)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """Retrying this message cannot succeed: mark the delivery failed now."""


class AddressGoneError(PermanentSendError):
    """The address is dead for good (HTTP 404/410 from a push service, FCM
    UNREGISTERED, APNs Unregistered/BadDeviceToken): remove the device."""


class ChannelSender(Protocol):
    """One configured provider of one channel.

    `send` may be called concurrently (the worker bounds the concurrency per provider);
    a sender reuses its connections between calls (HTTP keep-alive or HTTP/2, one SMTP
    session). It returns a `SendReceipt` or raises a `SendError` subclass; it is
    cancellable, and a cancelled send may or may not have reached the provider.
    `aclose` releases the connections; no `send` follows it.
    """

    @property
    def channel(self) -> str:
        """The channel this provider serves ("email", "webpush", ...)."""
        ...

    @property
    def provider(self) -> str:
        """The provider's configured name (unique within its channel)."""
        ...

    async def send(self, message: ChannelMessage) -> SendReceipt:
        """Hand `message` to the provider."""
        ...

    async def aclose(self) -> None:
        """Close the provider's connections. Idempotent."""
        ...
