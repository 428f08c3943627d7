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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from secrets import token_urlsafe
from typing import Annotated, Any, Final, TypeGuard

import aiohttp
import msgspec
from multidict import CIMultiDictProxy
from yarl import URL

from actors.channel_sender import (
    AddressGoneError,
    ChannelMessage,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)
from pushd.channels.outbound_url import CheckedUrl
from pushd.channels.retry_after import parse_retry_after

CHANNEL: Final = "webhook"
SIGNATURE_HEADER: Final = "Pushd-Signature"
EVENT_ID_HEADER: Final = "Pushd-Event-Id"
EVENT_TYPE_HEADER: Final = "Pushd-Event-Type"
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix that marks a secret, not one

UrlChecker = Callable[[str], Awaitable[CheckedUrl | None]]
"""The outbound URL check, run before each request. It raises ValueError when pushd
must not send to the URL (OSError when it cannot tell, e.g. DNS is down). It returns
the `CheckedUrl` whose addresses the request then goes to, or None to let the HTTP
client resolve the host itself (only for a checker that needs no pinning, e.g. in
tests)."""

_MAX_RESPONSE_BYTES: Final = 8192
_MAX_QUOTED_BYTES: Final = 200

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Positive = Annotated[int, msgspec.Meta(gt=0)]


class WebhookConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How pushd sends webhooks (the endpoints themselves are registered through the
    admin API)."""

    name: Annotated[str, msgspec.Meta(min_length=1)] = "webhooks"
    timeout: PositiveFloat = 10.0
    """Seconds an endpoint has to answer, connection included; slower is a transient
    failure, retried later."""
    max_connections: Positive = 100
    """Open connections to all endpoints together."""


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


def classify_answer(
    status: int, headers: Mapping[str, str], detail: bytes, *, origin: str, now: float
) -> SendReceipt:
    """An endpoint's answer as the channel contract's outcome: a receipt for 2xx, else
    the matching `SendError` (raised)."""
    code = str(status)
    quoted = " ".join(detail[:_MAX_QUOTED_BYTES].decode("utf-8", "replace").split())
    said = f"webhook endpoint {origin} answered {status}" + (f": {quoted}" if quoted else "")
    if 200 <= status < 300:
        return SendReceipt(detail={"http_status": status})
    if status == 410:
        raise AddressGoneError(
            f"{said}; the endpoint asks not to be called again: disable it",
            provider_code=code,
        )
    if status == 429 or status >= 500:
        raise TransientSendError(
            f"{said}; the endpoint is overloaded or failing, retried later",
            provider_code=code,
            retry_after=parse_retry_after(headers.get("Retry-After"), now=now),
        )
    if 300 <= status < 400:
        raise PermanentSendError(
            f"{said}; pushd does not follow redirects (their target would escape the "
            "outbound URL check): register the URL the endpoint redirects to",
            provider_code=code,
        )
    if status in (401, 403):
        raise PermanentSendError(
            f"{said}; the endpoint refused the request, likely its signature check: give "
            "the receiver the endpoint's current secret",
            provider_code=code,
        )
    raise PermanentSendError(f"{said}; the endpoint refused the event", provider_code=code)


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """The start of an answer's body, to quote in an error. Bounded, because the
    endpoint is not pushd's; a longer body is cut and its connection closed instead of
    reused."""
    body = bytearray()
    while len(body) < _MAX_RESPONSE_BYTES:
        chunk = await response.content.read(_MAX_RESPONSE_BYTES - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _origin(url: URL) -> str:
    """What errors name instead of the URL, whose path or query may hold a token."""
    return str(url.origin()) if url.absolute and url.host else "(not a URL)"


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
        self._check_url = check_url
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

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
        if self._closed:
            raise RuntimeError("WebhookSender.send called after aclose()")
        url, secrets, event_id, event_type, body = _request_parts(message)
        checked = await self._check(url)
        now = self._clock()
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event_id,
            EVENT_TYPE_HEADER: event_type,
            SIGNATURE_HEADER: signature_header(secrets, body, int(now)),
        }
        status, answer_headers, detail = await self._post(url, checked, body, headers)
        return classify_answer(status, answer_headers, detail, origin=_origin(url), now=now)

    async def aclose(self) -> None:
        """Close the endpoints' connections. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _check(self, url: URL) -> CheckedUrl | None:
        try:
            return await self._check_url(str(url))
        except ValueError as error:
            raise PermanentSendError(
                f"webhook endpoint {_origin(url)} refused by the outbound URL check: {error}",
                provider_code="url-refused",
            ) from None
        except OSError as error:
            raise TransientSendError(
                f"webhook endpoint {_origin(url)} could not be checked ({error}); retried later",
                provider_code="url-unchecked",
            ) from error

    async def _post(
        self, url: URL, checked: CheckedUrl | None, body: bytes, headers: dict[str, str]
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """POST to the first of the checked addresses that takes the connection."""
        if checked is None:
            targets: list[tuple[URL, str | None]] = [(url, None)]
        else:
            # The URL's host still names the server: in Host, in SNI and for the
            # certificate check.
            headers = headers | {"Host": _host_header(url)}
            targets = [(url.with_host(address), url.raw_host) for address in checked.addresses]
        failure: Exception | None = None
        for target, server_hostname in targets:
            try:
                return await self._post_once(target, server_hostname, body, headers)
            except aiohttp.ClientConnectorError as error:
                failure = error  # not connected, so nothing was sent: try the next one
            except (aiohttp.ClientError, TimeoutError) as error:
                failure = error
                break
        said = str(failure).replace(str(url), _origin(url))
        raise TransientSendError(
            f"webhook to {_origin(url)} failed before an answer ({type(failure).__name__}: "
            f"{said}); the endpoint is unreachable or slow, retried later",
            provider_code="unreachable",
        ) from failure

    async def _post_once(
        self, target: URL, server_hostname: str | None, body: bytes, headers: dict[str, str]
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        async with self._open_session().post(
            target,
            data=body,
            headers=headers,
            allow_redirects=False,
            server_hostname=server_hostname,
        ) as response:
            return response.status, response.headers, await _read_bounded(response)

    def _open_session(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop, and shared by every send.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._config.max_connections),
                timeout=aiohttp.ClientTimeout(total=self._config.timeout),
                headers={"User-Agent": "pushd-webhooks"},
            )
        return self._session


def _host_header(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.explicit_port is None or url.is_default_port() else f"{host}:{url.port}"


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
