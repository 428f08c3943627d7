"""The FCM HTTP v1 provider (pushd/channels/fcm.py) against a local FCM that verifies
the service-account grant, checks the access tokens it issued and the v1 message schema
(tests/channels/local_fcm.py)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from actors.channel_sender import (
    AddressGoneError,
    ChannelMessage,
    ChannelSender,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from pushd.channels.fcm import FcmProviderConfig, FcmSender
from pushd.channels.google_oauth import REFRESH_MARGIN_SECONDS
from pushd.config.settings import ConfigError
from tests.channels import local_fcm
from tests.channels.harness import (
    AiohttpServer,
    FakeClock,
    channel_message,
    closed_port_url,
    pkcs8_pem,
    served,
)
from tests.channels.local_fcm import FcmAnswer, LocalFcm

PROJECT = "pushd-test"
CLIENT_EMAIL = "pushd-sender@pushd-test.iam.gserviceaccount.com"
KEY_ID = "0123456789abcdef"
DEVICE = "dGVzdC1kZXZpY2U6QVBBOTFiRnVuZHJ5"


@pytest.fixture(scope="module")
def account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def fcm(aiohttp_server: AiohttpServer, account_key: rsa.RSAPrivateKey) -> LocalFcm:
    local = LocalFcm(
        public_key=account_key.public_key(),
        key_id=KEY_ID,
        client_email=CLIENT_EMAIL,
        project_id=PROJECT,
    )
    local.token_url = await served(aiohttp_server, local.app()) + "/token"
    return local


def base_url(fcm: LocalFcm) -> str:
    return fcm.token_url.removesuffix("/token")


def service_account(fcm: LocalFcm, key: rsa.RSAPrivateKey) -> str:
    """A service-account key file as the Firebase console hands it out."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": KEY_ID,
            "private_key": pkcs8_pem(key),
            "client_email": CLIENT_EMAIL,
            "client_id": "104857600000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": fcm.token_url,
            "universe_domain": "googleapis.com",
        }
    )


def config(fcm: LocalFcm, key: rsa.RSAPrivateKey, **overrides: Any) -> FcmProviderConfig:
    fields: dict[str, Any] = {
        "name": "firebase-main",
        "service_account_json": service_account(fcm, key),
        "base_url": base_url(fcm),
    }
    return FcmProviderConfig(**(fields | overrides))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(now=1000.0)  # stands in for time.monotonic


@pytest.fixture
async def sender(
    fcm: LocalFcm, account_key: rsa.RSAPrivateKey, clock: FakeClock
) -> AsyncIterator[FcmSender]:
    sender = FcmSender(config(fcm, account_key), clock=clock)
    yield sender
    await sender.aclose()


def message(token: str = DEVICE, **overrides: Any) -> ChannelMessage:
    return channel_message("fcm", {"token": token}, **overrides)


async def test_a_message_round_trips_in_the_v1_format(fcm: LocalFcm, sender: FcmSender) -> None:
    receipt = await sender.send(
        message(
            data={"build": 1234, "branch": "main", "green": False, "tags": ["ci"]},
            content={"title": "CI"},
            priority="high",
            ttl_seconds=600,
            collapse_key="build-main",
        )
    )

    assert receipt.provider_message_id == f"projects/{PROJECT}/messages/0:1"
    [sent] = fcm.accepted
    assert sent["token"] == DEVICE
    assert sent["notification"] == {"title": "CI", "body": "main is red"}
    assert sent["data"] == {"build": "1234", "branch": "main", "green": "false", "tags": '["ci"]'}
    assert sent["android"] == {"priority": "HIGH", "ttl": "600s", "collapse_key": "build-main"}
    apns_headers = sent["apns"]["headers"]
    assert apns_headers["apns-priority"] == "10"
    assert apns_headers["apns-push-type"] == "alert"
    assert apns_headers["apns-collapse-id"] == "build-main"
    assert int(apns_headers["apns-expiration"]) == pytest.approx(time.time() + 600, abs=5)
    assert sent["webpush"] == {"headers": {"TTL": "600", "Urgency": "high"}}


