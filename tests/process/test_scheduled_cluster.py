"""Two real `pushd serve` processes sharing PostgreSQL and RabbitMQ release scheduled
sends (issue #13, point 5): 1,000 notifications scheduled across both nodes for the same
few seconds are each committed exactly once, with gap-free seqs per user."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.process.server_process import ServerProcess

ADMIN_KEY = "pk_schedule_cluster_admin_key_0123456789abcdef"
SECRET = "schedule-cluster-shared-token-secret-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
SCHEDULED = 1_000
USERS = 10
# Posting 1,000 requests on a shared CI machine takes a few seconds: every send is due
# after all are accepted, so that both nodes' loops race for the same due rows.
LEAD = timedelta(seconds=8)

pytestmark = pytest.mark.slow


async def _post(session: aiohttp.ClientSession, url: str, body: object) -> dict[str, object]:
    async with session.post(url, json=body, headers=AUTH) as response:
        assert response.status in (201, 202), await response.text()
        result: dict[str, object] = await response.json()
        return result


async def _schedule_all(
    session: aiohttp.ClientSession, nodes: list[str], users: list[str], due: datetime
) -> list[str]:
    limit = asyncio.Semaphore(16)

    async def one(index: int) -> str:
        # Due instants spread over one second, every node accepting half of them.
        body = {
            "user_id": users[index % USERS],
            "body": str(index),
            "send_at": (due + timedelta(milliseconds=index % 1000)).isoformat(),
        }
        async with limit:
            accepted = await _post(session, f"{nodes[index % 2]}/api/notifications", body)
        assert accepted["status"] == "scheduled"
        return str(accepted["id"])

    return await asyncio.gather(*(one(i) for i in range(SCHEDULED)))


async def _wait_released(database: asyncpg.Connection, deadline: float) -> int:
    while time.monotonic() < deadline:
        left = await database.fetchval("SELECT count(*) FROM scheduled_notifications")
        if left == 0:
            return 0
        await asyncio.sleep(0.2)
    return int(await database.fetchval("SELECT count(*) FROM scheduled_notifications"))


async def test_each_scheduled_send_is_released_once_across_two_nodes(
    tmp_path: Path, postgres_url: str, amqp_url: str
) -> None:
    env = {
        "PUSHD_STORAGE__URL": postgres_url,
        "PUSHD_BUS__URL": amqp_url,
        "PUSHD_AUTH__TOKEN_SECRET": SECRET,
        "PUSHD_ADMIN_KEY": ADMIN_KEY,
        # Small batches, so that both nodes take part in releasing the same second.
        "PUSHD_SCHEDULER__BATCH_SIZE": "50",
    }
    async with (
        await ServerProcess.start(tmp_path / "a", env=env) as node_a,
        await ServerProcess.start(tmp_path / "b", env=env) as node_b,
        aiohttp.ClientSession() as session,
    ):
        nodes = [node_a.url, node_b.url]
        users = [
            str((await _post(session, f"{node_a.url}/api/users", {"name": f"u{i}"}))["id"])
            for i in range(USERS)
        ]
        due = datetime.now(UTC) + LEAD
        ids = await _schedule_all(session, nodes, users, due)
        accepted_by = time.monotonic()
        database = await asyncpg.connect(postgres_url)
        try:
            early = await database.fetchval(
                "SELECT count(*) FROM notifications WHERE id = ANY($1::text[])", ids
            )
            if datetime.now(UTC) < due:
                assert early == 0, "released before its time"
            left = await _wait_released(database, accepted_by + LEAD.total_seconds() + 30)
            assert left == 0, f"{left} scheduled notifications were never released"
            rows = await database.fetch(
                "SELECT id, user_id, seq, node_id FROM notifications WHERE id = ANY($1::text[])",
                ids,
            )
        finally:
            await database.close()
        assert len(rows) == SCHEDULED
        assert len({row["id"] for row in rows}) == SCHEDULED
        for user_id in users:
            seqs = sorted(row["seq"] for row in rows if row["user_id"] == user_id)
            assert seqs == list(range(1, SCHEDULED // USERS + 1)), user_id
        releasers = Counter(row["node_id"] for row in rows)
        print(f"released per node: {dict(releasers)}")
        assert all(node.endswith(".scheduler") for node in releasers)
        assert await node_a.stop() == 0, node_a.log()
        assert await node_b.stop() == 0, node_b.log()
