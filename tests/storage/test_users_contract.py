"""The users-and-devices part of the `Storage` contract (storage/areas/users.py), on
every backend."""

from __future__ import annotations

import pytest

from storage import ConflictError, Storage, UnknownUserError
from storage.records import DeviceRecord, NewDevice
from tests.storage.conftest import CREATED_AT, user

# users ---------------------------------------------------------------------------------


async def test_create_user_round_trips_every_field(storage: Storage) -> None:
    fields = {
        "external_id": "crm-42",
        "name": "Zoë Ünicode",
        "email": "zoe@example.org",
        "phone": "+33123456789",
        "locale": "fr-FR",
        "timezone": "Europe/Paris",
    }
    created = await storage.create_user(user("u1", **fields))
    assert created.id == "u1"
    assert (created.last_seq, created.ack_seq, created.created_at) == (0, 0, CREATED_AT)
    assert {name: getattr(created, name) for name in fields} == fields
    assert await storage.get_user("u1") == created
    assert await storage.get_user_by_external_id("crm-42") == created


async def test_unknown_users_are_none(storage: Storage) -> None:
    assert await storage.get_user("nobody") is None
    assert await storage.get_user_by_external_id("nobody") is None


async def test_duplicate_user_is_a_conflict_naming_the_field(storage: Storage) -> None:
    await storage.create_user(user("u1", external_id="crm-1"))
    with pytest.raises(ConflictError) as taken_external_id:
        await storage.create_user(user("u2", external_id="crm-1"))
    assert taken_external_id.value.field == "external_id"
    with pytest.raises(ConflictError) as taken_id:
        await storage.create_user(user("u1", external_id="crm-2"))
    assert taken_id.value.field == "id"
    assert await storage.get_user("u2") is None


async def test_users_without_external_id_do_not_conflict(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    assert len(await storage.list_users(after_id=None, limit=10)) == 2


async def test_list_users_pages_by_id_in_byte_order(storage: Storage) -> None:
    """Guards pagination that follows the server's locale: 'B' < 'a' < 'b' byte-wise,
    but 'a' < 'B' in en_US, so pages would differ between backends and could skip users."""
    ids = ["b", "B", "a", "user-10", "user-9", "Z"]
    for user_id in ids:
        await storage.create_user(user(user_id))
    pages: list[list[str]] = []
    after_id: str | None = None
    while page := await storage.list_users(after_id=after_id, limit=4):
        pages.append([found.id for found in page])
        after_id = page[-1].id
    assert pages == [["B", "Z", "a", "b"], ["user-10", "user-9"]]
    assert [u.id for u in await storage.list_users(after_id="Y", limit=2)] == ["Z", "a"]
    assert await storage.list_users(after_id=None, limit=0) == []


# devices -------------------------------------------------------------------------------

PUSH_KEYS = {"p256dh": "key", "auth": "secret"}


def device(
    device_id: str,
    user_id: str = "u1",
    *,
    address: str = "https://push.example/endpoint/1",
    details: dict[str, str] = PUSH_KEYS,
    created_at: int = CREATED_AT,
) -> NewDevice:
    return NewDevice(
        id=device_id,
        user_id=user_id,
        kind="webpush",
        address=address,
        details=details,
        created_at=created_at,
    )


def stored(new: NewDevice) -> DeviceRecord:
    return DeviceRecord(
        id=new.id,
        user_id=new.user_id,
        kind=new.kind,
        address=new.address,
        details=new.details,
        created_at=new.created_at,
    )


async def test_upsert_device_creates_then_replaces_details(storage: Storage) -> None:
    """Guards duplicate devices: clients re-register the same push token on every start,
    under a fresh id, and the first registration must be kept with the new keys."""
    await storage.create_user(user("u1"))
    first = device("d1")
    assert await storage.upsert_device(first) == (stored(first), True)
    new_keys = {"p256dh": "rotated", "auth": "rotated"}
    again = await storage.upsert_device(device("d2", details=new_keys, created_at=CREATED_AT + 5))
    expected = stored(device("d1", details=new_keys))
    assert again == (expected, False)
    assert await storage.list_devices("u1") == [expected]


async def test_upsert_device_with_a_taken_id_is_a_conflict(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.upsert_device(device("d1"))
    with pytest.raises(ConflictError) as taken:
        await storage.upsert_device(device("d1", address="https://push.example/other"))
    assert taken.value.field == "id"


async def test_upsert_device_of_unknown_user_raises(storage: Storage) -> None:
    with pytest.raises(UnknownUserError) as unknown:
        await storage.upsert_device(device("d1", user_id="ghost"))
    assert unknown.value.user_id == "ghost"
    assert await storage.list_devices("ghost") == []


async def test_list_devices_is_per_user_oldest_first(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    newer = device("d1", address="https://push.example/new", created_at=CREATED_AT + 10)
    older = device("d2", address="https://push.example/old", created_at=CREATED_AT)
    others = device("d3", user_id="u2")
    for new in (newer, older, others):
        await storage.upsert_device(new)
    assert await storage.list_devices("u1") == [stored(older), stored(newer)]
    assert await storage.list_devices("u2") == [stored(others)]


async def test_delete_device_only_for_its_owner(storage: Storage) -> None:
    """Guards one user unregistering another user's device by guessing its id."""
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.upsert_device(device("d1"))
    assert not await storage.delete_device("u2", "d1")
    assert len(await storage.list_devices("u1")) == 1
    assert await storage.delete_device("u1", "d1")
    assert await storage.list_devices("u1") == []
    assert not await storage.delete_device("u1", "d1")
