"""The channel opt-outs part of the `Storage` contract (storage/areas/channel_optouts.py),
on every backend."""

from __future__ import annotations

import pytest

from storage import Storage, UnknownUserError
from storage.records import ChannelOptOut
from tests.storage.conftest import CREATED_AT, user


def opt_out(
    user_id: str, channel: str = "email", category: str = "news", **fields: int
) -> ChannelOptOut:
    return ChannelOptOut(
        user_id=user_id,
        channel=channel,
        category=category,
        created_at=fields.get("created_at", CREATED_AT),
    )


async def test_set_is_idempotent_and_keeps_the_first_time(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    assert await storage.set_channel_optout(opt_out("u1")) is True
    assert await storage.set_channel_optout(opt_out("u1", created_at=CREATED_AT + 5)) is False
    assert await storage.channel_optouts_of(["u1"]) == [opt_out("u1")]


async def test_opt_outs_are_per_channel_and_exact_category(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    for channel, category in [("sms", "news"), ("email", ""), ("email", "news"), ("email", "N")]:
        await storage.set_channel_optout(opt_out("u1", channel, category))
    found = [(o.channel, o.category) for o in await storage.channel_optouts_of(["u1"])]
    # By channel, then category in byte order ("N" < "news"), "" for no category.
    assert found == [("email", ""), ("email", "N"), ("email", "news"), ("sms", "news")]


async def test_read_many_users_at_once(storage: Storage) -> None:
    for user_id in ("u1", "u2", "u3"):
        await storage.create_user(user(user_id))
    await storage.set_channel_optout(opt_out("u2"))
    await storage.set_channel_optout(opt_out("u1", "sms"))
    await storage.set_channel_optout(opt_out("u3"))
    found = await storage.channel_optouts_of(["u1", "u2", "nobody"])
    assert [(o.user_id, o.channel) for o in found] == [("u1", "sms"), ("u2", "email")]
    assert await storage.channel_optouts_of([]) == []


async def test_delete_opts_in_again(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.set_channel_optout(opt_out("u1"))
    await storage.set_channel_optout(opt_out("u1", category="billing"))
    assert await storage.delete_channel_optout("u1", channel="email", category="news") is True
    assert await storage.delete_channel_optout("u1", channel="email", category="news") is False
    assert [o.category for o in await storage.channel_optouts_of(["u1"])] == ["billing"]


async def test_unknown_user_is_refused(storage: Storage) -> None:
    with pytest.raises(UnknownUserError):
        await storage.set_channel_optout(opt_out("nobody"))
    assert await storage.channel_optouts_of(["nobody"]) == []


async def test_erasure_removes_the_users_opt_outs_only(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.set_channel_optout(opt_out("u1"))
    await storage.set_channel_optout(opt_out("u2"))
    assert await storage.erase_user("u1", batch_size=10) is True
    assert [o.user_id for o in await storage.channel_optouts_of(["u1", "u2"])] == ["u2"]
