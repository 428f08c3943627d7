"""Micro-benchmark of encryption at rest: what sealing and opening a notification's
title, body and data costs per notification (docs/architecture.md quotes it).

    .venv/bin/python scripts/bench_encryption.py [count]

Runs the storage layer's own row mapping (`storage/sql/notifications.py`) with the
AES-256-GCM key ring and without it, and prints microseconds per notification for each
direction.
"""

from __future__ import annotations

import os
import sys
import time

from storage.crypto import PLAINTEXT, Cipher, KeyRing
from storage.records import NotificationRecord
from storage.sql import notifications as notification_sql


def notifications(count: int) -> list[NotificationRecord]:
    return [
        NotificationRecord(
            id=f"ntf_{i:026d}",
            user_id="usr_0000000000000000000000001",
            seq=i + 1,
            title="Invoice INV-2024-0042 paid",
            body="Thanks! Your payment of 129.00 EUR was received. A receipt is attached.",
            data={"invoice": "INV-2024-0042", "amount": 12900, "currency": "EUR"},
            category="billing",
            priority="normal",
            created_at=1_700_000_000_000 + i,
            gid=i + 1,
        )
        for i in range(count)
    ]


def measure(cipher: Cipher, records: list[NotificationRecord]) -> tuple[float, float]:
    """(µs per notification to build its insert parameters, µs to read its row back)."""
    started = time.perf_counter()
    rows = [
        (*notification_sql.notification_params(r, "node", cipher)[:10], None, None, None, r.gid)
        for r in records
    ]
    sealed = time.perf_counter()
    # Row order of NOTIFICATION_COLUMNS: id, user_id, seq, title, body, data, category,
    # priority, created_at, expires_at, read_at, dropped_at, dropped_reason, gid.
    back = [notification_sql.notification_from_row(row, cipher) for row in rows]
    opened = time.perf_counter()
    assert back[0].title == records[0].title
    per = 1e6 / len(records)
    return (sealed - started) * per, (opened - sealed) * per


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    records = notifications(count)
    ring = KeyRing([("k1", os.urandom(32))])
    for _ in range(2):  # warm up, then measure
        plain = measure(PLAINTEXT, records)
        encrypted = measure(ring, records)
    print(
        f"{count:,} notifications (title {len(records[0].title or '')} chars, "
        f"body {len(records[0].body or '')} chars, data 3 keys)"
    )
    print(f"  plaintext : write {plain[0]:6.2f} µs  read {plain[1]:6.2f} µs per notification")
    print(
        f"  AES-GCM   : write {encrypted[0]:6.2f} µs  read {encrypted[1]:6.2f} µs per notification"
    )
    extra = encrypted[0] - plain[0] + encrypted[1] - plain[1]
    print(f"  encryption adds {extra:.2f} µs per notification (write + read)")


if __name__ == "__main__":
    main()
