"""Keyed hashes of the requests that came with an Idempotency-Key (docs/security.md).

`POST /api/notifications` stores, with each Idempotency-Key, a hash of its canonical
request body, to tell a retry (same body: the first answer again) from a reuse of the
key for another request (422). An unkeyed digest would undo encryption at rest: anyone
with a copy of the database could hash guesses of an encrypted body (a 6-digit code
takes a second) and compare. So the hash is an HMAC-SHA256 under a key that is not in
the database, derived (HKDF) from the storage encryption key ring, or from the token
secret when encryption is off, both of which every node of a cluster shares:

    hmac-sha256:<key id>:<64 hex digits>

The key id names the ring key it was derived from, so that a hash made before a key
rotation is still checked with the key that made it while that key stays in the ring.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pushd.config.settings import Config
from pushd.process import datadir

PREFIX = "hmac-sha256:"
# Domain separation: the derived key is good for this hash only, never for encryption.
_HKDF_INFO = b"pushd idempotency request hash v1"


def _derive(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(secret)


class RequestHasher:
    """Hashes requests under the first key; checks stored hashes with the key they name."""

    def __init__(self, secrets: Sequence[tuple[str, bytes]]) -> None:
        """`secrets`: (key id, secret) pairs, the one that hashes first."""
        if not secrets:
            raise ValueError("a request hasher needs at least one secret")
        self._keys = {key_id: _derive(secret) for key_id, secret in secrets}
        self._active_id = secrets[0][0]

    def hash(self, request: bytes) -> str:
        """The value to store for `request` (its canonical bytes)."""
        return self._hash(self._active_id, request)

    def same_request(self, stored: str, request: bytes) -> bool:
        """Whether `request` is the one `stored` was made from.

        A stored value that cannot be checked counts as the same request: a hash dropped
        by migration 0005 (`dropped:unkeyed-sha256`), a bare SHA-256 written by a node
        not upgraded yet, or one under a key no longer configured. A retry then gets the
        first answer instead of creating a second notification; the price is that reusing
        such a key for another body is not refused with 422 within its window."""
        key_id = stored.removeprefix(PREFIX).partition(":")[0]
        if not stored.startswith(PREFIX) or key_id not in self._keys:
            return True
        return hmac.compare_digest(stored, self._hash(key_id, request))

    def _hash(self, key_id: str, request: bytes) -> str:
        digest = hmac.digest(self._keys[key_id], request, "sha256")
        return f"{PREFIX}{key_id}:{digest.hex()}"


def request_hasher(config: Config, ring: Sequence[tuple[str, bytes]]) -> RequestHasher:
    """The hasher of this process: keyed by the storage key ring (`ring`, from
    `pushd.process.key_ring.storage_keys`), else by the token secret. May read or create
    data_dir/secrets.json: call it off the event loop."""
    if ring:
        return RequestHasher(ring)
    secret = datadir.token_secret(config).encode()
    # Names the secret without revealing anything usable: a rotation of the token
    # secret gives a new id, and hashes under the old one are then not checked.
    key_id = "token-" + hashlib.sha256(_derive(secret)).hexdigest()[:8]
    return RequestHasher([(key_id, secret)])
