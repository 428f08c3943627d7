"""SMS through a generic JSON-over-HTTP provider: one POST per message of
`{"to", "from", "text", "reference"}` to a configured URL, with one configured header
for authentication; the answer's `"id"` is the provider's message id.

Many SMS gateways (and in-house relays) take this shape, or can be put behind a small
adapter that does. `reference` is the delivery id, so that a provider that deduplicates
on it turns a retried send into one SMS.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from actors.channel_sender import ChannelMessage, SendReceipt
from pushd.channels.http_answer import RefusalHints, answered, refusal_error
from pushd.channels.http_client import ProviderClient
from pushd.channels.sms import CHANNEL, count_segments, recipient_number, sms_text
from pushd.config.types import Positive, PositiveFloat


class HttpSmsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One JSON-over-HTTP SMS provider."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    url: str
    """Where each message is POSTed."""
    from_number: Annotated[str, msgspec.Meta(min_length=1)]
    """The sender, sent as `from`: an E.164 number or an alphanumeric sender ID."""
    auth_header: str = "Authorization"
    """The header that carries the credential."""
    auth_value: str = ""
    """Its value, e.g. `Bearer <api key>`; empty: no credential is sent."""
    timeout: PositiveFloat = 10.0
    """Seconds for one request, connection included."""
    max_connections: Positive = 20

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url must be an http(s) URL, got {self.url[:40]!r}")
        if self.auth_value and not self.auth_header:
            raise ValueError("auth_value is set but auth_header is empty; name the header")


class _Request(msgspec.Struct, rename={"from_number": "from"}):
    to: str
    from_number: str
    text: str
    reference: str


class _Accepted(msgspec.Struct):
    id: str | int


_encoder = msgspec.json.Encoder()

_HINTS: Final = RefusalHints(
    transient="the provider is rate-limiting or failing, retried later",
    refused="the provider refused the message, retrying it cannot succeed",
    credentials="the provider refused the credentials: check auth_header and auth_value",
)


class HttpSmsSender:
    """`ChannelSender` for SMS through one JSON-over-HTTP provider (see
    actors/channel_sender.py for the contract)."""

    def __init__(self, config: HttpSmsConfig) -> None:
        self._config = config
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.auth_value:
            self._headers[config.auth_header] = config.auth_value
        self._client = ProviderClient(
            who=f"SMS provider `{config.name}`",
            timeout=config.timeout,
            max_connections=config.max_connections,
        )

    @property
    def channel(self) -> str:
        """Always "sms"."""
        return CHANNEL

    @property
    def provider(self) -> str:
        """The configured provider name."""
        return self._config.name

    async def send(self, message: ChannelMessage) -> SendReceipt:
        """POST `message` to the provider for `address["phone"]`."""
        text = sms_text(message)
        request = _Request(
            to=recipient_number(message),
            from_number=self._config.from_number,
            text=text,
            reference=message.delivery_id,
        )
        answer = await self._client.post(
            self._config.url,
            name=f"SMS provider `{self.provider}`: {self._config.url}",
            data=_encoder.encode(request),
            headers=self._headers,
        )
        if not answer.accepted:
            said = answered(f"SMS provider `{self.provider}`", answer)
            raise refusal_error(answer, said, _HINTS)
        try:
            message_id: str | None = str(msgspec.json.decode(answer.body, type=_Accepted).id)
        except (msgspec.ValidationError, msgspec.DecodeError):
            message_id = None  # accepted all the same
        return SendReceipt(provider_message_id=message_id, detail=count_segments(text).detail())

    async def aclose(self) -> None:
        """Close the connections to the provider. Idempotent."""
        await self._client.aclose()
