"""FCM HTTP v1: `POST {base_url}/v1/projects/{project}/messages:send`, authorised by a
service account's OAuth2 access token (pushd/channels/google_oauth.py).

The client is aiohttp, pushd's HTTP library, with one keep-alive pool per provider; FCM
v1 serves HTTP/1.1 well, so HTTP/2 would add a dependency for nothing needed here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import msgspec

from actors.channel_sender import ChannelMessage, PermanentSendError, SendError, SendReceipt
from pushd.channels.google_oauth import ServiceAccountTokens, load_service_account
from pushd.channels.http_answer import HttpAnswer, RefusalHints, refusal_error
from pushd.channels.http_client import ProviderClient
from pushd.channels.push_fields import URGENT_PRIORITIES, alert_text, apns_aps, apns_headers
from pushd.config.types import ConfigError, PositiveFloat

DEFAULT_BASE_URL = "https://fcm.googleapis.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
TRANSIENT_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
WEBPUSH_URGENCY = {"low": "low", "normal": "normal", "high": "high", "critical": "high"}


class FcmProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One FCM provider: a Firebase project, reached with one of its service accounts."""

    name: str
    service_account_file: str = ""
    """Path of the service account's JSON key (Firebase console > Project settings >
    Service accounts > Generate new private key)."""
    service_account_json: str = ""
    """The same JSON inline, e.g. from a secret in the environment. Set exactly one."""
    project_id: str = ""
    """The Firebase project; default: the service account's `project_id`."""
    base_url: str = DEFAULT_BASE_URL
    token_url: str = ""
    """The OAuth2 token endpoint; default: the service account's `token_uri`."""
    timeout: PositiveFloat = 10.0
    """Seconds for one HTTP exchange (token grant or send), connection included."""


# The v1 request (https://firebase.google.com/docs/reference/fcm/rest/v1/projects.messages).


class _Notification(msgspec.Struct, omit_defaults=True):
    title: str | None = None
    body: str | None = None


class _AndroidConfig(msgspec.Struct, omit_defaults=True, kw_only=True):
    priority: str
    ttl: str | None = None
    collapse_key: str | None = None


class _ApnsConfig(msgspec.Struct, omit_defaults=True, kw_only=True):
    headers: dict[str, str]
    payload: dict[str, Any] | None = None


class _WebpushConfig(msgspec.Struct):
    headers: dict[str, str]


class _Message(msgspec.Struct, omit_defaults=True, kw_only=True):
    token: str
    notification: _Notification | None = None
    data: dict[str, str] | None = None
    android: _AndroidConfig
    apns: _ApnsConfig
    webpush: _WebpushConfig


class _SendRequest(msgspec.Struct):
    message: _Message


class _SendResponse(msgspec.Struct):
    name: str


_JSON = msgspec.json.Encoder()


def _as_string(value: Any) -> str:
    """A data value as FCM requires it: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else _JSON.encode(value).decode()


def fcm_request(message: ChannelMessage, *, now: float) -> bytes:
    """The body of the v1 send request for `message` (`now`: the wall clock, for the
    APNs expiration). Raises `PermanentSendError` when the address has no token."""
    token = message.address.get("token")
    if not token:
        raise PermanentSendError(
            f"delivery {message.delivery_id}: the FCM address has no `token`; the device "
            "was registered without its FCM registration token",
            provider_code="no-token",
        )
    title, body = alert_text(message)
    ttl = None if message.ttl_seconds is None else max(0, message.ttl_seconds)
    webpush_headers = {"Urgency": WEBPUSH_URGENCY.get(message.priority, "normal")}
    if ttl is not None:
        webpush_headers["TTL"] = str(ttl)
    # The aps fields FCM does not derive from `notification` (the alert it does).
    aps = {key: value for key, value in apns_aps(message).items() if key != "alert"}
    request = _Message(
        token=token,
        notification=_Notification(title, body) if title is not None or body is not None else None,
        data={key: _as_string(value) for key, value in message.data.items()} or None,
        android=_AndroidConfig(
            priority="HIGH" if message.priority in URGENT_PRIORITIES else "NORMAL",
            ttl=None if ttl is None else f"{ttl}s",
            collapse_key=message.collapse_key,
        ),
        apns=_ApnsConfig(
            headers=apns_headers(message, now=now), payload={"aps": aps} if aps else None
        ),
        webpush=_WebpushConfig(headers=webpush_headers),
    )
    return _JSON.encode(_SendRequest(request))


# The v1 error body (google.rpc.Status with FCM's own error code in its details).


class _FieldViolation(msgspec.Struct):
    field: str = ""
    description: str = ""


class _ErrorDetail(msgspec.Struct):
    type: str = msgspec.field(default="", name="@type")
    error_code: str = msgspec.field(default="", name="errorCode")
    field_violations: list[_FieldViolation] = msgspec.field(
        default_factory=list, name="fieldViolations"
    )


class _Status(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[_ErrorDetail] = msgspec.field(default_factory=list)


class _ErrorBody(msgspec.Struct):
    error: _Status


def _decode_status(body: bytes) -> _Status:
    try:
        return msgspec.json.decode(body, type=_ErrorBody).error
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _Status()  # e.g. an HTML page from a proxy: the HTTP status decides


def _error_code(status: _Status) -> str:
    """FCM's own code (UNREGISTERED, QUOTA_EXCEEDED, ...), else the RPC status."""
    for detail in status.details:
        if detail.type == FCM_ERROR_TYPE and detail.error_code:
            return detail.error_code
    return status.status


