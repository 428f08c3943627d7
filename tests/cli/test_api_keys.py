"""`pushd keys create|list|revoke` as an operator runs them (real processes), against the
storage named by the flags, each action recorded in the audit trail as `cli`."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from storage import open_storage
from storage.records import AuditRecord
from tests.cli.test_main import pushd

# Every test here runs `python -m pushd` in a process of its own.
pytestmark = pytest.mark.slow

KEY = re.compile(r"shown once, store it now\): (pk_\S+)")
KEY_ID = re.compile(r"^(key_\w+)  role=(\w+)", re.MULTILINE)


async def audit_of(url: str) -> list[AuditRecord]:
    store = await open_storage(url)
    try:
        return list(reversed(await store.list_audit(limit=100)))
    finally:
        await store.close()


def test_create_list_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pushd.db'}"
    flags = ["--storage-url", url, "--data-dir", str(tmp_path)]
    admin = pushd("keys", "create", "--role", "admin", "--name", "ops", *flags)
    assert admin.returncode == 0, admin.stdout + admin.stderr
    created = pushd(
        "keys", "create", "--role", "publisher", "--name", "billing",
        "--category", "billing", "--category", "invoices", "--broadcast", *flags,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    key = KEY.search(created.stdout)
    assert key is not None
    [(key_id, role)] = KEY_ID.findall(created.stdout)
    assert role == "publisher"
    assert "categories=billing,invoices" in created.stdout
    assert "  broadcast  " in created.stdout
    assert "broadcast" not in admin.stdout.split("\n")[-2]  # only when given

    listed = pushd("keys", "list", *flags)
    assert listed.returncode == 0
    assert [found[1] for found in KEY_ID.findall(listed.stdout)] == ["admin", "publisher"]
    assert key[1] not in listed.stdout  # the secret is shown at creation only

    revoked = pushd("keys", "revoke", key_id, *flags)
    assert revoked.returncode == 0, revoked.stdout
    assert "revoked=" in revoked.stdout
    unknown = pushd("keys", "revoke", "key_nope", *flags)
    assert unknown.returncode == 1
    assert "no API key with id 'key_nope'" in unknown.stdout
    [(admin_id, _)] = KEY_ID.findall(admin.stdout)
    last_admin = pushd("keys", "revoke", admin_id, *flags)
    assert last_admin.returncode == 1
    assert "last live admin key" in last_admin.stdout
    limited_admin = pushd(
        "keys", "create", "--role", "admin", "--name", "x", "--category", "a", *flags
    )
    assert limited_admin.returncode == 1

    records = asyncio.run(audit_of(url))
    assert [(r.actor, r.action, r.target, r.result) for r in records] == [
        ("cli", "key.create", f"key:{admin_id}", "ok"),
        ("cli", "key.create", f"key:{key_id}", "ok"),
        ("cli", "key.revoke", f"key:{key_id}", "ok"),
        ("cli", "key.revoke", "key:key_nope", "error"),
        ("cli", "key.revoke", f"key:{admin_id}", "error"),
    ]
