"""API keys: `Authorization: Bearer <key>` on every route but the health check.

Keys are random (`pk_` + 43 URL-safe characters) and stored only as their SHA-256: a key
has 256 bits of entropy, so a fast hash is enough (slow hashes are for passwords).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable

from aiohttp import web

from pushd.access.roles import ADMIN
from pushd.api.errors import ApiError, ErrorCode
from pushd.ids import new_id, now_ms
from storage import Storage
from storage.records import ApiKeyRecord

KEY_PREFIX = "pk_"

API_KEY: web.RequestKey[ApiKeyRecord] = web.RequestKey("api_key", ApiKeyRecord)
"""The verified key of the request (who is calling), set by `authenticate`."""
REVOKED_KEY: web.RequestKey[ApiKeyRecord] = web.RequestKey("revoked_api_key", ApiKeyRecord)
"""The revoked key a refused request presented (the audit trail names it), set by
`authenticate` before its 401."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKeyVerifier:
    """Checks bearer keys against storage, remembering verified keys for `cache_ttl`
    seconds so that a busy client does not cost a query per request."""

    def __init__(self, storage: Storage, *, cache_ttl: float) -> None:
        self._storage = storage
        self._cache_ttl = cache_ttl
        self._verified: dict[str, tuple[ApiKeyRecord, float]] = {}
        # Bumped by every `forget`: a lookup that started before a revocation must not
        # put the key it read (still live then) back into the cache after it.
        self._generation = 0

    async def verify(self, key: str) -> ApiKeyRecord | None:
        """The key record for this secret, or None if unknown. A revoked key's record is
        returned too (never cached): the caller checks `revoked_at`."""
        # Keyed by the key itself, not its hash: a dict hit is cheaper than SHA-256 on
        # every request, and this process holds the key in memory while serving anyway.
        cached = self._verified.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self._cache_ttl:
            return cached[0]
        generation = self._generation
        record = await self._storage.find_api_key(hash_key(key))
        if record is None or record.revoked_at is not None:
            self._verified.pop(key, None)
            return record
        if generation != self._generation:
            return record  # read before a revocation arrived: serve once, do not cache
        if len(self._verified) > 10_000:  # bounded: forget everything rather than grow
            self._verified.clear()
        self._verified[key] = (record, now)
        return record

    def forget(self, key_id: str) -> None:
        """Drop the key from the cache (it was revoked): its next use asks storage."""
        self._generation += 1
        stale = [key for key, (record, _) in self._verified.items() if record.id == key_id]
        for key in stale:
            del self._verified[key]

    async def authenticate(self, request: web.Request) -> None:
        """Raise a 401 unless the request carries a live API key."""
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                ErrorCode.UNAUTHORIZED,
                "send an API key as `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": 'Bearer realm="pushd"'},
            )
        record = await self.verify(key.strip())
        if record is None or record.revoked_at is not None:
            if record is not None:
                request[REVOKED_KEY] = record
            raise ApiError(
                ErrorCode.UNAUTHORIZED,
                "unknown API key: check it, or ask an admin for one (POST /api/keys)"
                if record is None
                else f"API key {record.id} was revoked; "
                "ask an admin for a new one (POST /api/keys)",
                headers={"WWW-Authenticate": 'Bearer realm="pushd", error="invalid_token"'},
            )
        request[API_KEY] = record


async def bootstrap_admin_key(storage: Storage, given: str | None) -> str | None:
    """Make sure an admin key exists. Returns a newly generated key (to print once), or None.

    `given` (from PUSHD_ADMIN_KEY) is registered if its hash is not known yet; otherwise a
    key is generated only when the database holds no key at all.
    """
    if given:
        if await storage.find_api_key(hash_key(given)) is None:
            await storage.create_api_key(
                key_record(given, name="bootstrap (PUSHD_ADMIN_KEY)", role=ADMIN)
            )
        return None
    if await storage.count_api_keys() > 0:
        return None
    key = generate_key()
    await storage.create_api_key(key_record(key, name="bootstrap", role=ADMIN))
    return key


def key_record(
    key: str,
    *,
    name: str,
    role: str,
    categories: Iterable[str] | None = None,
    may_broadcast: bool = False,
) -> ApiKeyRecord:
    """The stored form of a new `key`: a fresh id and only the key's hash; categories
    deduplicated and sorted, none (or an empty list) meaning unrestricted."""
    return ApiKeyRecord(
        id=new_id("key"),
        name=name,
        role=role,
        key_hash=hash_key(key),
        created_at=now_ms(),
        categories=tuple(sorted(set(categories))) if categories else None,
        may_broadcast=may_broadcast,
    )


def require_category(request: web.Request, category: str | None) -> None:
    """Raise a 403 naming `category` unless the request's key may send it: a key
    limited to categories may only send notifications that name one of them."""
    allowed = request[API_KEY].categories
    if allowed is None or category in allowed:
        return
    listed = ", ".join(allowed)
    raise ApiError(
        ErrorCode.FORBIDDEN,
        f"this API key is limited to the categories {listed}: send one of them"
        if category is None
        else f"this API key may not send category {category!r}, only: {listed}",
        field="category",
    )


def may_read_category(request: web.Request, category: str | None) -> bool:
    """Whether the request's key may see a notification of this category."""
    allowed = request[API_KEY].categories
    return allowed is None or category in allowed
