"""Identifiers: a type prefix, then 26 Crockford base32 characters (48 bits of
milliseconds, 80 random bits), so ids sort by creation time and say what they name."""

from __future__ import annotations

import base64
import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# RFC 4648 base32 (C code) re-lettered to Crockford's lower-case alphabet, which sorts
# in the same order as the numbers it encodes.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


class _RandomPool:
    """Cryptographic random bits read from the OS 4 KiB at a time: one getrandom()
    system call per 400 ids instead of one per id (it showed in profiles under load)."""

    _CHUNK = 4000  # a multiple of the 10 bytes one id takes

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def take80(self) -> bytes:
        if self._offset >= len(self._buffer):
            self._buffer, self._offset = os.urandom(self._CHUNK), 0
        start, self._offset = self._offset, self._offset + 10
        return self._buffer[start : self._offset]


_random = _RandomPool()


def new_id(prefix: str) -> str:
    """`usr_01jb…`: sortable by creation time, unguessable, URL-safe."""
    # 6 bytes of milliseconds + 10 random bytes = 128 bits = 26 base32 characters
    # (the last carries 3 padding bits, always 0).
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + _random.take80()
    return f"{prefix}_{base64.b32encode(raw).translate(_TO_CROCKFORD)[:26].decode()}"


def now_ms() -> int:
    """Wall-clock time in Unix epoch milliseconds, the unit storage keeps."""
    return time.time_ns() // 1_000_000
