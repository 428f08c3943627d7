"""A local APNs: HTTP/2 over TLS (ALPN "h2") on 127.0.0.1, served by hypercorn, checking
what Apple's provider API checks.

It refuses a request that is not HTTP/2; verifies the provider token's ES256 signature
with the key's public key, its kid, iss and age (ExpiredProviderToken past an hour, by
its own clock, which a test may set ahead of the sender's), and that a new token does
not follow the previous one within 20 minutes (TooManyProviderTokenUpdates); checks the
:path, apns-topic, apns-push-type, apns-priority, apns-expiration, apns-collapse-id and
the payload. A test scripts what a given device token gets back (`answers`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from tests.channels.harness import TlsFiles

_PATH = re.compile(r"/3/device/(?P<token>[^/]*)")
_HEX = re.compile(r"[0-9A-Fa-f]+")
PUSH_TYPES = {
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
}
MAX_PAYLOAD_BYTES = 4096
TOKEN_MAX_AGE_SECONDS = 3600
TOKEN_UPDATE_INTERVAL_SECONDS = 20 * 60


@dataclass(frozen=True)
class ApnsAnswer:
    """An APNs refusal: the HTTP status and the `reason` of the JSON body."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedPush:
    """A notification the local APNs accepted."""

    device_token: str
    headers: dict[str, str]
    payload: dict[str, Any]
    http_version: str
    connection: tuple[str, int]
    """The client's address and port: one per TCP connection."""
    apns_id: str


@dataclass
class LocalApns:
    """The state of one local APNs; an ASGI application."""

    public_key: ec.EllipticCurvePublicKey
    team_id: str
    key_id: str
    topic: str
    clock: Callable[[], float]
    """Apple's clock; `skew` is added to it."""
    skew: float = 0.0
    answers: dict[str, ApnsAnswer] = field(default_factory=dict)
    """Device token -> the refusal it gets."""
    received: list[ReceivedPush] = field(default_factory=list)
    requests: int = 0
    provider_tokens: list[str] = field(default_factory=list)
    """Every distinct provider token accepted, in order."""
    _token_accepted_at: float | None = None

    def now(self) -> float:
        return self.clock() + self.skew

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = await _request_body(receive)
        self.requests += 1
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        answer = self._check(scope, headers, body)
        if answer is None:
            await _respond(send, 200, {"apns-id": self._accept(scope, headers, body)}, b"")
        else:
            body = json.dumps({"reason": answer.reason}).encode()
            await _respond(send, answer.status, answer.headers, body)

    def _check(self, scope: HTTPScope, headers: dict[str, str], body: bytes) -> ApnsAnswer | None:
        if scope["http_version"] != "2":
            return ApnsAnswer(505, "HTTPVersionNotSupported")  # APNs is HTTP/2 only
        if scope["method"] != "POST":
            return ApnsAnswer(405, "MethodNotAllowed")
        if (path := _PATH.fullmatch(scope["path"])) is None:
            return ApnsAnswer(404, "BadPath")
        if not _HEX.fullmatch(path["token"]):
            return ApnsAnswer(400, "BadDeviceToken")
        return (
            self._check_provider_token(headers.get("authorization", ""))
            or _check_headers(headers, self.topic)
            or _check_payload(headers, body)
            or self.answers.get(path["token"])
        )

    def _check_provider_token(self, authorization: str) -> ApnsAnswer | None:
        scheme, _, token = authorization.partition(" ")
        if scheme != "bearer" or not token:
            return ApnsAnswer(403, "MissingProviderToken")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["ES256"],
                issuer=self.team_id,
                # iat is checked below against Apple's clock, not this machine's.
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            return ApnsAnswer(403, "InvalidProviderToken")
        if header.get("kid") != self.key_id or header.get("alg") != "ES256":
            return ApnsAnswer(403, "InvalidProviderToken")
        age = self.now() - claims["iat"]
        if age > TOKEN_MAX_AGE_SECONDS:
            return ApnsAnswer(403, "ExpiredProviderToken")
        if age < -60:
            return ApnsAnswer(403, "InvalidProviderToken")
        return self._check_token_update(token)

    def _check_token_update(self, token: str) -> ApnsAnswer | None:
        if token in self.provider_tokens:
            return None
        last = self._token_accepted_at
        if last is not None and self.now() - last < TOKEN_UPDATE_INTERVAL_SECONDS:
            return ApnsAnswer(429, "TooManyProviderTokenUpdates")
        self._token_accepted_at = self.now()
        self.provider_tokens.append(token)
        return None

    def _accept(self, scope: HTTPScope, headers: dict[str, str], body: bytes) -> str:
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        self.received.append(
            ReceivedPush(
                device_token=scope["path"].rsplit("/", 1)[1],
                headers={
                    name: value for name, value in headers.items() if name.startswith("apns-")
                },
                payload=json.loads(body),
                http_version=scope["http_version"],
                connection=scope["client"] or ("", 0),
                apns_id=apns_id,
            )
        )
        return apns_id


