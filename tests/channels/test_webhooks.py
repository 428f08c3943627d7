"""Webhooks (pushd/channels/webhooks.py) against a local endpoint that verifies the
signature with the function the documentation shows (tests/channels/webhook_receiver.py).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from actors.channel_sender import (
    AddressGoneError,
    ChannelMessage,
    ChannelSender,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from pushd.channels.outbound_url import check_outbound_url
from pushd.channels.webhooks import (
    SECRET_PREFIX,
    WebhookConfig,
    WebhookSender,
    new_webhook_secret,
    signature_header,
    verify_signature,
)
from tests.channels.harness import (
    AiohttpServer,
    FakeClock,
    allow_every_url,
    channel_message,
    closed_port_url,
    pinning_check,
)
from tests.channels.webhook_receiver import WebhookReceiver, docs_snippet

SECRET = "whsec_current"
OLD_SECRET = "whsec_old"
EVENT = {
    "id": "evt_01HZX",
    "type": "delivery.status",
    "created_at": "2024-05-01T12:00:00Z",
    "data": {"delivery_id": "dlv-9", "channel": "email", "status": "failed", "attempts": 3},
}


def message(url: str, secret: str = SECRET, **fields: Any) -> ChannelMessage:
    defaults: dict[str, Any] = {"title": None, "body": None, "data": EVENT}
    return channel_message("webhook", {"url": url, "secret": secret}, **(defaults | fields))


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> tuple[WebhookReceiver, TestServer]:
    local = WebhookReceiver(secrets=[SECRET])
    return local, await aiohttp_server(local.app())


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    sender = WebhookSender(WebhookConfig(), check_url=allow_every_url)
    yield sender
    await sender.aclose()


# The scheme ----------------------------------------------------------------------


def test_docs_show_the_code_pushd_runs() -> None:
    """docs/channels.md's snippet holds verify_signature verbatim, with only standard
    library imports, so the documentation cannot drift from the code."""
    snippet = docs_snippet()
    assert inspect.getsource(verify_signature) in snippet
    imports = [line for line in snippet.splitlines() if line.startswith(("import ", "from "))]
    assert imports == [
        "import hashlib",
        "import hmac",
        "import time",
        "from collections.abc import Iterable",
    ]


BODY = b'{"id":"evt_1","type":"test"}'
# Computed with `openssl dgst -sha256 -hmac <secret>` over "1700000000." + BODY, not
# with Python's hmac.
OPENSSL_CURRENT = "d4fb8d102f27df0beb72ba45826cf091ff7435e19aef5b4af979109b89e2a836"
OPENSSL_OLD = "3a471fe2a8707e5ec39c7cdce7cc5a32fd0f73459f2fa4e27f7619e02c2cab97"


def test_signature_header_matches_an_independent_hmac() -> None:
    assert signature_header(["whsec_test"], BODY, 1_700_000_000) == (
        f"t=1700000000,v1={OPENSSL_CURRENT}"
    )
    assert signature_header(["whsec_test", "whsec_old"], BODY, 1_700_000_000) == (
        f"t=1700000000,v1={OPENSSL_CURRENT},v1={OPENSSL_OLD}"
    )


NOW = 1_700_000_000.0
HEADER = f"t=1700000000,v1={OPENSSL_CURRENT}"


@pytest.mark.parametrize(
    ("secrets", "header", "body", "now", "valid"),
    [
        pytest.param(["whsec_test"], HEADER, BODY, NOW, True, id="valid"),
        pytest.param(["whsec_x", "whsec_test"], HEADER, BODY, NOW, True, id="second-secret"),
        pytest.param(["whsec_x"], HEADER, BODY, NOW, False, id="wrong-secret"),
        pytest.param([], HEADER, BODY, NOW, False, id="no-secret"),
        pytest.param(["whsec_test"], HEADER, BODY + b" ", NOW, False, id="body-changed"),
        pytest.param(["whsec_test"], HEADER, BODY, NOW + 300, True, id="300s-late"),
        pytest.param(["whsec_test"], HEADER, BODY, NOW + 301, False, id="301s-late-replay"),
        pytest.param(["whsec_test"], HEADER, BODY, NOW - 301, False, id="from-the-future"),
        pytest.param(
            ["whsec_test"], f"t=1700000001,v1={OPENSSL_CURRENT}", BODY, NOW, False, id="t-changed"
        ),
        pytest.param(["whsec_test"], f"v1={OPENSSL_CURRENT}", BODY, NOW, False, id="no-timestamp"),
        pytest.param(
            ["whsec_test"], f"{HEADER},t=1700000000", BODY, NOW, False, id="two-timestamps"
        ),
        pytest.param(["whsec_test"], "t=1700000000", BODY, NOW, False, id="no-signature"),
        pytest.param(
            ["whsec_test"], f"t=1700000000,v0={OPENSSL_CURRENT}", BODY, NOW, False, id="v0"
        ),
        pytest.param(
            ["whsec_test"],
            f"t=1700000000, v1=00, v1={OPENSSL_CURRENT}, v2=future",
            BODY,
            NOW,
            True,
            id="spaces-and-unknown-schemes",
        ),
        pytest.param(
            ["whsec_test"],
            f"t=1700000000,v1={OPENSSL_CURRENT.upper()}",
            BODY,
            NOW,
            False,
            id="upper-case-hex",
        ),
        pytest.param(
            ["whsec_test"], "t=\u0661\u0667\u0660\u0660,v1=\u00e9", BODY, NOW, False, id="non-ascii"
        ),
        pytest.param(["whsec_test"], "t=" + "9" * 5000, BODY, NOW, False, id="huge-timestamp"),
        pytest.param(["whsec_test"], "", BODY, NOW, False, id="empty"),
    ],
)
def test_verify_signature(
    secrets: list[str], header: str, body: bytes, now: float, valid: bool
) -> None:
    assert verify_signature(secrets, header, body, now=now) is valid


def test_new_secrets() -> None:
    secrets = {new_webhook_secret() for _ in range(100)}
    assert len(secrets) == 100
    for secret in secrets:
        assert secret.startswith(SECRET_PREFIX)
        assert len(secret) == len(SECRET_PREFIX) + 43  # 256 bits, base64url
        assert "," not in secret


# Sending -------------------------------------------------------------------------


async def test_signed_event_reaches_the_endpoint(
    receiver: tuple[WebhookReceiver, TestServer], sender: WebhookSender
) -> None:
    local, server = receiver
    channel_sender: ChannelSender = sender
    receipt = await channel_sender.send(message(str(server.make_url("/hook"))))
    assert local.refused == 0
    [event] = local.received
    assert json.loads(event.body) == EVENT
    assert event.headers["Pushd-Event-Id"] == "evt_01HZX"
    assert event.headers["Pushd-Event-Type"] == "delivery.status"
    assert event.headers["Content-Type"] == "application/json"
    assert receipt.detail == {"http_status": 204}
    assert (channel_sender.channel, channel_sender.provider) == ("webhook", "webhooks")


@pytest.mark.parametrize("known", [[SECRET], [OLD_SECRET]], ids=["new", "old"])
async def test_rotation_signs_with_every_active_secret(
    receiver: tuple[WebhookReceiver, TestServer], sender: WebhookSender, known: list[str]
) -> None:
    """During a rotation a receiver that has only the old secret, or already only the
    new one, accepts the event."""
    local, server = receiver
    local.secrets = known
    await sender.send(message(str(server.make_url("/hook")), secret=f"{SECRET}, {OLD_SECRET}"))
    [event] = local.received
    assert event.headers["Pushd-Signature"].count("v1=") == 2


async def test_receiver_with_another_secret_refuses(
    receiver: tuple[WebhookReceiver, TestServer], sender: WebhookSender
) -> None:
    local, server = receiver
    local.secrets = ["whsec_someone_else"]
    with pytest.raises(PermanentSendError, match="current secret") as raised:
        await sender.send(message(str(server.make_url("/hook"))))
    assert raised.value.provider_code == "401"
    assert local.refused == 1


async def test_stale_timestamp_is_refused_by_the_receiver(
    receiver: tuple[WebhookReceiver, TestServer],
) -> None:
    """The timestamp is the sender's clock at send time: ten minutes off, the docs'
    verification refuses it as a possible replay."""
    local, server = receiver
    clock = FakeClock()
    clock.advance(-600)
    async with aclosing(
        WebhookSender(WebhookConfig(), check_url=allow_every_url, clock=clock)
    ) as sender:
        with pytest.raises(PermanentSendError):
            await sender.send(message(str(server.make_url("/hook"))))
    assert local.refused == 1


@pytest.mark.parametrize(
    ("path", "error", "code"),
    [
        pytest.param("/gone", AddressGoneError, "410", id="410-gone"),
        pytest.param("/busy", TransientSendError, "429", id="429-retry-after"),
        pytest.param("/broken", TransientSendError, "500", id="500"),
        pytest.param("/refuse", PermanentSendError, "400", id="400"),
        pytest.param("/redirect", PermanentSendError, "307", id="redirect"),
        pytest.param("/missing", PermanentSendError, "404", id="404"),
    ],
)
async def test_answers_are_classified(
    receiver: tuple[WebhookReceiver, TestServer],
    sender: WebhookSender,
    path: str,
    error: type[SendError],
    code: str,
) -> None:
    local, server = receiver
    with pytest.raises(error) as raised:
        await sender.send(message(str(server.make_url(path))))
    assert type(raised.value) is error
    assert raised.value.provider_code == code
    if isinstance(raised.value, TransientSendError):
        assert raised.value.retry_after == (30.0 if code == "429" else None)
    assert len(str(raised.value)) < 500, "an endpoint's body is quoted, bounded"
    assert local.hits.get("/hook", 0) == 0, "a redirect is never followed"


async def test_timeout_is_transient(receiver: tuple[WebhookReceiver, TestServer]) -> None:
    _, server = receiver
    async with aclosing(
        WebhookSender(WebhookConfig(timeout=0.2), check_url=allow_every_url)
    ) as sender:
        with pytest.raises(TransientSendError, match="unreachable or slow"):
            await sender.send(message(str(server.make_url("/slow"))))


async def test_connection_refused_is_transient(sender: WebhookSender) -> None:
    url = f"{closed_port_url()}/hook?token=s3cr3t"
    with pytest.raises(TransientSendError, match="unreachable") as raised:
        await sender.send(message(url))
    assert "s3cr3t" not in str(raised.value), "a URL's path and query may hold a token"


# The outbound URL check ----------------------------------------------------------


async def test_the_real_check_refuses_before_any_request(
    receiver: tuple[WebhookReceiver, TestServer],
) -> None:
    local, server = receiver
    async with aclosing(
        WebhookSender(
            WebhookConfig(), check_url=functools.partial(check_outbound_url, allow_private=False)
        )
    ) as sender:
        with pytest.raises(PermanentSendError, match="outbound URL check") as raised:
            await sender.send(message(str(server.make_url("/hook"))))
    assert raised.value.provider_code == "url-refused"
    assert local.hits == {}


async def test_a_check_that_cannot_resolve_is_transient(
    receiver: tuple[WebhookReceiver, TestServer],
) -> None:
    async def dns_down(url: str) -> None:
        raise OSError("Temporary failure in name resolution")

    local, server = receiver
    async with aclosing(WebhookSender(WebhookConfig(), check_url=dns_down)) as sender:
        with pytest.raises(TransientSendError, match="could not be checked"):
            await sender.send(message(str(server.make_url("/hook"))))
    assert local.hits == {}


async def test_request_goes_to_the_checked_address(
    receiver: tuple[WebhookReceiver, TestServer],
) -> None:
    """The check resolved the host; the request must go where it said, not to a new
    DNS answer (a rebinding DNS could answer a private address the second time). The
    `.test` name resolves nowhere, so only the checked address can have been used."""
    local, server = receiver
    async with aclosing(
        WebhookSender(WebhookConfig(), check_url=pinning_check("hooks.example.test", "127.0.0.1"))
    ) as sender:
        await sender.send(message(f"http://hooks.example.test:{server.port}/hook"))
    [event] = local.received
    assert event.headers["Host"] == f"hooks.example.test:{server.port}"


async def test_next_checked_address_when_one_refuses(
    receiver: tuple[WebhookReceiver, TestServer],
) -> None:
    local, server = receiver
    async with aclosing(
        WebhookSender(
            WebhookConfig(), check_url=pinning_check("hooks.example.test", "127.0.0.2", "127.0.0.1")
        )
    ) as sender:
        await sender.send(message(f"http://hooks.example.test:{server.port}/hook"))
    assert len(local.received) == 1


# Unsendable deliveries -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        pytest.param({"address": {"url": "/hook"}}, "signing secret", id="no-secret"),
        pytest.param({"secret": f"{SECRET},"}, "signing secret", id="empty-secret-in-list"),
        pytest.param({"address": {"secret": SECRET}}, "absolute URL", id="no-url"),
        pytest.param({"data": {"type": "x"}}, "`id` or `type`", id="no-event-id"),
        pytest.param({"data": {"id": "evt_1", "type": 3}}, "`id` or `type`", id="bad-type"),
        pytest.param(
            {"data": {"id": "evt_1\r\nX-Injected: 1", "type": "t"}},
            "`id` or `type`",
            id="header-injection",
        ),
        pytest.param({"data": {"id": "e", "type": "t", "x": object()}}, "not JSON", id="not-json"),
    ],
)
async def test_unsendable_delivery_fails_before_any_request(
    receiver: tuple[WebhookReceiver, TestServer],
    sender: WebhookSender,
    fields: dict[str, Any],
    problem: str,
) -> None:
    local, server = receiver
    url = str(server.make_url("/hook"))
    fields = dict(fields)
    secret = fields.pop("secret", SECRET)
    with pytest.raises(PermanentSendError, match=problem):
        await sender.send(message(url, secret, **fields))
    assert local.hits == {}


async def test_aclose_is_idempotent_and_final(sender: WebhookSender) -> None:
    await sender.aclose()
    await sender.aclose()
    with pytest.raises(RuntimeError, match="aclose"):
        await sender.send(message("https://hooks.example.com/"))
