"""The one cursor pagination every list route uses (pushd/api/pagination.py)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import msgspec
import pytest

from pushd.api.pagination import NumericCursor, fetch_page, numeric_cursor

ROWS = list(range(100, 0, -1))  # newest first, as the history and the audit trail list


async def older_than(before: int | None, limit: int) -> Sequence[int]:
    return [row for row in ROWS if before is None or row < before][:limit]


async def test_pages_chain_through_the_whole_list_without_gaps_or_repeats() -> None:
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        before = numeric_cursor(cursor)
        page = await fetch_page(functools.partial(older_than, before), 30, key=lambda row: row)
        seen += page.items
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ROWS
    assert pages == 4


async def test_storage_is_asked_for_one_row_more_than_the_page() -> None:
    asked: list[int] = []

    async def fetch(limit: int) -> Sequence[int]:
        asked.append(limit)
        return ROWS[:limit]

    page = await fetch_page(fetch, 10, key=lambda row: row)
    assert asked == [11]
    assert (page.items, page.next_cursor) == (ROWS[:10], "91")


async def test_a_list_that_fits_exactly_has_no_next_page() -> None:
    """A next_cursor here would send the client for an empty page."""
    page = await fetch_page(lambda limit: older_than(None, limit), 100, key=lambda row: row)
    assert (len(page.items), page.next_cursor) == (100, None)


@pytest.mark.parametrize("cursor", ["-1", "1e3", "1234567890123456789", ""])
def test_a_forged_numeric_cursor_is_refused_by_the_schema(cursor: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(cursor, NumericCursor)
