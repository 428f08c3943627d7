"""Cursor pagination, the same for every list route.

Storage is asked for one row more than the page holds: if that row comes, the page is
not the last one, and the last row kept names where the next page starts. Its key (the
key the list is ordered by, as text) is the page's `next_cursor`, which the client
passes back as `cursor`. Nothing is counted, so a page costs one query however long the
list is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from msgspec import Meta

T = TypeVar("T")

PageLimit = Annotated[int, Meta(ge=1, le=200)]
"""The `limit` of a list route: how many items one page holds."""

NumericCursor = Annotated[
    str, Meta(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page.")
]
"""The `cursor` of a list ordered by a number (seq, audit id); the pattern keeps it
within a 64-bit integer, so a forged cursor is a 400, not a storage error."""


def numeric_cursor(cursor: str | None) -> int | None:
    """The position a `NumericCursor` stands for; None (no cursor) is the first page."""
    return None if cursor is None else int(cursor)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of rows, and the cursor of the next page (None on the last one)."""

    items: list[T]
    next_cursor: str | None


async def fetch_page(
    fetch: Callable[[int], Awaitable[Sequence[T]]], limit: int, key: Callable[[T], object]
) -> Page[T]:
    """Call `fetch(limit + 1)` and cut the answer to a page of at most `limit` rows.

    `key(row)` is what the list is ordered by; the last kept row's key, as text, is the
    next page's cursor when there is a next page.
    """
    rows = await fetch(limit + 1)
    items = list(rows[:limit])
    more = len(rows) > limit
    return Page(items, str(key(items[-1])) if more and items else None)
