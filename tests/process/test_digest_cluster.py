"""Two real `pushd serve` processes sharing PostgreSQL and RabbitMQ send digests (issue
#13, point 6) to a local SMTP relay: many notifications of a digest category (1 s
window) are POSTed to both nodes while digests go out, and every notification appears
in exactly one received email."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.channels.smtp_server import LocalSmtpServer, RecordingHandler
from tests.process.server_process import ServerProcess

ADMIN_KEY = "pk_digest_cluster_admin_key_0123456789abcdef"
SECRET = "digest-cluster-shared-token-secret-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
USERS = 10
SENDS = 400
# The sends are spread over this many seconds: several windows of every user close
# (and their digests go out) while notifications keep arriving.
SPREAD = 4.0
LISTED = re.compile(r"^- item-(\d+)$", re.MULTILINE)

pytestmark = pytest.mark.slow


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, body: object
) -> dict[str, object]:
    async with session.request(method, url, json=body, headers=AUTH) as response:
        assert response.status in (200, 201, 202), await response.text()
        result: dict[str, object] = await response.json()
        return result


async def _send_all(
    session: aiohttp.ClientSession, nodes: list[str], users: list[str]
) -> list[str]:
    started = time.monotonic()
    limit = asyncio.Semaphore(8)

    async def one(index: int) -> str:
        await asyncio.sleep(max(0.0, started + SPREAD * index / SENDS - time.monotonic()))
        body = {"user_id": users[index % USERS], "title": f"item-{index}", "category": "news"}
        async with limit:
            accepted = await _call(session, "POST", f"{nodes[index % 2]}/api/notifications", body)
        return str(accepted["id"])

    return await asyncio.gather(*(one(i) for i in range(SENDS)))


async def _wait_sent(database: asyncpg.Connection, ids: list[str], deadline: float) -> int:
    """How many of the notifications' email rows are not sent yet (0 once all are)."""
    query = (
        "SELECT count(*) FROM channel_deliveries "
        "WHERE notification_id = ANY($1::text[]) AND status <> 'sent'"
    )
    while True:
        left = int(await database.fetchval(query, ids))
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.2)


async def _wait_mails(relay: LocalSmtpServer, count: int, deadline: float) -> None:
    while True:
        if len(relay.handler.received) >= count or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def test_every_notification_is_in_exactly_one_digest_across_two_nodes(
    tmp_path: Path, postgres_url: str, amqp_url: str
) -> None:
    relay = LocalSmtpServer(RecordingHandler())
    await relay.start()
    provider = {
        "name": "relay",
        "host": "127.0.0.1",
        "port": relay.port,
        "security": "none",
        "from_address": "pushd@example.com",
    }
    env = {
        "PUSHD_STORAGE__URL": postgres_url,
        "PUSHD_BUS__URL": amqp_url,
        "PUSHD_AUTH__TOKEN_SECRET": SECRET,
        "PUSHD_ADMIN_KEY": ADMIN_KEY,
        "PUSHD_CHANNELS__EMAIL": json.dumps([provider]),
        "PUSHD_CHANNELS__POLL_INTERVAL": "0.05",
        # The node that did not define the category sees it within this.
        "PUSHD_ROUTING__CATEGORIES_REFRESH_INTERVAL": "0.2",
    }
    try:
        async with (
            await ServerProcess.start(tmp_path / "a", env=env) as node_a,
            await ServerProcess.start(tmp_path / "b", env=env) as node_b,
            aiohttp.ClientSession() as session,
        ):
            nodes = [node_a.url, node_b.url]
            definition = {"name": "News", "plan": [{"channel": "email"}], "digest_window": 1}
            await _call(session, "PUT", f"{node_a.url}/api/categories/news", definition)
            await asyncio.sleep(0.5)
            users = [
                str(
                    (
                        await _call(
                            session,
                            "POST",
                            f"{node_a.url}/api/users",
                            {"name": f"u{i}", "email": f"u{i}@example.org"},
                        )
                    )["id"]
                )
                for i in range(USERS)
            ]
            ids = await _send_all(session, nodes, users)
            database = await asyncpg.connect(postgres_url)
            try:
                left = await _wait_sent(database, ids, time.monotonic() + 30)
                assert left == 0, f"{left} digest rows were never sent"
                messages = await database.fetchval(
                    "SELECT count(DISTINCT provider_message_id) FROM channel_deliveries "
                    "WHERE notification_id = ANY($1::text[])",
                    ids,
                )
                senders = await database.fetch(
                    "SELECT lease_owner IS NULL, count(*) FROM channel_deliveries "
                    "WHERE notification_id = ANY($1::text[]) GROUP BY 1",
                    ids,
                )
            finally:
                await database.close()
            await _wait_mails(relay, messages, time.monotonic() + 10)
            assert await node_a.stop() == 0, node_a.log()
            assert await node_b.stop() == 0, node_b.log()
    finally:
        await relay.stop()

    mails = [received.parsed() for received in relay.handler.received]
    listed: Counter[int] = Counter()
    for mail in mails:
        part = mail.get_body(("plain",))
        assert part is not None
        text = part.get_content().replace("\r\n", "\n")
        assert "more" not in text.partition("\n--\n")[0], "a digest hid items"
        found = [int(index) for index in LISTED.findall(text)]
        assert mail["Subject"].startswith(f"{len(found)} new notification")
        listed.update(found)
    assert sorted(listed) == list(range(SENDS)), "a notification is in no digest"
    assert set(listed.values()) == {1}, "a notification is in two digests"
    assert len(mails) == messages
    # Digests went out while notifications kept coming: several per user.
    assert len(mails) > 2 * USERS
    assert [tuple(row) for row in senders] == [(True, SENDS)]
