"""Identifiers: a type prefix, then 26 Crockford base32 characters (48 bits of
milliseconds, 80 random bits), so ids sort by creation time and say what they name."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from storage.crypto import random_bytes
from storage.records import now_ms

__all__ = ["from_ms", "new_id", "now_ms", "opt_from_ms"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# Every 10-bit value as its two characters: 13 table lookups encode 128 bits (the
# standard library's b32encode is a Python loop in 3.11 and cost twice as much).
_PAIRS = [first + second for first in _ALPHABET for second in _ALPHABET]
_SHIFTS = range(120, -1, -10)


def new_id(prefix: str) -> str:
    """`usr_01jb…`: sortable by creation time, unguessable, URL-safe."""
    # 48 bits of milliseconds + 80 random bits, shifted to 130 bits = 26 characters.
    value = (((time.time_ns() // 1_000_000) << 80) | int.from_bytes(random_bytes(10), "big")) << 2
    return prefix + "_" + "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def from_ms(millis: int) -> datetime:
    """Storage keeps epoch milliseconds; the API and the frames speak RFC 3339."""
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def opt_from_ms(millis: int | None) -> datetime | None:
    """`from_ms` for an optional timestamp."""
    return None if millis is None else from_ms(millis)
