"""Digests end to end (pushd/routing/digests.py): a running pushd with the local SMTP
relay, a category with a digest window, notifications POSTed in it; the test reads the
emails the relay received and the deliveries the API shows."""

from __future__ import annotations

import asyncio
import time
from email.message import EmailMessage
from typing import Any

from pushd.routing.digests import MAX_LISTED
from tests.app_client import AUTH, MakeClient, create_user
from tests.channels.smtp_server import LocalSmtpServer
from tests.channels.test_end_to_end import (
    Client,
    detail,
    email_provider,
    post,
    relay,
    settled,
    smtp_servers,
    start_pushd,
)

__all__ = ["relay", "smtp_servers"]  # fixtures used by name

WINDOW = 0.4


async def digest_category(client: Client, slug: str = "news", **fields: Any) -> None:
    definition = {
        "name": "Team news",
        "plan": [{"channel": "email"}],
        "digest_window": WINDOW,
        **fields,
    }
    response = await client.put(f"/api/categories/{slug}", json=definition, headers=AUTH)
    assert response.status in (200, 201), await response.text()


async def mails(server: LocalSmtpServer, count: int, *, within: float = 5.0) -> list[EmailMessage]:
    """The mails received once there are `count` (or after `within` seconds)."""
    deadline = time.monotonic() + within
    while True:
        if len(server.handler.received) >= count or time.monotonic() > deadline:
            return [received.parsed() for received in server.handler.received]
        await asyncio.sleep(0.02)


def plain_text(mail: EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    text: str = part.get_content().replace("\r\n", "\n")
    return text.partition("\n--\n")[0]


async def test_three_notifications_in_a_window_arrive_as_one_email(
    relay: LocalSmtpServer, make_client: MakeClient
) -> None:
    client = await start_pushd(make_client, email=[email_provider("relay", relay)])
    await digest_category(client)
    user = await create_user(client, email="ada@example.com")
    started = time.monotonic()
    sent = [
        await post(client, user["id"], category="news", title=f"Item {i}", body=f"Body {i}")
        for i in range(3)
    ]
    [waiting] = (await detail(client, sent[0]))["channel_deliveries"]
    assert (waiting["status"], waiting["reason"]) == ("scheduled", "digest")

    [mail] = await mails(relay, 1)
    assert time.monotonic() - started >= WINDOW * 0.9  # not before the window closed
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == "3 new notifications in Team news"
    text = plain_text(mail)
    assert [line for line in text.splitlines() if line.startswith("- ")] == [
        "- Item 0",
        "- Item 1",
        "- Item 2",
    ]
    html = mail.get_body(("html",))
    assert html is not None
    assert html.get_content().count("<li>") == 3
    # One message: every row sent, under the same provider message id.
    rows = [(await settled(client, n))[0] for n in sent]
    assert {(r["status"], r["reason"]) for r in rows} == {("sent", "digest")}
    assert len({r["provider_message_id"] for r in rows}) == 1
    await asyncio.sleep(WINDOW)
    assert len(relay.handler.received) == 1

    # The next notification opens a new window: its own digest.
    later = await post(client, user["id"], category="news", title="Item 3")
    [_, second] = await mails(relay, 2)
    assert second["Subject"] == "1 new notification in Team news"
    assert "- Item 3" in plain_text(second)
    assert (await settled(client, later))[0]["status"] == "sent"


async def test_reading_some_leaves_the_rest_and_reading_all_cancels_the_digest(
    relay: LocalSmtpServer, make_client: MakeClient
) -> None:
    client = await start_pushd(make_client, email=[email_provider("relay", relay)])
    await digest_category(client)
    await digest_category(client, "quiet", name="Quiet")
    user = await create_user(client, email="ada@example.com")
    first = await post(client, user["id"], category="news", title="Read me")
    second = await post(client, user["id"], category="news", title="Keep me")
    muted = await post(client, user["id"], category="quiet", title="All read")
    for notification_id in (first, muted):
        response = await client.post(f"/api/notifications/{notification_id}/read", headers=AUTH)
        assert response.status == 200

    [mail] = await mails(relay, 1)
    assert mail["Subject"] == "1 new notification in Team news"
    assert "- Keep me" in plain_text(mail)
    assert "Read me" not in plain_text(mail)
    await asyncio.sleep(WINDOW * 2)
    assert len(relay.handler.received) == 1  # the digest of "quiet" was cancelled
    [row] = await settled(client, muted)
    assert (row["status"], row["reason"]) == ("cancelled", "read")
    assert (await settled(client, second))[0]["status"] == "sent"


async def test_critical_and_other_channels_are_not_digested(
    relay: LocalSmtpServer, make_client: MakeClient
) -> None:
    client = await start_pushd(make_client, email=[email_provider("relay", relay)])
    await digest_category(client, digest_window=60)
    user = await create_user(client, email="ada@example.com")
    urgent = await post(client, user["id"], category="news", title="Now", priority="critical")
    [mail] = await mails(relay, 1)
    assert mail["Subject"] == "Now"
    assert (await settled(client, urgent))[0]["reason"] is None


async def test_a_big_digest_lists_the_first_items_and_counts_the_rest(
    relay: LocalSmtpServer, make_client: MakeClient
) -> None:
    client = await start_pushd(make_client, email=[email_provider("relay", relay)])
    await digest_category(client, digest_window=1.0)
    user = await create_user(client, email="ada@example.com")
    total = MAX_LISTED + 5
    payload = [{"user_id": user["id"], "title": f"N{i}", "category": "news"} for i in range(total)]
    for item in payload:
        response = await client.post("/api/notifications", json=item, headers=AUTH)
        assert response.status == 202
    [mail] = await mails(relay, 1)
    assert mail["Subject"] == f"{total} new notifications in Team news"
    text = plain_text(mail)
    assert len([line for line in text.splitlines() if line.startswith("- ")]) == MAX_LISTED
    assert "... and 5 more" in text


async def test_digest_channels_are_shown_and_checked(
    relay: LocalSmtpServer, make_client: MakeClient
) -> None:
    client = await start_pushd(make_client, email=[email_provider("relay", relay)])
    await digest_category(client, digest_channels=["email", "sms"])
    view = await (await client.get("/api/categories/news", headers=AUTH)).json()
    assert (view["digest_window"], view["digest_channels"]) == (WINDOW, ["email", "sms"])
    bad = {"name": "News", "digest_window": 60, "digest_channels": ["push"]}
    response = await client.put("/api/categories/news", json=bad, headers=AUTH)
    assert response.status == 422
    assert "digest_channels" in await response.text()
