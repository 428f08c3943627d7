"""A local FCM: Google's OAuth2 token endpoint and FCM HTTP v1 `messages:send`, checking
what the real ones check.

The token endpoint verifies the JWT bearer assertion with the service account's public
key (signature, iss, aud, scope, lifetime) and issues access tokens that expire; the send
endpoint accepts only a live access token it issued and refuses a message that breaks
the v1 schema the way FCM does (INVALID_ARGUMENT with the offending field). A test
scripts what a given registration token gets back (`answers`).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from pushd.channels.fcm import FCM_ERROR_TYPE, FCM_SCOPE
from pushd.channels.google_oauth import JWT_BEARER_GRANT
from tests.channels.harness import json_answer

BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
_TTL = re.compile(r"\d+(\.\d{1,9})?s")
_MAX_TTL_SECONDS = 2_419_200  # four weeks
_MESSAGE_KEYS = {
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "token",
    "topic",
    "condition",
}
_ANDROID_KEYS = {
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
}
_APNS_KEYS = {"headers", "payload", "fcm_options", "live_activity_token"}
_WEBPUSH_KEYS = {"headers", "data", "notification", "fcm_options"}
_NOTIFICATION_KEYS = {"title", "body", "image"}


@dataclass(frozen=True)
class FcmAnswer:
    """An FCM refusal, as the v1 API words it."""

    http_status: int
    status: str
    message: str
    error_code: str | None = None
    retry_after: str | None = None

    def response(self) -> web.Response:
        details = []
        if self.error_code:
            details.append({"@type": FCM_ERROR_TYPE, "errorCode": self.error_code})
        return json_answer(
            {
                "error": {
                    "code": self.http_status,
                    "message": self.message,
                    "status": self.status,
                    "details": details,
                }
            },
            self.http_status,
            self.retry_after,
        )


UNREGISTERED = FcmAnswer(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
INVALID_TOKEN = FcmAnswer(
    400,
    "INVALID_ARGUMENT",
    "The registration token is not a valid FCM registration token",
    "INVALID_ARGUMENT",
)
SENDER_ID_MISMATCH = FcmAnswer(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
THIRD_PARTY_AUTH_ERROR = FcmAnswer(
    401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"
)
INTERNAL = FcmAnswer(500, "INTERNAL", "Internal error encountered.", "INTERNAL")


def quota_exceeded(retry_after: str) -> FcmAnswer:
    return FcmAnswer(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Send requests'",
        "QUOTA_EXCEEDED",
        retry_after,
    )


def unavailable(retry_after: str | None = None) -> FcmAnswer:
    return FcmAnswer(
        503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE", retry_after
    )


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


def _unauthenticated() -> web.Response:
    return FcmAnswer(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
    ).response()


def _string_map_violations(value: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, dict):
        return [(where, "must be an object")]
    return [
        (f"{where}.{key}", "must be a string")
        for key, item in value.items()
        if not isinstance(item, str)
    ]


def _unknown(value: Any, allowed: set[str], where: str) -> list[tuple[str, str]]:
    if not isinstance(value, dict):
        return [(where, "must be an object")]
    return [
        (where, f'Invalid JSON payload received. Unknown name "{key}"')
        for key in value
        if key not in allowed
    ]


def schema_violations(body: Any) -> list[tuple[str, str]]:
    """What FCM would refuse in a v1 send request, as (field, description) pairs."""
    if not isinstance(body, dict) or not isinstance(message := body.get("message"), dict):
        return [("message", "Required")]
    problems = _unknown(body, {"message", "validate_only"}, "")
    problems += _unknown(message, _MESSAGE_KEYS, "message")
    targets = [key for key in ("token", "topic", "condition") if key in message]
    if len(targets) != 1:
        problems.append(("message", "exactly one of token, topic, condition is required"))
    if "token" in message and not (isinstance(message["token"], str) and message["token"]):
        problems.append(("message.token", "must be a non-empty string"))
    if "data" in message:
        problems += _string_map_violations(message["data"], "message.data")
        reserved = [
            key
            for key in message["data"]
            if key in {"from", "notification", "message_type"} or key.startswith(("google", "gcm"))
        ]
        problems += [("message.data", f"Invalid data payload key: {key}") for key in reserved]
    if "notification" in message:
        problems += _unknown(message["notification"], _NOTIFICATION_KEYS, "message.notification")
        problems += _string_map_violations(message["notification"], "message.notification")
    problems += _android_violations(message.get("android", {}))
    for name, allowed in (("apns", _APNS_KEYS), ("webpush", _WEBPUSH_KEYS)):
        config = message.get(name, {})
        problems += _unknown(config, allowed, f"message.{name}")
        if isinstance(config, dict) and "headers" in config:
            problems += _string_map_violations(config["headers"], f"message.{name}.headers")
    return problems


def _android_violations(android: Any) -> list[tuple[str, str]]:
    problems = _unknown(android, _ANDROID_KEYS, "message.android")
    if not isinstance(android, dict):
        return problems
    if android.get("priority", "NORMAL") not in {"NORMAL", "HIGH"}:
        problems.append(("message.android.priority", "Invalid value"))
    if "ttl" in android:
        ttl = android["ttl"]
        if not (isinstance(ttl, str) and _TTL.fullmatch(ttl)):
            problems.append(("message.android.ttl", "Invalid duration format"))
        elif float(ttl[:-1]) > _MAX_TTL_SECONDS:
            problems.append(("message.android.ttl", "TTL over four weeks"))
    return problems


@dataclass
class LocalFcm:
    """The state of one local FCM project; `app()` serves it."""

    public_key: rsa.RSAPublicKey
    key_id: str
    client_email: str
    project_id: str
    expires_in: int = 3600
    token_url: str = ""
    """Set once the server listens: the audience the assertions must name."""
    answers: dict[str, FcmAnswer] = field(default_factory=dict)
    """Registration token -> the refusal it gets."""
    refuse_every_access_token: bool = False
    grants: int = 0
    """Access tokens issued."""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    """The messages FCM accepted, as received."""
    _issued: dict[str, float] = field(default_factory=dict)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        return app

    def revoke_access_tokens(self) -> None:
        """What happens when the account's key is rotated: issued tokens stop working."""
        self._issued.clear()

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type")
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            return _oauth_error("invalid_request", "Missing required parameter: assertion")
        if (refusal := self._refuse_assertion(assertion)) is not None:
            return refusal
        access_token = secrets.token_urlsafe(24)
        self._issued[access_token] = time.monotonic() + self.expires_in
        self.grants += 1
        return web.json_response(
            {"access_token": access_token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    def _refuse_assertion(self, assertion: str) -> web.Response | None:
        try:
            if jwt.get_unverified_header(assertion).get("kid") != self.key_id:
                return _oauth_error("invalid_grant", "Invalid key id")
            claims = jwt.decode(
                assertion,
                self.public_key,
                algorithms=["RS256"],
                audience=self.token_url,
                issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidTokenError as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT: {exc}")
        if claims["exp"] - claims["iat"] > 3600:
            return _oauth_error("invalid_grant", "Invalid JWT: exp too far from iat")
        if FCM_SCOPE not in str(claims["scope"]).split():
            return _oauth_error("invalid_scope", "Invalid OAuth scope")
        return None

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, access_token = request.headers.get("Authorization", "").partition(" ")
        expires_at = self._issued.get(access_token)
        return (
            scheme == "Bearer"
            and expires_at is not None
            and time.monotonic() < expires_at
            and not self.refuse_every_access_token
        )

    async def _send(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _unauthenticated()
        if request.match_info["project"] != self.project_id:
            return FcmAnswer(403, "PERMISSION_DENIED", "Permission denied on project").response()
        body = await request.read() if request.content_type == "application/json" else b""
        try:
            request_body = json.loads(body)
        except ValueError:
            return FcmAnswer(400, "INVALID_ARGUMENT", "Invalid JSON payload").response()
        if problems := schema_violations(request_body):
            return _bad_request(problems)
        message = request_body["message"]
        if (answer := self.answers.get(message["token"])) is not None:
            return answer.response()
        self.accepted.append(message)
        name = f"projects/{self.project_id}/messages/0:{next(self._names)}"
        return web.json_response({"name": name})


def _bad_request(problems: list[tuple[str, str]]) -> web.Response:
    violations = [{"field": name, "description": text} for name, text in problems]
    return web.json_response(
        {
            "error": {
                "code": 400,
                "message": "Request contains an invalid argument.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {"@type": FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"},
                    {"@type": BAD_REQUEST_TYPE, "fieldViolations": violations},
                ],
            }
        },
        status=400,
    )
