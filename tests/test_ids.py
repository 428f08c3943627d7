"""Identifiers sort by creation time and never repeat."""

from __future__ import annotations

import re
import time

from pushd.ids import new_id


def test_ids_are_prefixed_url_safe_and_unique() -> None:
    ids = [new_id("ntf") for _ in range(5000)]  # crosses several refills of the pool
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"ntf_[0-9a-hjkmnp-tv-z]{26}", i) for i in ids)


def test_ids_sort_by_creation_time() -> None:
    first = new_id("usr")
    time.sleep(0.002)
    second = new_id("usr")
    assert first < second
