"""What the channel tests share: the message they send, serving a local provider, a
certificate for the local TLS servers (the SMTP relay, APNs), keys as PEM, an address
nothing listens on, outbound URL checks for local endpoints, and a clock the test moves
by hand."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from actors.channel_sender import ChannelMessage
from pushd.channels.outbound_url import CheckedUrl


def channel_message(channel: str, address: Mapping[str, str], /, **fields: Any) -> ChannelMessage:
    """Delivery dlv-1 of notification ntf-1 to user usr-1 at `address`, "Build failed" /
    "main is red", unless `fields` say otherwise (`address` among them)."""
    defaults: dict[str, Any] = {
        "delivery_id": "dlv-1",
        "notification_id": "ntf-1",
        "user_id": "usr-1",
        "channel": channel,
        "address": address,
        "title": "Build failed",
        "body": "main is red",
    }
    return ChannelMessage(**(defaults | fields))


AiohttpServer = Callable[[web.Application], Coroutine[Any, Any, TestServer]]
"""pytest-aiohttp's `aiohttp_server` fixture: serves an app on loopback, on this event
loop, and stops it after the test. Every local provider that is an aiohttp app (FCM,
Twilio, a push service, a webhook receiver, an SMS API) is served with it."""


async def served(aiohttp_server: AiohttpServer, app: web.Application) -> str:
    """Serve `app` for the test; its base URL (`http://127.0.0.1:<port>`)."""
    server = await aiohttp_server(app)
    return f"http://{server.host}:{server.port}"


def closed_port_url(scheme: str = "http") -> str:
    """A loopback URL nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}"


def json_answer(body: Any, status: int, retry_after: str | None = None) -> web.Response:
    """A local provider's JSON answer, with `Retry-After` when one is given."""
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response(body, status=status, headers=headers)


# TLS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A server's certificate and key (PEM); the certificate is also the CA file a
    client trusts."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side context with this certificate (reads the files: call it off
        the event loop, e.g. in a sync fixture)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def self_signed_tls(directory: Path, common_name: str) -> TlsFiles:
    """A P-256 key and a self-signed certificate for 127.0.0.1 and localhost, valid for
    a day, written to `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(cert=directory / "cert.pem", key=directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_text(pkcs8_pem(key))
    return files


def pkcs8_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    """A private key as PEM text without a password (PKCS #8), as keys are handed out:
    Apple's .p8 APNs key, a Google service account's `private_key`, a VAPID key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# Outbound URL checks ---------------------------------------------------------------


async def allow_every_url(url: str) -> None:
    """The outbound URL check of tests whose local endpoint is http on loopback, which
    the real check refuses: allows it, and lets the client resolve the host."""


def pinning_check(host: str, *addresses: str) -> Callable[[str], Coroutine[Any, Any, CheckedUrl]]:
    """A check that approves `host` at `addresses` only, as the real one returns them."""

    async def check(url: str) -> CheckedUrl:
        return CheckedUrl(url=url, host=host, port=0, addresses=addresses)

    return check


# Time --------------------------------------------------------------------------------


@dataclass
class FakeClock:
    """A clock for a sender's injected `clock`. Starts at the real time (so that JWTs it
    dates are valid for a real verifier) and moves only when the test says."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