def _concerns_token(status: _Status) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token, not the message.

    FCM names the field in a BadRequest violation when it names one; for a malformed
    token it answers only "The registration token is not a valid FCM registration token".
    """
    fields = {violation.field for detail in status.details for violation in detail.field_violations}
    if fields:
        return "message.token" in fields
    return "registration token" in status.message.lower()


_PERMANENT_HINTS = {
    "SENDER_ID_MISMATCH": "the token belongs to another Firebase project; the app must "
    "register with this project's sender id",
    "THIRD_PARTY_AUTH_ERROR": "the APNs key or web push credentials in the Firebase "
    "console are missing or invalid; fix them there",
    "INVALID_ARGUMENT": "FCM refuses this message (a data key it reserves such as `from` "
    "or `google.*`, a payload over 4 KB, ...)",
    "PERMISSION_DENIED": "the service account may not send for this project; give it the "
    "Firebase Cloud Messaging API Admin role",
    "NOT_FOUND": "the project does not exist or has the FCM API disabled; check project_id",
}


_HINTS: Final = RefusalHints(
    transient="retried later",
    refused="retrying the same message cannot succeed",
    gone="the app was uninstalled or the token is not one FCM issued, so the device is removed",
)


def _refusal_error(provider: str, answer: HttpAnswer) -> SendError:
    """The `SendError` for an FCM answer other than 200 (and other than a 401 the caller
    retries with a new access token)."""
    status = _decode_status(answer.body)
    code = _error_code(status) or str(answer.status)
    said = f"FCM provider `{provider}` answered {answer.status} {code}: {status.message}"
    violations = [
        f"{violation.field}: {violation.description}"
        for detail in status.details
        for violation in detail.field_violations
    ]
    if violations:
        said += f" ({'; '.join(violations)})"
    return refusal_error(
        answer,
        said,
        _HINTS,
        provider_code=code,
        gone=code == "UNREGISTERED" or (code == "INVALID_ARGUMENT" and _concerns_token(status)),
        transient=code in TRANSIENT_CODES,
        hint=_PERMANENT_HINTS.get(code),
    )


def _refuses_access_token(answer: HttpAnswer) -> bool:
    # THIRD_PARTY_AUTH_ERROR is a 401 about APNs/web push credentials, not ours.
    return (
        answer.status == 401
        and _error_code(_decode_status(answer.body)) != "THIRD_PARTY_AUTH_ERROR"
    )


class FcmSender:
    """`ChannelSender` for one Firebase project over FCM HTTP v1.

    The service account is read and its key parsed when the sender is made (a
    `ConfigError` then names what is wrong); the HTTP session is opened on the first send.
    """

    def __init__(
        self,
        config: FcmProviderConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        where = f"FCM provider `{config.name}`"
        account = load_service_account(
            file=config.service_account_file, inline=config.service_account_json, where=where
        )
        project_id = config.project_id or account.project_id
        if not project_id:
            raise ConfigError(
                f"FCM provider `{config.name}`: no `project_id`, and the service account "
                "names none; set project_id to the Firebase project's id"
            )
        self._config = config
        self._account = account
        self._project_id = project_id
        self._send_url = (
            f"{config.base_url.rstrip('/')}/v1/projects/{quote(project_id, safe='')}/messages:send"
        )
        self._client = ProviderClient(who=where, timeout=config.timeout)
        self._tokens = ServiceAccountTokens(
            where=where,
            account=account,
            scope=FCM_SCOPE,
            token_url=config.token_url or account.token_uri,
            client=self._client,
            clock=clock,
            wall_clock=wall_clock,
        )
        self._wall_clock = wall_clock

    @property
    def channel(self) -> str:
        """Always "fcm"."""
        return "fcm"

    @property
    def provider(self) -> str:
        """The configured name of this provider."""
        return self._config.name

    async def send(self, message: ChannelMessage) -> SendReceipt:
        """Send `message` to its FCM registration token; the receipt carries FCM's
        message name (projects/{project}/messages/{id})."""
        request = fcm_request(message, now=self._wall_clock())
        access_token = await self._tokens.current()
        answer = await self._post(access_token, request)
        if _refuses_access_token(answer):
            access_token = await self._tokens.replace(access_token)
            answer = await self._post(access_token, request)
            if _refuses_access_token(answer):
                raise PermanentSendError(
                    f"FCM provider `{self.provider}`: FCM refused a freshly granted access "
                    f"token of {self._account.client_email} (401); the account may not "
                    f"belong to project {self._project_id} or its key was just revoked",
                    provider_code="UNAUTHENTICATED",
                )
        if answer.status == 200:
            try:
                name = msgspec.json.decode(answer.body, type=_SendResponse).name
            except (msgspec.ValidationError, msgspec.DecodeError):
                name = None  # accepted all the same
            return SendReceipt(provider_message_id=name)
        raise _refusal_error(self.provider, answer)

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent."""
        await self._client.aclose()

    async def _post(self, access_token: str, request: bytes) -> HttpAnswer:
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json; charset=UTF-8",
        }
        return await self._client.post(
            self._send_url,
            name=f"FCM provider `{self.provider}`: {self._send_url}",
            data=request,
            headers=headers,
        )
