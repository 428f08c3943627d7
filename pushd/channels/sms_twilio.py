"""SMS through Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`,
form-encoded, HTTP basic auth with the account SID and auth token), and the two pieces
of its delivery receipts: the `X-Twilio-Signature` check and the status callback form.

No Twilio SDK: its client is synchronous (requests), and one form POST over pushd's
aiohttp session is all a send needs. The base URL is configurable so that tests (and
Twilio-compatible providers) can stand in for api.twilio.com.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Annotated, Final, Literal, TypeVar, get_args
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

from actors.channel_sender import ChannelMessage, SendError, SendReceipt
from pushd.channels.http_answer import HttpAnswer, RefusalHints, refusal_error
from pushd.channels.http_client import ProviderClient
from pushd.channels.sms import CHANNEL, count_segments, recipient_number, sms_text
from pushd.config.types import Positive, PositiveFloat

DEFAULT_BASE_URL: Final = "https://api.twilio.com"
SIGNATURE_HEADER: Final = "X-Twilio-Signature"

_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")


class TwilioSmsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One Twilio account (or a Twilio-compatible API) sending SMS."""

    name: Annotated[str, msgspec.Meta(min_length=1)]
    account_sid: str
    """`AC` and 32 hex digits (Twilio console > Account info)."""
    auth_token: Annotated[str, msgspec.Meta(min_length=1)]
    """The account's auth token; it also signs the status callbacks."""
    from_number: str = ""
    """The sender: an E.164 number, a short code or an alphanumeric sender ID."""
    messaging_service_sid: str = ""
    """`MG...`: send through a Messaging Service (its sender pool picks the number)
    instead of `from_number`. Set exactly one of the two."""
    base_url: str = DEFAULT_BASE_URL
    status_callback_url: str = ""
    """Where Twilio posts delivery receipts (pushd's callback route, as Twilio reaches
    it from the internet). Empty: no receipts, deliveries stay `sent`."""
    timeout: PositiveFloat = 10.0
    """Seconds for one request to Twilio, connection included."""
    max_connections: Positive = 20

    def __post_init__(self) -> None:
        if not _ACCOUNT_SID.fullmatch(self.account_sid):
            raise ValueError(
                "account_sid must be `AC` followed by 32 hex digits (Twilio console > "
                "Account info); an API key SID (SK...) or the auth token does not go here"
            )
        if bool(self.from_number) == bool(self.messaging_service_sid):
            raise ValueError(
                "set exactly one of from_number (the number or sender ID to send from) "
                "and messaging_service_sid (MG..., a Messaging Service)"
            )
        if self.messaging_service_sid and not _MESSAGING_SERVICE_SID.fullmatch(
            self.messaging_service_sid
        ):
            raise ValueError("messaging_service_sid must be `MG` followed by 32 hex digits")


# Answers -------------------------------------------------------------------------


class _Message(msgspec.Struct):
    sid: str


class _TwilioError(msgspec.Struct):
    """Twilio's error body: {"code", "message", "more_info", "status"}."""

    code: int | None = None
    message: str = ""
    more_info: str = ""


def _decode_error(body: bytes) -> _TwilioError:
    try:
        return msgspec.json.decode(body, type=_TwilioError)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _TwilioError()  # e.g. a proxy's HTML page: the HTTP status decides


_BAD_NUMBER_HINT = "fix the phone on the user's profile"
_PERMANENT_HINTS: Final[Mapping[int, str]] = {
    # The number itself is wrong. Not AddressGoneError: that removes a device, and a
    # phone number is part of the user's profile, which pushd does not edit.
    21211: f"Twilio says the number is not a valid phone number; {_BAD_NUMBER_HINT}",
    21614: f"Twilio says the number is not a mobile number and cannot receive SMS; "
    f"{_BAD_NUMBER_HINT}",
    21610: "the recipient opted out by replying STOP to this sender; only they can opt "
    "in again, by replying START",
    21408: "this account may not send to the number's country; enable it in the Twilio "
    "console under Messaging > Settings > Geo permissions",
    21606: "from_number is not an SMS-capable number of this account; check from_number",
    21617: "the text is over Twilio's 1600-character limit; shorten the SMS content",
}


