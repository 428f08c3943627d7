"""SMS: numbers and segments (pushd/channels/sms.py), the Twilio provider against a
local Twilio Messages API (tests/channels/local_twilio.py), Twilio's callback signature
and status form (pushd/channels/sms_twilio.py), and the generic JSON provider against a
local endpoint (pushd/channels/sms_http.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec
import pytest
from aiohttp import web
from multidict import MultiDict

from actors.channel_sender import (
    ChannelMessage,
    ChannelSender,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from pushd.channels.sms import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SmsSegments,
    count_segments,
    validate_e164,
)
from pushd.channels.sms_http import HttpSmsConfig, HttpSmsSender
from pushd.channels.sms_twilio import (
    TwilioSmsConfig,
    TwilioSmsSender,
    TwilioStatusCallback,
    parse_twilio_status_callback,
    twilio_signature,
    verify_twilio_signature,
)
from tests.channels.harness import AiohttpServer, channel_message, closed_port_url, served
from tests.channels.local_twilio import (
    NOT_MOBILE,
    TOO_MANY_REQUESTS,
    UNAVAILABLE,
    UNSUBSCRIBED,
    LocalTwilio,
    TwilioError,
)

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f00dfeedf00dfeedf00dfeedf00dfeed"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
PHONE = "+14155550123"


def message(phone: str | None = PHONE, **fields: Any) -> ChannelMessage:
    address = {} if phone is None else {"phone": phone}
    return channel_message("sms", address, **({"body": "main is red since 14:02"} | fields))


# E.164 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["+14155550123", "+4915112345678", "+33612345678", "+12345678", "+123456789012345"]
)
def test_e164_accepts(number: str) -> None:
    assert validate_e164(number) == number


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("4915112345678", "must start with +", id="no-plus"),
        pytest.param("0711123456", "must start with +", id="national"),
        pytest.param("+1 415 555 0123", "only the digits", id="spaces"),
        pytest.param("+1-415-555-0123", "only the digits", id="dashes"),
        pytest.param("+", "only the digits", id="plus-only"),
        pytest.param(
            "+\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0662\u0663",
            "only the digits",
            id="non-ascii-digits",
        ),
        pytest.param("+04155550123", "cannot start with 0", id="country-code-0"),
        pytest.param("+1234567", "has 7 digits", id="too-short"),
        pytest.param("+1234567890123456", "has 16 digits", id="too-long"),
    ],
)
def test_e164_refuses_naming_the_problem(number: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as raised:
        validate_e164(number)
    if len(number) > 4:
        assert number not in str(raised.value), "the number is personal data: never echoed"


# Segments ------------------------------------------------------------------------


def test_gsm7_tables() -> None:
    """The default alphabet has 128 codes; the escape code is not a character."""
    assert len(GSM7_BASIC) == len(set(GSM7_BASIC)) == 127
    assert "\x1b" not in GSM7_BASIC
    assert set(GSM7_EXTENSION) == set("\f^{}\\[]~|€")
    assert not set(GSM7_BASIC) & set(GSM7_EXTENSION)
    # Greek capitals, not look-alikes (Ohm sign U+2126, Latin letters).
    assert {"Ω", "Δ", "Σ"} <= set(GSM7_BASIC)
    assert "\u2126" not in GSM7_BASIC


@pytest.mark.parametrize(
    ("text", "encoding", "segments", "units"),
    [
        pytest.param("", "GSM-7", 1, 0, id="empty"),
        pytest.param("a" * 160, "GSM-7", 1, 160, id="gsm-160"),
        pytest.param("a" * 161, "GSM-7", 2, 161, id="gsm-161"),
        pytest.param("a" * 306, "GSM-7", 2, 306, id="gsm-2x153"),
        pytest.param("a" * 307, "GSM-7", 3, 307, id="gsm-2x153+1"),
        pytest.param("Ça coûte 5€", "UCS-2", 1, 11, id="u-circumflex-is-not-gsm"),
        pytest.param("Grüße aus Köln, 5€ {ok}", "GSM-7", 1, 26, id="umlauts-and-extension"),
        pytest.param("€" * 80, "GSM-7", 1, 160, id="extension-80x2"),
        pytest.param("€" * 80 + "a", "GSM-7", 2, 161, id="extension-161-septets"),
        pytest.param("[" * 152, "GSM-7", 2, 304, id="extension-2x152"),
        pytest.param("[" * 153, "GSM-7", 3, 306, id="extension-153"),
        pytest.param(
            "a" * 152 + "€" + "a" * 152, "GSM-7", 3, 306, id="escape-not-split-across-parts"
        ),
        pytest.param("ΔΦΓΛΩΠΨΣΘΞ", "GSM-7", 1, 10, id="greek-capitals"),
        pytest.param("ж" * 70, "UCS-2", 1, 70, id="ucs2-70"),
        pytest.param("ж" * 71, "UCS-2", 2, 71, id="ucs2-71"),
        pytest.param("ж" * 134, "UCS-2", 2, 134, id="ucs2-2x67"),
        pytest.param("ж" * 135, "UCS-2", 3, 135, id="ucs2-2x67+1"),
        pytest.param("a" * 159 + "\u2019", "UCS-2", 3, 160, id="curly-apostrophe-makes-ucs2"),
        pytest.param("😀" * 35, "UCS-2", 1, 70, id="emoji-count-two"),
        pytest.param("😀" * 36, "UCS-2", 2, 72, id="emoji-36"),
        pytest.param("a" * 69 + "😀", "UCS-2", 2, 71, id="emoji-at-the-boundary"),
        pytest.param("a" * 66 + "😀" + "a" * 66, "UCS-2", 3, 134, id="surrogate-pair-not-split"),
        pytest.param("x\x1by", "UCS-2", 1, 3, id="escape-code-is-not-text"),
    ],
)
def test_segments(text: str, encoding: str, segments: int, units: int) -> None:
    assert count_segments(text) == SmsSegments(encoding, segments, units)  # type: ignore[arg-type]


def test_segments_detail() -> None:
    assert count_segments("ж" * 71).detail() == {"encoding": "UCS-2", "segments": 2}


# Twilio: configuration -----------------------------------------------------------


def twilio_config(**overrides: Any) -> TwilioSmsConfig:
    fields: dict[str, Any] = {
        "name": "twilio-main",
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": "+15005550006",
    }
    return msgspec.convert(fields | overrides, type=TwilioSmsConfig)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        pytest.param({"account_sid": "SK" + "0" * 32}, "account_sid", id="api-key-sid"),
        pytest.param({"account_sid": AUTH_TOKEN}, "account_sid", id="token-as-sid"),
        pytest.param({"messaging_service_sid": SERVICE_SID}, "exactly one", id="both-senders"),
        pytest.param({"from_number": ""}, "exactly one", id="no-sender"),
        pytest.param(
            {"from_number": "", "messaging_service_sid": "MG1"}, "MG", id="bad-service-sid"
        ),
        pytest.param({"from": "+15005550006"}, "from", id="unknown-key"),
        pytest.param({"timeout": 0}, "timeout", id="zero-timeout"),
    ],
)
def test_twilio_config_errors_name_the_key(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=named):
        twilio_config(**overrides)


# Twilio: sending -----------------------------------------------------------------


@pytest.fixture
async def twilio(aiohttp_server: AiohttpServer) -> LocalTwilio:
    local = LocalTwilio(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    local.base_url = await served(aiohttp_server, local.app())
    return local


@pytest.fixture
async def twilio_sender(twilio: LocalTwilio) -> AsyncIterator[TwilioSmsSender]:
    sender = TwilioSmsSender(twilio_config(base_url=twilio.base_url))
    yield sender
    await sender.aclose()


def test_twilio_sender_is_a_channel_sender() -> None:
    sender: ChannelSender = TwilioSmsSender(twilio_config())
    assert (sender.channel, sender.provider) == ("sms", "twilio-main")


async def test_twilio_sends_the_form_twilio_expects(
    twilio: LocalTwilio, twilio_sender: TwilioSmsSender
) -> None:
    receipt = await twilio_sender.send(message())
    assert twilio.sent == [
        {"To": PHONE, "From": "+15005550006", "Body": "Build failed\nmain is red since 14:02"}
    ]
    assert receipt.provider_message_id == f"SM{1:032x}"
    assert receipt.detail == {"encoding": "GSM-7", "segments": 1}


async def test_twilio_sms_content_wins_and_is_counted(
    twilio: LocalTwilio, twilio_sender: TwilioSmsSender
) -> None:
    receipt = await twilio_sender.send(message(content={"text": "Привет! " * 10}))
    assert twilio.sent[0]["Body"] == "Привет! " * 10
    assert receipt.detail == {"encoding": "UCS-2", "segments": 2}


async def test_twilio_messaging_service_and_status_callback(twilio: LocalTwilio) -> None:
    async with aclosing(
        TwilioSmsSender(
            twilio_config(
                base_url=twilio.base_url,
                from_number="",
                messaging_service_sid=SERVICE_SID,
                status_callback_url="https://pushd.example.com/api/sms/twilio/status?p=twilio-main",
            )
        )
    ) as sender:
        await sender.send(message())
    assert twilio.sent[0] == {
        "To": PHONE,
        "MessagingServiceSid": SERVICE_SID,
        "Body": "Build failed\nmain is red since 14:02",
        "StatusCallback": "https://pushd.example.com/api/sms/twilio/status?p=twilio-main",
    }


async def test_twilio_wrong_token_is_permanent_and_says_credentials(twilio: LocalTwilio) -> None:
    async with aclosing(
        TwilioSmsSender(twilio_config(base_url=twilio.base_url, auth_token="not-the-token"))
    ) as sender:
        with pytest.raises(PermanentSendError, match="auth_token") as raised:
            await sender.send(message())
    assert raised.value.provider_code == "20003"
    assert twilio.sent == []


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        pytest.param(UNSUBSCRIBED, "replying STOP", id="21610-unsubscribed"),
        pytest.param(NOT_MOBILE, "not a mobile number", id="21614-landline"),
        pytest.param(
            TwilioError(400, 21408, "Permission to send an SMS has not been enabled"),
            "Geo permissions",
            id="21408-geo",
        ),
        pytest.param(
            TwilioError(400, 21999, "Something new"), "twilio.com/docs/errors/21999", id="other"
        ),
        pytest.param(TwilioError(404, 20404, "Not Found"), "cannot succeed", id="404"),
    ],
)
async def test_twilio_refusals_are_permanent_not_address_gone(
    twilio: LocalTwilio, twilio_sender: TwilioSmsSender, answer: TwilioError, hint: str
) -> None:
    """A bad or opted-out number fails the delivery; it is no AddressGoneError, which
    would make the worker delete a device, and a phone is part of the user's profile."""
    twilio.answers[PHONE] = answer
    with pytest.raises(PermanentSendError, match=hint) as raised:
        await twilio_sender.send(message())
    assert type(raised.value) is PermanentSendError
    assert raised.value.provider_code == str(answer.code)


