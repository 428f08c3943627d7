"""Channels end to end: a running pushd (tests/app_client.py) configured with the local
providers of tests/channels/ (an aiosmtpd relay, a push service that decrypts, FCM,
APNs over HTTP/2, Twilio). A notification is POSTed with a plan; the test reads what
the local providers received and what GET /api/notifications/{id} says."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushd.appkeys import PREFERENCE_LINKS, STORAGE
from pushd.channels.webpush import load_vapid_private_key, public_key_b64url
from pushd.ids import new_id, now_ms
from storage.records import NewDevice
from tests.app_client import AUTH, MakeClient, create_user
from tests.channels.harness import (
    AiohttpServer,
    TlsFiles,
    allow_every_url,
    pkcs8_pem,
    self_signed_tls,
    served,
)
from tests.channels.local_apns import LocalApns, serving
from tests.channels.local_fcm import LocalFcm
from tests.channels.local_twilio import LocalTwilio
from tests.channels.smtp_server import LocalSmtpServer, RecordingHandler
from tests.channels.webpush_endpoint import PushEndpoint

Client = TestClient[Any, Any]
FINAL = {"sent", "delivered", "failed", "skipped", "cancelled"}

APNS_TEAM, APNS_KEY_ID, APNS_TOPIC = "5A7TEAM123", "ABC123DEFG", "com.example.pushd"
FCM_PROJECT, FCM_KEY_ID = "pushd-test", "0123456789abcdef"
FCM_CLIENT = "pushd-sender@pushd-test.iam.gserviceaccount.com"
TWILIO_SID, TWILIO_TOKEN = "AC" + "0123456789abcdef" * 2, "f00dfeedf00dfeedf00dfeedf00dfeed"
VAPID_PEM = pkcs8_pem(ec.generate_private_key(ec.SECP256R1()))

# Quick to react, quick to give up: a test waits fractions of a second.
FAST = {
    "poll_interval": 0.05,
    "backoff_base": 0.05,
    "backoff_cap": 0.1,
    "max_attempts": 5,
    "lease_seconds": 5.0,
    "breaker_failures": 2,
    "breaker_cool_down": 60.0,
    "shutdown_timeout": 1.0,
}


# Local providers -----------------------------------------------------------------------


@pytest.fixture
async def smtp_servers() -> AsyncIterator[Callable[[], Awaitable[LocalSmtpServer]]]:
    started: list[LocalSmtpServer] = []

    async def start() -> LocalSmtpServer:
        server = LocalSmtpServer(RecordingHandler())
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def relay(smtp_servers: Callable[[], Awaitable[LocalSmtpServer]]) -> LocalSmtpServer:
    return await smtp_servers()


@pytest.fixture
async def push_service(aiohttp_server: AiohttpServer) -> PushEndpoint:
    endpoint = PushEndpoint()
    endpoint.origin = await served(aiohttp_server, endpoint.app())
    return endpoint


def email_provider(name: str, server: LocalSmtpServer) -> dict[str, Any]:
    return {
        "name": name,
        "host": "127.0.0.1",
        "port": server.port,
        "security": "none",
        "from_address": "pushd@example.com",
        "timeout": 2.0,
    }


WEBPUSH = {"name": "vapid", "vapid_private_key": VAPID_PEM, "vapid_subject": "mailto:o@example.com"}


async def start_pushd(make_client: MakeClient, **channels: Any) -> Client:
    return await make_client(
        outbound_url_check=allow_every_url,
        channels={**FAST, "public_url": "https://push.example.com", **channels},
    )


# Reading the API -------------------------------------------------------------------------


async def post(client: Client, user_id: str, **fields: Any) -> str:
    payload = {"user_id": user_id, "title": "Build failed", "body": "main is red", **fields}
    response = await client.post("/api/notifications", json=payload, headers=AUTH)
    assert response.status == 202, await response.text()
    notification_id: str = (await response.json())["id"]
    return notification_id


async def detail(client: Client, notification_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/notifications/{notification_id}", headers=AUTH)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def settled(client: Client, notification_id: str) -> list[Any]:
    """The channel deliveries once every one has a final status (or after 5 s)."""
    deadline = time.monotonic() + 5.0
    while True:
        deliveries: list[Any] = (await detail(client, notification_id))["channel_deliveries"]
        if all(d["status"] in FINAL for d in deliveries) or time.monotonic() > deadline:
            return deliveries
        await asyncio.sleep(0.02)


async def add_webpush_device(client: Client, user_id: str, address: dict[str, str]) -> None:
    # Straight into storage: the API only registers https endpoints, and the local push
    # service is plain http (its sends pass the test's outbound URL check).
    await client.app[STORAGE].upsert_device(
        NewDevice(
            id=new_id("dev"),
            user_id=user_id,
            kind="webpush",
            address=address["endpoint"],
            details={"p256dh": address["p256dh"], "auth": address["auth"]},
            created_at=now_ms(),
        )
    )


def vapid_public_key() -> str:
    return public_key_b64url(load_vapid_private_key(VAPID_PEM))


# Tests ------------------------------------------------------------------------------------


async def test_email_and_web_push_arrive_and_are_recorded_sent(
    relay: LocalSmtpServer, push_service: PushEndpoint, make_client: MakeClient
) -> None:
    client = await start_pushd(
        make_client, email=[email_provider("relay", relay)], webpush=[WEBPUSH]
    )
    user = await create_user(client, email="ada@example.com")
    browser = push_service.subscribe(vapid_public_key())
    await add_webpush_device(client, user["id"], browser)

    notification_id = await post(
        client,
        user["id"],
        category="builds",
        channels=[{"channel": "email"}, {"channel": "webpush"}],
        content={"email": {"subject": "CI: main is red"}, "push": {"title": "main is red"}},
    )
    deliveries = await settled(client, notification_id)

    assert [(d["channel"], d["status"], d["attempts"]) for d in deliveries] == [
        ("email", "sent", 1),
        ("webpush", "sent", 1),
    ]
    assert {d["provider"] for d in deliveries} == {"relay", "vapid"}
    assert all(d["provider_message_id"] for d in deliveries)
    [mail] = [received.parsed() for received in relay.handler.received]
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == "CI: main is red"
    plain = mail.get_body(("plain",))
    assert plain is not None
    text, _, footer = plain.get_content().replace("\r\n", "\n").partition("\n--\n")
    assert text.strip() == "main is red"
    # The footer links the recipient's preference center, signed for that user.
    prefix = "Manage notification preferences: https://push.example.com/preferences#token="
    assert footer.startswith(prefix)
    links = client.app[PREFERENCE_LINKS]
    assert links is not None
    assert links.verify(footer.strip().removeprefix(prefix)) == user["id"]
    assert mail["List-Unsubscribe"].startswith("<https://push.example.com/unsubscribe?token=")
    [payload] = push_service.payloads(browser)
    assert (payload["id"], payload["title"], payload["body"]) == (
        notification_id,
        "main is red",
        "main is red",
    )
    events = await (
        await client.get(f"/api/notifications/{notification_id}/events", headers=AUTH)
    ).json()
    sent = [e for e in events["items"] if e["channel"] != "inapp" and e["status"] == "sent"]
    assert sorted(e["channel"] for e in sent) == ["email", "webpush"]
    assert all(e["delivery_id"] and e["provider"] for e in sent)


async def test_reading_before_the_delay_cancels_the_step(
    relay: LocalSmtpServer, make_client: MakeClient
) -> None:
    client = await start_pushd(make_client, email=[email_provider("relay", relay)])
    user = await create_user(client, email="ada@example.com")
    notification_id = await post(client, user["id"], channels=[{"channel": "email", "delay": 0.3}])
    [scheduled] = (await detail(client, notification_id))["channel_deliveries"]
    assert scheduled["status"] == "scheduled"

    response = await client.post(f"/api/notifications/{notification_id}/read", headers=AUTH)
    assert response.status == 200
    await asyncio.sleep(0.5)  # past the due time, several polls

    [cancelled] = (await detail(client, notification_id))["channel_deliveries"]
    assert (cancelled["status"], cancelled["reason"], cancelled["attempts"]) == (
        "cancelled",
        "read",
        0,
    )
    assert relay.handler.received == []


async def test_no_address_is_skipped_and_an_unconfigured_channel_refused(
    relay: LocalSmtpServer, make_client: MakeClient
) -> None:
    client = await start_pushd(make_client, email=[email_provider("relay", relay)])
    user = await create_user(client)  # no email, no device
    notification_id = await post(client, user["id"], channels=[{"channel": "email"}])
    [skipped] = (await detail(client, notification_id))["channel_deliveries"]
    assert (skipped["status"], skipped["reason"]) == ("skipped", "no_address")

    refused = await client.post(
        "/api/notifications",
        json={"user_id": user["id"], "title": "t", "channels": [{"channel": "sms"}]},
        headers=AUTH,
    )
    assert refused.status == 422
    error = (await refused.json())["error"]
    assert error["field"] == "channels[0].channel"
    assert "no sms provider" in error["message"]


async def test_a_provider_down_is_retried_then_the_next_one_takes_over(
    smtp_servers: Callable[[], Awaitable[LocalSmtpServer]], make_client: MakeClient
) -> None:
    """Two transient failures open the first relay's breaker (breaker_failures = 2):
    the third attempt goes to the second relay, recorded as a fallback, and so does the
    next notification while the breaker stays open."""
    primary, secondary = await smtp_servers(), await smtp_servers()
    await primary.stop()  # connection refused: a transient failure
    client = await start_pushd(
        make_client,
        email=[email_provider("primary", primary), email_provider("secondary", secondary)],
    )
    user = await create_user(client, email="ada@example.com")

    first = await post(client, user["id"], channels=[{"channel": "email"}])
    [delivery] = await settled(client, first)
    assert (delivery["status"], delivery["provider"], delivery["fallback"]) == (
        "sent",
        "secondary",
        True,
    )
    assert delivery["attempts"] == 3
    events = await (await client.get(f"/api/notifications/{first}/events", headers=AUTH)).json()
    history = [(e["status"], e["provider"]) for e in events["items"] if e["channel"] == "email"]
    assert history == [("queued", "primary"), ("queued", "primary"), ("sent", "secondary")]

    second = await post(client, user["id"], channels=[{"channel": "email"}])
    [delivery] = await settled(client, second)
    assert (delivery["provider"], delivery["fallback"], delivery["attempts"]) == (
        "secondary",
        True,
        1,
    )
    assert len(secondary.handler.received) == 2
    metrics = await (await client.get("/metrics", headers=AUTH)).text()
    assert (
        'pushd_channel_attempts_total{channel="email",outcome="transient_error",'
        'provider="primary"} 2' in metrics
    )
    assert 'pushd_channel_breaker_state{channel="email",provider="primary"} 2' in metrics
    assert 'pushd_channel_fallbacks_total{channel="email",provider="secondary"} 2' in metrics


# Every channel at once --------------------------------------------------------------------


@pytest.fixture(scope="module")
def apns_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return self_signed_tls(tmp_path_factory.mktemp("apns-tls"), "local APNs")


@pytest.fixture(scope="module")
def fcm_account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def apns_service(apns_tls: TlsFiles) -> AsyncIterator[tuple[LocalApns, dict[str, Any]]]:
    """A local APNs, and the `[[channels.apns]]` provider that reaches it."""
    key = ec.generate_private_key(ec.SECP256R1())
    local = LocalApns(
        public_key=key.public_key(),
        team_id=APNS_TEAM,
        key_id=APNS_KEY_ID,
        topic=APNS_TOPIC,
        clock=time.time,
    )
    async with serving(local, apns_tls) as base_url:
        yield (
            local,
            {
                "name": "apple",
                "team_id": APNS_TEAM,
                "key_id": APNS_KEY_ID,
                "private_key": pkcs8_pem(key),
                "base_url": base_url,
                "ca_file": str(apns_tls.cert),
            },
        )


@pytest.fixture
async def fcm_service(
    aiohttp_server: AiohttpServer, fcm_account_key: rsa.RSAPrivateKey
) -> tuple[LocalFcm, dict[str, Any]]:
    """A local FCM, and the `[[channels.fcm]]` provider that reaches it."""
    local = LocalFcm(
        public_key=fcm_account_key.public_key(),
        key_id=FCM_KEY_ID,
        client_email=FCM_CLIENT,
        project_id=FCM_PROJECT,
    )
    base_url = await served(aiohttp_server, local.app())
    local.token_url = base_url + "/token"
    service_account = {
        "type": "service_account",
        "project_id": FCM_PROJECT,
        "private_key_id": FCM_KEY_ID,
        "private_key": pkcs8_pem(fcm_account_key),
        "client_email": FCM_CLIENT,
        "token_uri": local.token_url,
    }
    return local, {
        "name": "firebase",
        "service_account_json": json.dumps(service_account),
        "base_url": base_url,
    }


@pytest.fixture
async def twilio(aiohttp_server: AiohttpServer) -> LocalTwilio:
    local = LocalTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN)
    local.base_url = await served(aiohttp_server, local.app())
    return local


@dataclass
class EveryProvider:
    """A local provider of every channel, and the `[channels]` providers that use them."""

    relay: LocalSmtpServer
    push_service: PushEndpoint
    fcm: LocalFcm
    apns: LocalApns
    twilio: LocalTwilio
    channels: dict[str, Any]


@pytest.fixture
async def every_provider(
    relay: LocalSmtpServer,
    push_service: PushEndpoint,
    fcm_service: tuple[LocalFcm, dict[str, Any]],
    apns_service: tuple[LocalApns, dict[str, Any]],
    twilio: LocalTwilio,
) -> EveryProvider:
    (fcm, fcm_provider), (apns, apns_provider) = fcm_service, apns_service
    twilio_provider = {
        "kind": "twilio",
        "name": "twilio",
        "account_sid": TWILIO_SID,
        "auth_token": TWILIO_TOKEN,
        "from_number": "+14155550100",
        "base_url": twilio.base_url,
    }
    channels = {
        "email": [email_provider("relay", relay)],
        "webpush": [WEBPUSH],
        "fcm": [fcm_provider],
        "apns": [apns_provider],
        "sms": [twilio_provider],
    }
    return EveryProvider(relay, push_service, fcm, apns, twilio, channels)


async def test_critical_takes_every_channel_of_the_plan_at_once(
    every_provider: EveryProvider, make_client: MakeClient
) -> None:
    """The configured plan waits 30 s for push, 600 s for email, and sends SMS only
    for critical: a normal notification schedules (nothing is sent within the test), a
    critical one reaches every channel now, FCM, APNs and Twilio included."""
    local = every_provider
    plan = [
        {"channel": "push", "delay": 30},
        {"channel": "email", "delay": 600},
        {"channel": "sms", "min_priority": "critical"},
    ]
    client = await start_pushd(make_client, plans={"default": plan}, **local.channels)
    user = await create_user(client, email="ada@example.com", phone="+14155550123")
    browser = local.push_service.subscribe(vapid_public_key())
    await add_webpush_device(client, user["id"], browser)
    for device in (
        {"kind": "fcm", "token": "fcm-registration-token-0123456789"},
        {"kind": "apns", "token": "ab" * 32, "topic": APNS_TOPIC},
    ):
        response = await client.post(f"/api/users/{user['id']}/devices", json=device, headers=AUTH)
        assert response.status == 201, await response.text()

    normal = await post(client, user["id"])
    planned = (await detail(client, normal))["channel_deliveries"]
    assert sorted(d["channel"] for d in planned) == ["apns", "email", "fcm", "webpush"]
    assert {d["status"] for d in planned} == {"scheduled"}

    critical = await post(client, user["id"], priority="critical")
    deliveries = await settled(client, critical)
    assert sorted((d["channel"], d["status"]) for d in deliveries) == [
        ("apns", "sent"),
        ("email", "sent"),
        ("fcm", "sent"),
        ("sms", "sent"),
        ("webpush", "sent"),
    ]
    assert len(local.push_service.payloads(browser)) == 1
    assert len(local.fcm.accepted) == 1
    assert len(local.apns.received) == 1
    assert [message["To"] for message in local.twilio.sent] == ["+14155550123"]
    assert len(local.relay.handler.received) == 1


async def test_the_vapid_public_key_is_the_first_providers(make_client: MakeClient) -> None:
    client = await make_client(channels={"webpush": [WEBPUSH]})
    response = await client.get("/api/webpush/vapid-public-key")
    assert response.status == 200
    assert await response.json() == {"public_key": vapid_public_key()}

    unconfigured = await make_client()
    response = await unconfigured.get("/api/webpush/vapid-public-key")
    assert response.status == 404
    assert "[[channels.webpush]]" in (await response.json())["error"]["message"]