_HINTS: Final = RefusalHints(
    transient="Twilio is rate-limiting or failing, retried later",
    refused="retrying the same message cannot succeed",
    credentials="Twilio refused the credentials: check account_sid and auth_token (a "
    "rotated auth token must be updated in pushd's config too)",
)


def _refusal_error(provider: str, answer: HttpAnswer) -> SendError:
    """The `SendError` for a Twilio answer other than 2xx."""
    error = _decode_error(answer.body)
    code = str(error.code) if error.code is not None else str(answer.status)
    said = f"Twilio provider `{provider}` answered {answer.status} (code {code})" + (
        f": {error.message}" if error.message else ""
    )
    hint = _PERMANENT_HINTS.get(error.code or 0)
    if hint is None and error.more_info:
        hint = f"{_HINTS.refused} (see {error.more_info})"
    return refusal_error(answer, said, _HINTS, provider_code=code, hint=hint)


# The sender ----------------------------------------------------------------------


class TwilioSmsSender:
    """`ChannelSender` for SMS through one Twilio account (see
    actors/channel_sender.py for the contract). The receipt carries Twilio's message SID
    (`SM...`, what status callbacks name) and the text's encoding and segments."""

    def __init__(self, config: TwilioSmsConfig) -> None:
        self._config = config
        self._url = (
            f"{config.base_url.rstrip('/')}/2010-04-01/Accounts/"
            f"{quote(config.account_sid, safe='')}/Messages.json"
        )
        # Written out rather than aiohttp.BasicAuth, deprecated since aiohttp 3.14.
        credentials = f"{config.account_sid}:{config.auth_token}".encode()
        self._authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        self._client = ProviderClient(
            who=f"Twilio provider `{config.name}`",
            timeout=config.timeout,
            max_connections=config.max_connections,
            headers={"Accept": "application/json"},
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
        """Ask Twilio to send `message` to `address["phone"]`."""
        text = sms_text(message)
        form = {"To": recipient_number(message), "Body": text}
        if self._config.messaging_service_sid:
            form["MessagingServiceSid"] = self._config.messaging_service_sid
        else:
            form["From"] = self._config.from_number
        if self._config.status_callback_url:
            form["StatusCallback"] = self._config.status_callback_url
        answer = await self._client.post(
            self._url,
            name=f"Twilio provider `{self.provider}`: {self._config.base_url}",
            data=form,
            headers={"Authorization": self._authorization},
        )
        if not answer.accepted:
            raise _refusal_error(self.provider, answer)
        try:
            sid: str | None = msgspec.json.decode(answer.body, type=_Message).sid
        except (msgspec.ValidationError, msgspec.DecodeError):
            sid = None  # accepted all the same; receipts will not match it
        return SendReceipt(provider_message_id=sid, detail=count_segments(text).detail())

    async def aclose(self) -> None:
        """Close the connections to Twilio. Idempotent."""
        await self._client.aclose()


# Delivery receipts ---------------------------------------------------------------


STATUS_CALLBACK_PATH: Final = "/api/channels/sms/{provider}/status"
"""pushd's route for a provider's receipts (pushd/api/sms_receipts.py), under
`channels.public_url`."""

_Config = TypeVar("_Config", bound=TwilioSmsConfig)


def with_status_callback(config: _Config, public_url: str) -> _Config:
    """`config` with its `status_callback_url`: as configured, else pushd's receipts
    route under `public_url` (the URL Twilio reaches and signs); unchanged without
    either (no receipts)."""
    if config.status_callback_url or not public_url:
        return config
    path = STATUS_CALLBACK_PATH.format(provider=quote(config.name, safe=""))
    return msgspec.structs.replace(config, status_callback_url=public_url.rstrip("/") + path)


def twilio_signature(auth_token: str, url: str, form_params: Mapping[str, str]) -> str:
    """Twilio's request signature: base64 of HMAC-SHA1, keyed with the auth token, over
    the full URL followed by each POST parameter's name and value, by name (a repeated
    name's values in sorted order, as Twilio's own libraries do).

    `form_params` may be a multidict (aiohttp's `await request.post()`): every value of
    a repeated name counts.
    """
    values: dict[str, list[str]] = {}
    for name, value in form_params.items():
        values.setdefault(name, []).append(value)
    signed = url + "".join(
        name + value for name in sorted(values) for value in sorted(values[name])
    )
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_twilio_signature(
    auth_token: str, url: str, form_params: Mapping[str, str], signature: str
) -> bool:
    """Whether `signature` (the `X-Twilio-Signature` header) is Twilio's for a form POST
    of `form_params` to `url`.

    `url` is the URL Twilio called, exactly as configured in `StatusCallback` (query
    included): behind a proxy, the URL the request arrives at differs, so pass the
    configured one. Twilio signs some requests with the port written out and some
    without, so, like Twilio's libraries, both forms of the URL are accepted. The
    comparison takes constant time.
    """
    given = signature.encode()
    return any(
        hmac.compare_digest(twilio_signature(auth_token, candidate, form_params).encode(), given)
        for candidate in _with_and_without_port(url)
    )


def _with_and_without_port(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a port number: no other form to try
        return (url,)
    host = parts.netloc.rpartition("@")[2]
    userinfo = parts.netloc[: len(parts.netloc) - len(host)]
    if port is not None:
        bare_host = host.rpartition(":")[0]
        with_port, without_port = parts.netloc, userinfo + bare_host
    else:
        default = 443 if parts.scheme == "https" else 80
        with_port, without_port = f"{parts.netloc}:{default}", parts.netloc
    return (
        urlunsplit(parts._replace(netloc=without_port)),
        urlunsplit(parts._replace(netloc=with_port)),
    )


TwilioMessageStatus = Literal[
    "accepted",
    "scheduled",
    "canceled",
    "queued",
    "sending",
    "sent",
    "failed",
    "delivered",
    "undelivered",
    "receiving",
    "received",
    "read",
]
FINAL_STATUSES: Final = frozenset({"canceled", "failed", "delivered", "undelivered", "read"})
"""Statuses after which Twilio reports nothing more about the message."""


class TwilioStatusCallback(msgspec.Struct, frozen=True, kw_only=True):
    """One status callback: which message (the SID the send's receipt carries), its
    new status, and Twilio's error code when it failed (30003 unreachable handset,
    30005 unknown number, 30006 landline, 30007 carrier filtering, ...)."""

    message_sid: str
    status: TwilioMessageStatus
    error_code: str | None = None
    account_sid: str = ""

    @property
    def final(self) -> bool:
        """Whether this is the message's last status."""
        return self.status in FINAL_STATUSES


_STATUSES: Final = frozenset(get_args(TwilioMessageStatus))


def parse_twilio_status_callback(form: Mapping[str, str]) -> TwilioStatusCallback:
    """Read Twilio's status callback form (MessageSid, MessageStatus, ErrorCode,
    AccountSid; any other parameter is ignored, as Twilio adds some without notice).
    Verify its signature first. Raise ValueError naming the field that is missing or
    unknown."""
    message_sid = form.get("MessageSid") or form.get("SmsSid")
    if not message_sid:
        raise ValueError("the status callback has no MessageSid")
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if not status:
        raise ValueError("the status callback has no MessageStatus")
    if status not in _STATUSES:
        raise ValueError(
            f"the status callback's MessageStatus {status[:20]!r} is not one Twilio documents"
        )
    return msgspec.convert(
        {
            "message_sid": message_sid,
            "status": status,
            "error_code": form.get("ErrorCode") or None,
            "account_sid": form.get("AccountSid", ""),
        },
        type=TwilioStatusCallback,
    )
