"""Due instants of scheduled sends (pushd/routing/schedule.py), daylight-saving days
included."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from pushd.routing.schedule import ScheduleError, due_at_ms, next_local_time, zone_of

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


def ms(instant: dt.datetime) -> int:
    return int(instant.timestamp() * 1000)


def test_local_time_later_today_is_today() -> None:
    # 07:00 UTC is 08:00 in Paris in winter: 09:00 is still ahead today.
    assert next_local_time("09:00", PARIS, utc(2026, 1, 10, 7, 0)) == utc(2026, 1, 10, 8, 0)


def test_local_time_already_passed_is_tomorrow() -> None:
    assert next_local_time("09:00", PARIS, utc(2026, 1, 10, 8, 0)) == utc(2026, 1, 11, 8, 0)
    assert next_local_time("09:00", PARIS, utc(2026, 1, 10, 9, 0)) == utc(2026, 1, 11, 8, 0)


def test_local_time_follows_the_recipients_zone() -> None:
    now = utc(2026, 6, 1, 12, 0)
    assert next_local_time("09:00", PARIS, now) == utc(2026, 6, 2, 7, 0)  # CEST, UTC+2
    assert next_local_time("09:00", NEW_YORK, now) == utc(2026, 6, 1, 13, 0)  # EDT, UTC-4


def test_spring_forward_gap_moves_to_the_jump() -> None:
    """Guards the nonexistent local time: on 29 March 2026 Paris clocks jump from 02:00
    to 03:00 (01:00 UTC); 02:30 does not exist and is due at the jump, not an hour late
    (what reading it with the winter offset gives) nor an hour early."""
    due = next_local_time("02:30", PARIS, utc(2026, 3, 28, 12, 0))
    assert due == utc(2026, 3, 29, 1, 0)
    assert due.astimezone(PARIS).strftime("%H:%M") == "03:00"
    # The next day, 02:30 exists again.
    assert next_local_time("02:30", PARIS, due) == utc(2026, 3, 30, 0, 30)


def test_spring_forward_gap_in_new_york() -> None:
    # 8 March 2026: 02:00 EST jumps to 03:00 EDT, at 07:00 UTC.
    assert next_local_time("02:15", NEW_YORK, utc(2026, 3, 8, 0, 0)) == utc(2026, 3, 8, 7, 0)


def test_fall_back_overlap_takes_the_first_occurrence() -> None:
    """Guards the ambiguous local time: on 25 October 2026 Paris reads 02:30 twice
    (00:30 UTC in summer time, 01:30 UTC in winter time); the first one is due."""
    due = next_local_time("02:30", PARIS, utc(2026, 10, 24, 12, 0))
    assert due == utc(2026, 10, 25, 0, 30)
    # Asked between the two occurrences, the second one (still 02:30 on the wall) is next.
    assert next_local_time("02:30", PARIS, utc(2026, 10, 25, 1, 0)) == utc(2026, 10, 25, 1, 30)


def test_due_at_of_each_form() -> None:
    now = ms(utc(2026, 1, 10, 7, 0))
    common = {"now_ms": now, "timezone": None, "default_timezone": "UTC"}
    none = {"send_at": None, "delay": None, "deliver_at_local": None}
    assert due_at_ms(**common, **none) is None  # type: ignore[arg-type]
    at = utc(2026, 1, 10, 7, 5)
    assert due_at_ms(**common, **{**none, "send_at": at}) == ms(at)  # type: ignore[arg-type]
    assert due_at_ms(**common, **{**none, "delay": 2.5}) == now + 2_500  # type: ignore[arg-type]
    local = {**none, "deliver_at_local": "09:00"}
    assert due_at_ms(**common, **local) == ms(utc(2026, 1, 10, 9, 0))  # type: ignore[arg-type]
    in_paris = {**common, "timezone": "Europe/Paris"}
    assert due_at_ms(**in_paris, **local) == ms(utc(2026, 1, 10, 8, 0))  # type: ignore[arg-type]


def test_due_at_refuses_the_past_and_two_forms() -> None:
    now = ms(utc(2026, 1, 10, 7, 0))
    with pytest.raises(ScheduleError) as past:
        due_at_ms(
            now_ms=now,
            send_at=utc(2026, 1, 10, 6, 59),
            delay=None,
            deliver_at_local=None,
            timezone=None,
            default_timezone="UTC",
        )
    assert past.value.field == "send_at"
    with pytest.raises(ScheduleError) as both:
        due_at_ms(
            now_ms=now,
            send_at=None,
            delay=5,
            deliver_at_local="09:00",
            timezone=None,
            default_timezone="UTC",
        )
    assert both.value.field == "deliver_at_local"


def test_unknown_stored_zone_falls_back_to_the_default() -> None:
    assert zone_of("Mars/Olympus", "Europe/Paris") == PARIS
    assert zone_of(None, "America/New_York") == NEW_YORK
