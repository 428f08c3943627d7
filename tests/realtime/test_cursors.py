"""The cursor recorder's flush: every user's cursors reach storage, a few hundred users
per storage call, and what a failed call did not write is written by the next flush."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from pushd.ids import new_id, now_ms
from pushd.realtime.cursors import USERS_PER_WRITE, CursorRecorder
from storage import Storage, StorageUnavailableError, open_storage
from storage.records import NewNotification, NewUser

USERS = USERS_PER_WRITE * 2 + 100  # three calls: full, full, partial


class CountingStorage:
    """Passes `advance_cursors` to the real storage, counting the users of each call;
    the calls listed in `fail_calls` (1-based) raise instead."""

    def __init__(self, storage: Storage, fail_calls: set[int] | None = None) -> None:
        self.storage = storage
        self.fail_calls = fail_calls or set()
        self.calls: list[int] = []

    async def advance_cursors(
        self,
        *,
        sent: Mapping[str, int],
        acked: Mapping[str, int],
        at: int,
        within: Sequence[str] | None = None,
    ) -> None:
        self.calls.append(len(sent.keys() | acked.keys()))
        if len(self.calls) in self.fail_calls:
            raise StorageUnavailableError("the disk is full (a test double)")
        await self.storage.advance_cursors(sent=sent, acked=acked, at=at, within=within)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    store = await open_storage(f"sqlite:///{tmp_path / 'cursors.db'}")
    await store.migrate()
    yield store
    await store.close()


async def users_with_one_notification(storage: Storage) -> list[str]:
    """Users whose cursors may move to 1 (never past the newest notification)."""
    users = []
    for _ in range(USERS):
        user = await storage.create_user(NewUser(id=new_id("usr"), created_at=now_ms()))
        users.append(user.id)
    await storage.insert_notifications(
        [
            NewNotification(id=new_id("ntf"), user_id=u, title="hi", created_at=now_ms())
            for u in users
        ]
    )
    return users


async def cursors_of(storage: Storage, users: list[str]) -> set[tuple[int, int]]:
    """The distinct (sent_seq, ack_seq) pairs of these users."""
    pairs = set()
    for user_id in users:
        user = await storage.get_user(user_id)
        assert user is not None
        pairs.add((user.sent_seq, user.ack_seq))
    return pairs


async def test_a_flush_writes_every_user_a_few_hundred_per_call(storage: Storage) -> None:
    """Guards one transaction for every online user, which held SQLite's single writer
    for tens of ms while notification commits queued behind it."""
    users = await users_with_one_notification(storage)
    counting = CountingStorage(storage)
    recorder = CursorRecorder(counting, interval=60)  # type: ignore[arg-type]
    for user_id in users:
        recorder.sent(user_id, 1)
        recorder.acked(user_id, 1)
    await recorder.flush()
    assert counting.calls == [USERS_PER_WRITE, USERS_PER_WRITE, 100]
    assert await cursors_of(storage, users) == {(1, 1)}
    assert recorder.flushes == 1


async def test_what_a_failed_call_did_not_write_is_written_by_the_next_flush(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    users = await users_with_one_notification(storage)
    counting = CountingStorage(storage, fail_calls={2})
    recorder = CursorRecorder(counting, interval=60)  # type: ignore[arg-type]
    for user_id in users:
        recorder.sent(user_id, 1)
    await recorder.flush()
    assert counting.calls == [USERS_PER_WRITE, USERS_PER_WRITE]  # stopped at the failure
    assert recorder.flush_failures == 1
    assert "cursor flush failed" in caplog.text
    assert await cursors_of(storage, users[:USERS_PER_WRITE]) == {(1, 0)}
    assert await cursors_of(storage, users[USERS_PER_WRITE:]) == {(0, 0)}

    recorder.acked(users[-1], 1)  # a newer cursor merges with the kept ones
    await recorder.flush()
    assert counting.calls[2:] == [USERS_PER_WRITE, 100]
    assert await cursors_of(storage, users[:-1]) == {(1, 0)}
    assert await cursors_of(storage, users[-1:]) == {(1, 1)}
