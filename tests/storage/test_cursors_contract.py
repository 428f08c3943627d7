"""The delivery-cursor part of the `Storage` contract (storage/areas/cursors.py), on
every backend: cursors only move forward, and their history tells when a seq was
reached. (The export's paged read of that history is in
test_data_protection_contract.py.)"""

from __future__ import annotations

from storage import Storage
from storage.records import CursorTimes
from tests.storage.conftest import note, user


async def _cursors(storage: Storage, user_id: str) -> tuple[int, int]:
    found = await storage.get_user(user_id)
    assert found is not None
    return found.sent_seq, found.ack_seq


async def test_cursors_only_move_forward_and_never_past_last_seq(storage: Storage) -> None:
    """Guards a late, stale ack (from a slow socket) moving the cursor back, which would
    replay notifications the user already has, and an ack above what exists hiding the
    next notifications from a client that connects without `since`."""
    for user_id in ("u1", "u2", "u3"):
        await storage.create_user(user(user_id))
    await storage.insert_notifications([note(f"a{i}", "u1") for i in range(6)])
    await storage.insert_notifications([note(f"b{i}", "u2") for i in range(4)])
    await storage.advance_cursors(sent={"u1": 5, "u2": 9}, acked={"u1": 5, "ghost": 9}, at=100)
    await storage.advance_cursors(sent={"u1": 2}, acked={"u1": 2, "u2": 3}, at=200)
    await storage.advance_cursors(sent={}, acked={}, at=300)
    assert await _cursors(storage, "u1") == (5, 5)
    assert await _cursors(storage, "u2") == (4, 3)  # sent 9 is lowered to last_seq 4
    assert await _cursors(storage, "u3") == (0, 0)
    assert await storage.get_user("ghost") is None


async def test_cursor_times_tell_when_each_seq_was_reached(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note(f"n{i}", "u1") for i in range(10)])
    await storage.advance_cursors(sent={"u1": 3}, acked={}, at=1_000)
    await storage.advance_cursors(sent={"u1": 7}, acked={"u1": 2}, at=2_000)
    await storage.advance_cursors(sent={"u1": 7}, acked={"u1": 1}, at=3_000)  # no move
    times = await storage.cursor_times("u1", [1, 3, 4, 7, 8])
    assert times == {
        1: CursorTimes(sent_at=1_000, acked_at=2_000),
        3: CursorTimes(sent_at=1_000, acked_at=None),
        4: CursorTimes(sent_at=2_000, acked_at=None),
        7: CursorTimes(sent_at=2_000, acked_at=None),
        8: CursorTimes(sent_at=None, acked_at=None),
    }
    assert await storage.cursor_times("u1", []) == {}
