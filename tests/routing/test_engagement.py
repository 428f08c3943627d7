"""Delivery optimisation's decisions (pushd/routing/engagement.py) on synthetic read
histories: the best hour, its ties, the window, too little history, daylight saving
through the schedule rules, and the engagement order of a plan."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from pushd.routing.categories import SendWindow
from pushd.routing.engagement import (
    EngagementPolicy,
    best_clock,
    in_window,
    median_read_seconds,
    order_by_engagement,
)
from pushd.routing.plan import PlanStep
from pushd.routing.schedule import next_local_time
from storage.areas.engagement import EngagementRecord

UTC = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")
POLICY = EngagementPolicy(lookback=30 * 86_400.0, min_reads=10, default_clock="09:00")
NOW = dt.datetime(2026, 6, 10, 12, 30, tzinfo=dt.UTC)


def reads_at(*hours: int, zone: ZoneInfo = UTC, count: int = 1) -> list[int]:
    """`count` reads at each local hour (minute 10), on the days before NOW."""
    times = []
    for day in range(1, count + 1):
        date = (NOW - dt.timedelta(days=day)).date()
        for hour in hours:
            local = dt.datetime.combine(date, dt.time(hour, 10), tzinfo=zone)
            times.append(int(local.timestamp() * 1000))
    return times


def record(times: list[int]) -> EngagementRecord:
    return EngagementRecord(read_times=times, read_delays={})


def test_the_hour_with_most_reads_wins() -> None:
    times = reads_at(19, count=8) + reads_at(7, count=3)
    clock, why = best_clock(record(times), zone=UTC, now=NOW, policy=POLICY, window=None)
    assert clock == "19:00"
    assert why == {"time": "best", "hour": 19, "reads_at_hour": 8, "reads": 11, "lookback_days": 30}


def test_hours_are_the_users_wall_clock() -> None:
    times = reads_at(19, zone=PARIS, count=10)  # 17:10 UTC in summer
    clock, why = best_clock(record(times), zone=PARIS, now=NOW, policy=POLICY, window=None)
    assert (clock, why["hour"]) == ("19:00", 19)


def test_a_tie_goes_to_the_hour_that_comes_first_after_now() -> None:
    times = reads_at(8, 14, count=6)  # NOW is 12:30: 14:00 comes before tomorrow's 08:00
    clock, _ = best_clock(record(times), zone=UTC, now=NOW, policy=POLICY, window=None)
    assert clock == "14:00"
    late = NOW.replace(hour=15)  # 14:00 has passed today: tomorrow's 08:00 comes first
    clock, _ = best_clock(record(times), zone=UTC, now=late, policy=POLICY, window=None)
    assert clock == "08:00"


def test_too_little_history_gives_the_default_hour() -> None:
    clock, why = best_clock(
        record(reads_at(19, count=9)), zone=UTC, now=NOW, policy=POLICY, window=None
    )
    assert clock == "09:00"
    assert why == {"time": "default", "clock": "09:00", "reads": 9, "min_reads": 10}


def test_the_window_is_respected() -> None:
    window = SendWindow(start="08:00", end="21:00")
    times = reads_at(23, count=20) + reads_at(6, count=15) + reads_at(12, count=5)
    clock, why = best_clock(record(times), zone=UTC, now=NOW, policy=POLICY, window=window)
    assert clock == "12:00"
    assert why["window"] == {"start": "08:00", "end": "21:00"}
    # Only reads outside the window: the default, itself moved into the window.
    night = SendWindow(start="22:00", end="02:00")
    only_noon = reads_at(12, count=12)
    clock, why = best_clock(record(only_noon), zone=UTC, now=NOW, policy=POLICY, window=night)
    assert (clock, why["time"]) == ("22:00", "default")


def test_a_window_may_cross_midnight() -> None:
    night = SendWindow(start="22:00", end="02:00")
    assert [h for h in range(24) if in_window(h * 60, night)] == [0, 1, 22, 23]
    assert all(in_window(h * 60, SendWindow(start="08:00", end="08:00")) for h in range(24))


def test_a_best_hour_in_the_spring_gap_follows_the_schedule_rules() -> None:
    # 02:00 does not exist in Paris on 2026-03-29: delivered when the clock jumps.
    times = reads_at(2, zone=PARIS, count=12)
    before = dt.datetime(2026, 3, 28, 23, 0, tzinfo=dt.UTC)  # 00:00 Paris, the 29th
    clock, _ = best_clock(record(times), zone=PARIS, now=before, policy=POLICY, window=None)
    assert clock == "02:00"
    due = next_local_time(clock, PARIS, before)
    assert due == dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC)  # 03:00 CEST


def test_medians_per_channel_and_for_push_as_a_whole() -> None:
    medians = median_read_seconds(
        {"email": [600_000, 60_000, 120_000], "webpush": [10_000], "fcm": [30_000, 50_000]}
    )
    assert medians == {"email": 120.0, "webpush": 10.0, "fcm": 40.0, "push": 30.0}


def test_engagement_order_puts_the_fastest_first_keeping_the_delays() -> None:
    plan = (
        PlanStep(channel="push", delay=0.0),
        PlanStep(channel="email", delay=300.0, min_priority="normal"),
        PlanStep(channel="sms", delay=900.0, unless_read=False),
    )
    ordered = order_by_engagement(plan, {"email": 40.0, "push": 600.0})
    assert [(s.channel, s.delay) for s in ordered] == [
        ("email", 0.0),
        ("push", 300.0),
        ("sms", 900.0),
    ]
    # What a step says besides its delay travels with its channel.
    assert ordered[0].min_priority == "normal"
    assert ordered[2].unless_read is False


def test_channels_without_data_keep_their_plan_order_after_the_others() -> None:
    plan = (
        PlanStep(channel="email", delay=0.0),
        PlanStep(channel="push", delay=60.0),
        PlanStep(channel="sms", delay=120.0),
    )
    assert order_by_engagement(plan, {}) == plan
    ordered = order_by_engagement(plan, {"sms": 5.0})
    assert [s.channel for s in ordered] == ["sms", "email", "push"]
