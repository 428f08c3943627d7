"""A user's stored notifications as a connection replays them (`actors.connection.Backlog`).

What is replayed is bounded per user: the `backlog_max_count` newest notifications,
none older than `backlog_max_age`. Expired notifications (`ttl`/`expires_at`),
everything beyond the bounds, and seqs whose rows are gone (retention, erasure) come
out as `gap` frames, and the rows still stored are marked dropped so that their delivery
status says they were never delivered.

For a socket limited to categories (pushd/realtime/categories.py) only the rows of those
categories are read: the others, and seqs whose rows are gone (which may have been of
any category), are passed over without a frame, never announced as a gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from pushd.ids import now_ms
from pushd.realtime.frames import GapFrame, encode_notification_frame, frame_encoder
from storage import Storage
from storage.records import NotificationRecord

GapReason = Literal["expired", "not_retained"]

ReplayObserver = Callable[[int, Iterable[GapReason]], None]
"""Told of each replay page: its notification frames, and its gap frames' reasons."""


class _Page:
    """Frames of one replay page; consecutive gap seqs with one reason become one frame."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, bytes | None]] = []
        self.gaps: list[tuple[int, int, GapReason]] = []
        self._open_gap: tuple[int, int, GapReason] | None = None
        self.notifications = 0

    def gap(self, first: int, last: int, reason: GapReason) -> None:
        if self._open_gap is not None:
            start, end, open_reason = self._open_gap
            if open_reason == reason and end + 1 == first:
                self._open_gap = (start, last, reason)
                return
            self._close_gap()
        self._open_gap = (first, last, reason)

    def frame(self, seq: int, frame: bytes) -> None:
        self._close_gap()
        self.entries.append((seq, frame))
        self.notifications += 1

    def pass_over(self, last: int) -> None:
        """Seqs up to `last` this socket does not see: the stream moves past them."""
        self._close_gap()
        self.entries.append((last, None))

    def finish(self) -> list[tuple[int, bytes | None]]:
        self._close_gap()
        return self.entries

    def _close_gap(self) -> None:
        if self._open_gap is not None:
            first, last, reason = self._open_gap
            self._open_gap = None
            self.gaps.append((first, last, reason))
            gap = GapFrame(from_seq=first, to_seq=last, reason=reason)
            self.entries.append((last, frame_encoder.encode(gap)))


class StoredBacklog:
    """Replays one user's notifications from storage, a page at a time."""

    def __init__(
        self,
        storage: Storage,
        user_id: str,
        *,
        max_count: int,
        max_age_seconds: float,
        page_size: int,
        categories: Sequence[str] | None = None,
        observer: ReplayObserver | None = None,
    ) -> None:
        """`categories`: the socket's token is limited to those (None: every one);
        `observer` is told of every page (metrics)."""
        self._observer = observer
        self._storage = storage
        self._categories = categories
        self._user_id = user_id
        self._max_count = max_count
        self._max_age_ms = int(max_age_seconds * 1000)
        self._page_size = page_size

    async def replay(self, after_seq: int, up_to: int) -> list[tuple[int, bytes | None]]:
        """See `actors.connection.Backlog.replay`."""
        now = now_ms()
        page = _Page()
        # Beyond the count bound: what the newest `max_count` do not include.
        floor = max(after_seq, up_to - self._max_count)
        if floor > after_seq:
            page.gap(after_seq + 1, floor, "not_retained")
        rows = await self._storage.notifications_after(
            self._user_id, after_seq=floor, limit=self._page_size, categories=self._categories
        )
        limited = self._categories is not None
        expected = floor + 1
        for record in rows:
            if record.seq > expected and not limited:  # rows that are gone
                page.gap(expected, record.seq - 1, "not_retained")
            reason = self._undeliverable(record, now)
            if reason is None:
                page.frame(record.seq, encode_notification_frame(record))
            else:
                page.gap(record.seq, record.seq, reason)
            expected = record.seq + 1
        if limited and len(rows) < self._page_size and expected <= up_to:
            page.pass_over(up_to)  # nothing more of its categories up to `up_to`
        elif not rows and expected <= up_to:
            page.gap(expected, up_to, "not_retained")
        entries = page.finish()
        if self._observer is not None:
            self._observer(page.notifications, (reason for _, _, reason in page.gaps))
        for first, last, reason in page.gaps:
            await self._storage.mark_dropped(
                self._user_id, first_seq=first, last_seq=last, reason=reason, at=now
            )
        return entries

    def _undeliverable(self, record: NotificationRecord, now: int) -> GapReason | None:
        if record.dropped_reason is not None:
            # Dropped before (for another socket): the same answer for every device.
            return "expired" if record.dropped_reason == "expired" else "not_retained"
        if record.expires_at is not None and record.expires_at <= now:
            return "expired"
        if record.created_at < now - self._max_age_ms:
            return "not_retained"
        return None
