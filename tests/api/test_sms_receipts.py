"""`POST /api/channels/sms/{provider}/status` (pushd/api/sms_receipts.py) over a real app:
an SMS is sent through a local Twilio (tests/channels/local_twilio.py), then its status
callback arrives signed the way Twilio signs, over the PUBLIC URL of the route (pushd
sits behind a proxy: the request reaches a loopback address Twilio never saw)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from storage import Storage
from storage.records import ChannelDeliveryRecord
from tests.app_client import AUTH, MakeClient, create_user
from tests.channels.harness import AiohttpServer, served
from tests.channels.local_twilio import LocalTwilio

Client = TestClient[Any, Any]
SID, TOKEN = "AC" + "0123456789abcdef" * 2, "f00dfeedf00dfeedf00dfeedf00dfeed"
PUBLIC_URL = "https://push.example.com"
PATH = "/api/channels/sms/twilio/status"


def twilio_signature(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    """As Twilio documents it, written here independently of pushd: HMAC-SHA1 keyed with
    the auth token over the URL then every parameter's name and value, sorted by name."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(
        hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()
    ).decode()


@pytest.fixture
async def twilio(aiohttp_server: AiohttpServer) -> LocalTwilio:
    local = LocalTwilio(account_sid=SID, auth_token=TOKEN)
    local.base_url = await served(aiohttp_server, local.app())
    return local


@pytest.fixture
async def client(make_client: MakeClient, twilio: LocalTwilio) -> Client:
    provider = {
        "kind": "twilio",
        "name": "twilio",
        "account_sid": SID,
        "auth_token": TOKEN,
        "from_number": "+14155550100",
        "base_url": twilio.base_url,
    }
    return await make_client(
        channels={"public_url": PUBLIC_URL, "poll_interval": 0.05, "sms": [provider]}
    )


async def sent_sms(client: Client) -> ChannelDeliveryRecord:
    """An SMS sent through the local Twilio: its delivery, once sent."""
    user = await create_user(client, phone="+14155550123")
    payload = {
        "user_id": user["id"],
        "title": "Code",
        "body": "123456",
        "channels": [{"channel": "sms"}],
    }
    response = await client.post("/api/notifications", json=payload, headers=AUTH)
    assert response.status == 202, await response.text()
    notification_id = (await response.json())["id"]
    return await delivery_when(client, notification_id, lambda d: d.status == "sent")


async def delivery_when(client: Client, notification_id: str, done: Any) -> ChannelDeliveryRecord:
    deadline = time.monotonic() + 5
    while True:
        storage: Storage = client.app[STORAGE]
        [delivery] = await storage.channel_deliveries_of(notification_id)
        if done(delivery) or time.monotonic() > deadline:
            return delivery
        await asyncio.sleep(0.02)


async def callback(
    client: Client, params: dict[str, str], *, signed_url: str = PUBLIC_URL + PATH, **sign: Any
) -> int:
    headers = {"X-Twilio-Signature": twilio_signature(signed_url, params, **sign)}
    response = await client.post(PATH, data=params, headers=headers)
    return response.status


def receipt(delivery: ChannelDeliveryRecord, status: str, **more: str) -> dict[str, str]:
    assert delivery.provider_message_id is not None
    return {
        "MessageSid": delivery.provider_message_id,
        "SmsSid": delivery.provider_message_id,
        "MessageStatus": status,
        "AccountSid": SID,
        "To": "+14155550123",
        **more,
    }


async def test_twilio_is_asked_for_receipts_at_the_public_url(
    client: Client, twilio: LocalTwilio
) -> None:
    await sent_sms(client)
    [message] = twilio.sent
    assert message["StatusCallback"] == PUBLIC_URL + PATH


async def test_delivered_receipt_marks_the_delivery_delivered(client: Client) -> None:
    delivery = await sent_sms(client)
    assert await callback(client, receipt(delivery, "delivered")) == 204
    [updated] = await client.app[STORAGE].channel_deliveries_of(delivery.notification_id)
    assert updated.status == "delivered"


async def test_undelivered_receipt_fails_it_with_twilios_reason(client: Client) -> None:
    delivery = await sent_sms(client)
    assert await callback(client, receipt(delivery, "undelivered", ErrorCode="30003")) == 204
    [updated] = await client.app[STORAGE].channel_deliveries_of(delivery.notification_id)
    assert updated.status == "failed"
    assert updated.last_error is not None
    assert "30003" in updated.last_error
    assert "unreachable" in updated.last_error


async def test_intermediate_statuses_change_nothing(client: Client) -> None:
    delivery = await sent_sms(client)
    assert await callback(client, receipt(delivery, "sent")) == 204
    [same] = await client.app[STORAGE].channel_deliveries_of(delivery.notification_id)
    assert same.status == "sent"


async def test_unsigned_or_wrongly_signed_callbacks_are_403(client: Client) -> None:
    delivery = await sent_sms(client)
    params = receipt(delivery, "delivered")
    unsigned = await client.post(PATH, data=params)
    assert unsigned.status == 403
    assert "X-Twilio-Signature" in (await unsigned.json())["error"]["message"]
    assert await callback(client, params, token="0" * 32) == 403
    # Signed for the address the request reached, not the one Twilio was given.
    assert await callback(client, params, signed_url=str(client.make_url(PATH))) == 403
    # Altered after signing.
    headers = {"X-Twilio-Signature": twilio_signature(PUBLIC_URL + PATH, params)}
    altered = {**params, "MessageStatus": "failed"}
    assert (await client.post(PATH, data=altered, headers=headers)).status == 403
    [unchanged] = await client.app[STORAGE].channel_deliveries_of(delivery.notification_id)
    assert unchanged.status == "sent"


async def test_unknown_provider_is_404(client: Client) -> None:
    response = await client.post("/api/channels/sms/nobody/status", data={"MessageSid": "SM1"})
    assert response.status == 404
    assert (await response.json())["error"]["field"] == "provider"


async def test_a_signed_callback_with_an_unknown_status_is_422(client: Client) -> None:
    params = {"MessageSid": "SM1", "MessageStatus": "exploded", "AccountSid": SID}
    assert await callback(client, params) == 422


async def test_a_receipt_for_an_unknown_message_is_accepted(client: Client) -> None:
    """Twilio retries callbacks that fail: one pushd cannot match must not be refused."""
    params = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "delivered", "AccountSid": SID}
    assert await callback(client, params) == 204
