"""The fan-out (pushd/audiences/fanout.py) driven directly over a real app's components:
what it does when a recipient is erased mid-send, when a stored send cannot be sent, and
its bound on sends in flight."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp.test_utils import TestClient

from pushd.appkeys import (
    CHANNELS,
    INGEST,
    LIMITS,
    METRICS,
    PLANNER,
    STORAGE,
    TEMPLATES,
    WEBHOOKS,
)
from pushd.audiences.fanout import Components, Fanout
from pushd.config.settings import AudiencesConfig
from pushd.ids import now_ms
from pushd.routing.plan_reads import PlanReads
from storage import Storage
from storage.records import NewSend, SendRecord, UserFilter, UserRecord
from tests.app_client import MakeClient, create_user

Client = TestClient[Any, Any]
# The app's own fan-out looks only at start and then once an hour: the sends of these
# tests are carried out by the test's `Fanout`.
QUIET = {"poll_interval": 3600.0}


class ErasingStorage:
    """The app's storage, which erases `victim` right after the page holding them is
    read: the window between a chunk's read and its commit."""

    def __init__(self, storage: Storage, victim: str) -> None:
        self._storage = storage
        self._victim = victim

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    async def user_ids_matching(
        self, where: UserFilter | None, *, after_id: str | None, limit: int
    ) -> list[str]:
        ids = await self._storage.user_ids_matching(where, after_id=after_id, limit=limit)
        if self._victim in ids:
            assert await self._storage.erase_user(self._victim, batch_size=100)
        return ids

    async def users_matching(
        self, where: UserFilter | None, *, after_id: str | None, limit: int
    ) -> list[UserRecord]:
        users = await self._storage.users_matching(where, after_id=after_id, limit=limit)
        if any(u.id == self._victim for u in users):
            assert await self._storage.erase_user(self._victim, batch_size=100)
        return users


def fanout_of(client: Client, storage: Storage, **config: Any) -> Fanout:
    app = client.app
    components = Components(
        storage=storage,
        ingest=app[INGEST],
        planner=app[PLANNER],
        webhooks=app[WEBHOOKS],
        limits=app[LIMITS],
        channels=app[CHANNELS],
        metrics=app[METRICS],
        plan_reads=PlanReads(storage),
        templates=app[TEMPLATES],
    )
    return Fanout(components, AudiencesConfig(**config), node_id="test-fanout")


async def stored_send(storage: Storage, send_id: str, content: str) -> None:
    send = NewSend(id=send_id, audience={"kind": "broadcast"}, content=content, created_at=now_ms())
    await storage.create_send(send)


async def until_finished(storage: Storage, send_id: str) -> SendRecord:
    async with asyncio.timeout(10):
        while True:
            send = await storage.get_send(send_id)
            assert send is not None
            if send.finished_at is not None:
                return send
            await asyncio.sleep(0.02)


async def test_a_user_erased_mid_send_is_skipped(make_client: MakeClient) -> None:
    client = await make_client(audiences=QUIET)
    users = sorted([(await create_user(client))["id"] for _ in range(4)])
    storage = client.app[STORAGE]
    await stored_send(storage, "snd_erase", '{"broadcast": true, "title": "Hi"}')
    fanout = fanout_of(client, cast(Storage, ErasingStorage(storage, users[2])), chunk_size=2)
    await fanout.start()
    try:
        send = await until_finished(storage, "snd_erase")
    finally:
        await fanout.close()
    assert (send.status, send.resolved, send.committed, send.skipped) == ("done", 4, 3, 1)
    assert await storage.users_sent("snd_erase", users) == {users[0], users[1], users[3]}


async def test_an_attribute_segment_skips_a_user_erased_mid_send(
    make_client: MakeClient,
) -> None:
    client = await make_client(audiences=QUIET)
    plan_of: dict[str, str] = {}
    for plan in ["team", "free", "team", "team"]:
        plan_of[(await create_user(client, attributes={"plan": plan}))["id"]] = plan
    users = sorted(plan_of)
    team = [u for u in users if plan_of[u] == "team"]
    storage = client.app[STORAGE]
    audience = {"kind": "segment", "filter": {"attribute": "plan", "eq": "team"}}
    send = NewSend(id="snd_attr", audience=audience, content='{"title": "Hi"}', created_at=now_ms())
    await storage.create_send(send)
    fanout = fanout_of(client, cast(Storage, ErasingStorage(storage, team[1])), chunk_size=3)
    await fanout.start()
    try:
        done = await until_finished(storage, "snd_attr")
    finally:
        await fanout.close()
    assert (done.status, done.resolved, done.committed, done.skipped) == ("done", 3, 2, 1)
    assert await storage.users_sent("snd_attr", users) == {team[0], team[2]}


async def test_a_send_that_cannot_be_sent_is_marked_failed(make_client: MakeClient) -> None:
    client = await make_client(audiences=QUIET)
    await create_user(client)
    storage = client.app[STORAGE]
    await stored_send(storage, "snd_bad", '{"broadcast": true, "title": "Hi", "channels": 3}')
    fanout = fanout_of(client, storage)
    await fanout.start()
    try:
        send = await until_finished(storage, "snd_bad")
    finally:
        await fanout.close()
    assert send.status == "failed"
    assert send.error is not None
    assert "content" in send.error
    assert send.committed == 0


async def test_sends_in_flight_are_bounded(make_client: MakeClient) -> None:
    client = await make_client(audiences=QUIET)
    for _ in range(6):
        await create_user(client)
    storage = client.app[STORAGE]
    for number in range(3):
        await stored_send(storage, f"snd_{number}", '{"broadcast": true, "title": "Hi"}')
    fanout = fanout_of(client, storage, chunk_size=1, max_sends_in_flight=1)
    seen: set[int] = set()
    await fanout.start()
    try:
        async with asyncio.timeout(10):
            while await storage.unfinished_sends(node_id="x", now=2**62, limit=10):
                seen.add(fanout.running)
                await asyncio.sleep(0)
    finally:
        await fanout.close()
    assert seen <= {0, 1}
    for number in range(3):
        send = await storage.get_send(f"snd_{number}")
        assert send is not None
        assert (send.status, send.committed) == ("done", 6)
