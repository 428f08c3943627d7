"""A local push service (RFC 8030) that checks what a real one checks, for the web push
tests and benchmark; nothing leaves the machine.

For every `POST /push/{subscription}` it:

- verifies the VAPID header (RFC 8292): the ES256 signature of `t` with the key `k`,
  that `k` is the applicationServerKey the subscription was made with (else 403, as push
  services answer), `aud` = this service's origin, `exp` in the future and at most 24 h
  away, `sub` a mailto: or https: URI (else 401);
- requires a `TTL` header, `Content-Encoding: aes128gcm`, a known `Urgency` and a
  `Topic` of at most 32 base64url characters when present (else 400), and a body of at
  most 4096 bytes (else 413);
- decrypts the body as the browser would (RFC 8291), with the subscription's private key
  and auth secret, and records what it got; then answers 201 with a `Location`.

The decryption and signature check use `cryptography` directly, not the sender's code
path (http_ece, PyJWT), so that a test does not pass because both sides share a bug.

`answer(subscription, status, headers)` makes it answer a subscription with a canned
status instead (404, 410, 413, 429 + Retry-After, 500, ...); `delay` slows every answer.

Bench mode (`python -m tests.channels.webpush_endpoint --bench`): accepts any
subscription, still reads every body and checks the headers, skips the signature and
decryption, prints {"origin": "http://127.0.0.1:N"} and serves until stdin closes; GET
/stats counts pushes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import itertools
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAX_BODY = 4096
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_TOKEN_LIFETIME = 24 * 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def uncompressed_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _hkdf(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def decrypt_push(body: bytes, private_key: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """The user agent's side of RFC 8291: open an `aes128gcm` push message body.

    Raises ValueError for anything a browser would discard.
    """
    if len(body) < 21 + 65 + 17:
        raise ValueError("body shorter than a header and one record")
    salt, record_size, id_length = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    if id_length != 65:
        raise ValueError(f"keyid must be the sender's 65-byte public key, is {id_length} bytes")
    sender_public = body[21:86]
    record = body[86:]
    if len(record) > record_size:
        raise ValueError("more than one record (RFC 8291 §4 allows one)")
    sender_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_public)
    ecdh_secret = private_key.exchange(ec.ECDH(), sender_key)
    key_info = b"WebPush: info\x00" + uncompressed_point(private_key.public_key()) + sender_public
    ikm = _hkdf(ecdh_secret, salt=auth_secret, info=key_info, length=32)
    cek = _hkdf(ikm, salt=salt, info=b"Content-Encoding: aes128gcm\x00", length=16)
    nonce = _hkdf(ikm, salt=salt, info=b"Content-Encoding: nonce\x00", length=12)
    try:
        padded = AESGCM(cek).decrypt(nonce, record, None)
    except InvalidTag:
        raise ValueError("authentication tag does not match (wrong keys?)") from None
    unpadded = padded.rstrip(b"\x00")
    if not unpadded.endswith(b"\x02"):
        raise ValueError("last record's padding delimiter is not 0x02")
    return unpadded[:-1]


@dataclass(frozen=True, slots=True)
class VapidIdentity:
    claims: dict[str, Any]
    public_key: str
    token: str


class VapidRejectedError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def verify_vapid(authorization: str, *, audience: str, now: float) -> VapidIdentity:
    """Check an `Authorization: vapid t=<jwt>, k=<key>` header (RFC 8292 §3)."""
    scheme, _, parameters = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise VapidRejectedError(401, "Authorization scheme is not vapid")
    params = dict(part.strip().split("=", 1) for part in parameters.split(",") if "=" in part)
    token, public_key = params.get("t", ""), params.get("k", "")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(public_key))
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(unb64url(header_b64))
        claims = json.loads(unb64url(claims_b64))
        signature = unb64url(signature_b64)
    except (ValueError, binascii.Error) as error:
        raise VapidRejectedError(401, f"malformed vapid header: {error}") from None
    if header.get("alg") != "ES256" or len(signature) != 64:
        raise VapidRejectedError(401, "the JWT is not ES256")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VapidRejectedError(401, "the JWT signature does not verify with k") from None
    if claims.get("aud") != audience:
        raise VapidRejectedError(401, f"aud is {claims.get('aud')!r}, expected {audience!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or not now < exp <= now + MAX_TOKEN_LIFETIME:
        raise VapidRejectedError(401, f"exp {exp!r} is past or more than 24 h away")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise VapidRejectedError(401, "sub is not a mailto: or https: URI")
    return VapidIdentity(claims=claims, public_key=public_key, token=token)


@dataclass(slots=True)
class BrowserSubscription:
    """What a browser holds for one subscription (its private key stays here)."""

    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    application_server_key: str


@dataclass(frozen=True, slots=True)
class ReceivedPush:
    subscription: str
    payload: bytes
    """The decrypted plaintext."""
    headers: dict[str, str]
    vapid: VapidIdentity
    peer: tuple[str, int]
    """The sender's address and port: one port across sends means a reused connection."""


