"""Identifiers: a type prefix, then 26 Crockford base32 characters (48 bits of
milliseconds, 80 random bits), so ids sort by creation time and say what they name."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """`usr_01jb…`: sortable by creation time, unguessable, URL-safe."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_base32(millis, 10)}{_base32(secrets.randbits(80), 16)}"


def now_ms() -> int:
    """Wall-clock time in Unix epoch milliseconds, the unit storage keeps."""
    return time.time_ns() // 1_000_000