async def test_a_silent_low_priority_message(fcm: LocalFcm, sender: FcmSender) -> None:
    await sender.send(message(title=None, body=None, data={"sync": "inbox"}, priority="low"))

    [sent] = fcm.accepted
    assert "notification" not in sent
    assert sent["android"] == {"priority": "NORMAL"}
    assert sent["apns"]["headers"] == {"apns-push-type": "background", "apns-priority": "5"}
    assert sent["apns"]["payload"] == {"aps": {"content-available": 1}}
    assert sent["webpush"] == {"headers": {"Urgency": "low"}}


async def test_a_critical_message_rings(fcm: LocalFcm, sender: FcmSender) -> None:
    await sender.send(message(priority="critical", ttl_seconds=0))

    [sent] = fcm.accepted
    assert sent["apns"]["payload"] == {"aps": {"sound": "default"}}
    assert sent["apns"]["headers"]["apns-expiration"] == "0"  # try once, do not store
    assert sent["android"]["ttl"] == "0s"


async def test_the_access_token_is_reused_across_sends(fcm: LocalFcm, sender: FcmSender) -> None:
    for _ in range(3):
        await sender.send(message())
    assert (fcm.grants, len(fcm.accepted)) == (1, 3)


async def test_concurrent_sends_share_one_grant(fcm: LocalFcm, sender: FcmSender) -> None:
    """Guards the lock: a burst of sends with no token yet must not start a grant each
    (Google rate-limits the token endpoint)."""
    await asyncio.gather(*(sender.send(message()) for _ in range(20)))
    assert (fcm.grants, len(fcm.accepted)) == (1, 20)


async def test_the_access_token_is_refreshed_shortly_before_it_expires(
    fcm: LocalFcm, sender: FcmSender, clock: FakeClock
) -> None:
    await sender.send(message())
    clock.advance(fcm.expires_in - REFRESH_MARGIN_SECONDS - 1)
    await sender.send(message())
    assert fcm.grants == 1
    clock.advance(2)
    await sender.send(message())
    assert fcm.grants == 2


async def test_a_refused_access_token_is_replaced_once(fcm: LocalFcm, sender: FcmSender) -> None:
    await sender.send(message())
    fcm.revoke_access_tokens()

    await sender.send(message())

    assert (fcm.grants, len(fcm.accepted)) == (2, 2)


async def test_an_access_token_refused_even_when_new_is_permanent(
    fcm: LocalFcm, sender: FcmSender
) -> None:
    fcm.refuse_every_access_token = True
    with pytest.raises(PermanentSendError) as info:
        await sender.send(message())
    assert type(info.value) is PermanentSendError
    assert info.value.provider_code == "UNAUTHENTICATED"
    assert fcm.grants == 2  # the first token, and one replacement: no loop


@pytest.mark.parametrize(
    ("answer", "outcome", "code"),
    [
        pytest.param(local_fcm.UNREGISTERED, AddressGoneError, "UNREGISTERED", id="unregistered"),
        pytest.param(
            local_fcm.INVALID_TOKEN, AddressGoneError, "INVALID_ARGUMENT", id="invalid-token"
        ),
        pytest.param(
            local_fcm.SENDER_ID_MISMATCH,
            PermanentSendError,
            "SENDER_ID_MISMATCH",
            id="sender-id-mismatch",
        ),
        pytest.param(
            local_fcm.THIRD_PARTY_AUTH_ERROR,
            PermanentSendError,
            "THIRD_PARTY_AUTH_ERROR",
            id="third-party-auth",
        ),
        pytest.param(local_fcm.INTERNAL, TransientSendError, "INTERNAL", id="internal"),
        pytest.param(local_fcm.unavailable(), TransientSendError, "UNAVAILABLE", id="unavailable"),
    ],
)
async def test_refusals_map_to_the_channel_outcomes(
    fcm: LocalFcm,
    sender: FcmSender,
    answer: FcmAnswer,
    outcome: type[SendError],
    code: str,
) -> None:
    fcm.answers[DEVICE] = answer
    with pytest.raises(SendError) as info:
        await sender.send(message())
    assert type(info.value) is outcome
    assert info.value.provider_code == code
    assert fcm.grants == 1  # none of these is taken for a refused access token


