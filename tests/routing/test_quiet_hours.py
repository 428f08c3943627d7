"""Quiet-hours arithmetic (pushd/routing/quiet_hours.py): wall-clock windows turned into
absolute instants, across midnight and daylight-saving changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import msgspec
import pytest

from pushd.routing.quiet_hours import QuietHours, quiet_until

NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
UTC = ZoneInfo("UTC")
NIGHT = QuietHours(start="22:00", end="07:00")


def at(text: str, zone: ZoneInfo, *, fold: int = 0) -> int:
    """Epoch ms of a wall-clock time in `zone`."""
    moment = dt.datetime.fromisoformat(text).replace(tzinfo=zone, fold=fold)
    return round(moment.timestamp() * 1000)


def utc(text: str) -> int:
    return at(text, UTC)


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        ("2026-06-01T21:59", None),  # just before
        ("2026-06-01T22:00", "2026-06-02T07:00"),  # the start is inside
        ("2026-06-01T23:30", "2026-06-02T07:00"),  # before midnight: the next morning
        ("2026-06-02T00:00", "2026-06-02T07:00"),  # after midnight: the same morning
        ("2026-06-02T06:59", "2026-06-02T07:00"),
        ("2026-06-02T07:00", None),  # the end is outside
        ("2026-06-02T12:00", None),
    ],
)
def test_a_window_crossing_midnight(due: str, expected: str | None) -> None:
    found = quiet_until(at(due, PARIS), NIGHT, PARIS)
    assert found == (None if expected is None else at(expected, PARIS))


def test_a_window_within_one_day() -> None:
    lunch = QuietHours(start="12:00", end="14:00")
    assert quiet_until(at("2026-06-01T13:00", PARIS), lunch, PARIS) == at("2026-06-01T14:00", PARIS)
    assert quiet_until(at("2026-06-01T11:59", PARIS), lunch, PARIS) is None
    assert quiet_until(at("2026-06-01T23:00", PARIS), lunch, PARIS) is None


def test_the_window_is_read_in_the_users_zone() -> None:
    """Guards against reading the window in UTC: 23:00 UTC is 19:00 in New York."""
    due = utc("2026-06-01T23:00")
    assert quiet_until(due, NIGHT, NEW_YORK) is None
    assert quiet_until(due, NIGHT, UTC) == utc("2026-06-02T07:00")


def test_spring_forward_gap_ends_when_the_clock_jumps_past_the_end() -> None:
    """2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT, so 02:30 never exists. A
    window ending at 02:30 ends at the jump (07:00 UTC), not an hour later or earlier."""
    window = QuietHours(start="01:00", end="02:30")
    due = at("2026-03-08T01:30", NEW_YORK)
    assert quiet_until(due, window, NEW_YORK) == utc("2026-03-08T07:00")


def test_spring_forward_night_is_an_hour_shorter() -> None:
    """22:00 EST to 07:00 EDT: 8 hours of real time, and the end is 07:00 on the clock."""
    due = at("2026-03-07T22:00", NEW_YORK)
    end = quiet_until(due, NIGHT, NEW_YORK)
    assert end == at("2026-03-08T07:00", NEW_YORK) == utc("2026-03-08T11:00")
    assert end is not None
    assert end - due == 8 * 3_600_000


def test_autumn_overlap_ends_at_the_first_end_after_the_due_time() -> None:
    """2026-11-01 in New York: 01:00-02:00 happens twice (EDT, then EST). A window
    ending at 01:30 ends at the first 01:30 for a step due in the first pass, and at the
    second 01:30 for one due in the second pass (after the first 01:30 has gone)."""
    window = QuietHours(start="22:00", end="01:30")
    first_pass = at("2026-11-01T01:15", NEW_YORK, fold=0)
    second_pass = at("2026-11-01T01:15", NEW_YORK, fold=1)
    assert second_pass - first_pass == 3_600_000
    assert quiet_until(first_pass, window, NEW_YORK) == utc("2026-11-01T05:30")
    assert quiet_until(second_pass, window, NEW_YORK) == utc("2026-11-01T06:30")
    # 01:45 of the second pass is after the end on the clock: outside.
    assert quiet_until(at("2026-11-01T01:45", NEW_YORK, fold=1), window, NEW_YORK) is None


def test_autumn_night_is_an_hour_longer() -> None:
    due = at("2026-10-31T22:00", NEW_YORK)
    end = quiet_until(due, NIGHT, NEW_YORK)
    assert end == at("2026-11-01T07:00", NEW_YORK)
    assert end is not None
    assert end - due == 10 * 3_600_000


def test_an_empty_or_malformed_window_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="start != end"):
        msgspec.convert({"start": "22:00", "end": "22:00"}, QuietHours)
    with pytest.raises(msgspec.ValidationError, match="start"):
        msgspec.convert({"start": "24:00", "end": "07:00"}, QuietHours)
    with pytest.raises(msgspec.ValidationError, match="channels"):
        msgspec.convert({"start": "22:00", "end": "07:00", "channels": ["inapp"]}, QuietHours)