@dataclass(frozen=True, slots=True)
class CannedAnswer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class PushEndpoint:
    """The local push service; serve its `app()`, `subscribe()` browsers, send, inspect."""

    def __init__(self, *, bench: bool = False) -> None:
        self.bench = bench
        self.subscriptions: dict[str, BrowserSubscription] = {}
        self.received: list[ReceivedPush] = []
        self.rejected: list[tuple[int, str]] = []
        self.delay = 0.0
        self.pushes = 0
        self.body_bytes = 0
        self._answers: dict[str, CannedAnswer] = {}
        self._ids = itertools.count(1)
        self.origin = ""
        """Where the service listens (http://host:port), once served."""

    def app(self) -> web.Application:
        """The service, to serve (tests: tests.channels.harness.served)."""
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/push/{subscription}", self._push)
        app.router.add_get("/stats", self._stats)
        return app

    def subscribe(self, application_server_key: str) -> dict[str, str]:
        """A new browser subscription for `application_server_key`; returns the device
        address a sender gets: {"endpoint", "p256dh", "auth"}."""
        subscription = BrowserSubscription(
            id=f"sub{next(self._ids)}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=secrets.token_bytes(16),
            application_server_key=application_server_key,
        )
        self.subscriptions[subscription.id] = subscription
        return {
            "endpoint": f"{self.origin}/push/{subscription.id}",
            "p256dh": b64url(uncompressed_point(subscription.private_key.public_key())),
            "auth": b64url(subscription.auth_secret),
        }

    def answer(
        self, address: dict[str, str], status: int, headers: dict[str, str] | None = None
    ) -> None:
        """Answer every push to this subscription with `status` (and `headers`)."""
        self._answers[address["endpoint"].rsplit("/", 1)[1]] = CannedAnswer(status, headers or {})

    def payloads(self, address: dict[str, str]) -> list[Any]:
        """The decrypted JSON payloads this subscription received, in order."""
        subscription = address["endpoint"].rsplit("/", 1)[1]
        return [
            json.loads(push.payload) for push in self.received if push.subscription == subscription
        ]

    async def _push(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.pushes += 1
        self.body_bytes += len(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        subscription_id = request.match_info["subscription"]
        canned = self._answers.get(subscription_id)
        if canned is not None:
            return web.Response(status=canned.status, headers=canned.headers, text="canned")
        problem = self._header_problem(request, body)
        if problem is not None:
            return self._reject(*problem)
        if self.bench:
            return web.Response(status=201, headers={"Location": f"/m/{self.pushes}"})
        return self._accept(request, subscription_id, body)

    def _header_problem(self, request: web.Request, body: bytes) -> tuple[int, str] | None:
        headers = request.headers
        checks = [
            (headers.get("TTL", "").isdigit(), 400, "TTL header missing or not an integer >= 0"),
            (
                headers.get("Urgency", "normal") in URGENCIES,
                400,
                f"Urgency must be one of {sorted(URGENCIES)} (RFC 8030 §5.3)",
            ),
            (
                "Topic" not in headers or TOPIC.fullmatch(headers["Topic"]) is not None,
                400,
                "Topic must be at most 32 base64url characters (RFC 8030 §5.4)",
            ),
            (
                headers.get("Content-Encoding") == "aes128gcm",
                400,
                "Content-Encoding must be aes128gcm",
            ),
            (len(body) <= MAX_BODY, 413, f"body of {len(body)} bytes exceeds {MAX_BODY}"),
            ("Authorization" in headers, 401, "no Authorization header"),
        ]
        return next(((status, reason) for ok, status, reason in checks if not ok), None)

    def _accept(self, request: web.Request, subscription_id: str, body: bytes) -> web.Response:
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            return self._reject(404, "no such subscription")
        try:
            vapid = verify_vapid(
                request.headers["Authorization"], audience=self.origin, now=time.time()
            )
        except VapidRejectedError as error:
            return self._reject(error.status, str(error))
        if vapid.public_key != subscription.application_server_key:
            return self._reject(403, "k is not the key this subscription was made with")
        try:
            payload = decrypt_push(body, subscription.private_key, subscription.auth_secret)
        except ValueError as error:
            return self._reject(400, f"cannot decrypt: {error}")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.received.append(
            ReceivedPush(
                subscription_id,
                payload,
                dict(request.headers),
                vapid,
                tuple(peer[:2]) if peer else ("", 0),
            )
        )
        return web.Response(
            status=201, headers={"Location": f"{self.origin}/m/{len(self.received)}"}
        )

    def _reject(self, status: int, reason: str) -> web.Response:
        self.rejected.append((status, reason))
        return web.Response(status=status, text=reason)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"pushes": self.pushes, "body_bytes": self.body_bytes})


async def _serve_bench(port: int) -> None:
    endpoint = PushEndpoint(bench=True)
    runner = web.AppRunner(endpoint.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        host, bound_port = runner.addresses[0][:2]
        endpoint.origin = f"http://{host}:{bound_port}"
        print(json.dumps({"origin": endpoint.origin}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # EOF on stdin: the bench is done
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", action="store_true", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_bench(args.port))
    else:
        uvloop.run(_serve_bench(args.port))


if __name__ == "__main__":
    main()