def _check_headers(headers: dict[str, str], topic: str) -> ApnsAnswer | None:
    push_type = headers.get("apns-push-type", "alert")
    priority = headers.get("apns-priority", "10")
    checks = [
        ("apns-topic" in headers, "MissingTopic"),
        (headers.get("apns-topic") == topic, "TopicDisallowed"),
        (push_type in PUSH_TYPES, "InvalidPushType"),
        (priority in {"1", "5", "10"}, "BadPriority"),
        (push_type != "background" or priority == "5", "BadPriority"),  # Apple: 10 is an error
        (_digits(headers.get("apns-expiration", "0")), "BadExpirationDate"),
        (len(headers.get("apns-collapse-id", "").encode()) <= 64, "BadCollapseId"),
    ]
    return next((ApnsAnswer(400, reason) for passed, reason in checks if not passed), None)


def _digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _check_payload(headers: dict[str, str], body: bytes) -> ApnsAnswer | None:
    if len(body) > MAX_PAYLOAD_BYTES:
        return ApnsAnswer(413, "PayloadTooLarge")
    try:
        payload = json.loads(body)
    except ValueError:
        return ApnsAnswer(400, "PayloadEmpty")
    if not isinstance(payload, dict) or not isinstance(aps := payload.get("aps"), dict):
        return ApnsAnswer(400, "PayloadEmpty")
    alert = headers.get("apns-push-type", "alert") == "alert"
    if alert and not isinstance(aps.get("alert"), dict | str):
        return ApnsAnswer(400, "PayloadEmpty")
    if not alert and aps.get("content-available") != 1:
        return ApnsAnswer(400, "PayloadEmpty")
    return None


async def _request_body(receive: ASGIReceiveCallable) -> bytes:
    body = b""
    while (event := await receive())["type"] == "http.request":
        body += event["body"]
        if not event["more_body"]:
            break
    return body


async def _respond(
    send: ASGISendCallable, status: int, headers: dict[str, str], body: bytes
) -> None:
    raw_headers = [(name.encode(), value.encode()) for name, value in headers.items()]
    if body:
        raw_headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


@asynccontextmanager
async def serving(app: LocalApns, tls: TlsFiles) -> AsyncIterator[str]:
    """Serve `app` over TLS with ALPN h2 (and http/1.1, so that a client that does not
    offer h2 gets the HTTP/1.1 refusal, as a check) on a free port of 127.0.0.1, in
    this event loop; yields its base URL and stops it on exit."""
    config = Config()
    config.certfile, config.keyfile = str(tls.cert), str(tls.key)
    config.graceful_timeout = 1.0
    config.accesslog = None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # connections queue until hypercorn accepts them
        port = listener.getsockname()[1]
        # hypercorn takes its own descriptor of the socket, which it closes on shutdown.
        config.bind = [f"fd://{os.dup(listener.fileno())}"]
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait, mode="asgi"))
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        stop.set()
        await server
