"""Encryption at rest of the columns that hold personal data (docs/security.md).

The backends seal values on their way into a row and open them on their way out (the
row mapping of storage/sql/users.py, notifications.py and channel_deliveries.py), through a
`Cipher` given to `open_storage`. What a sealed value looks like in the database:

    enc:v1:<key id>:<base64(nonce | ciphertext | tag)>

AES-256-GCM (PyCA `cryptography`), a random 96-bit nonce per value, the 128-bit tag at
the end, and the column and row as associated data (`notifications.title:<id>`): a
value copied into another row or column fails to open instead of showing up there. A
value without the `enc:v1:` prefix was written before encryption was turned on and is
returned as it is.
"""

from __future__ import annotations

import binascii
import os
import threading
from collections.abc import Sequence
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.errors import EncryptionError

PREFIX = "enc:v1:"


class _RandomPool(threading.local):
    """Cryptographic random bytes read from the OS 4 KiB at a time, one pool per thread.

    `os.urandom` is a system call per use. Sealing takes a nonce per value (three per
    notification) and pushd/ids.py 80 bits per id. On the SQLite worker thread each call
    also released the GIL and then waited to take it back from the busy event loop.
    """

    _CHUNK = 4096

    def __init__(self) -> None:
        self.buffer = b""
        self.offset = 0

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.buffer):
            self.buffer, self.offset = os.urandom(max(self._CHUNK, count)), 0
        start, self.offset = self.offset, self.offset + count
        return self.buffer[start : self.offset]


_random_pool = _RandomPool()


def random_bytes(count: int) -> bytes:
    """`count` bytes from the OS's CSPRNG (as `os.urandom`), drawn from a per-thread pool."""
    return _random_pool.take(count)


# What is sealed: table -> its columns (each row's `id` binds them). Not sealed, and why:
# `users.external_id` (looked up by equality, must stay unique), `users.tags` (audiences
# select users by tag, storage/migrations/0010), device addresses (the
# upsert matches on them), categories, timestamps and ids (queried by the database).
SEALED_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("name", "email", "phone", "attributes"),
    "notifications": ("title", "body", "data", "channel_content"),
    "send_contents": ("title", "body", "data", "channel_content"),
    "channel_deliveries": ("event",),
    "webhook_secrets": ("secret",),
    "sends": ("content",),
    "scheduled_notifications": ("payload",),
}
KEY_BYTES = 32
_NONCE_BYTES = 12


class Cipher(Protocol):
    """Seals and opens column values. Pure CPU, thread-safe (the SQLite backend calls it
    on its worker thread)."""

    @property
    def active_key_id(self) -> str | None:
        """The id of the key new values are sealed with; None when encryption is off."""
        ...

    def seal(self, value: str, context: str) -> str:
        """`value` as stored: sealed under the active key, bound to `context` (the column
        and the row, `table.column:<id>`); unchanged when encryption is off."""
        ...

    def open(self, stored: str, context: str) -> str:
        """The value behind `stored`. A value without the `enc:v1:` prefix (written before
        encryption) is returned unchanged. Raises `EncryptionError` when its key is not in
        the ring, or when it does not open (altered, or moved from another row/column)."""
        ...


class _OpenOnly:
    """Opening what is stored, with the keys there are (none for `PLAINTEXT`)."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        self._keys = {key_id: AESGCM(secret) for key_id, secret in keys}

    def open(self, stored: str, context: str) -> str:
        """See `Cipher.open`."""
        if not stored.startswith(PREFIX):
            return stored
        key_id, _, payload = stored[len(PREFIX) :].partition(":")
        key = self._keys.get(key_id)
        if key is None:
            known = ", ".join(sorted(self._keys)) or "none: encryption is off"
            raise EncryptionError(
                f"a value of {context} is sealed with key {key_id!r}, which is not in the "
                f"key ring (keys: {known}). Add that key to encryption.keys (after the "
                "active one), or restore the data_dir/secrets.json that held it."
            )
        try:
            raw = binascii.a2b_base64(payload, strict_mode=True)
            plain = key.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise EncryptionError(
                f"the value of {context} does not open with key {key_id!r}: it was altered "
                "or copied from another row or column"
            ) from None
        return plain.decode()


class Plaintext(_OpenOnly):
    """No encryption: values are stored as given. Sealed values still found in the
    database cannot be opened (`EncryptionError` names their key)."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def active_key_id(self) -> str | None:
        """See `Cipher.active_key_id`."""
        return None

    def seal(self, value: str, context: str) -> str:
        """See `Cipher.seal`: the value itself."""
        return value


PLAINTEXT = Plaintext()


class KeyRing(_OpenOnly):
    """AES-256-GCM under a ring of keys: the first seals, every one opens."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key (use PLAINTEXT for none)")
        for key_id, secret in keys:
            if not key_id or ":" in key_id:
                raise ValueError(f"key id {key_id!r} must be non-empty and without ':'")
            if len(secret) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} has {len(secret)} bytes; AES-256 needs 32")
        ids = [key_id for key_id, _ in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"key ids must be unique: {ids}")
        super().__init__(keys)
        self._active_id = ids[0]
        self._active = self._keys[ids[0]]
        self._prefix = f"{PREFIX}{ids[0]}:"

    @property
    def active_key_id(self) -> str | None:
        """See `Cipher.active_key_id`."""
        return self._active_id

    def seal(self, value: str, context: str) -> str:
        """See `Cipher.seal`."""
        nonce = random_bytes(_NONCE_BYTES)
        sealed = self._active.encrypt(nonce, value.encode(), context.encode())
        return self._prefix + binascii.b2a_base64(nonce + sealed, newline=False).decode()
