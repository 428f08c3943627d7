"""The storage seam. Every backend (SQLite, PostgreSQL) honours exactly this contract,
and tests/storage/test_contract.py checks it against each of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from storage.records import (
    ApiKeyRecord,
    AuditRecord,
    CursorHistoryRecord,
    CursorTimes,
    DeviceRecord,
    IdempotencyRecord,
    MarkedRead,
    NewAuditRecord,
    NewDevice,
    NewNotification,
    NewUser,
    NotificationRecord,
    UserRecord,
)


class Storage(Protocol):
    """Durable state of pushd.

    All methods are coroutines and never block the event loop. Any failure to reach the
    database surfaces as `StorageUnavailableError`; nothing else from a driver leaks out.
    Calls after `close()` raise `StorageUnavailableError` too. A negative `limit` raises
    `ValueError`.

    `categories` (of a key or token limited to categories, docs/security.md): given, a
    method sees only notifications whose category is one of them (never one without a
    category), and the filter is part of the query: a `limit` counts only those, and
    nothing returned or counted reveals another category. None: every notification.
    """

    async def migrate(self) -> int:
        """Bring the schema up to the newest known version; return that version.

        Idempotent and safe to run from several processes at once (serialised by a lock).
        Raises `SchemaTooNewError` when the database is newer than this code, without
        changing anything.
        """
        ...

    async def schema_version(self) -> int:
        """The version the database is at (0 for an empty database)."""
        ...

    async def ping(self) -> None:
        """Return when the database answers a trivial query; raise `StorageUnavailableError`."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent. Pending operations finish first."""
        ...

    # users -------------------------------------------------------------------------

    async def create_user(self, user: NewUser) -> UserRecord:
        """Insert a user with `last_seq = ack_seq = 0`.

        Raises `ConflictError(field="external_id")` if another user has that external id,
        `ConflictError(field="id")` on a duplicate id.
        """
        ...

    async def get_user(self, user_id: str) -> UserRecord | None:
        """The user with this id, or None."""
        ...

    async def get_user_by_external_id(self, external_id: str) -> UserRecord | None:
        """The user with this external id, or None."""
        ...

    async def list_users(self, *, after_id: str | None, limit: int) -> list[UserRecord]:
        """Users ordered by id ascending, starting after `after_id` (exclusive), at most `limit`."""
        ...

    # devices -----------------------------------------------------------------------

    async def upsert_device(self, device: NewDevice) -> tuple[DeviceRecord, bool]:
        """Register a device; return it and whether it was created.

        A device with the same (user_id, kind, address) already registered is returned
        instead (its `details` replaced by the new ones), with `created=False`: clients
        re-register their push token on every start. Raises `UnknownUserError`, and
        `ConflictError(field="id")` if another device already has this id.
        """
        ...

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        """The user's devices, oldest first (empty for an unknown user)."""
        ...

    async def delete_device(self, user_id: str, device_id: str) -> bool:
        """Remove the device if it belongs to the user; return whether it existed."""
        ...

    # notifications -----------------------------------------------------------------

    async def insert_notifications(
        self, batch: Sequence[NewNotification], *, node_id: str = ""
    ) -> list[NotificationRecord]:
        """Commit a batch of notifications in ONE transaction and return their records,
        in the order given.

        Each gets the next `seq` of its user: strictly increasing per user, gap-free, in
        batch order, and correct under concurrent writers from several processes (the
        user's `last_seq` is incremented under a row lock). Each also gets a `gid`,
        increasing in commit order across the whole database, and records `node_id` as
        the node that committed it (for `unpublished_notifications`). A notification's
        `idempotency` claim is stored in the same transaction. Either every row is
        committed or none is. Raises (nothing written) `UnknownUserError` if a user does
        not exist, `IdempotencyConflictError` if a claim's (scope, key) is already
        stored, `ConflictError(field="id")` if a notification id is already taken.
        """
        ...

    async def get_notification(self, notification_id: str) -> NotificationRecord | None:
        """The notification with this id, or None."""
        ...

    async def list_notifications(
        self,
        user_id: str,
        *,
        before_seq: int | None,
        limit: int,
        unread_only: bool = False,
        categories: Sequence[str] | None = None,
    ) -> list[NotificationRecord]:
        """The user's notifications newest first (seq descending), only those with
        `seq < before_seq` when given, only unread ones with `unread_only`, only of
        `categories` when given, at most `limit`."""
        ...

    async def count_unread(self, user_id: str, *, categories: Sequence[str] | None = None) -> int:
        """How many of the user's notifications (of `categories`, when given) are not
        marked read."""
        ...

    async def notifications_after(
        self,
        user_id: str,
        *,
        after_seq: int,
        limit: int,
        categories: Sequence[str] | None = None,
    ) -> list[NotificationRecord]:
        """The user's notifications with `seq > after_seq` (of `categories`, when
        given), oldest first, at most `limit` (for replaying to a client that resumes)."""
        ...

    async def mark_read(
        self,
        user_id: str,
        ids: Sequence[str],
        at: int,
        *,
        categories: Sequence[str] | None = None,
    ) -> list[MarkedRead]:
        """Set `read_at = at` on those of `ids` that are the user's, of `categories`
        when given, and not read yet; return them (in `ids` order). Other ids (other
        users', other categories', unknown) are ignored."""
        ...

    async def mark_all_read(
        self, user_id: str, at: int, *, categories: Sequence[str] | None = None
    ) -> tuple[int, int]:
        """Mark every unread notification of the user read; return (how many were
        marked, the seq they run up to): the user's `last_seq`, or with `categories`
        the seq of the user's newest notification of those categories (0 if none).
        (0, 0) for an unknown user."""
        ...

    async def mark_dropped(
        self, user_id: str, *, first_seq: int, last_seq: int, reason: str, at: int
    ) -> None:
        """Record that the user's notifications `first_seq..last_seq` will not be
        delivered (`reason`: `expired` or `not_retained`): `dropped_at`/`dropped_reason`
        are set where not set yet. Missing rows are ignored."""
        ...

    # delivery cursors ----------------------------------------------------------------

    async def advance_cursors(
        self,
        *,
        sent: Mapping[str, int],
        acked: Mapping[str, int],
        at: int,
        within: Sequence[str] | None = None,
    ) -> None:
        """Move users' `sent_seq` and `ack_seq` forward, in one transaction.

        For each user, a cursor becomes `max(cursor, min(value, last_seq))`: it never
        moves back, nor past the newest notification. Each cursor that moved gets a
        `cursor_history` row (seq, at), so `cursor_times` can tell when a seq was reached.
        Unknown users are ignored.

        `within` (the categories of a limited socket, which saw only those): a cursor
        also stops just below the first notification above it whose category is not one
        of them (or is null), since such a socket cannot vouch for that notification.
        """
        ...

    async def cursor_times(self, user_id: str, seqs: Sequence[int]) -> dict[int, CursorTimes]:
        """For each seq, when the user's sent and ack cursors first reached it."""
        ...

    # idempotency ---------------------------------------------------------------------

    async def find_idempotency(
        self, scope: str, key: str, *, not_before: int
    ) -> IdempotencyRecord | None:
        """The stored key, or None. A key stored before `not_before` has expired: it is
        deleted and None is returned."""
        ...

    async def purge_idempotency(self, *, before: int, limit: int) -> int:
        """Delete up to `limit` keys stored before `before`; return how many."""
        ...

    # outbox relay --------------------------------------------------------------------

    async def get_relay_mark(self, node_id: str) -> int | None:
        """The gid up to which this node's commits were handed to the bus, or None if
        the node never recorded one."""
        ...

    async def set_relay_mark(self, node_id: str, published_gid: int) -> None:
        """Record the node's mark (it never moves back)."""
        ...

    async def unpublished_notifications(
        self, node_id: str, *, after_gid: int, limit: int
    ) -> list[NotificationRecord]:
        """Notifications committed by `node_id` with `gid > after_gid`, in gid order, at
        most `limit`."""
        ...

    async def max_gid(self, node_id: str) -> int:
        """The highest gid committed by `node_id` (0 if none)."""
        ...

    # API keys ----------------------------------------------------------------------

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

    # access control (issue #4) ----------------------------------------------------------

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

    async def append_audit(self, records: Sequence[NewAuditRecord]) -> None:
        """Append the records in ONE transaction (all or none), numbering them with ids
        above every existing one, in the order given. An empty sequence is a no-op.

        Each record is stored within bounds, whatever its fields hold: `actor`, `action`,
        `target`, `source` and `result` keep at most 200 characters (a longer one keeps
        its start and ends with `…[truncated]`, 200 in all), and a `detail` over 1024
        bytes of JSON is stored as `{"truncated": true, "prefix": <start of its JSON>}`,
        within 1024 bytes too."""
        ...

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: int | None = None,
        until: int | None = None,
        before_id: int | None = None,
        limit: int,
    ) -> list[AuditRecord]:
        """Audit records newest first (id descending), at most `limit`. Each filter that
        is given must hold: `actor`, `action` and `target` equal, `since <= at < until`,
        `id < before_id` (the cursor of the next page)."""
        ...

    async def pseudonymise_audit(self, subject: str, replacement: str) -> int:
        """Replace `subject` (e.g. `user:<id>`) by `replacement` wherever it is the actor
        or the target of an audit record; return how many records changed. Erasing a user
        must call this: the records stay, the person is no longer named."""
        ...

    async def purge_audit(self, *, before: int, limit: int) -> int:
        """Delete up to `limit` audit records with `at < before` (any of them, not
        necessarily the oldest) in ONE transaction; return how many. Raises `ValueError`
        for a negative `limit`."""
        ...

    # data protection (issue #4) ---------------------------------------------------------

    async def erase_user(self, user_id: str, *, batch_size: int) -> bool:
        """Delete the user and every row about them in every table; return whether the
        user existed.

        The user's notifications go first, `batch_size` per transaction (a long history
        must not hold the database in one transaction), then their devices, cursor
        history, idempotency keys, remaining notifications and the user row in one
        transaction. Idempotent: an unknown user is a no-op returning False; an erasure
        cut short (crash) is completed by calling it again. Notifications committed for
        the user meanwhile are erased too, or refused (`UnknownUserError`) once the user
        row is gone. The audit trail is not touched: call `pseudonymise_audit`.
        """
        ...

    async def idempotency_keys_of(
        self, user_id: str, *, after_seq: int, limit: int
    ) -> list[IdempotencyRecord]:
        """The stored Idempotency-Keys whose notification went to the user, with
        `seq > after_seq`, in seq order, at most `limit` (a page of a user's export)."""
        ...

    async def cursor_history_of(
        self, user_id: str, *, after: tuple[str, int] | None, limit: int
    ) -> list[CursorHistoryRecord]:
        """The user's cursor history ordered by (cursor, seq), after `after` (exclusive),
        at most `limit` (a page of a user's export)."""
        ...

    async def purge_notifications(
        self,
        *,
        created_before: int,
        limit: int,
        category: str | None = None,
        except_categories: Sequence[str] = (),
    ) -> int:
        """Delete up to `limit` notifications created before `created_before`, oldest
        first, in ONE transaction; return how many.

        With `category`, only notifications of that category; without, only those whose
        category is null or not in `except_categories`. The same transaction deletes the
        cursor history of their users below each user's oldest remaining notification
        (delivery times of remaining notifications stay right).
        """
        ...

    async def count_not_under_active_key(self) -> int:
        """How many rows hold a sealed column (storage/crypto.py `SEALED_COLUMNS`) that is
        not sealed under the cipher's active key: plaintext rows written before
        encryption, and rows of older keys. Raises `ValueError` when encryption is off."""
        ...

    async def rekey_batch(self, table: str, *, after_id: str, limit: int) -> tuple[int, str | None]:
        """Reseal under the active key up to `limit` rows of `table` (a key of
        `SEALED_COLUMNS`) with `id > after_id` that are not under it yet, in id order, in
        ONE short transaction. Return how many rows were rewritten and the id to pass as
        `after_id` next, or None when no row of the table is left after it.

        Safe while the server runs (sealed columns are never updated elsewhere; a row
        deleted meanwhile is skipped) and idempotent: a rekey interrupted at any point
        is completed by starting again. Raises `EncryptionError` for a value whose key is
        not in the ring, `ValueError` when encryption is off.
        """
        ...
