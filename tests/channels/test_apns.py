"""The APNs provider (pushd/channels/apns.py) against a local APNs that speaks HTTP/2
over TLS and checks the provider token and headers as Apple does
(tests/channels/local_apns.py)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from actors.channel_sender import (
    AddressGoneError,
    ChannelMessage,
    ChannelSender,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from pushd.channels.apns import (
    TOKEN_MIN_AGE_SECONDS,
    TOKEN_RENEW_AFTER_SECONDS,
    ApnsProviderConfig,
    ApnsSender,
)
from pushd.config.settings import ConfigError
from tests.channels.harness import (
    FakeClock,
    TlsFiles,
    channel_message,
    closed_port_url,
    pkcs8_pem,
    self_signed_tls,
)
from tests.channels.local_apns import ApnsAnswer, LocalApns, serving

TEAM_ID = "5A7TEAM123"
KEY_ID = "ABC123DEFG"
TOPIC = "com.example.pushd"
DEVICE = "a1" * 32
MINUTE = 60.0


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return self_signed_tls(tmp_path_factory.mktemp("apns-tls"), "local APNs")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # the sender's wall clock; the local APNs reads it too, plus its skew


@pytest.fixture
async def apns(
    signing_key: ec.EllipticCurvePrivateKey, tls: TlsFiles, clock: FakeClock
) -> AsyncIterator[tuple[LocalApns, str]]:
    local = LocalApns(
        public_key=signing_key.public_key(),
        team_id=TEAM_ID,
        key_id=KEY_ID,
        topic=TOPIC,
        clock=clock,
    )
    async with serving(local, tls) as base_url:
        yield local, base_url


def config(base_url: str, key: str, tls: TlsFiles, **overrides: Any) -> ApnsProviderConfig:
    fields: dict[str, Any] = {
        "name": "apns-main",
        "team_id": TEAM_ID,
        "key_id": KEY_ID,
        "private_key": key,
        "base_url": base_url,
        "topic": TOPIC,
        "ca_file": str(tls.cert),
    }
    return ApnsProviderConfig(**(fields | overrides))


@pytest.fixture
async def local(apns: tuple[LocalApns, str]) -> LocalApns:
    return apns[0]


@pytest.fixture
async def sender(
    apns: tuple[LocalApns, str],
    signing_key: ec.EllipticCurvePrivateKey,
    tls: TlsFiles,
    clock: FakeClock,
) -> AsyncIterator[ApnsSender]:
    sender = ApnsSender(config(apns[1], pkcs8_pem(signing_key), tls), clock=clock)
    yield sender
    await sender.aclose()  # before the server stops, which waits for open connections


def message(token: str = DEVICE, **overrides: Any) -> ChannelMessage:
    return channel_message("apns", {"token": token}, **overrides)


async def test_a_notification_round_trips_over_http2(
    local: LocalApns, sender: ApnsSender, clock: FakeClock
) -> None:
    receipt = await sender.send(
        message(
            data={"build": 1234, "url": "https://ci.example.com/1234"},
            priority="high",
            ttl_seconds=3600,
            collapse_key="build-main",
        )
    )

    [push] = local.received
    assert receipt.provider_message_id == push.apns_id
    assert push.http_version == "2"
    assert push.device_token == DEVICE
    assert push.headers == {
        "apns-topic": TOPIC,
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": str(int(clock.now) + 3600),
        "apns-collapse-id": "build-main",
    }
    assert push.payload == {
        "aps": {"alert": {"title": "Build failed", "body": "main is red"}},
        "build": 1234,
        "url": "https://ci.example.com/1234",
    }


async def test_concurrent_sends_share_one_connection(local: LocalApns, sender: ApnsSender) -> None:
    """Apple asks providers to keep a connection open and multiplex; opening one per
    notification is treated as a denial-of-service attack."""
    await asyncio.gather(*(sender.send(message()) for _ in range(20)))
    await sender.send(message())
    assert len(local.received) == 21
    assert len({push.connection for push in local.received}) == 1


async def test_normal_critical_and_silent_notifications(
    local: LocalApns, sender: ApnsSender
) -> None:
    await sender.send(message(priority="normal"))
    await sender.send(message(priority="critical", address={"token": DEVICE, "topic": TOPIC}))
    await sender.send(message(title=None, body=None, data={"sync": "inbox"}, priority="high"))

    normal, critical, silent = local.received
    assert normal.headers["apns-priority"] == "5"
    assert critical.headers["apns-priority"] == "10"
    assert critical.payload["aps"]["sound"] == "default"
    assert (silent.headers["apns-push-type"], silent.headers["apns-priority"]) == (
        "background",
        "5",
    )
    assert silent.payload == {"aps": {"content-available": 1}, "sync": "inbox"}


async def test_data_cannot_replace_aps(local: LocalApns, sender: ApnsSender) -> None:
    await sender.send(message(data={"aps": {"badge": 99}}))
    assert local.received[0].payload == {
        "aps": {"alert": {"title": "Build failed", "body": "main is red"}}
    }


async def test_a_long_collapse_key_is_hashed_to_fit(local: LocalApns, sender: ApnsSender) -> None:
    long_key = "build-" + "x" * 100
    await sender.send(message(collapse_key=long_key))
    await sender.send(message(collapse_key=long_key))
    first, second = (push.headers["apns-collapse-id"] for push in local.received)
    assert first == second == hashlib.sha256(long_key.encode()).hexdigest()


async def test_the_provider_token_is_reused_then_renewed_after_50_minutes(
    local: LocalApns, sender: ApnsSender, clock: FakeClock
) -> None:
    await sender.send(message())
    clock.advance(TOKEN_RENEW_AFTER_SECONDS - 1)
    await sender.send(message())
    assert len(local.provider_tokens) == 1
    clock.advance(1)
    await sender.send(message())
    assert len(local.provider_tokens) == 2
    assert len(local.received) == 3


async def test_an_expired_provider_token_is_renewed_and_the_send_retried_once(
    local: LocalApns, sender: ApnsSender, clock: FakeClock
) -> None:
    await sender.send(message())
    clock.advance(25 * MINUTE)
    local.skew = 40 * MINUTE  # Apple's clock ahead: the 25-minute token is 65 to it

    receipt = await sender.send(message())

    assert receipt.provider_message_id == local.received[-1].apns_id
    assert len(local.provider_tokens) == 2
    assert (local.requests, len(local.received)) == (3, 2)


async def test_a_young_token_called_expired_means_a_wrong_clock(
    local: LocalApns, sender: ApnsSender
) -> None:
    """Renewing a token under 20 minutes old would not help (the clock is behind) and
    Apple counts it against TooManyProviderTokenUpdates: fail, naming the clock."""
    local.skew = 61 * MINUTE
    with pytest.raises(PermanentSendError, match="clock") as info:
        await sender.send(message())
    assert info.value.provider_code == "ExpiredProviderToken"
    assert local.requests == 1


async def test_a_renewed_token_called_expired_again_is_permanent(
    local: LocalApns, sender: ApnsSender, clock: FakeClock
) -> None:
    await sender.send(message())
    clock.advance(TOKEN_MIN_AGE_SECONDS)
    local.skew = 100 * MINUTE
    with pytest.raises(PermanentSendError, match="clock"):
        await sender.send(message())
    assert local.requests == 3  # the first send, then one retry, no loop


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        pytest.param(ApnsAnswer(410, "Unregistered"), AddressGoneError, id="unregistered"),
        pytest.param(ApnsAnswer(410, "ExpiredToken"), AddressGoneError, id="expired-token"),
        pytest.param(ApnsAnswer(400, "BadDeviceToken"), AddressGoneError, id="bad-token"),
        pytest.param(
            ApnsAnswer(400, "DeviceTokenNotForTopic"), AddressGoneError, id="not-for-topic"
        ),
        pytest.param(ApnsAnswer(429, "TooManyRequests"), TransientSendError, id="too-many"),
        pytest.param(ApnsAnswer(500, "InternalServerError"), TransientSendError, id="500"),
        pytest.param(ApnsAnswer(503, "ServiceUnavailable"), TransientSendError, id="503"),
        pytest.param(ApnsAnswer(403, "Forbidden"), PermanentSendError, id="forbidden"),
    ],
)
async def test_refusals_map_to_the_channel_outcomes(
    local: LocalApns, sender: ApnsSender, answer: ApnsAnswer, outcome: type[SendError]
) -> None:
    local.answers[DEVICE] = answer
    with pytest.raises(SendError) as info:
        await sender.send(message())
    assert type(info.value) is outcome
    assert info.value.provider_code == answer.reason


async def test_too_many_requests_honours_retry_after(local: LocalApns, sender: ApnsSender) -> None:
    local.answers[DEVICE] = ApnsAnswer(429, "TooManyRequests", {"retry-after": "12"})
    with pytest.raises(TransientSendError) as info:
        await sender.send(message())
    assert info.value.retry_after == 12.0


async def test_a_token_signed_with_another_key_is_refused(
    apns: tuple[LocalApns, str], tls: TlsFiles
) -> None:
    """The local APNs really verifies the ES256 signature."""
    local, base_url = apns
    async with aclosing(
        ApnsSender(config(base_url, pkcs8_pem(ec.generate_private_key(ec.SECP256R1())), tls))
    ) as sender:
        with pytest.raises(PermanentSendError, match="revoked") as info:
            await sender.send(message())
    assert info.value.provider_code == "InvalidProviderToken"
    assert local.received == []


async def test_another_apps_topic_is_refused(local: LocalApns, sender: ApnsSender) -> None:
    with pytest.raises(PermanentSendError) as info:
        await sender.send(message(address={"token": DEVICE, "topic": "com.example.other"}))
    assert type(info.value) is PermanentSendError
    assert info.value.provider_code == "TopicDisallowed"


async def test_a_token_that_is_not_hex_never_reaches_the_url(
    local: LocalApns, sender: ApnsSender
) -> None:
    with pytest.raises(AddressGoneError) as info:
        await sender.send(message(token="../../3/device/" + DEVICE))
    assert info.value.provider_code == "BadDeviceToken"
    assert local.requests == 0


async def test_no_topic_anywhere_is_permanent(
    apns: tuple[LocalApns, str], signing_key: ec.EllipticCurvePrivateKey, tls: TlsFiles
) -> None:
    async with aclosing(
        ApnsSender(config(apns[1], pkcs8_pem(signing_key), tls, topic=""))
    ) as sender:
        with pytest.raises(PermanentSendError, match="bundle id") as info:
            await sender.send(message())
    assert info.value.provider_code == "MissingTopic"


async def test_an_unreachable_apns_is_transient(
    signing_key: ec.EllipticCurvePrivateKey, tls: TlsFiles
) -> None:
    async with aclosing(
        ApnsSender(config(closed_port_url("https"), pkcs8_pem(signing_key), tls))
    ) as sender:
        with pytest.raises(TransientSendError) as info:
            await sender.send(message())
    assert info.value.provider_code == "unreachable"


async def test_the_key_may_be_a_p8_file(
    apns: tuple[LocalApns, str],
    signing_key: ec.EllipticCurvePrivateKey,
    tls: TlsFiles,
    tmp_path: Path,
) -> None:
    key_file = tmp_path / f"AuthKey_{KEY_ID}.p8"
    key_file.write_text(pkcs8_pem(signing_key))
    async with aclosing(ApnsSender(config(apns[1], str(key_file), tls))) as sender:
        await sender.send(message())
    assert len(apns[0].received) == 1


async def test_it_is_a_channel_sender(sender: ApnsSender) -> None:
    typed: ChannelSender = sender
    assert (typed.channel, typed.provider) == ("apns", "apns-main")
    await sender.aclose()
    await sender.aclose()  # idempotent


def test_the_config_names_what_is_wrong(tls: TlsFiles) -> None:
    url = "https://127.0.0.1:1"
    with pytest.raises(ConfigError, match=r"readable \.p8 file"):
        ApnsSender(config(url, "/nonexistent/AuthKey.p8", tls))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ConfigError, match="not a P-256 key"):
        ApnsSender(config(url, pkcs8_pem(rsa_key), tls))
    with pytest.raises(msgspec.ValidationError, match="unknown field `certificate`"):
        msgspec.convert({"name": "x", "certificate": "x.pem"}, ApnsProviderConfig)
