"""The web push provider (pushd/channels/webpush.py) against RFC 8291's worked example
and a local push service that verifies VAPID and decrypts like a browser
(tests/channels/webpush_endpoint.py)."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from actors.channel_sender import (
    AddressGoneError,
    ChannelMessage,
    ChannelSender,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from pushd.channels.webpush import (
    MAX_PLAINTEXT_BYTES,
    VAPID_RENEW_BEFORE,
    VAPID_TOKEN_LIFETIME,
    WebPushProviderConfig,
    WebPushSender,
    encrypt_payload,
    endpoint_origin,
    load_vapid_private_key,
    push_topic,
    vapid_public_key,
)
from tests.channels.harness import (
    AiohttpServer,
    FakeClock,
    allow_every_url,
    channel_message,
    closed_port_url,
    pinning_check,
    pkcs8_pem,
    served,
)
from tests.channels.webpush_endpoint import PushEndpoint, b64url, decrypt_push, unb64url

# RFC 8291, section 5 and Appendix A (identical in the webpush-wg draft it was published
# from). Every value is copied from the RFC; none is computed by pushd.
RFC_PLAINTEXT = unb64url("V2hlbiBJIGdyb3cgdXAsIEkgd2FudCB0byBiZSBhIHdhdGVybWVsb24")
RFC_AS_PUBLIC = (
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
)
RFC_AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
RFC_UA_PUBLIC = (
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
)
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_SALT = "DGv6ra1nlYgDCS1FRnbzlw"
RFC_AUTH_SECRET = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml"
    "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT"
    "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)

SUBJECT = "mailto:ops@example.com"


def rfc_key(private: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(unb64url(private), "big"), ec.SECP256R1())


def config(**overrides: Any) -> WebPushProviderConfig:
    fields: dict[str, Any] = {
        "name": "vapid-main",
        "vapid_private_key": pkcs8_pem(ec.generate_private_key(ec.SECP256R1())),
        "vapid_subject": SUBJECT,
    }
    return WebPushProviderConfig(**(fields | overrides))


def message(address: dict[str, str], **fields: Any) -> ChannelMessage:
    defaults: dict[str, Any] = {"title": "Build finished", "body": "main is green"}
    return channel_message("webpush", address, **(defaults | fields))


@pytest.fixture
async def endpoint(aiohttp_server: AiohttpServer) -> PushEndpoint:
    endpoint = PushEndpoint()
    endpoint.origin = await served(aiohttp_server, endpoint.app())
    return endpoint


@pytest.fixture
async def sender() -> AsyncIterator[WebPushSender]:
    sender = WebPushSender(config(), check_url=allow_every_url)
    yield sender
    await sender.aclose()


# RFC 8291 ---------------------------------------------------------------------------


def test_encryption_reproduces_rfc8291_appendix_a_byte_for_byte() -> None:
    ua_public = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), unb64url(RFC_UA_PUBLIC)
    )
    body = encrypt_payload(
        RFC_PLAINTEXT,
        ua_public,
        unb64url(RFC_AUTH_SECRET),
        salt=unb64url(RFC_SALT),
        sender_key=rfc_key(RFC_AS_PRIVATE),
    )
    assert b64url(body) == RFC_BODY


def test_the_endpoint_decrypts_the_rfc_example_as_a_browser_would() -> None:
    """The round-trip tests trust the local endpoint's decryption: check it on the RFC's
    own message first, with the user agent's private key."""
    plaintext = decrypt_push(unb64url(RFC_BODY), rfc_key(RFC_UA_PRIVATE), unb64url(RFC_AUTH_SECRET))
    assert plaintext == b"When I grow up, I want to be a watermelon"


def test_two_encryptions_of_one_payload_differ() -> None:
    """A fresh key pair and salt per message: a reused one would reuse the AES-GCM key."""
    ua_key = rfc_key(RFC_UA_PRIVATE)
    auth = unb64url(RFC_AUTH_SECRET)
    first = encrypt_payload(b"same", ua_key.public_key(), auth)
    second = encrypt_payload(b"same", ua_key.public_key(), auth)
    assert first[:16] != second[:16]  # salt
    assert first[21:86] != second[21:86]  # sender public key
    assert decrypt_push(first, ua_key, auth) == decrypt_push(second, ua_key, auth) == b"same"


def test_a_payload_larger_than_one_push_message_is_refused() -> None:
    ua_key = rfc_key(RFC_UA_PRIVATE)
    auth = unb64url(RFC_AUTH_SECRET)
    body = encrypt_payload(b"x" * MAX_PLAINTEXT_BYTES, ua_key.public_key(), auth)
    assert len(body) == 4096
    with pytest.raises(ValueError, match="at most 3993"):
        encrypt_payload(b"x" * (MAX_PLAINTEXT_BYTES + 1), ua_key.public_key(), auth)


