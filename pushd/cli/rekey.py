"""`pushd rekey`: reseal every row not under the active encryption key (rows of older
keys, and rows written before encryption was on) with the active key; docs/security.md
("Key rotation").

Batch after batch, each one short transaction, so it runs next to live servers. It is
idempotent and restartable: each run looks for what is still not under the active key,
so an interrupted run is finished by running it again.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from pushd.access.audit_fields import CLI_ACTOR
from pushd.config.settings import Config
from pushd.ids import now_ms
from pushd.process.key_ring import storage_cipher
from storage import EncryptionError, Storage, open_storage
from storage.crypto import SEALED_COLUMNS
from storage.records import NewAuditRecord

EXIT_OK = 0
EXIT_FAILED = 1


def add_parser(
    commands: Any, common: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """Add `rekey` to the `pushd` parser (see cli_keys.add_parser)."""
    rekey: argparse.ArgumentParser = commands.add_parser(
        "rekey", help="re-encrypt every row not under the active encryption key"
    )
    common(rekey)
    rekey.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="rows re-encrypted per transaction (default 500)",
    )
    return rekey


async def run(config: Config, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Run `pushd rekey`; return the exit code."""
    if args.batch_size < 1:
        say("pushd: --batch-size must be at least 1")
        return EXIT_FAILED
    cipher = await asyncio.to_thread(storage_cipher, config)
    key_id = cipher.active_key_id
    if key_id is None:
        say(
            "pushd: encryption is off (encryption.enabled = false, or PostgreSQL without "
            "encryption.keys): there is no active key to rekey to"
        )
        return EXIT_FAILED
    storage = await open_storage(config.storage_url, pool_size=1, cipher=cipher)
    done = 0
    try:
        await storage.migrate()
        total = await storage.count_not_under_active_key()
        say(f"{total:,} rows to re-encrypt with key {key_id!r}")
        for table in SEALED_COLUMNS:
            after: str | None = ""
            while after is not None:
                rewritten, after = await storage.rekey_batch(
                    table, after_id=after, limit=args.batch_size
                )
                if rewritten:
                    done += rewritten
                    percent = 100 * done // total if total else 100
                    say(f"rekeyed {done:,} / {total:,} rows ({percent}%)")
    except EncryptionError as exc:
        say(f"pushd: rekey stopped after {done:,} rows: {exc}")
        await _audit(storage, key_id, done, ok=False)
        return EXIT_FAILED
    else:
        await _audit(storage, key_id, done, ok=True)
        say(f"done: {done:,} rows re-encrypted; every row is under key {key_id!r}")
        return EXIT_OK
    finally:
        await storage.close()


async def _audit(storage: Storage, key_id: str, rows: int, *, ok: bool) -> None:
    await storage.append_audit(
        [
            NewAuditRecord(
                at=now_ms(),
                actor=CLI_ACTOR,
                action="storage.rekey",
                target=f"encryption_key:{key_id}",
                result="ok" if ok else "error",
                detail={"rows": rows},
            )
        ]
    )
