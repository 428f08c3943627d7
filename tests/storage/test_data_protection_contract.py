"""The data-protection part of the `Storage` contract (issue #4), on every backend:
encryption at rest read back from the raw database, key rotation and rekey, erasure of
a user from every table, the export's paged reads, and retention's purge."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from storage import PLAINTEXT, EncryptionError, KeyRing, Storage
from storage.crypto import SEALED_COLUMNS
from storage.records import (
    IdempotencyClaim,
    NewAuditRecord,
    NewDevice,
    PlannedDelivery,
    PreferencesChange,
)
from tests.storage.conftest import CREATED_AT, note, opened, raw_sql, table_names, user

K1 = ("k1", bytes(range(32)))
K2 = ("k2", bytes(range(100, 132)))
SECRETS = {
    "name": "Zoë Secretname",
    "email": "zoe.secretmail@example.org",
    "phone": "+33699887766",
}
TITLE, BODY, DATA_VALUE = "TitleSecretXYZ", "BodySecretXYZ", "DataSecretXYZ"


async def dump(url: str) -> str:
    """Every row of every table of the database, as text."""
    rows = []
    for table in sorted(await table_names(url)):
        rows.append(f"{table}: {await raw_sql(url, f'SELECT * FROM {table}')}")  # noqa: S608
    return "\n".join(rows)


async def sealed_values(url: str) -> list[str]:
    """Every non-null value of every sealed column."""
    values = []
    for table, columns in SEALED_COLUMNS.items():
        for row in await raw_sql(url, f"SELECT {', '.join(columns)} FROM {table}"):  # noqa: S608
            values += [value for value in row if value is not None]
    return values


async def fill(store: Storage, user_id: str = "u1", count: int = 3, prefix: str = "n") -> None:
    await store.create_user(user(user_id, external_id=f"crm-{user_id}", **SECRETS))
    await store.insert_notifications(
        [
            note(f"{prefix}{i}", user_id, title=TITLE, body=BODY, data={"invoice": DATA_VALUE})
            for i in range(count)
        ]
    )


async def rekey_all(store: Storage, *, limit: int) -> int:
    """What `pushd rekey` does: every sealed table, batch after batch."""
    done = 0
    for table in SEALED_COLUMNS:
        after: str | None = ""
        while after is not None:
            rewritten, after = await store.rekey_batch(table, after_id=after, limit=limit)
            done += rewritten
    return done


# encryption at rest ----------------------------------------------------------------------


async def test_raw_database_holds_no_plaintext_of_sealed_columns(storage_url: str) -> None:
    """Guards encryption at rest: name, e-mail, phone, title, body and data (also inside
    the JSON of `data`) must not be readable in the database file or server."""
    async with opened(storage_url, KeyRing([K1])) as store:
        await store.migrate()
        await fill(store)
        found = await store.get_user("u1")
        assert found is not None
        assert (found.name, found.email, found.phone) == tuple(SECRETS.values())
        [stored] = await store.list_notifications("u1", before_seq=2, limit=10)
        assert (stored.title, stored.body, stored.data) == (TITLE, BODY, {"invoice": DATA_VALUE})
    raw = await dump(storage_url)
    for secret in (*SECRETS.values(), "Secretname", "secretmail", TITLE, BODY, DATA_VALUE):
        assert secret not in raw
    assert "crm-u1" in raw  # external_id stays plaintext: looked up by equality (documented)
    values = await sealed_values(storage_url)
    assert len(values) == 3 + 3 * 3
    assert all(value.startswith("enc:v1:k1:") for value in values)
    assert len(set(values)) == len(values)  # a fresh nonce per value


async def test_a_sealed_value_moved_to_another_row_or_column_does_not_open(
    storage_url: str,
) -> None:
    """Guards the associated data: swapping ciphertexts between rows must be detected,
    not show one user's notification text in another's."""
    async with opened(storage_url, KeyRing([K1])) as store:
        await store.migrate()
        await fill(store, count=2)
        await raw_sql(
            storage_url,
            "UPDATE notifications SET title = (SELECT title FROM notifications WHERE id = 'n0') "
            "WHERE id = 'n1'",
        )
        await raw_sql(storage_url, "UPDATE notifications SET body = title WHERE id = 'n0'")
        for notification_id in ("n0", "n1"):
            with pytest.raises(EncryptionError, match="altered or copied"):
                await store.get_notification(notification_id)


async def test_plaintext_rows_stay_readable_and_rekey_seals_them(storage_url: str) -> None:
    async with opened(storage_url) as plain:
        await plain.migrate()
        await fill(plain)
    async with opened(storage_url, KeyRing([K1])) as store:
        assert (await store.get_user("u1")) is not None
        assert (await store.get_notification("n0")).title == TITLE  # type: ignore[union-attr]
        assert await store.count_not_under_active_key() == 4
        assert await rekey_all(store, limit=2) == 4
        assert await store.count_not_under_active_key() == 0
        assert (await store.get_notification("n2")).data == {"invoice": DATA_VALUE}  # type: ignore[union-attr]
    assert TITLE not in await dump(storage_url)


async def test_rotation_keeps_old_rows_readable_and_rekey_leaves_no_old_key(
    storage_url: str,
) -> None:
    async with opened(storage_url, KeyRing([K1])) as old:
        await old.migrate()
        await fill(old, "u1", count=5)
    async with opened(storage_url, KeyRing([K2, K1])) as rotated:
        before = await rotated.notifications_after("u1", after_seq=0, limit=10)
        assert [n.title for n in before] == [TITLE] * 5
        await fill(rotated, "u2", count=3, prefix="m")
        assert await rotated.count_not_under_active_key() == 1 + 5
        # Interrupted after one batch, then started again from scratch: idempotent.
        assert await rotated.rekey_batch("notifications", after_id="", limit=2) == (2, "n1")
        assert await rotated.count_not_under_active_key() == 4
        assert await rekey_all(rotated, limit=2) == 4
        assert await rekey_all(rotated, limit=2) == 0
        assert await rotated.count_not_under_active_key() == 0
    values = await sealed_values(storage_url)
    assert values
    assert all(value.startswith("enc:v1:k2:") for value in values)
    async with opened(storage_url, KeyRing([K2])) as new_only:
        assert [
            n.title for n in await new_only.notifications_after("u1", after_seq=0, limit=9)
        ] == [TITLE] * 5
        found = await new_only.get_user("u1")
        assert found is not None
        assert found.email == SECRETS["email"]


async def test_a_key_missing_from_the_ring_is_an_error_naming_it(storage_url: str) -> None:
    async with opened(storage_url, KeyRing([K1])) as store:
        await store.migrate()
        await fill(store)
    for cipher in (KeyRing([K2]), PLAINTEXT):
        async with opened(storage_url, cipher) as store:
            with pytest.raises(EncryptionError, match="sealed with key 'k1'"):
                await store.get_notification("n0")
            with pytest.raises(EncryptionError, match="sealed with key 'k1'"):
                await store.get_user("u1")


async def test_rekey_needs_an_active_key(storage: Storage) -> None:
    with pytest.raises(ValueError, match="encryption is off"):
        await storage.count_not_under_active_key()
    with pytest.raises(ValueError, match="encryption is off"):
        await storage.rekey_batch("users", after_id="", limit=10)


def test_key_ring_refuses_bad_keys() -> None:
    with pytest.raises(ValueError, match="32"):
        KeyRing([("k", b"short")])
    with pytest.raises(ValueError, match="unique"):
        KeyRing([K1, ("k1", bytes(32))])
    with pytest.raises(ValueError, match="':'"):
        KeyRing([("a:b", bytes(32))])
    sealed = KeyRing([K1]).seal("hello", "t.c:1")
    prefix, payload = sealed.rsplit(":", 1)
    assert prefix == "enc:v1:k1"
    assert len(base64.b64decode(payload)) == 12 + len("hello") + 16  # nonce | text | tag


# erasure ---------------------------------------------------------------------------------

VICTIM = "usr_victim_0001"
BYSTANDER = "usr_bystander_1"


async def _user_everywhere(store: Storage, user_id: str) -> None:
    await store.create_user(user(user_id, external_id=f"ext-{user_id}", **SECRETS))
    await store.upsert_device(
        NewDevice(
            id=f"dev-{user_id}",
            user_id=user_id,
            kind="fcm",
            address=f"token-{user_id}",
            details={},
            created_at=CREATED_AT,
        )
    )
    batch = [
        note(
            f"{user_id}-n{i}",
            user_id,
            title=TITLE,
            idempotency=IdempotencyClaim(scope="key_a", key=f"{user_id}-{i}", request_hash="h"),
            deliveries=(PlannedDelivery(id=f"{user_id}-d{i}", channel="fcm", due_at=CREATED_AT),),
        )
        for i in range(7)
    ]
    await store.insert_notifications(batch, node_id="node-a")
    # The ack cancels the first 3 deliveries: a history row each.
    await store.advance_cursors(sent={user_id: 5}, acked={user_id: 3}, at=CREATED_AT)
    await store.change_preferences(
        user_id,
        PreferencesChange(
            muted=True, quiet_hours={"start": "22:00"}, channels={"news": {"email": False}}
        ),
        at=CREATED_AT,
    )
    await store.append_audit(
        [
            NewAuditRecord(
                at=CREATED_AT,
                actor="key:k",
                action="user.create",
                target=f"user:{user_id}",
                result="201",
            ),
            NewAuditRecord(
                at=CREATED_AT, actor=f"user:{user_id}", action="notification.read", result="200"
            ),
        ]
    )


async def test_erase_user_leaves_nothing_about_them_in_any_table(storage_url: str) -> None:
    """Guards erasure against a table it forgets: the table list comes from the database
    itself, so a future table holding a user id without erase support fails here."""
    async with opened(storage_url, KeyRing([K1])) as store:
        await store.migrate()
        await _user_everywhere(store, VICTIM)
        await _user_everywhere(store, BYSTANDER)
        assert await store.erase_user(VICTIM, batch_size=3) is True
        assert await store.pseudonymise_audit(f"user:{VICTIM}", "user:erased-1") == 2
        raw = await dump(storage_url)
        assert VICTIM not in raw
        assert f"ext-{VICTIM}" not in raw
        for table in await table_names(storage_url):
            rows = await raw_sql(storage_url, f"SELECT * FROM {table}")  # noqa: S608
            assert all(VICTIM not in repr(row) for row in rows), table
        # The bystander keeps everything.
        assert await store.get_user(BYSTANDER) is not None
        assert len(await store.list_devices(BYSTANDER)) == 1
        assert len(await store.notifications_after(BYSTANDER, after_seq=0, limit=100)) == 7
        assert len(await store.idempotency_keys_of(BYSTANDER, after_seq=0, limit=100)) == 7
        assert await store.cursor_history_of(BYSTANDER, after=None, limit=100)
        kept = await store.channel_deliveries_of_user(BYSTANDER, after=None, limit=100)
        assert len(kept) == 7
        history = await store.delivery_history_of_deliveries([d.id for d in kept])
        assert sum(len(rows) for rows in history.values()) == 3
        # Idempotent: nothing left, no error.
        assert await store.erase_user(VICTIM, batch_size=3) is False
        assert await store.get_user(VICTIM) is None
        with pytest.raises(ValueError, match="batch_size"):
            await store.erase_user(VICTIM, batch_size=0)


async def test_export_reads_page_by_page(storage: Storage) -> None:
    await _user_everywhere(storage, VICTIM)
    keys = await storage.idempotency_keys_of(VICTIM, after_seq=0, limit=4)
    assert [k.seq for k in keys] == [1, 2, 3, 4]
    rest = await storage.idempotency_keys_of(VICTIM, after_seq=4, limit=4)
    assert [(k.seq, k.notification_id) for k in rest] == [
        (s, f"{VICTIM}-n{s - 1}") for s in (5, 6, 7)
    ]
    first = await storage.cursor_history_of(VICTIM, after=None, limit=1)
    assert [(h.cursor, h.seq, h.at) for h in first] == [("acked", 3, CREATED_AT)]
    second = await storage.cursor_history_of(VICTIM, after=("acked", 3), limit=5)
    assert [(h.cursor, h.seq) for h in second] == [("sent", 5)]
    assert await storage.cursor_history_of("nobody", after=None, limit=5) == []


# retention -------------------------------------------------------------------------------

DAY = 86_400_000


async def test_purge_notifications_by_age_and_category(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    batch: list[Any] = []
    for age_days, category in ((30, "chat"), (30, "billing"), (30, None), (1, "chat"), (1, None)):
        for user_id in ("u1", "u2"):
            batch.append(
                note(
                    f"{user_id}-{category}-{age_days}",
                    user_id,
                    category=category,
                    created_at=CREATED_AT - age_days * DAY,
                )
            )
    await storage.insert_notifications(
        batch
    )  # seqs per user: 1 chat-30, 2 billing-30, 3 none-30, 4 chat-1, 5 none-1
    for seq in range(1, 6):
        await storage.advance_cursors(sent={"u1": seq}, acked={}, at=CREATED_AT + seq)
    ten_days_ago = CREATED_AT - 10 * DAY

    # Only chat, oldest first, `limit` at a time.
    assert (
        await storage.purge_notifications(created_before=ten_days_ago, limit=1, category="chat")
        == 1
    )
    assert (
        await storage.purge_notifications(created_before=ten_days_ago, limit=9, category="chat")
        == 1
    )
    assert (
        await storage.purge_notifications(created_before=ten_days_ago, limit=9, category="chat")
        == 0
    )
    # Everything but chat (null category included).
    purged = await storage.purge_notifications(
        created_before=ten_days_ago, limit=100, except_categories=["chat"]
    )
    assert purged == 4
    for user_id in ("u1", "u2"):
        left = await storage.notifications_after(user_id, after_seq=0, limit=10)
        assert [(n.seq, n.category) for n in left] == [(4, "chat"), (5, None)]
    # History below the oldest remaining seq (4) is gone; what remains still dates it.
    history = await storage.cursor_history_of("u1", after=None, limit=10)
    assert [(h.cursor, h.seq) for h in history] == [("sent", 4), ("sent", 5)]
    times = await storage.cursor_times("u1", [4, 5])
    assert (times[4].sent_at, times[5].sent_at) == (CREATED_AT + 4, CREATED_AT + 5)
    # New rows stay.
    assert await storage.purge_notifications(created_before=ten_days_ago, limit=100) == 0