# Keys and configuration -------------------------------------------------------------


def test_vapid_public_key_from_a_raw_or_pem_private_key() -> None:
    raw = config(vapid_private_key=RFC_AS_PRIVATE)
    as_pem = config(vapid_private_key=pkcs8_pem(rfc_key(RFC_AS_PRIVATE)))
    assert vapid_public_key(raw) == vapid_public_key(as_pem) == RFC_AS_PUBLIC


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("c2hvcnQ", "32 bytes"),
        ("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----", "PEM"),
    ],
)
def test_an_unreadable_vapid_key_is_named_without_echoing_it(key: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        load_vapid_private_key(key)
    assert key not in str(info.value)


def test_a_vapid_key_on_another_curve_is_refused() -> None:
    with pytest.raises(ValueError, match="P-256"):
        load_vapid_private_key(pkcs8_pem(ec.generate_private_key(ec.SECP384R1())))


def test_config_is_checked_when_decoded() -> None:
    good = {"name": "main", "vapid_private_key": RFC_AS_PRIVATE, "vapid_subject": SUBJECT}
    decoded = msgspec.convert(good, WebPushProviderConfig)
    assert (decoded.ttl, decoded.timeout, decoded.max_connections) == (86_400, 10.0, 100)
    with pytest.raises(msgspec.ValidationError, match="mailto"):
        msgspec.convert(good | {"vapid_subject": "ops@example.com"}, WebPushProviderConfig)
    with pytest.raises(msgspec.ValidationError, match="vapid_private_key"):
        msgspec.convert(good | {"vapid_private_key": "c2hvcnQ"}, WebPushProviderConfig)
    with pytest.raises(msgspec.ValidationError, match="ttl_seconds"):
        msgspec.convert(good | {"ttl_seconds": 60}, WebPushProviderConfig)


@pytest.mark.parametrize(
    ("endpoint", "origin"),
    [
        ("https://FCM.googleapis.com/fcm/send/abc", "https://fcm.googleapis.com"),
        ("https://push.example.net:443/p/1", "https://push.example.net"),
        ("https://push.example.net:8443/p/1", "https://push.example.net:8443"),
        ("https://[2001:db8::1]:8443/p", "https://[2001:db8::1]:8443"),
        ("http://127.0.0.1:9000/push/x", "http://127.0.0.1:9000"),
    ],
)
def test_the_vapid_audience_is_the_endpoint_origin(endpoint: str, origin: str) -> None:
    assert endpoint_origin(endpoint) == origin


def test_topic_is_32_base64url_characters_and_keeps_keys_apart() -> None:
    assert push_topic("build-42_main") == "build-42_main"
    long_a, long_b = "x" * 40 + "a", "x" * 40 + "b"
    dotted = push_topic("deploy.prod")
    for topic in (push_topic(long_a), push_topic(long_b), dotted):
        assert len(topic) == 32
        assert set(topic) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert push_topic(long_a) != push_topic(long_b)
    assert dotted != push_topic("deployprod")


# Sending ----------------------------------------------------------------------------


async def test_the_sender_is_a_channel_sender(sender: WebPushSender) -> None:
    typed: ChannelSender = sender
    assert (typed.channel, typed.provider) == ("webpush", "vapid-main")


async def test_a_push_round_trips_to_the_browser(
    endpoint: PushEndpoint, sender: WebPushSender
) -> None:
    address = endpoint.subscribe(sender.vapid_public_key)
    receipt = await sender.send(
        message(
            address,
            data={"url": "/builds/42", "n": 3},
            content={"title": "Build 42 finished"},
            ttl_seconds=600,
        )
    )
    assert endpoint.rejected == []
    assert endpoint.payloads(address) == [
        {
            "id": "ntf-1",
            "title": "Build 42 finished",
            "body": "main is green",
            "data": {"url": "/builds/42", "n": 3},
        }
    ]
    (push,) = endpoint.received
    assert receipt.provider_message_id == f"{endpoint.origin}/m/1"
    assert push.headers["TTL"] == "600"
    assert push.headers["Content-Encoding"] == "aes128gcm"
    assert "Topic" not in push.headers
    assert push.vapid.claims["aud"] == endpoint.origin
    assert push.vapid.claims["sub"] == SUBJECT
    assert push.vapid.claims["exp"] <= time.time() + 24 * 3600
    assert push.vapid.public_key == sender.vapid_public_key


@pytest.mark.parametrize(
    ("priority", "urgency"),
    [("low", "low"), ("normal", "normal"), ("high", "high"), ("critical", "high")],
)
async def test_headers_follow_priority_ttl_and_collapse_key(
    endpoint: PushEndpoint, sender: WebPushSender, priority: str, urgency: str
) -> None:
    address = endpoint.subscribe(sender.vapid_public_key)
    await sender.send(message(address, priority=priority, collapse_key="build:main/42"))
    (push,) = endpoint.received
    assert push.headers["Urgency"] == urgency
    assert push.headers["TTL"] == "86400"  # the provider's default: the message set none
    assert push.headers["Topic"] == push_topic("build:main/42")


async def test_each_subscription_gets_its_own_encryption(
    endpoint: PushEndpoint, sender: WebPushSender
) -> None:
    addresses = [endpoint.subscribe(sender.vapid_public_key) for _ in range(30)]
    async with asyncio.TaskGroup() as group:
        for index, address in enumerate(addresses):
            group.create_task(sender.send(message(address, notification_id=f"n{index}")))
    assert endpoint.rejected == []
    for index, address in enumerate(addresses):
        assert [payload["id"] for payload in endpoint.payloads(address)] == [f"n{index}"]


async def test_the_vapid_token_is_reused_until_shortly_before_expiry(
    endpoint: PushEndpoint,
) -> None:
    clock = FakeClock()
    async with aclosing(WebPushSender(config(), check_url=allow_every_url, clock=clock)) as sender:
        address = endpoint.subscribe(sender.vapid_public_key)
        for _ in range(3):
            await sender.send(message(address))
        clock.advance(VAPID_TOKEN_LIFETIME - VAPID_RENEW_BEFORE - 10)
        await sender.send(message(address))
        clock.advance(20)  # now less than VAPID_RENEW_BEFORE is left: sign a new one
        await sender.send(message(address))
    assert endpoint.rejected == []
    tokens = [push.vapid.token for push in endpoint.received]
    # ES256 signatures are randomised: signing per push would make every token differ.
    assert tokens[:4] == [tokens[0]] * 4
    assert tokens[4] != tokens[0]


async def test_pushes_reuse_one_connection(endpoint: PushEndpoint, sender: WebPushSender) -> None:
    """Keep-alive holds across refused pushes too."""
    address = endpoint.subscribe(sender.vapid_public_key)
    failing = endpoint.subscribe(sender.vapid_public_key)
    endpoint.answer(failing, 500)
    for _ in range(3):
        await sender.send(message(address))
        with pytest.raises(TransientSendError):
            await sender.send(message(failing))
    assert len({push.peer for push in endpoint.received}) == 1


@pytest.mark.parametrize(
    ("status", "headers", "outcome"),
    [
        (404, {}, (AddressGoneError, None)),
        (410, {}, (AddressGoneError, None)),
        (413, {}, (PermanentSendError, None)),
        (429, {"Retry-After": "7"}, (TransientSendError, 7.0)),
        (500, {}, (TransientSendError, None)),
        (503, {"Retry-After": "120"}, (TransientSendError, 120.0)),
        (400, {}, (PermanentSendError, None)),
        (401, {}, (PermanentSendError, None)),
        (403, {}, (PermanentSendError, None)),
        (307, {"Location": "http://127.0.0.1:1/elsewhere"}, (PermanentSendError, None)),
    ],
)
async def test_answers_map_to_the_channel_outcomes(
    endpoint: PushEndpoint,
    sender: WebPushSender,
    status: int,
    headers: dict[str, str],
    outcome: tuple[type[SendError], float | None],
) -> None:
    """`outcome` is the exception and, for a transient one, its retry_after. The 307
    case guards against following redirects: its target would escape the URL check."""
    expected, retry_after = outcome
    address = endpoint.subscribe(sender.vapid_public_key)
    endpoint.answer(address, status, headers)
    with pytest.raises(SendError) as info:
        await sender.send(message(address))
    assert type(info.value) is expected
    assert info.value.provider_code == str(status)
    assert "canned" in str(info.value)  # the push service's explanation is kept
    assert address["endpoint"] not in str(info.value)  # the endpoint path is a secret
    if isinstance(info.value, TransientSendError):
        assert info.value.retry_after == retry_after


async def test_retry_after_as_an_http_date(endpoint: PushEndpoint, sender: WebPushSender) -> None:
    address = endpoint.subscribe(sender.vapid_public_key)
    endpoint.answer(
        address, 429, {"Retry-After": email.utils.formatdate(time.time() + 30, usegmt=True)}
    )
    with pytest.raises(TransientSendError) as info:
        await sender.send(message(address))
    assert info.value.retry_after == pytest.approx(30, abs=2)


async def test_a_key_the_browser_did_not_subscribe_with_is_refused(
    endpoint: PushEndpoint, sender: WebPushSender
) -> None:
    other_key = WebPushSender(config(), check_url=allow_every_url).vapid_public_key
    address = endpoint.subscribe(other_key)
    with pytest.raises(PermanentSendError, match="VAPID"):
        await sender.send(message(address))
    assert endpoint.rejected[0][0] == 403


async def test_a_slow_push_service_is_transient(endpoint: PushEndpoint) -> None:
    async with aclosing(WebPushSender(config(timeout=0.2), check_url=allow_every_url)) as sender:
        endpoint.delay = 2.0
        with pytest.raises(TransientSendError):
            await sender.send(message(endpoint.subscribe(sender.vapid_public_key)))


async def test_an_unreachable_push_service_is_transient(sender: WebPushSender) -> None:
    endpoint = PushEndpoint()
    endpoint.origin = closed_port_url()
    with pytest.raises(TransientSendError, match="unreachable"):
        await sender.send(message(endpoint.subscribe(sender.vapid_public_key)))


async def test_an_endpoint_refused_by_the_url_check_is_permanent(endpoint: PushEndpoint) -> None:
    checked: list[str] = []

    async def refuse_loopback(url: str) -> None:
        checked.append(url)
        raise ValueError("127.0.0.1 is a loopback address")

    async with aclosing(WebPushSender(config(), check_url=refuse_loopback)) as sender:
        address = endpoint.subscribe(sender.vapid_public_key)
        with pytest.raises(PermanentSendError, match="loopback") as info:
            await sender.send(message(address))
    assert type(info.value) is PermanentSendError
    assert info.value.provider_code == "endpoint_refused"
    assert checked == [address["endpoint"]]
    assert endpoint.pushes == 0


async def test_the_push_goes_to_the_checked_address(endpoint: PushEndpoint) -> None:
    """The check resolved the endpoint's host; the push must go where it said, not to a
    new DNS answer (a rebinding DNS could answer a private address the second time). The
    `.test` name resolves nowhere, so only the checked address can have been used."""
    port = endpoint.origin.rsplit(":", 1)[1]
    endpoint.origin = f"http://push.example.test:{port}"  # the VAPID audience too
    check = pinning_check("push.example.test", "127.0.0.1")
    async with aclosing(WebPushSender(config(), check_url=check)) as sender:
        await sender.send(message(endpoint.subscribe(sender.vapid_public_key)))
    assert endpoint.rejected == []
    [push] = endpoint.received
    assert push.headers["Host"] == f"push.example.test:{port}"


async def test_a_failing_url_check_lookup_is_transient(endpoint: PushEndpoint) -> None:
    async def dns_down(url: str) -> None:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    async with aclosing(WebPushSender(config(), check_url=dns_down)) as sender:
        with pytest.raises(TransientSendError, match="name resolution"):
            await sender.send(message(endpoint.subscribe(sender.vapid_public_key)))


@pytest.mark.parametrize(
    "broken",
    [
        {"p256dh": "bm90IGEga2V5"},
        {"auth": "c2hvcnQ"},
        {"endpoint": ""},
        {"endpoint": "ftp://push.example.net/x"},
    ],
)
async def test_an_unusable_subscription_is_permanent(
    endpoint: PushEndpoint, sender: WebPushSender, broken: dict[str, str]
) -> None:
    address = endpoint.subscribe(sender.vapid_public_key) | broken
    with pytest.raises(PermanentSendError, match="subscription is unusable") as info:
        await sender.send(message(address))
    assert type(info.value) is PermanentSendError
    assert endpoint.pushes == 0


async def test_a_payload_too_large_is_permanent_and_not_sent(
    endpoint: PushEndpoint, sender: WebPushSender
) -> None:
    address = endpoint.subscribe(sender.vapid_public_key)
    with pytest.raises(PermanentSendError, match="payload"):
        await sender.send(message(address, data={"blob": "x" * 4000}))
    assert endpoint.pushes == 0


async def test_aclose_is_idempotent_and_ends_sending(
    endpoint: PushEndpoint, sender: WebPushSender
) -> None:
    address = endpoint.subscribe(sender.vapid_public_key)
    await sender.send(message(address))
    await sender.aclose()
    await sender.aclose()
    with pytest.raises(RuntimeError, match="after aclose"):
        await sender.send(message(address))
