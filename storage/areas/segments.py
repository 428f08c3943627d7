"""Saved segments, and the users an audience filter selects."""

from __future__ import annotations

from typing import Protocol

from storage.records import NewSegment, SegmentRecord, UserFilter, UserRecord


class Segments(Protocol):
    """Saved audience filters, and reading the users of an audience page by page.

    `where` is a `UserFilter` (None: every user). Everything but `AttributeIs` is tested
    by the database, values passed as parameters; attributes are sealed at rest, so for a
    filter that names one the database selects a superset (each attribute test taken as
    "maybe") and the caller tests the users it gets with the whole filter
    (pushd/audiences/segments.py `matches`).
    """

    async def create_segment(self, segment: NewSegment) -> SegmentRecord:
        """Insert a segment. Raises `ConflictError(field="id")` on a duplicate id."""
        ...

    async def get_segment(self, segment_id: str) -> SegmentRecord | None:
        """The segment with this id, or None."""
        ...

    async def list_segments(self, *, after_id: str | None, limit: int) -> list[SegmentRecord]:
        """Segments ordered by id, after `after_id` (exclusive), at most `limit`."""
        ...

    async def delete_segment(self, segment_id: str) -> bool:
        """Remove the segment; return whether it existed (sends already accepted keep
        their own copy of its filter)."""
        ...

    async def users_matching(
        self, where: UserFilter | None, *, after_id: str | None, limit: int
    ) -> list[UserRecord]:
        """Users `where` may select (see the class), ordered by id, after `after_id`
        (exclusive), at most `limit`: a fan-out walks an audience in such pages, each
        read on its own (keyset pagination: no offset, no snapshot)."""
        ...

    async def user_ids_matching(
        self, where: UserFilter | None, *, after_id: str | None, limit: int
    ) -> list[str]:
        """The ids of `users_matching`, nothing else read: for a filter without attribute
        tests, where no user needs to be opened (and decrypted) to be chosen."""
        ...

    async def count_matching(self, where: UserFilter | None, *, at_most: int) -> int:
        """How many users `where` may select (see the class), counting no further than
        `at_most`."""
        ...
