"""When a scheduled send is due (issue #13): `send_at` (an instant), `delay` (seconds
from now) or `deliver_at_local` (a wall-clock time in the recipient's own zone).

Routing turns all three into an absolute instant here, so that the release loop only
ever compares epoch milliseconds. Wall-clock rules for `deliver_at_local`:

- it is the next time, strictly after now, that the recipient's wall clock reads HH:MM
  (today if that is still ahead, else tomorrow);
- on the day that time does not exist (the spring-forward gap, 02:30 in Europe/Paris on
  the last Sunday of March), it is the first valid instant after it: the instant the
  clock jumps (03:00 local);
- on the day it exists twice (the autumn overlap), it is the first of the two still
  ahead.
"""

from __future__ import annotations

import datetime as dt
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_UTC: Final = dt.UTC
# A zone's offset changes by at most a few hours at a transition: the jump of a gap lies
# within this span before the instant read with the old offset.
_GAP_SEARCH: Final = dt.timedelta(hours=4)


class ScheduleError(ValueError):
    """A schedule that cannot be honoured; `field` names the request field at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def zone_of(timezone: str | None, default_timezone: str) -> ZoneInfo:
    """The recipient's zone: theirs when it is a known IANA name, else the default (a
    stored zone unknown to this server's tz database must not fail the send)."""
    for name in (timezone, default_timezone):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _exists(wall: dt.datetime) -> bool:
    """Whether the aware wall time `wall` is read on its zone's clock at some instant."""
    back = wall.astimezone(_UTC).astimezone(wall.tzinfo)
    return back.replace(tzinfo=None) == wall.replace(tzinfo=None)


def _jump_after(wall: dt.datetime) -> dt.datetime:
    """For a wall time inside a spring-forward gap, the instant the clock jumps over it
    (the first valid instant after it), found by bisection on the zone's offset."""
    late = wall.replace(fold=0).astimezone(_UTC)  # read with the offset before the gap
    early = late - _GAP_SEARCH
    before = early.astimezone(wall.tzinfo).utcoffset()
    # Invariant: `early` has the old offset, `late` the new one; a second apart is exact
    # enough (transitions fall on whole minutes).
    while late - early > dt.timedelta(seconds=1):
        middle = early + (late - early) / 2
        if middle.astimezone(wall.tzinfo).utcoffset() == before:
            early = middle
        else:
            late = middle
    return late.replace(microsecond=0)


def _parse_clock(text: str) -> dt.time:
    try:
        hours, minutes = (int(part) for part in text.split(":"))
        return dt.time(hours, minutes)
    except ValueError:
        raise ScheduleError(
            f"deliver_at_local must be HH:MM (24 h), got {text!r}", "deliver_at_local"
        ) from None


def next_local_time(clock: str, zone: ZoneInfo, now: dt.datetime) -> dt.datetime:
    """The next instant strictly after `now` (aware) at which the wall clock of `zone`
    reads `clock` (HH:MM), with the gap and overlap rules of this module; in UTC."""
    wanted = _parse_clock(clock)
    day = now.astimezone(zone).date()
    for offset in range(3):  # today, tomorrow, and the day after a skipped day's edge
        wall = dt.datetime.combine(day + dt.timedelta(days=offset), wanted, tzinfo=zone)
        if not _exists(wall):
            instants = [_jump_after(wall)]
        else:
            # Both readings of an overlap, first one first (equal on an ordinary day).
            instants = [wall.astimezone(_UTC), wall.replace(fold=1).astimezone(_UTC)]
        for instant in instants:
            if instant > now:
                return instant
    raise AssertionError("a wall-clock time recurs within three days")  # pragma: no cover


def due_at_ms(
    *,
    now_ms: int,
    send_at: dt.datetime | None,
    delay: float | None,
    deliver_at_local: str | None,
    timezone: str | None,
    default_timezone: str,
) -> int | None:
    """The instant (epoch ms) a send is due, or None to send now. At most one of the
    three may be given (`ScheduleError` naming the second otherwise); `send_at` must
    not be in the past (`ScheduleError` naming it)."""
    given = [
        name
        for name, value in (
            ("send_at", send_at),
            ("delay", delay),
            ("deliver_at_local", deliver_at_local),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ScheduleError(f"give at most one of {', '.join(given)}", given[1])
    if send_at is not None:
        due = int(send_at.timestamp() * 1000)
        if due < now_ms:
            raise ScheduleError("send_at is in the past", "send_at")
        return due
    if delay is not None:
        return now_ms + int(delay * 1000)
    if deliver_at_local is not None:
        now = dt.datetime.fromtimestamp(now_ms / 1000, _UTC)
        zone = zone_of(timezone, default_timezone)
        return int(next_local_time(deliver_at_local, zone, now).timestamp() * 1000)
    return None
