"""The audit trail: every state-changing call recorded (failed ones too) by the route
dispatcher, read back through `GET /api/audit`; and the batching writer behind it."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd import audit as audit_module
from pushd.appkeys import AUDIT
from pushd.audit import AuditWriter
from storage import Storage, open_storage
from storage.records import NewAuditRecord
from tests.api.conftest import AUTH, create_key, create_user, send

Client = TestClient[Any, Any]


async def audit_items(client: Client, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/api/audit", params=params, headers=AUTH)
    assert response.status == 200, await response.text()
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def test_state_changing_calls_are_recorded_with_who_what_where_and_result(
    client: Client,
) -> None:
    user = await create_user(client)
    accepted = await send(client, user["id"], category="billing")
    reader_key, reader = await create_key(client, "reader")
    denied = await client.post(
        "/api/users", json={}, headers={"Authorization": f"Bearer {reader_key}"}
    )
    assert denied.status == 403
    anonymous = await client.post("/api/notifications", json={})
    assert anonymous.status == 401
    invalid = await client.post("/api/users", json={"phone": "nope"}, headers=AUTH)
    assert invalid.status == 422
    assert (await client.get("/api/users", headers=AUTH)).status == 200  # a GET: not recorded
    revoked = await client.post(f"/api/users/{user['id']}/tokens/revoke", headers=AUTH)
    assert revoked.status == 200
    assert (await client.delete(f"/api/keys/{reader['id']}", headers=AUTH)).status == 200

    items = await audit_items(client)
    summary = [(i["action"], i["target"], i["result"]) for i in reversed(items)]
    admin = items[-1]["actor"]
    assert admin.startswith("key:key_")
    assert summary == [
        ("user.create", f"user:{user['id']}", "201"),
        ("notification.send", f"user:{user['id']}", "202"),
        ("key.create", f"key:{reader['id']}", "201"),
        ("user.create", None, "403"),
        ("notification.send", None, "401"),
        ("user.create", None, "422"),
        ("user.tokens_revoke", f"user:{user['id']}", "200"),
        ("key.revoke", f"key:{reader['id']}", "200"),
    ]
    actors = [i["actor"] for i in reversed(items)]
    assert actors == [admin, admin, admin, f"key:{reader['id']}", "anonymous", admin, admin, admin]
    assert {i["source"] for i in items} == {"127.0.0.1"}
    sent = items[-2]
    assert sent["detail"] == {"notification_id": accepted["id"], "seq": accepted["seq"]}
    assert items[-3]["detail"] == {"role": "reader", "categories": None}
    ids = [i["id"] for i in items]
    assert ids == sorted(ids, reverse=True)


async def test_audit_filters_and_pages(client: Client) -> None:
    users = [await create_user(client) for _ in range(5)]
    for user in users:
        await send(client, user["id"])
    sends = await audit_items(client, action="notification.send")
    assert len(sends) == 5
    assert [i["target"] for i in sends] == [f"user:{u['id']}" for u in reversed(users)]
    one = await audit_items(client, target=f"user:{users[0]['id']}")
    assert [i["action"] for i in one] == ["notification.send", "user.create"]
    assert await audit_items(client, actor="key:nobody") == []
    now = datetime.now(UTC)
    later = (now + timedelta(hours=1)).isoformat()
    assert await audit_items(client, since=later) == []
    assert len(await audit_items(client, until=later)) == 10
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/api/audit", params=params, headers=AUTH)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 10
    assert seen == sorted(seen, reverse=True)
    for bad in ({"since": "yesterday"}, {"since": "2026-01-01T00:00:00"}, {"limit": "0"}):
        response = await client.get("/api/audit", params=bad, headers=AUTH)
        assert response.status == 400, bad
        assert (await response.json())["error"]["field"] == next(iter(bad))


# the writer ------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> Any:
    store = await open_storage(f"sqlite:///{tmp_path / 'audit.db'}")
    await store.migrate()
    yield store
    await store.close()


def record(number: int) -> NewAuditRecord:
    return NewAuditRecord(at=number, actor="key:k", action="test.write", result="ok")


async def test_writer_batches_records_instead_of_one_write_each(sqlite_storage: Storage) -> None:
    """Guards a storage round trip per audited request (the hot POST /api/notifications):
    records queued together are appended in one transaction."""
    writer = AuditWriter(sqlite_storage, queue_size=1000, max_batch=512)
    await writer.start()
    for number in range(300):
        await writer.record(record(number))
    await writer.flush()
    assert writer.written == 300
    assert writer.batches == 1
    await writer.close()
    stored = await sqlite_storage.list_audit(limit=1000)
    assert [r.at for r in reversed(stored)] == list(range(300))


async def test_full_queue_makes_callers_wait_and_close_writes_everything(
    sqlite_storage: Storage,
) -> None:
    """Guards the overflow policy: with a tiny queue, many concurrent callers wait for
    space; none is dropped, and close() writes what is still queued."""
    writer = AuditWriter(sqlite_storage, queue_size=2, max_batch=3)
    await writer.start()
    await asyncio.gather(*(writer.record(record(n)) for n in range(100)))
    await writer.close()
    stored = await sqlite_storage.list_audit(limit=1000)
    assert sorted(r.at for r in stored) == list(range(100))
    assert writer.logged_instead == 0
    with pytest.raises(audit_module.AuditWriterClosedError):
        await writer.record(record(0))


async def test_records_storage_refuses_are_logged_not_lost_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_module, "_FIRST_RETRY_PAUSE_S", 0.001)
    store = await open_storage(f"sqlite:///{tmp_path / 'gone.db'}")
    await store.migrate()
    await store.close()  # every append now raises StorageUnavailableError
    writer = AuditWriter(store, queue_size=10, max_batch=10)
    await writer.start()
    with caplog.at_level(logging.WARNING, logger="pushd.audit"):
        await writer.record(record(1))
        await writer.record(record(2))
        await writer.flush()
        await writer.close()
    assert writer.logged_instead == 2
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lost) == 2
    assert '"action":"test.write"' in lost[0]


async def test_audit_writer_is_flushed_on_app_shutdown(client: Client) -> None:
    """Guards records lost on SIGTERM: what is queued when the app stops is written
    before storage closes (the writer's cleanup context stops first)."""
    writer = client.app[AUDIT]
    await create_user(client)
    await writer.flush()
    before = writer.written
    await writer.record(record(7))  # the queue had room: nothing yielded, still queued
    assert writer.written == before
    await client.close()
    assert writer.written == before + 1
