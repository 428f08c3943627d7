"""`pushd keys create|list|revoke`: API keys managed straight in storage, as an
operator does before any admin key is at hand (docs/security.md, "Key lifecycle").

Every action is recorded in the audit trail with actor `cli`. A revocation is also
published on the configured shared state, so that running nodes on Redis drop the key
from their caches at once.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pushd.access.api_keys import generate_key, key_record
from pushd.access.audit_fields import CLI_ACTOR
from pushd.access.revocations import CHANNEL, ApiKeyRevoked, encode_revocation
from pushd.access.roles import ADMIN, ROLES
from pushd.config.settings import Config
from pushd.ids import now_ms
from pushd.state import StateError, open_state
from storage import LastAdminKeyError, Storage, open_storage
from storage.records import ApiKeyRecord, NewAuditRecord

log = logging.getLogger("pushd")

EXIT_OK = 0
EXIT_FAILED = 1


def add_parser(
    commands: Any, common: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """Add `keys` and its subcommands to the `pushd` parser (`commands` is its
    subparsers action; `common` adds --config, --data-dir, --storage-url, --log-level)."""
    keys: argparse.ArgumentParser = commands.add_parser(
        "keys", help="create, list or revoke API keys"
    )
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="create an API key and print it (once)")
    common(create)
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--category",
        action="append",
        dest="categories",
        metavar="CATEGORY",
        help="limit the key to this notification category (repeat for several)",
    )
    create.add_argument(
        "--broadcast",
        action="store_true",
        help="a publisher key that may send to every user or a segment (docs/audiences.md)",
    )
    common(actions.add_parser("list", help="list API keys (never their secrets)"))
    revoke = actions.add_parser("revoke", help="revoke an API key")
    common(revoke)
    revoke.add_argument("key_id", help="the key's id (key_…), see `pushd keys list`")
    return keys


async def run(config: Config, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Run one `pushd keys` subcommand; return the exit code."""
    storage = await open_storage(config.storage_url, pool_size=1)
    try:
        await storage.migrate()
        match args.keys_command:
            case "create":
                return await _create(storage, args, say)
            case "list":
                return await _list(storage, say)
            case _:
                return await _revoke(storage, config, args.key_id, say)
    finally:
        await storage.close()


async def _audit(storage: Storage, action: str, target: str, ok: bool, **detail: Any) -> None:
    await storage.append_audit(
        [
            NewAuditRecord(
                at=now_ms(),
                actor=CLI_ACTOR,
                action=action,
                target=target,
                result="ok" if ok else "error",
                detail=detail or None,
            )
        ]
    )


async def _create(storage: Storage, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    categories: list[str] | None = args.categories
    if args.role == ADMIN and categories:
        say("pushd: admin keys cannot be limited to categories: use --role publisher or reader")
        return EXIT_FAILED
    key = generate_key()
    record = key_record(
        key,
        name=args.name,
        role=args.role,
        categories=categories,
        may_broadcast=args.broadcast,
    )
    await storage.create_api_key(record)
    await _audit(
        storage,
        "key.create",
        f"key:{record.id}",
        True,
        role=record.role,
        categories=categories,
        broadcast=args.broadcast,
    )
    say(f"API key (shown once, store it now): {key}")
    say(_describe(record))
    return EXIT_OK


async def _list(storage: Storage, say: Callable[[str], None]) -> int:
    keys = await storage.list_api_keys()
    if not keys:
        say("no API keys")
    for record in keys:
        say(_describe(record))
    return EXIT_OK


async def _revoke(storage: Storage, config: Config, key_id: str, say: Callable[[str], None]) -> int:
    try:
        record = await storage.revoke_api_key(key_id, at=now_ms())
    except LastAdminKeyError as exc:
        await _audit(storage, "key.revoke", f"key:{key_id}", False, reason="last admin key")
        say(f"pushd: {exc}")
        return EXIT_FAILED
    if record is None:
        await _audit(storage, "key.revoke", f"key:{key_id}", False, reason="unknown key")
        say(f"pushd: no API key with id {key_id!r} (see `pushd keys list`)")
        return EXIT_FAILED
    await _audit(storage, "key.revoke", f"key:{key_id}", True)
    say(f"revoked: {_describe(record)}")
    await _broadcast(config, key_id, say)
    return EXIT_OK


async def _broadcast(config: Config, key_id: str, say: Callable[[str], None]) -> None:
    """Tell running nodes through the shared state. The in-process state lives in the
    server's own process, out of reach: a running server then learns the revocation
    from storage, within `auth.api_key_cache_ttl` seconds."""
    if config.state.url.startswith("memory:"):
        return
    state = open_state(config.state.url, prefix=config.state.prefix)
    try:
        await state.start()
        await state.publish(CHANNEL, encode_revocation(ApiKeyRevoked(key_id)))
    except StateError as exc:
        say(
            f"pushd: warning: running nodes were not told ({exc}); they refuse the key "
            f"within auth.api_key_cache_ttl = {config.auth.api_key_cache_ttl}s"
        )
    finally:
        await state.close()


def _describe(record: ApiKeyRecord) -> str:
    def instant(millis: int) -> str:
        return datetime.fromtimestamp(millis / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    parts = [record.id, f"role={record.role}", f"name={record.name!r}"]
    if record.categories is not None:
        parts.append("categories=" + ",".join(record.categories))
    if record.may_broadcast:
        parts.append("broadcast")
    parts.append(f"created={instant(record.created_at)}")
    if record.revoked_at is not None:
        parts.append(f"revoked={instant(record.revoked_at)}")
    return "  ".join(parts)
