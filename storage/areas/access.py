"""Access control: API keys, and the cutoff before which a user's tokens are revoked."""

from __future__ import annotations

from typing import Protocol

from storage.records import ApiKeyRecord, UserRecord


class ApiKeysAndRevocations(Protocol):
    """API key records (hashes, never the keys) and revocations of keys and of user
    tokens. Keys are never deleted, only revoked."""

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Store a key record. Raises `ConflictError(field="key_hash")` on a duplicate hash,
        `ConflictError(field="id")` on a duplicate id."""
        ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash (revoked or not), or None."""
        ...

    async def count_api_keys(self) -> int:
        """How many keys exist, revoked ones included (0 means: bootstrap needed)."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones included, oldest first (by `created_at`, then id)."""
        ...

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id (revoked or not), or None."""
        ...

    async def revoke_api_key(self, key_id: str, *, at: int) -> ApiKeyRecord | None:
        """Mark the key revoked at `at` and return its record; None for an unknown id.

        Idempotent: revoking a revoked key changes nothing and returns it with its first
        `revoked_at`. Raises `LastAdminKeyError` (nothing changed) when the key is the only
        live admin key. That check and the revocation are one atomic step, also across
        processes: two admin keys revoked at the same moment, each being the other's
        last peer, leave exactly one of them live.
        """
        ...

    async def get_user_and_token_cutoff(self, user_id: str) -> tuple[UserRecord, int] | None:
        """The user and its `tokens_revoked_before` (epoch ms; 0 when its tokens were
        never revoked) in one read, or None for an unknown user."""
        ...

    async def revoke_user_tokens(self, user_id: str, *, before: int) -> bool:
        """Set the user's `tokens_revoked_before` to `max(current, before)`: it never
        moves back. Return whether the user exists."""
        ...
