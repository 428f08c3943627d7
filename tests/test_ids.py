"""Identifiers sort by creation time and never repeat; the random bytes behind them too."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

from pushd.ids import new_id
from storage.crypto import random_bytes


def test_ids_are_prefixed_url_safe_and_unique() -> None:
    ids = [new_id("ntf") for _ in range(5000)]  # crosses several refills of the pool
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"ntf_[0-9a-hjkmnp-tv-z]{26}", i) for i in ids)


def test_ids_sort_by_creation_time() -> None:
    first = new_id("usr")
    time.sleep(0.002)
    second = new_id("usr")
    assert first < second


def test_random_bytes_are_fresh_across_refills_and_threads() -> None:
    """Guards the pooled CSPRNG behind ids and encryption nonces: a pool shared across
    threads without care, or one that re-served a chunk, would repeat AES-GCM nonces."""
    draws = [random_bytes(12) for _ in range(2000)]  # about six 4 KiB refills
    assert all(len(draw) == 12 for draw in draws)
    assert len(set(draws)) == len(draws)
    assert len(random_bytes(10_000)) == 10_000  # more than one chunk at once

    from_threads: list[bytes] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for chunk in pool.map(lambda _: [random_bytes(12) for _ in range(500)], range(8)):
            from_threads.extend(chunk)
    assert len(set(from_threads + draws)) == len(from_threads) + len(draws)