async def test_twilio_invalid_number_from_twilio_is_permanent(
    twilio: LocalTwilio, twilio_sender: TwilioSmsSender
) -> None:
    """21211 as Twilio answers it: for a number that passes E.164 but Twilio refuses."""
    twilio.answers[PHONE] = TwilioError(400, 21211, f"The 'To' number {PHONE} is not valid.")
    with pytest.raises(PermanentSendError, match="fix the phone") as raised:
        await twilio_sender.send(message())
    assert type(raised.value) is PermanentSendError
    assert raised.value.provider_code == "21211"


async def test_twilio_over_1600_characters_is_permanent(
    twilio: LocalTwilio, twilio_sender: TwilioSmsSender
) -> None:
    with pytest.raises(PermanentSendError, match="1600") as raised:
        await twilio_sender.send(message(content={"text": "a" * 1601}))
    assert raised.value.provider_code == "21617"


@pytest.mark.parametrize(
    ("answer", "retry_after"),
    [
        pytest.param(TOO_MANY_REQUESTS, 7.0, id="429-with-retry-after"),
        pytest.param(UNAVAILABLE, None, id="503"),
    ],
)
async def test_twilio_overload_is_transient(
    twilio: LocalTwilio,
    twilio_sender: TwilioSmsSender,
    answer: TwilioError,
    retry_after: float | None,
) -> None:
    twilio.answers[PHONE] = answer
    with pytest.raises(TransientSendError) as raised:
        await twilio_sender.send(message())
    assert raised.value.retry_after == retry_after
    assert raised.value.provider_code == str(answer.code)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"address": {}}, "invalid-number", id="no-phone"),
        pytest.param({"address": {"phone": "004915112345678"}}, "invalid-number", id="not-e164"),
        pytest.param({"title": None, "body": None}, "empty-text", id="no-text"),
        pytest.param({"content": {"text": "  "}}, "empty-text", id="blank-sms-content"),
    ],
)
async def test_twilio_unsendable_message_fails_before_any_request(
    twilio: LocalTwilio, twilio_sender: TwilioSmsSender, fields: dict[str, Any], code: str
) -> None:
    with pytest.raises(PermanentSendError) as raised:
        await twilio_sender.send(message(**fields))
    assert raised.value.provider_code == code
    assert twilio.requests == 0


