"""Quiet hours (DESIGN.md §4b): a daily window of the user's wall clock, such as
22:00-07:00, during which the steps of some channels wait. Routing turns the window into
an absolute instant here, with zoneinfo, so that no actor ever handles a time zone.

Wall-clock rules, so that daylight-saving changes do what a person expects:

- a step is inside the window when the wall clock at its due instant reads a time in
  [start, end) (a window whose start is later than its end crosses midnight);
- it is deferred to the first instant at which the wall clock reads `end` again; when
  `end` does not exist that day (the spring-forward gap), to the instant the clock jumps
  past it; when it exists twice (the autumn overlap), to the first occurrence after the
  due instant.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo

import msgspec

QuietChannel = Literal["email", "push", "sms"]
DEFAULT_QUIET_CHANNELS: Final[tuple[QuietChannel, ...]] = ("push", "sms")
CLOCK_PATTERN: Final = r"^([01]\d|2[0-3]):[0-5]\d$"
ClockTime = Annotated[
    str, msgspec.Meta(pattern=CLOCK_PATTERN, description="A wall-clock time, `HH:MM` (24 h).")
]
_CLOCK = re.compile(CLOCK_PATTERN)
_UTC: Final = dt.UTC


class QuietHours(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A daily window of the user's wall clock and the channels it holds back."""

    start: ClockTime
    end: ClockTime
    channels: Annotated[
        tuple[QuietChannel, ...],
        msgspec.Meta(
            description="The preference channels held back (`push`: web push, FCM and "
            "APNs). In-app delivery is never held back."
        ),
    ] = DEFAULT_QUIET_CHANNELS

    def __post_init__(self) -> None:
        # msgspec turns this ValueError into a validation error naming the struct.
        if self.start == self.end:
            raise ValueError("quiet hours need start != end (an empty window holds nothing)")

    def holds(self, channel: str) -> bool:
        """Whether the window holds back `channel` (a preference channel)."""
        return channel in self.channels


def _clock(text: str) -> dt.time:
    if not _CLOCK.match(text):
        raise ValueError(f"not an HH:MM time: {text!r}")
    hours, minutes = text.split(":")
    return dt.time(int(hours), int(minutes))


def _offset_ms(at_ms: int, zone: ZoneInfo) -> dt.timedelta:
    offset = dt.datetime.fromtimestamp(at_ms / 1000, _UTC).astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _epoch_ms(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1000)


def _first_instant_at(wall: dt.datetime, zone: ZoneInfo, after_ms: int) -> int:
    """The first instant after `after_ms` at which the clock of `zone` reads `wall` (or,
    in a gap, has just jumped past it)."""
    earlier = _epoch_ms(wall.replace(tzinfo=zone, fold=0))
    later = _epoch_ms(wall.replace(tzinfo=zone, fold=1))
    if earlier > later:
        # A gap: fold=0 reads the wall time with the offset before the jump, fold=1 with
        # the one after, so their order is reversed. The answer is the jump itself,
        # found by halving (offsets change once between them).
        low, high = later, earlier
        low_offset = _offset_ms(low, zone)
        while high - low > 1:
            middle = (low + high) // 2
            if _offset_ms(middle, zone) == low_offset:
                low = middle
            else:
                high = middle
        return high
    # An overlap gives two instants (fold 0 first); elsewhere both are the same.
    return earlier if earlier > after_ms else later


def quiet_until(due_ms: int, quiet: QuietHours, zone: ZoneInfo) -> int | None:
    """The end of the quiet window that `due_ms` falls in, as epoch ms, or None when
    `due_ms` is outside the window (see the module docstring for the rules)."""
    local = dt.datetime.fromtimestamp(due_ms / 1000, _UTC).astimezone(zone)
    start, end, now = _clock(quiet.start), _clock(quiet.end), local.time().replace(tzinfo=None)
    crosses_midnight = start > end
    inside = (now >= start or now < end) if crosses_midnight else start <= now < end
    if not inside:
        return None
    end_date = local.date()
    if crosses_midnight and now >= start:
        end_date += dt.timedelta(days=1)
    return _first_instant_at(dt.datetime.combine(end_date, end), zone, due_ms)
