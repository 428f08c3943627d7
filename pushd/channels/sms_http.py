"""SMS through a generic JSON-over-HTTP provider: one POST per message of
`{"to", "from", "text", "reference"}` to a configured URL, with one configured header
for authentication; the answer's `"id"` is the provider's message id.

Many SMS gateways (and in-house relays) take this shape, or can be put behind a small
adapter that does. `reference` is the delivery id, so that a provider that deduplicates
on it turns a retried send into one SMS.
"""

from __future__ import annotations

from typing import Annotated, Final

import aiohttp
import msgspec

from actors.channel_sender import (
    ChannelMessage,
    PermanentSendError,
    SendError,
    SendReceipt,
    TransientSendError,
)
from pushd.channels.retry_after import parse_retry_after
from pushd.channels.sms import CHANNEL, count_segments, recipient_number, sms_text

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Positive = Annotated[int, msgspec.Meta(gt=0)]

_MAX_QUOTED_BYTES: Final = 200


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


def classify_error(
    provider: str, http_status: int, body: bytes, retry_after: float | None
) -> SendError:
    """The `SendError` for an answer other than 2xx: 429 and 5xx are transient, any
    other status permanent."""
    quoted = " ".join(body[:_MAX_QUOTED_BYTES].decode("utf-8", "replace").split())
    said = f"SMS provider `{provider}` answered {http_status}" + (f": {quoted}" if quoted else "")
    code = str(http_status)
    if http_status == 429 or http_status >= 500:
        return TransientSendError(
            f"{said}; the provider is rate-limiting or failing, retried later",
            provider_code=code,
            retry_after=retry_after,
        )
    if http_status in (401, 403):
        return PermanentSendError(
            f"{said}; the provider refused the credentials: check auth_header and auth_value",
            provider_code=code,
        )
    return PermanentSendError(
        f"{said}; the provider refused the message, retrying it cannot succeed",
        provider_code=code,
    )


class HttpSmsSender:
    """`ChannelSender` for SMS through one JSON-over-HTTP provider (see
    actors/channel_sender.py for the contract)."""

    def __init__(self, config: HttpSmsConfig) -> None:
        self._config = config
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.auth_value:
            self._headers[config.auth_header] = config.auth_value
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

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
        status, body, retry_after = await self._post(_encoder.encode(request))
        if not 200 <= status < 300:
            raise classify_error(self.provider, status, body, parse_retry_after(retry_after))
        try:
            message_id: str | None = str(msgspec.json.decode(body, type=_Accepted).id)
        except (msgspec.ValidationError, msgspec.DecodeError):
            message_id = None  # accepted all the same
        return SendReceipt(provider_message_id=message_id, detail=count_segments(text).detail())

    async def aclose(self) -> None:
        """Close the connections to the provider. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _post(self, body: bytes) -> tuple[int, bytes, str | None]:
        try:
            async with self._open_session().post(
                self._config.url, data=body, headers=self._headers, allow_redirects=False
            ) as response:
                return response.status, await response.read(), response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TransientSendError(
                f"SMS provider `{self.provider}`: {self._config.url} cannot be reached "
                f"({type(error).__name__}: {error}); retried later",
                provider_code="unreachable",
            ) from error

    def _open_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError(f"SMS provider `{self.provider}` is closed; no send follows aclose")
        # Made on first use, inside the running loop, and shared by every send.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._config.max_connections),
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
                headers={"User-Agent": "pushd"},
            )
        return self._session
