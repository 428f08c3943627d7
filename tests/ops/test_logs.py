"""The log: JSON lines with their fields, request ids taken, generated and echoed, and a
scenario full of secrets after which no log line holds any of them."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.api.request_ids import HEADER
from pushd.ops import logs
from tests.app_client import ADMIN_KEY, AUTH, MakeClient, create_key, create_user, user_token
from tests.channels.harness import AiohttpServer, allow_every_url, served
from tests.channels.local_twilio import LocalTwilio
from tests.channels.smtp_server import LocalSmtpServer, RecordingHandler

Client = TestClient[Any, Any]


def record(message: str, *args: object, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("pushd.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


# The JSON format -------------------------------------------------------------------------


def test_json_line_has_time_level_logger_message_and_node() -> None:
    line = json.loads(logs.JsonFormatter("node-a").format(record("sent %d", 3)))
    assert line.keys() == {"time", "level", "logger", "message", "node_id"}
    assert (line["level"], line["logger"], line["message"]) == ("warning", "pushd.test", "sent 3")
    assert line["node_id"] == "node-a"
    # RFC 3339 in UTC with milliseconds: 2026-12-03T15:37:40.123Z
    assert len(line["time"]) == 24
    assert line["time"].endswith("Z")
    assert line["time"][19] == "."


def test_json_line_names_the_request_and_the_notification() -> None:
    token = logs.request_id.set("req-1")
    try:
        from_context = json.loads(logs.JsonFormatter().format(record("x")))
        from_extra = json.loads(logs.JsonFormatter().format(record("x", notification_id="ntf_2")))
    finally:
        logs.request_id.reset(token)
    assert from_context["request_id"] == "req-1"
    assert "notification_id" not in from_context
    assert from_extra["notification_id"] == "ntf_2"
    assert "request_id" not in json.loads(logs.JsonFormatter().format(record("x")))


def test_exception_goes_in_exc() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        failed = logging.LogRecord(
            "pushd", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    line = json.loads(logs.JsonFormatter().format(failed))
    assert line["message"] == "failed"
    assert "ValueError: broken" in line["exc"]


def test_text_line_names_the_ids() -> None:
    text = logs.TextFormatter().format(record("sent", notification_id="ntf_9"))
    assert text.endswith("WARNING pushd.test: sent [notification=ntf_9]")


@pytest.mark.parametrize(
    ("leaky", "secret"),
    [
        ("cannot reach postgresql://pushd:s3cr3t-pw@db:5432/pushd", "s3cr3t-pw"),
        ("Authorization: Bearer pk_abcdefghijklmnop", "pk_abcdefghijklmnop"),
        ("key pk_abcdefghijklmnop_rest refused", "abcdefghijklmnop"),
        ("token eyJhbGciOi.eyJzdWIiOiJ1.c2lnbmF0dXJl", "eyJzdWIiOiJ1"),
        ("GET /api/unsubscribe?token=abc.def HTTP/1.1", "abc.def"),
        ("to ada.lovelace+ops@example.co.uk failed", "ada.lovelace+ops@example.co.uk"),
        ("sms to +14155550123 failed", "+14155550123"),
    ],
)
def test_scrub_masks_what_slips_through(leaky: str, secret: str) -> None:
    assert secret not in logs.scrub(leaky)
    assert secret not in logs.JsonFormatter().format(record(leaky))
    assert secret not in logs.TextFormatter().format(record(leaky))


# Request ids -------------------------------------------------------------------------------


async def test_request_id_is_taken_from_the_client(client: Client) -> None:
    response = await client.get("/api/healthcheck", headers={HEADER: "trace-42/abc"})
    assert response.status == 200
    assert response.headers[HEADER] == "trace-42/abc"


@pytest.mark.parametrize("given", [None, "", "x" * 129, "has space", "caf\u00e9"])
async def test_request_id_is_generated_when_missing_or_unfit(
    client: Client, given: str | None
) -> None:
    headers = {} if given is None else {HEADER: given}
    first = await client.get("/api/healthcheck", headers=headers)
    second = await client.get("/api/healthcheck", headers=headers)
    # This process's 16 hex digits of random prefix, then a counter (at least 8 digits).
    assert re.fullmatch(r"[0-9a-f]{24,}", first.headers[HEADER])
    assert first.headers[HEADER] != second.headers[HEADER]


async def test_request_id_is_echoed_on_errors(make_client: MakeClient) -> None:
    client = await make_client(server={"max_body_bytes": 1024})
    not_found = await client.get("/api/no-such-route", headers={HEADER: "r-404"})
    assert (not_found.status, not_found.headers[HEADER]) == (404, "r-404")
    invalid = await client.post(
        "/api/users", json={"external_id": 5}, headers={**AUTH, HEADER: "r-422"}
    )
    assert (invalid.status, invalid.headers[HEADER]) == (422, "r-422")
    unauthorized = await client.get("/api/users", headers={HEADER: "r-401"})
    assert (unauthorized.status, unauthorized.headers[HEADER]) == (401, "r-401")
    too_large = await client.post("/api/users", data=b"x" * 2048, headers={**AUTH, HEADER: "r-413"})
    assert (too_large.status, too_large.headers[HEADER]) == (413, "r-413")


async def test_log_lines_of_a_request_carry_its_ids(
    client: Client, every_line: FormattingHandler
) -> None:
    """The access-log line is written in the request's task after the handler: it names
    the request (set by the middleware) and the notification accepted (set by the send)."""
    user = await create_user(client)
    response = await client.post(
        "/api/notifications",
        json={"user_id": user["id"], "title": "t"},
        headers={**AUTH, HEADER: "r-send"},
    )
    assert response.status == 202
    notification_id = (await response.json())["id"]
    await client.get("/api/healthcheck")  # the line above is written before this is answered
    lines = [json.loads(line) for line in every_line.lines if line.startswith("{")]
    [access] = [line for line in lines if line.get("request_id") == "r-send"]
    assert access["logger"] == "aiohttp.access"
    assert access["notification_id"] == notification_id
    others = [line for line in lines if line.get("notification_id") == notification_id]
    assert others == [access]  # the next request does not inherit it


# No secret in any line -------------------------------------------------------------------


class FormattingHandler(logging.Handler):
    """Formats every record at once, in the task that logged it (the ids live in its
    context), with both formatters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.raw: list[str] = []
        self._formatters = (logs.JsonFormatter("node-a"), logs.TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.raw.append(record.getMessage())
        if record.exc_info:
            self.raw.append(logging.Formatter().formatException(record.exc_info))
        self.lines.extend(f.format(record) for f in self._formatters)


@pytest.fixture
def every_line() -> Iterator[FormattingHandler]:
    handler = FormattingHandler()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


SMTP_USER, SMTP_PASSWORD = "pushd-mailer", "smtp-Pa55word-never-logged"
TWILIO_SID = "AC" + "feedc0de" * 4
TWILIO_TOKEN, WRONG_TWILIO_TOKEN = "twilio-auth-token-never-logged", "twilio-wrong-token-xyz"
STORAGE_PASSWORD = "storage-pw-never-logged"
EMAIL, PHONE = "grace.hopper@example.org", "+14155550199"


async def settled(client: Client, notification_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10.0
    while True:
        response = await client.get(f"/api/notifications/{notification_id}", headers=AUTH)
        deliveries: list[dict[str, Any]] = (await response.json())["channel_deliveries"]
        final = {"sent", "failed", "skipped"}
        if all(d["status"] in final for d in deliveries) or time.monotonic() > deadline:
            return deliveries
        await asyncio.sleep(0.05)


async def test_no_secret_reaches_the_log(
    make_client: MakeClient,
    postgres_url: str,
    aiohttp_server: AiohttpServer,
    every_line: FormattingHandler,
) -> None:
    """Keys, user tokens, provider passwords, a storage password, an e-mail address and a
    phone number all go through a running server (one e-mail sent, one SMS refused for
    its credentials); then no formatted line, JSON or text, holds any of them, and no raw
    message holds a credential (the scrubbing is a backstop, not the fix)."""
    relay = LocalSmtpServer(
        RecordingHandler(), credentials=(SMTP_USER, SMTP_PASSWORD), plain_auth=True
    )
    await relay.start()
    twilio = LocalTwilio(account_sid=TWILIO_SID, auth_token=WRONG_TWILIO_TOKEN)
    twilio.base_url = await served(aiohttp_server, twilio.app())
    with_password = postgres_url.replace("@", f":{STORAGE_PASSWORD}@", 1)
    try:
        client = await make_client(
            outbound_url_check=allow_every_url,
            storage={"url": with_password},
            channels={
                "poll_interval": 0.05,
                "max_attempts": 1,
                "email": [
                    {
                        "name": "relay",
                        "host": "127.0.0.1",
                        "port": relay.port,
                        "security": "none",
                        "username": SMTP_USER,
                        "password": SMTP_PASSWORD,
                        "from_address": "pushd@example.com",
                        "timeout": 2.0,
                    }
                ],
                "sms": [
                    {
                        "kind": "twilio",
                        "name": "twilio",
                        "account_sid": TWILIO_SID,
                        "auth_token": TWILIO_TOKEN,
                        "from_number": "+14155550100",
                        "base_url": twilio.base_url,
                    }
                ],
            },
        )
        publisher_key, _ = await create_key(client, "publisher")
        user = await create_user(client, email=EMAIL, phone=PHONE)
        token = await user_token(client, user["id"])
        refused = await client.get("/api/users", headers={"Authorization": "Bearer pk_wrong"})
        assert refused.status == 401
        statuses = []
        for channel in ("email", "sms"):
            response = await client.post(
                "/api/notifications",
                json={"user_id": user["id"], "title": "t", "channels": [{"channel": channel}]},
                headers={"Authorization": f"Bearer {publisher_key}"},
            )
            assert response.status == 202, await response.text()
            [delivery] = await settled(client, (await response.json())["id"])
            statuses.append(delivery["status"])
        assert statuses == ["sent", "failed"]
        assert len(relay.handler.received) == 1
        await client.close()
    finally:
        await relay.stop()

    secrets = {
        "admin key": ADMIN_KEY,
        "publisher key": publisher_key,
        "user token": token,
        "SMTP password": SMTP_PASSWORD,
        "Twilio auth token": TWILIO_TOKEN,
        "storage password": STORAGE_PASSWORD,
        "e-mail": EMAIL,
        "phone": PHONE,
    }
    assert any("channel delivery" in line for line in every_line.lines)
    for what, secret in secrets.items():
        leaks = [line for line in every_line.lines if secret in line]
        assert not leaks, f"{what} in the log: {leaks[0]}"
    for what in ("admin key", "publisher key", "user token", "SMTP password", "storage password"):
        leaks = [message for message in every_line.raw if secrets[what] in message]
        assert not leaks, f"{what} logged (before scrubbing): {leaks[0]}"
