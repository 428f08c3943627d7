"""Writes the outcomes of channel deliveries to storage in small batches, as sends end.

One `record_delivery_outcomes` call (one transaction) per batch: a batch is written
`flush_interval` after its first outcome arrived, or at once when it holds `flush_size`.
Sends add their outcome when they end, whatever their channel, so a slow provider
delays nobody's outcome but its own.

The buffer is bounded by the dispatcher, not here: it leases nothing while its
unrecorded deliveries (sending, or waiting here) reach its limit. While storage refuses,
the outcomes wait and are written again with backoff; a batch that fails for another
reason (a bug) is logged and dropped, and its deliveries, still leased, are taken
again when their leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from actors.retry import Backoff
from storage.areas.channel_deliveries import ChannelDeliveries
from storage.errors import StorageError
from storage.records import DeliveryOutcome

log = logging.getLogger(__name__)

# Between writes of a batch while storage refuses it.
WRITE_BACKOFF = Backoff(base=0.05, cap=2.0)


class OutcomeRecorder:
    """Collects outcomes (`add`) and writes them in batches (`run`, in an owned task)."""

    def __init__(
        self,
        deliveries: ChannelDeliveries,
        *,
        flush_interval: float,
        flush_size: int,
        on_written: Callable[[], None] = lambda: None,
    ) -> None:
        self._deliveries = deliveries
        self._flush_interval = flush_interval
        self._flush_size = flush_size
        self._on_written = on_written
        self._buffer: list[DeliveryOutcome] = []
        self._writing = 0
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self.written = 0
        """Outcomes stored (monotonic)."""
        self.dropped = 0
        """Outcomes given up on because their write failed with an unexpected error."""

    @property
    def unwritten(self) -> int:
        """Outcomes added and not yet stored (buffered or being written)."""
        return len(self._buffer) + self._writing

    def add(self, outcome: DeliveryOutcome) -> None:
        """Queue one outcome for the next batch."""
        self._buffer.append(outcome)
        self._arrived.set()
        if len(self._buffer) >= self._flush_size:
            self._full.set()

    async def run(self) -> None:
        """Write batches until `close` (or cancellation)."""
        while True:
            await self._arrived.wait()
            if not self._closing:
                # Wait for more to share the transaction, up to the interval.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval):
                        await self._full.wait()
            await self._write_buffer()
            if self._closing and not self._buffer:
                return

    def close(self) -> None:
        """Write what is buffered at once, then make `run` return."""
        self._closing = True
        self._arrived.set()
        self._full.set()

    async def _write_buffer(self) -> None:
        attempt = 0
        while self._buffer:
            batch = self._buffer[: self._flush_size]
            del self._buffer[: len(batch)]
            self._writing = len(batch)
            try:
                await self._deliveries.record_delivery_outcomes(batch)
            except StorageError as exc:
                self._buffer[:0] = batch  # first in, first written
                log.warning(
                    "%d channel delivery outcome(s) not stored (%s); retrying within %.2fs",
                    len(batch),
                    exc,
                    WRITE_BACKOFF.bound(attempt),
                )
                await WRITE_BACKOFF.wait(attempt)
                attempt += 1
                continue
            except Exception:
                self.dropped += len(batch)
                log.exception(
                    "storing %d channel delivery outcome(s) failed unexpectedly; dropped "
                    "(their deliveries are sent again when their leases expire): %s",
                    len(batch),
                    ", ".join(outcome.delivery_id for outcome in batch[:10]),
                )
            else:
                self.written += len(batch)
            finally:
                self._writing = 0
            attempt = 0
            self._on_written()
        self._arrived.clear()
        if not self._closing:
            self._full.clear()
