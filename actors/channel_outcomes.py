"""What one leased channel delivery comes to: the message handed to a provider, and the
`DeliveryOutcome` recorded for what the provider answered (docs/channels.md, "Retries").

| the provider...                 | status  | next                                      |
|---------------------------------|---------|-------------------------------------------|
| accepted it (`SendReceipt`)     | sent    | its message id and detail are kept        |
| refused it for now (transient)  | queued  | due again after backoff, >= Retry-After   |
| ... and the retries are used up | failed  | `max_attempts` sends, or older than max_age |
| refused it for good (permanent) | failed  | at once                                   |
| said the address is gone        | failed  | and the device is removed                 |
| (no address to send to)         | skipped | reason `no_address`; no provider called   |
| (every breaker open)            | queued  | due when the first provider half-opens    |

The last two called no provider: their outcomes say so (`send_attempted=False`), and
storage gives back the attempt their lease counted.

Pure functions of their arguments: the dispatcher supplies the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.channel_sender import (
    AddressGoneError,
    ChannelMessage,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)
from actors.channel_stats import AttemptOutcome
from actors.retry import Backoff
from storage.records import DeliveryOutcome, LeasedDelivery

CIRCUIT_OPEN_ERROR = "all providers unavailable (circuit open)"
NO_ADDRESS = "no_address"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried: the delay before each retry, and when to stop."""

    backoff: Backoff = field(default_factory=lambda: Backoff(base=5.0, cap=900.0))
    """Delay before retry n (n = attempts so far - 1): full jitter up to
    min(cap, base * 2**n) seconds, never below the provider's Retry-After."""
    max_attempts: int = 10
    """Sends of one delivery at most, the first included."""
    max_age: float = 86_400.0
    """Seconds after the delivery was first due past which it is not retried."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_age <= 0:
            raise ValueError(
                f"RetryPolicy needs max_attempts >= 1 and max_age > 0 (got "
                f"{self.max_attempts}, {self.max_age})"
            )

    def exhausted(self, delivery: LeasedDelivery, now: int) -> str | None:
        """Why `delivery` must not be retried after a transient failure at `now`, or None."""
        if delivery.attempts >= self.max_attempts:
            return f"gave up after {delivery.attempts} attempts (max_attempts {self.max_attempts})"
        age = (now - delivery.first_due_at) / 1000
        if age > self.max_age:
            return f"gave up: first due {age:.0f}s ago (max_age {self.max_age:.0f}s)"
        return None

    def next_due_at(self, delivery: LeasedDelivery, now: int, retry_after: float | None) -> int:
        """When to try `delivery` again after a transient failure at `now` (epoch ms)."""
        delay = self.backoff.delay(delivery.attempts - 1, floor=retry_after or 0.0)
        return now + round(delay * 1000)


def channel_message(delivery: LeasedDelivery, now: int) -> ChannelMessage:
    """The message a sender gets for `delivery` (content as stored: senders give it
    precedence over title and body)."""
    ttl = None if delivery.expires_at is None else max(0, (delivery.expires_at - now) // 1000)
    return ChannelMessage(
        delivery_id=delivery.id,
        notification_id=delivery.notification_id,
        user_id=delivery.user_id,
        channel=delivery.channel,
        address=delivery.address,
        title=delivery.title,
        body=delivery.body,
        # A webhook's payload is its event; the other channels carry the notification's data.
        data=(delivery.event if delivery.event is not None else delivery.data) or {},
        content=delivery.content or {},
        priority=delivery.priority,
        category=delivery.category,
        # The push senders send it as Topic / collapse_key / apns-collapse-id (the others
        # ignore it): the re-send of an edited notification then replaces the first push
        # where the platform still can (docs/routing.md, "Edit and retract").
        collapse_key=delivery.notification_id,
        ttl_seconds=ttl,
        created_at_ms=delivery.created_at,
    )


def skipped_for_no_address(delivery: LeasedDelivery, now: int) -> DeliveryOutcome:
    """The device or contact field is gone since the plan was made: nothing to send to."""
    return DeliveryOutcome(
        delivery_id=delivery.id,
        at=now,
        status="skipped",
        error=NO_ADDRESS,
        attempt=delivery.attempts,
        send_attempted=False,
    )


def requeued_for_open_circuits(delivery: LeasedDelivery, now: int, due_at: int) -> DeliveryOutcome:
    """No provider of the channel takes sends now: due again at `due_at`. Not a
    failure of the delivery, so neither retry bound applies, and the attempt the lease
    counted is given back."""
    return DeliveryOutcome(
        delivery_id=delivery.id,
        at=now,
        status="queued",
        next_due_at=due_at,
        error=CIRCUIT_OPEN_ERROR,
        attempt=delivery.attempts,
        send_attempted=False,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One send of a delivery through one provider."""

    delivery: LeasedDelivery
    provider: str
    fallback: bool
    at: int
    """When the send ended (epoch ms)."""
    duration_ms: int


def sent(attempt: Attempt, receipt: SendReceipt) -> DeliveryOutcome:
    """The provider accepted the message."""
    return DeliveryOutcome(
        delivery_id=attempt.delivery.id,
        at=attempt.at,
        status="sent",
        provider=attempt.provider,
        fallback=attempt.fallback,
        provider_message_id=receipt.provider_message_id,
        detail=dict(receipt.detail) or None,
        duration_ms=attempt.duration_ms,
        attempt=attempt.delivery.attempts,
    )


def not_sent(
    attempt: Attempt, error: Exception, retry: RetryPolicy
) -> tuple[DeliveryOutcome, AttemptOutcome]:
    """The provider refused the message, or the send raised: the outcome to record and
    the attempt's metric label. Anything but a `PermanentSendError` is transient."""
    delivery, now = attempt.delivery, attempt.at
    message = str(error) or type(error).__name__
    code = getattr(error, "provider_code", None)
    label: AttemptOutcome
    next_due_at = None
    if isinstance(error, AddressGoneError):
        status, label = "failed", "address_gone"
    elif isinstance(error, PermanentSendError):
        status, label = "failed", "permanent_error"
    else:
        label = "transient_error"
        gave_up = retry.exhausted(delivery, now)
        if gave_up is None:
            retry_after = error.retry_after if isinstance(error, TransientSendError) else None
            status, next_due_at = "queued", retry.next_due_at(delivery, now, retry_after)
        else:
            status, message = "failed", f"{message}; {gave_up}"
    outcome = DeliveryOutcome(
        delivery_id=delivery.id,
        at=now,
        status=status,
        provider=attempt.provider,
        next_due_at=next_due_at,
        fallback=attempt.fallback,
        error=message,
        provider_code=code if isinstance(code, str) else None,
        duration_ms=attempt.duration_ms,
        remove_device=label == "address_gone",
        attempt=delivery.attempts,
    )
    return outcome, label
