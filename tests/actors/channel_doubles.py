"""Test doubles for the channel dispatcher: providers that succeed or fail on demand,
and a spy between the dispatcher and the storage it leases from."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from actors.channel_sender import ChannelMessage, SendReceipt
from storage.areas.channel_deliveries import ChannelDeliveries
from storage.errors import StorageUnavailableError
from storage.records import (
    ChannelDeliveryRecord,
    ChannelQueueStats,
    DeliveryAttemptRecord,
    DeliveryOutcome,
    FailedDeliveryRecord,
    LeasedDelivery,
)


class LocalProvider:
    """A `ChannelSender` that accepts every message until told to fail or to hold.

    `fail_with(error)` makes every send raise `error` until `succeed()`; `hold()` makes
    sends wait (in flight) until `release()`; `max_in_flight` is the most sends it saw
    at once.
    """

    def __init__(self, channel: str = "email", provider: str = "relay-a") -> None:
        self._channel = channel
        self._provider = provider
        self.messages: list[ChannelMessage] = []
        """Every message a send was called with, accepted or not, in call order."""
        self.accepted: list[ChannelMessage] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False
        self._error: BaseException | None = None
        self._open = asyncio.Event()
        self._open.set()

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def provider(self) -> str:
        return self._provider

    def fail_with(self, error: BaseException) -> None:
        """Every send raises `error` from now on."""
        self._error = error

    def succeed(self) -> None:
        """Every send is accepted from now on."""
        self._error = None

    def hold(self) -> None:
        """Sends wait until `release()`."""
        self._open.clear()

    def release(self) -> None:
        """Held sends go on."""
        self._open.set()

    async def send(self, message: ChannelMessage) -> SendReceipt:
        self.messages.append(message)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._open.wait()
            if self._error is not None:
                raise self._error
            self.accepted.append(message)
            return SendReceipt(
                provider_message_id=f"{self._provider}-{len(self.accepted)}",
                detail={"via": self._provider},
            )
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True


class DeliveriesSpy:
    """Passes every call through to the storage under test, counting the lease queries
    and the outcome writes (their batch sizes). `refuse_writes()` / `refuse_leases()`
    make those calls raise `StorageUnavailableError`, as a database that went away,
    until `accept_writes()` / `accept_leases()`; `before_lease`, when set, is awaited
    once at the start of the next lease query (something happening meanwhile)."""

    def __init__(self, inner: ChannelDeliveries) -> None:
        self._inner = inner
        self.leases: list[tuple[tuple[str, ...], int]] = []
        """(channels, limit) of each lease query."""
        self.digest_leases: list[tuple[tuple[str, ...], int]] = []
        """(channels, limit) of each digest lease query."""
        self.writes: list[int] = []
        """Outcomes per successful write."""
        self.refused_writes = 0
        self.refused_leases = 0
        self.before_lease: Callable[[], Awaitable[None]] | None = None
        self._refusing_writes = False
        self._refusing_leases = False

    def refuse_writes(self) -> None:
        self._refusing_writes = True

    def accept_writes(self) -> None:
        self._refusing_writes = False

    def refuse_leases(self) -> None:
        self._refusing_leases = True

    def accept_leases(self) -> None:
        self._refusing_leases = False

    async def lease_due_deliveries(
        self, channels: Sequence[str], *, now: int, limit: int, owner: str, lease_ms: int
    ) -> list[LeasedDelivery]:
        if self._refusing_leases:
            self.refused_leases += 1
            raise StorageUnavailableError("the test refuses leases")
        if self.before_lease is not None:
            meanwhile, self.before_lease = self.before_lease, None
            await meanwhile()
        self.leases.append((tuple(channels), limit))
        return await self._inner.lease_due_deliveries(
            channels, now=now, limit=limit, owner=owner, lease_ms=lease_ms
        )

    async def lease_due_digests(
        self, channels: Sequence[str], *, now: int, limit: int, owner: str, lease_ms: int
    ) -> list[list[LeasedDelivery]]:
        if self._refusing_leases:
            self.refused_leases += 1
            raise StorageUnavailableError("the test refuses leases")
        self.digest_leases.append((tuple(channels), limit))
        return await self._inner.lease_due_digests(
            channels, now=now, limit=limit, owner=owner, lease_ms=lease_ms
        )

    async def record_delivery_outcomes(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        if self._refusing_writes:
            self.refused_writes += 1
            raise StorageUnavailableError("the test refuses writes")
        await self._inner.record_delivery_outcomes(outcomes)
        self.writes.append(len(outcomes))

    async def cancel_unsent_deliveries(
        self,
        user_id: str,
        *,
        notification_ids: Sequence[str] | None = None,
        up_to_seq: int | None = None,
        reason: str,
        at: int,
    ) -> int:
        return await self._inner.cancel_unsent_deliveries(
            user_id, notification_ids=notification_ids, up_to_seq=up_to_seq, reason=reason, at=at
        )

    async def channel_deliveries_of(self, notification_id: str) -> list[ChannelDeliveryRecord]:
        return await self._inner.channel_deliveries_of(notification_id)

    async def delivery_history_of(self, notification_id: str) -> list[DeliveryAttemptRecord]:
        return await self._inner.delivery_history_of(notification_id)

    async def record_delivery_receipt(
        self, *, provider: str, provider_message_id: str, status: str, at: int, error: str | None
    ) -> bool:
        return await self._inner.record_delivery_receipt(
            provider=provider,
            provider_message_id=provider_message_id,
            status=status,
            at=at,
            error=error,
        )

    async def channel_queue_stats(self, *, now: int) -> list[ChannelQueueStats]:
        return await self._inner.channel_queue_stats(now=now)

    async def latest_failed_deliveries(
        self, *, before: int | None, limit: int, scan: int
    ) -> list[FailedDeliveryRecord]:
        return await self._inner.latest_failed_deliveries(before=before, limit=limit, scan=scan)
