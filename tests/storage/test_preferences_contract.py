"""The user preferences part of the `Storage` contract (storage/areas/preferences.py),
on every backend."""

from __future__ import annotations

import msgspec
import pytest

from storage import Storage, UnknownUserError
from storage.records import NewDevice, PreferencesChange, PreferencesRecord
from tests.storage.conftest import CREATED_AT, user

LATER = CREATED_AT + 1000
QUIET = {"start": "22:00", "end": "07:00", "channels": ["push"]}


async def test_a_user_who_set_nothing_has_the_defaults(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    assert await storage.get_preferences("u1") == PreferencesRecord(user_id="u1")
    assert await storage.get_preferences("nobody") is None


async def test_a_change_is_stored_and_returned(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    change = PreferencesChange(
        muted=True,
        quiet_hours=QUIET,
        channels={"news": {"email": False, "push": True}, "": {"sms": False}},
    )
    found = await storage.change_preferences("u1", change, at=CREATED_AT)
    expected = PreferencesRecord(
        user_id="u1",
        muted=True,
        quiet_hours=QUIET,
        channels={"": {"sms": False}, "news": {"email": False, "push": True}},
        updated_at=CREATED_AT,
    )
    assert found == expected
    assert await storage.get_preferences("u1") == expected


async def test_unset_fields_are_kept_and_none_resets(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    first = PreferencesChange(muted=True, quiet_hours=QUIET, channels={"news": {"email": False}})
    await storage.change_preferences("u1", first, at=CREATED_AT)
    # Only the switch changes: the mute and the quiet hours stay.
    found = await storage.change_preferences(
        "u1", PreferencesChange(channels={"news": {"sms": False}}), at=LATER
    )
    assert (found.muted, found.quiet_hours, found.updated_at) == (True, QUIET, LATER)
    assert found.channels == {"news": {"email": False, "sms": False}}
    # None: the switch goes back to the default (no row), and the quiet hours too.
    found = await storage.change_preferences(
        "u1",
        PreferencesChange(muted=False, quiet_hours=None, channels={"news": {"email": None}}),
        at=LATER,
    )
    assert (found.muted, found.quiet_hours) == (False, None)
    assert found.channels == {"news": {"sms": False}}


async def test_replace_removes_the_switches_not_given(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.change_preferences(
        "u1", PreferencesChange(channels={"news": {"email": False}, "a": {"sms": False}}), at=1
    )
    found = await storage.change_preferences(
        "u1", PreferencesChange(channels={"b": {"push": False}}, replace_channels=True), at=2
    )
    assert found.channels == {"b": {"push": False}}


async def test_the_same_change_twice_is_idempotent(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    change = PreferencesChange(channels={"news": {"email": False}})
    first = await storage.change_preferences("u1", change, at=CREATED_AT)
    second = await storage.change_preferences("u1", change, at=CREATED_AT)
    assert first == second


async def test_unknown_user_is_refused_and_nothing_is_stored(storage: Storage) -> None:
    change = PreferencesChange(muted=True, channels={"news": {"email": False}})
    with pytest.raises(UnknownUserError):
        await storage.change_preferences("nobody", change, at=CREATED_AT)
    await storage.create_user(user("nobody"))
    assert await storage.get_preferences("nobody") == PreferencesRecord(user_id="nobody")


async def test_users_do_not_share_preferences(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.change_preferences(
        "u1", PreferencesChange(muted=True, channels={"news": {"email": False}}), at=1
    )
    assert await storage.get_preferences("u2") == PreferencesRecord(user_id="u2")


async def test_erased_with_the_user(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.change_preferences(
        "u1", PreferencesChange(quiet_hours=QUIET, channels={"news": {"email": False}}), at=1
    )
    assert await storage.erase_user("u1", batch_size=100)
    assert await storage.get_preferences("u1") is None
    await storage.create_user(user("u1"))
    assert await storage.get_preferences("u1") == PreferencesRecord(user_id="u1")


def test_unset_is_distinct_from_none() -> None:
    """Guards the PATCH meaning: a change that does not name the quiet hours keeps them."""
    assert PreferencesChange().quiet_hours is msgspec.UNSET


# plan_context --------------------------------------------------------------------------


def _device(device_id: str, user_id: str, created_at: int) -> NewDevice:
    return NewDevice(
        id=device_id,
        user_id=user_id,
        kind="webpush",
        address=f"https://push.example/endpoint/{device_id}",
        details={"p256dh": "key", "auth": "secret"},
        created_at=created_at,
    )


async def test_plan_context_reads_what_the_three_reads_read(storage: Storage) -> None:
    await storage.create_user(user("u1", email="u1@example.com", timezone="Europe/Paris"))
    await storage.create_user(user("u2"))
    first, _ = await storage.upsert_device(_device("d1", "u1", CREATED_AT))
    second, _ = await storage.upsert_device(_device("d2", "u1", LATER))
    await storage.upsert_device(_device("d3", "u2", CREATED_AT))
    change = PreferencesChange(muted=True, channels={"news": {"email": False}})
    await storage.change_preferences("u1", change, at=CREATED_AT)

    context = await storage.plan_context("u1", devices=True)

    assert context is not None
    found, devices, preferences = context
    assert found == await storage.get_user("u1")
    assert devices == [first, second] == await storage.list_devices("u1")
    assert preferences == await storage.get_preferences("u1")
    assert preferences.muted
    assert preferences.channels == {"news": {"email": False}}


async def test_plan_context_leaves_the_devices_unread_unless_asked(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.upsert_device(_device("d1", "u1", CREATED_AT))

    context = await storage.plan_context("u1", devices=False)

    assert context is not None
    found, devices, preferences = context
    assert found == await storage.get_user("u1")
    assert devices == []
    assert preferences == PreferencesRecord(user_id="u1")


@pytest.mark.parametrize("devices", [True, False])
async def test_plan_context_of_an_unknown_user_is_none(storage: Storage, devices: bool) -> None:
    await storage.create_user(user("u1"))
    assert await storage.plan_context("nobody", devices=devices) is None


async def test_plan_contexts_reads_many_users_as_plan_context_reads_each(
    storage: Storage,
) -> None:
    await storage.create_user(user("u1", email="u1@example.com"))
    await storage.create_user(user("u2", timezone="Europe/Paris"))
    await storage.create_user(user("u3"))
    await storage.upsert_device(_device("d1", "u1", CREATED_AT))
    await storage.upsert_device(_device("d2", "u1", LATER))
    await storage.upsert_device(_device("d3", "u2", CREATED_AT))
    await storage.change_preferences(
        "u2", PreferencesChange(muted=True, channels={"news": {"email": False, "sms": True}}), at=1
    )
    await storage.change_preferences(
        "u1", PreferencesChange(channels={"alerts": {"push": False}}), at=2
    )

    found = await storage.plan_contexts(["u2", "nobody", "u1", "u3", "u2"], devices=True)

    assert sorted(found) == ["u1", "u2", "u3"]  # the unknown user is absent, u2 read once
    for user_id in ("u1", "u2", "u3"):
        assert found[user_id] == await storage.plan_context(user_id, devices=True)
    assert [d.id for d in found["u1"][1]] == ["d1", "d2"]
    assert found["u3"][1] == []


async def test_plan_contexts_leaves_the_devices_unread_unless_asked(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.upsert_device(_device("d1", "u1", CREATED_AT))
    assert (await storage.plan_contexts(["u1"], devices=False))["u1"][1] == []
    assert await storage.plan_contexts([], devices=True) == {}
