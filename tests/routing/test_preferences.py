"""What stored preferences decide (pushd/routing/preferences.py): the channels turned
off for a category, the mute, mandatory categories, quiet hours and the time zone."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from pushd.routing.preferences import (
    RoutingPolicy,
    preference_channel,
    stored_quiet_hours,
    user_quiet_hours,
)
from pushd.routing.quiet_hours import QuietHours
from storage.records import PreferencesRecord

SERVER_NIGHT = QuietHours(start="22:00", end="07:00")
OWN_NIGHT = QuietHours(start="23:00", end="06:00", channels=("push", "sms", "email"))
POLICY = RoutingPolicy(
    mandatory_categories=["security"], quiet_hours=SERVER_NIGHT, default_timezone="Europe/Paris"
)


def prefs(**fields: object) -> PreferencesRecord:
    return PreferencesRecord(user_id="usr_1", **fields)  # type: ignore[arg-type]


def test_push_kinds_are_one_preference_channel() -> None:
    assert [preference_channel(c) for c in ("webpush", "fcm", "apns", "push")] == ["push"] * 4
    assert preference_channel("email") == "email"


def test_switches_apply_to_their_category_only() -> None:
    stored = prefs(channels={"news": {"email": False, "sms": True}, "": {"push": False}})
    assert POLICY.for_recipient(stored, "news", None).switched_off == {"email"}
    assert POLICY.for_recipient(stored, None, None).switched_off == {"push"}
    assert POLICY.for_recipient(stored, "billing", None).switched_off == frozenset()


def test_mute_turns_every_channel_off_but_in_mandatory_categories() -> None:
    stored = prefs(muted=True, channels={"security": {"email": False}})
    assert POLICY.for_recipient(stored, "news", None).switched_off == {"email", "push", "sms"}
    assert POLICY.for_recipient(stored, "security", None).switched_off == frozenset()


def test_quiet_hours_own_default_or_off() -> None:
    assert POLICY.for_recipient(None, "news", None).quiet_hours == SERVER_NIGHT
    assert POLICY.for_recipient(prefs(), "news", None).quiet_hours == SERVER_NIGHT
    own = prefs(quiet_hours=stored_quiet_hours(OWN_NIGHT))
    assert POLICY.for_recipient(own, "news", None).quiet_hours == OWN_NIGHT
    off = prefs(quiet_hours=stored_quiet_hours("off"))
    assert POLICY.for_recipient(off, "news", None).quiet_hours is None


@pytest.mark.parametrize("setting", [None, "off", OWN_NIGHT])
def test_stored_quiet_hours_round_trip(setting: QuietHours | str | None) -> None:
    assert user_quiet_hours(stored_quiet_hours(setting)) == setting  # type: ignore[arg-type]


def test_the_users_zone_else_the_default_zone() -> None:
    assert POLICY.for_recipient(None, None, "Asia/Tokyo").zone == ZoneInfo("Asia/Tokyo")
    # No zone, or one this machine does not know: routing.default_timezone.
    assert POLICY.for_recipient(None, None, None).zone == ZoneInfo("Europe/Paris")
    assert POLICY.for_recipient(None, None, "Mars/Olympus").zone == ZoneInfo("Europe/Paris")
    assert RoutingPolicy().for_recipient(None, None, None).zone == ZoneInfo("UTC")


def test_an_unknown_default_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        RoutingPolicy(default_timezone="Mars/Olympus")
