"""What a delivery attempt comes to (actors/channel_outcomes.py)."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec.structs import replace

from actors.channel_outcomes import Attempt, RetryPolicy, channel_message, not_sent, sent
from actors.channel_sender import (
    AddressGoneError,
    PermanentSendError,
    SendReceipt,
    TransientSendError,
)
from actors.retry import Backoff
from storage.records import LeasedDelivery

NOW = 1_700_000_000_000


def leased(**fields: Any) -> LeasedDelivery:
    values: dict[str, Any] = {
        "id": "dlv_1",
        "notification_id": "ntf_1",
        "user_id": "u1",
        "channel": "email",
        "attempts": 1,
        "first_due_at": NOW,
        "address": {"email": "ada@example.com"},
        "device_id": None,
        "endpoint_id": None,
        "title": "Title",
        "body": "Body",
        "data": {"k": "v"},
        "content": None,
        "category": None,
        "priority": "normal",
        "created_at": NOW,
        "expires_at": None,
    }
    return LeasedDelivery(**(values | fields))


def attempt(delivery: LeasedDelivery, *, fallback: bool = False) -> Attempt:
    return Attempt(delivery, "relay-a", fallback, NOW, 12)


def test_the_retry_delay_grows_with_the_attempts_already_made() -> None:
    """Guards the exponent: the first retry (attempts 1) draws from base, not base*2."""
    retry = RetryPolicy(backoff=Backoff(base=1.0, cap=100.0))
    first = [retry.next_due_at(leased(attempts=1), NOW, None) - NOW for _ in range(300)]
    third = [retry.next_due_at(leased(attempts=3), NOW, None) - NOW for _ in range(300)]
    assert min(first) >= 0
    assert max(first) <= 1_000
    assert max(third) <= 4_000
    assert max(third) > 2_000  # 300 draws all under half the bound: p = 2**-300


def test_retry_after_is_a_floor() -> None:
    retry = RetryPolicy(backoff=Backoff(base=1.0, cap=1.0))
    assert retry.next_due_at(leased(), NOW, 42.5) == NOW + 42_500


def test_retry_bounds_say_which_bound_stopped_them() -> None:
    retry = RetryPolicy(max_attempts=3, max_age=60)
    assert retry.exhausted(leased(attempts=2), NOW + 60_000) is None
    assert "max_attempts 3" in (retry.exhausted(leased(attempts=3), NOW) or "")
    assert "max_age 60s" in (retry.exhausted(leased(attempts=1), NOW + 60_001) or "")


@pytest.mark.parametrize(("max_attempts", "max_age"), [(0, 10.0), (1, 0.0)])
def test_a_retry_policy_that_cannot_send_is_refused(max_attempts: int, max_age: float) -> None:
    with pytest.raises(ValueError, match="max_attempts >= 1 and max_age > 0"):
        RetryPolicy(max_attempts=max_attempts, max_age=max_age)


def test_the_message_carries_the_delivery_as_leased() -> None:
    delivery = leased(
        content={"subject": "S"}, priority="high", category="billing", expires_at=NOW + 61_999
    )
    message = channel_message(delivery, NOW)
    assert message.content == {"subject": "S"}
    assert (message.title, message.body, dict(message.data)) == ("Title", "Body", {"k": "v"})
    assert (message.priority, message.category, message.ttl_seconds) == ("high", "billing", 61)
    assert message.created_at_ms == NOW


def test_a_webhook_message_carries_its_event_as_data() -> None:
    event = {"id": "evt_1", "type": "notification.sent"}
    message = channel_message(leased(channel="webhook", event=event), NOW)
    assert dict(message.data) == event


def test_sent_keeps_the_provider_message_id_and_detail() -> None:
    receipt = SendReceipt(provider_message_id="SM1", detail={"segments": 2})
    outcome = sent(attempt(leased(), fallback=True), receipt)
    assert (outcome.status, outcome.provider, outcome.fallback) == ("sent", "relay-a", True)
    assert (outcome.provider_message_id, outcome.detail, outcome.duration_ms) == (
        "SM1",
        {"segments": 2},
        12,
    )


def test_errors_are_classified() -> None:
    retry = RetryPolicy()
    delivery = leased(device_id="dev_1")
    gone, label = not_sent(attempt(delivery), AddressGoneError("410", provider_code="410"), retry)
    assert (gone.status, gone.remove_device, gone.provider_code, label) == (
        "failed",
        True,
        "410",
        "address_gone",
    )
    refused, label = not_sent(attempt(delivery), PermanentSendError("bad"), retry)
    assert (refused.status, refused.remove_device, label) == ("failed", False, "permanent_error")
    for error in (TransientSendError("busy"), RuntimeError("bug"), ValueError()):
        later, label = not_sent(attempt(delivery), error, retry)
        assert (later.status, label) == ("queued", "transient_error")
        assert later.next_due_at is not None
        assert later.error
    last = replace(delivery, attempts=retry.max_attempts)
    given_up, _ = not_sent(attempt(last), TransientSendError("busy"), retry)
    assert (given_up.status, given_up.next_due_at) == ("failed", None)