async def test_twilio_unreachable_is_transient() -> None:
    async with aclosing(TwilioSmsSender(twilio_config(base_url=closed_port_url()))) as sender:
        with pytest.raises(TransientSendError, match="cannot be reached"):
            await sender.send(message())


async def test_twilio_reuses_one_connection(
    twilio: LocalTwilio, twilio_sender: TwilioSmsSender
) -> None:
    for _ in range(3):
        await twilio_sender.send(message())
    assert len(twilio.sent) == 3
    assert len(twilio.peers) == 1


async def test_twilio_aclose_is_idempotent_and_final(twilio_sender: TwilioSmsSender) -> None:
    await twilio_sender.aclose()
    await twilio_sender.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await twilio_sender.send(message())


# Twilio: delivery receipts -------------------------------------------------------

DOCS_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"


@pytest.mark.parametrize(
    ("caller", "signature"),
    [
        # Twilio's published examples (twilio.com/docs/usage/security, and its
        # api-snippets repository): auth token 12345, these parameters.
        pytest.param("+14158675309", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", id="older-docs"),
        pytest.param("+14158675310", "GvWf1cFY/Q7PnoempGyD5oXAezc=", id="newer-docs"),
    ],
)
def test_twilio_signature_reproduces_published_vectors(caller: str, signature: str) -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": caller,
        "Digits": "1234",
        "From": caller,
        "To": "+18005551212",
    }
    assert twilio_signature("12345", DOCS_URL, params) == signature
    assert twilio_signature("12345", DOCS_URL, dict(reversed(params.items()))) == signature
    assert verify_twilio_signature("12345", DOCS_URL, params, signature)
    assert not verify_twilio_signature("12346", DOCS_URL, params, signature)
    assert not verify_twilio_signature("12345", DOCS_URL, params | {"Digits": "1235"}, signature)
    assert not verify_twilio_signature("12345", DOCS_URL + "&x=1", params, signature)
    assert not verify_twilio_signature("12345", DOCS_URL, params, "")
    assert not verify_twilio_signature("12345", DOCS_URL, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8é")


@pytest.mark.parametrize(
    ("signed_url", "configured_url"),
    [
        pytest.param("https://mycompany.com:443/cb", "https://mycompany.com/cb", id="port-added"),
        pytest.param("https://mycompany.com/cb", "https://mycompany.com:443/cb", id="port-dropped"),
        pytest.param("https://mycompany.com/cb", "https://mycompany.com:8443/cb", id="any-port"),
        pytest.param("http://mycompany.com:80/cb", "http://mycompany.com/cb", id="http-80"),
    ],
)
def test_twilio_signature_with_or_without_port(signed_url: str, configured_url: str) -> None:
    """Twilio signs some requests with the port written out and some without; its
    libraries accept both, so must we."""
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    signature = twilio_signature(AUTH_TOKEN, signed_url, params)
    assert verify_twilio_signature(AUTH_TOKEN, configured_url, params, signature)


def test_twilio_signature_repeated_parameters() -> None:
    """A repeated name counts each value, values in sorted order (as twilio-python)."""
    form = MultiDict([("Media", "b"), ("A", "1"), ("Media", "a")])
    assert twilio_signature("t", "https://x.test/", form) == twilio_signature(
        "t", "https://x.test/", MultiDict([("A", "1"), ("Media", "a"), ("Media", "b")])
    )
    assert twilio_signature("t", "https://x.test/", form) != twilio_signature(
        "t", "https://x.test/", {"A": "1", "Media": "b"}
    )


def test_status_callback_parsed() -> None:
    form = {
        "ApiVersion": "2010-04-01",
        "MessageStatus": "undelivered",
        "SmsSid": "SM0123",
        "SmsStatus": "undelivered",
        "To": PHONE,
        "From": "+15005550006",
        "MessageSid": "SM0123",
        "AccountSid": ACCOUNT_SID,
        "ErrorCode": "30003",
        "RawDlrDoneDate": "2401011200",
    }
    status = parse_twilio_status_callback(form)
    assert status == TwilioStatusCallback(
        message_sid="SM0123", status="undelivered", error_code="30003", account_sid=ACCOUNT_SID
    )
    assert status.final
    assert not parse_twilio_status_callback(form | {"MessageStatus": "sent"}).final


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        pytest.param({"MessageStatus": "sent"}, "MessageSid", id="no-sid"),
        pytest.param({"MessageSid": "SM1"}, "MessageStatus", id="no-status"),
        pytest.param({"MessageSid": "SM1", "MessageStatus": "lost"}, "'lost'", id="unknown"),
    ],
)
def test_status_callback_refused(form: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_twilio_status_callback(form)


async def test_receipts_round_trip(aiohttp_server: AiohttpServer, twilio: LocalTwilio) -> None:
    """The pieces the callback route will be made of, fed by a Twilio-like sender: a
    signed callback for the SID the send returned is accepted and read; a forged one
    is refused."""
    received: list[TwilioStatusCallback] = []
    callback_url = ""

    async def status_route(request: web.Request) -> web.Response:
        form = await request.post()
        params = {name: str(value) for name, value in form.items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        if not verify_twilio_signature(AUTH_TOKEN, callback_url, params, signature):
            return web.Response(status=403)
        received.append(parse_twilio_status_callback(params))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/sms/twilio/status", status_route)
    server = await aiohttp_server(app)
    callback_url = str(server.make_url("/api/sms/twilio/status?provider=twilio-main"))
    async with aclosing(
        TwilioSmsSender(twilio_config(base_url=twilio.base_url, status_callback_url=callback_url))
    ) as sender:
        receipt = await sender.send(message())
    assert receipt.provider_message_id is not None
    form = twilio.sent[0]
    callback = {
        "MessageSid": receipt.provider_message_id,
        "MessageStatus": "delivered",
        "AccountSid": ACCOUNT_SID,
        "To": form["To"],
        "From": form["From"],
    }
    assert await twilio.post_status_callback(form["StatusCallback"], callback) == 204
    forged = await twilio.post_status_callback(
        form["StatusCallback"], callback | {"MessageStatus": "failed"}, auth_token="guess"
    )
    assert forged == 403
    assert [(r.message_sid, r.status) for r in received] == [
        (receipt.provider_message_id, "delivered")
    ]


# Generic JSON-over-HTTP provider -------------------------------------------------


class LocalSmsApi:
    """A JSON SMS API: checks the bearer key, the body's exact shape and E.164 `to`."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.received: list[dict[str, Any]] = []
        self.answer: tuple[int, dict[str, str] | None] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/sms", self._send)
        return app

    async def _send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": "invalid api key"}, status=401)
        if request.content_type != "application/json":
            return web.json_response({"error": "send JSON"}, status=415)
        body = await request.json()
        if set(body) != {"to", "from", "text", "reference"} or not all(
            isinstance(value, str) for value in body.values()
        ):
            return web.json_response({"error": "to, from, text, reference"}, status=422)
        if self.answer is not None:
            status, headers = self.answer
            return web.json_response({"error": "scripted"}, status=status, headers=headers)
        self.received.append(body)
        return web.json_response({"id": f"msg-{len(self.received)}"}, status=202)


@pytest.fixture
async def sms_api(aiohttp_server: AiohttpServer) -> tuple[LocalSmsApi, str]:
    api = LocalSmsApi("k-123")
    return api, await served(aiohttp_server, api.app()) + "/v1/sms"


def http_config(endpoint: str, **overrides: Any) -> HttpSmsConfig:
    fields = {
        "name": "relay",
        "url": endpoint,
        "from_number": "pushd",
        "auth_value": "Bearer k-123",
    }
    return msgspec.convert(fields | overrides, type=HttpSmsConfig)


@pytest.fixture
async def http_sender(sms_api: tuple[LocalSmsApi, str]) -> AsyncIterator[HttpSmsSender]:
    sender = HttpSmsSender(http_config(sms_api[1]))
    yield sender
    await sender.aclose()


async def test_http_sms_sends_json(
    sms_api: tuple[LocalSmsApi, str], http_sender: HttpSmsSender
) -> None:
    api, _ = sms_api
    sender: ChannelSender = http_sender
    receipt = await sender.send(message(content={"text": "Code: 123456 😀"}))
    assert api.received == [
        {"to": PHONE, "from": "pushd", "text": "Code: 123456 😀", "reference": "dlv-1"}
    ]
    assert receipt.provider_message_id == "msg-1"
    assert receipt.detail == {"encoding": "UCS-2", "segments": 1}
    assert (sender.channel, sender.provider) == ("sms", "relay")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param(429, TransientSendError, id="429"),
        pytest.param(500, TransientSendError, id="500"),
        pytest.param(502, TransientSendError, id="502"),
        pytest.param(400, PermanentSendError, id="400"),
        pytest.param(404, PermanentSendError, id="404"),
    ],
)
async def test_http_sms_classifies_by_status(
    sms_api: tuple[LocalSmsApi, str],
    http_sender: HttpSmsSender,
    status: int,
    error: type[SendError],
) -> None:
    sms_api[0].answer = (status, {"Retry-After": "30"})
    with pytest.raises(error, match=f"answered {status}: .*scripted") as raised:
        await http_sender.send(message())
    assert type(raised.value) is error
    assert raised.value.provider_code == str(status)
    if isinstance(raised.value, TransientSendError):
        assert raised.value.retry_after == 30.0


async def test_http_sms_bad_key_is_permanent(sms_api: tuple[LocalSmsApi, str]) -> None:
    async with aclosing(
        HttpSmsSender(http_config(sms_api[1], auth_value="Bearer wrong"))
    ) as sender:
        with pytest.raises(PermanentSendError, match="auth_value"):
            await sender.send(message())


async def test_http_sms_unreachable_is_transient() -> None:
    async with aclosing(HttpSmsSender(http_config(closed_port_url() + "/v1/sms"))) as sender:
        with pytest.raises(TransientSendError, match="cannot be reached"):
            await sender.send(message())


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        pytest.param({"url": "ftp://x"}, "url", id="not-http"),
        pytest.param({"auth_header": ""}, "auth_header", id="value-without-header"),
        pytest.param({"token": "x"}, "token", id="unknown-key"),
    ],
)
def test_http_sms_config_errors_name_the_key(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=named):
        http_config("https://sms.example.com/v1/sms", **overrides)
