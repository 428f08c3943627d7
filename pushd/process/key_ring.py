"""The storage cipher this process uses, from `[encryption]` (docs/security.md).

Configured keys win (a key generated earlier into data_dir/secrets.json is kept as a
decrypt-only key after them); without any, the embedded shape (SQLite) gets a key generated once
into data_dir/secrets.json, so that the default install encrypts with no setup. With
PostgreSQL and no key, nothing is encrypted: each node would generate its own key and
could not read the others' rows.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence

from pushd.config.settings import Config, ConfigError
from pushd.process import datadir
from storage import PLAINTEXT, Cipher, KeyRing

log = logging.getLogger("pushd.process.key_ring")


def parse_keys(specs: Sequence[str]) -> list[tuple[str, bytes]]:
    """`["<id>:<base64>", ...]` -> [(id, 32 bytes), ...]; `ConfigError` names a bad one."""
    keys = []
    for position, spec in enumerate(specs):
        key_id, _, encoded = spec.partition(":")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            secret = b""
        if not key_id or len(secret) != 32:
            raise ConfigError(
                f"setting `encryption.keys[{position}]`: expected '<key id>:<base64 of 32 "
                "bytes>', e.g. from `openssl rand -base64 32`"
            )
        keys.append((key_id, secret))
    ids = [key_id for key_id, _ in keys]
    duplicates = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
    if duplicates:
        raise ConfigError(f"setting `encryption.keys`: key ids used twice: {duplicates}")
    return keys


def storage_cipher(config: Config) -> Cipher:
    """The cipher for `open_storage`. May create data_dir/secrets.json: call it off the
    event loop. Raises `ConfigError` for a malformed key."""
    return cipher_of(storage_keys(config))


def cipher_of(keys: Sequence[tuple[str, bytes]]) -> Cipher:
    """The cipher of a key ring from `storage_keys` (none: nothing is encrypted)."""
    return KeyRing(keys) if keys else PLAINTEXT


def storage_keys(config: Config) -> list[tuple[str, bytes]]:
    """The storage key ring in effect, the key that encrypts first; empty when nothing is
    encrypted. May create data_dir/secrets.json: call it off the event loop. Raises
    `ConfigError` for a malformed key."""
    if not config.encryption.enabled:
        return []
    specs = list(config.encryption.keys)
    if specs:
        # Rows sealed under a key generated before keys were configured stay readable
        # (until `pushd rekey` moved them to the active key).
        generated = datadir.stored_encryption_key(config)
        if generated is not None and generated.partition(":")[0] not in {
            spec.partition(":")[0] for spec in specs
        }:
            specs.append(generated)
    else:
        if not config.storage_url.startswith("sqlite:"):
            log.warning(
                "encryption at rest is OFF: encryption.keys is empty and the storage is "
                "shared (PostgreSQL). Set the same PUSHD_ENCRYPTION__KEYS on every node "
                "(docs/security.md), or encryption.enabled = false to silence this."
            )
            return []
        specs = [datadir.encryption_key(config)]
    return parse_keys(specs)