async def test_a_message_fcm_refuses_is_permanent_and_keeps_the_device(
    fcm: LocalFcm, sender: FcmSender
) -> None:
    """INVALID_ARGUMENT about the message, not the token, must not remove the device."""
    with pytest.raises(PermanentSendError) as info:
        await sender.send(message(data={"from": "ci"}))  # a key FCM reserves
    assert type(info.value) is PermanentSendError
    assert info.value.provider_code == "INVALID_ARGUMENT"
    assert "message.data: Invalid data payload key: from" in str(info.value)
    assert fcm.accepted == []


async def test_quota_exceeded_is_transient_after_retry_after(
    fcm: LocalFcm, sender: FcmSender
) -> None:
    fcm.answers[DEVICE] = local_fcm.quota_exceeded(retry_after="37")
    with pytest.raises(TransientSendError) as info:
        await sender.send(message())
    assert (info.value.provider_code, info.value.retry_after) == ("QUOTA_EXCEEDED", 37.0)


async def test_retry_after_may_be_an_http_date(fcm: LocalFcm, sender: FcmSender) -> None:
    fcm.answers[DEVICE] = local_fcm.unavailable(
        retry_after=email.utils.formatdate(time.time() + 120, usegmt=True)
    )
    with pytest.raises(TransientSendError) as info:
        await sender.send(message())
    assert info.value.retry_after == pytest.approx(120, abs=3)


async def test_an_assertion_signed_with_another_key_is_refused_for_good(
    fcm: LocalFcm, other_key: rsa.RSAPrivateKey
) -> None:
    """The local token endpoint really verifies the signature: a revoked key is a
    permanent failure naming the account, not a retry loop."""
    async with aclosing(FcmSender(config(fcm, other_key))) as sender:
        with pytest.raises(PermanentSendError) as info:
            await sender.send(message())
    assert info.value.provider_code == "oauth-invalid_grant"
    assert CLIENT_EMAIL in str(info.value)
    assert (fcm.grants, fcm.accepted) == (0, [])


async def test_an_unreachable_fcm_is_transient(
    fcm: LocalFcm, account_key: rsa.RSAPrivateKey
) -> None:
    async with aclosing(FcmSender(config(fcm, account_key, base_url=closed_port_url()))) as sender:
        with pytest.raises(TransientSendError) as info:
            await sender.send(message())
    assert info.value.provider_code == "unreachable"
    assert fcm.grants == 1


async def test_an_unreachable_token_endpoint_is_transient(
    fcm: LocalFcm, account_key: rsa.RSAPrivateKey
) -> None:
    token_url = closed_port_url() + "/token"
    async with aclosing(FcmSender(config(fcm, account_key, token_url=token_url))) as sender:
        with pytest.raises(TransientSendError) as info:
            await sender.send(message())
    assert info.value.provider_code == "oauth-unreachable"


async def test_a_service_account_file_works_like_inline_json(
    fcm: LocalFcm, account_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    key_file = tmp_path / "service-account.json"
    key_file.write_text(service_account(fcm, account_key))
    async with aclosing(
        FcmSender(
            config(fcm, account_key, service_account_json="", service_account_file=str(key_file))
        )
    ) as sender:
        await sender.send(message())
    assert len(fcm.accepted) == 1


async def test_it_is_a_channel_sender(sender: FcmSender) -> None:
    typed: ChannelSender = sender
    assert (typed.channel, typed.provider) == ("fcm", "firebase-main")
    await sender.aclose()
    await sender.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await sender.send(message())


async def test_a_message_without_token_is_permanent(sender: FcmSender) -> None:
    with pytest.raises(PermanentSendError, match="no `token`"):
        await sender.send(message(address={}))


async def test_the_config_names_what_is_wrong(
    fcm: LocalFcm, account_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        FcmSender(config(fcm, account_key, service_account_json=""))
    with pytest.raises(ConfigError, match="cannot be read"):
        FcmSender(
            config(fcm, account_key, service_account_json="", service_account_file="/nonexistent")
        )
    with pytest.raises(ConfigError, match="not a service-account key"):
        FcmSender(config(fcm, account_key, service_account_json='{"type": "user"}'))
    no_project = json.loads(service_account(fcm, account_key))
    del no_project["project_id"]
    with pytest.raises(ConfigError, match="no `project_id`"):
        FcmSender(config(fcm, account_key, service_account_json=json.dumps(no_project)))
    with pytest.raises(msgspec.ValidationError, match="unknown field `api_key`"):
        msgspec.convert({"name": "x", "api_key": "legacy"}, FcmProviderConfig)
