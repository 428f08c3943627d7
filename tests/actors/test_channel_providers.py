"""Providers per channel: fallback order, capacity, health (actors/channel_providers.py)."""

from __future__ import annotations

import pytest

from actors.channel_providers import ProviderPool, ProviderSpec
from actors.circuit_breaker import BreakerSettings, BreakerState
from tests.actors.channel_doubles import LocalProvider


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool(clock: Clock, *, concurrency: int = 4) -> ProviderPool:
    one_failure = BreakerSettings(consecutive_failures=1, cool_down=30)
    return ProviderPool(
        [
            ProviderSpec(LocalProvider("email", "a"), concurrency=concurrency, breaker=one_failure),
            ProviderSpec(LocalProvider("email", "b"), concurrency=2, breaker=one_failure),
            ProviderSpec(LocalProvider("sms", "twilio"), concurrency=1),
        ],
        clock=clock,
    )


def test_the_first_provider_takes_every_send_while_healthy_even_when_busy() -> None:
    providers = pool(Clock())
    assert providers.channels == ("email", "sms")
    chosen = [providers.choose("email") for _ in range(6)]
    assert {p.name for p in chosen if p} == {"a"}
    assert providers.free_capacity("email") == 0  # a is full; b is no overflow
    assert chosen[0] is not None
    chosen[0].release()
    assert providers.free_capacity("email") == 0  # 5 assigned to a, whose concurrency is 4
    assert providers.busy("email")
    assert not providers.busy("sms")


def test_capacity_and_choice_follow_the_breakers() -> None:
    clock = Clock()
    providers = pool(clock)
    a, b = providers.providers_of("email")
    a.breaker.failed()
    assert providers.free_capacity("email") == 2  # b's slots
    chosen = providers.choose("email")
    assert chosen is b
    assert chosen.is_fallback
    chosen.release()
    b.breaker.failed()
    assert providers.free_capacity("email") == 0
    assert providers.choose("email") is None
    clock.now += 12
    assert providers.reopens_in("email") == 18
    clock.now += 18
    assert providers.free_capacity("email") == 2  # one probe each
    probe = providers.choose("email")
    assert probe is a
    assert providers.free_capacity("email") == 1  # a's probe is out; b may probe
    assert providers.reopens_in("email") == 0
    probe.breaker.succeeded()
    probe.release()
    assert providers.free_capacity("email") == 4


def test_health_reports_every_provider() -> None:
    providers = pool(Clock())
    providers.providers_of("email")[1].breaker.failed()
    assert [(h.channel, h.provider, h.state, h.concurrency) for h in providers.health()] == [
        ("email", "a", BreakerState.CLOSED, 4),
        ("email", "b", BreakerState.OPEN, 2),
        ("sms", "twilio", BreakerState.CLOSED, 1),
    ]


def test_two_providers_of_a_channel_need_two_names() -> None:
    with pytest.raises(ValueError, match="unique name"):
        ProviderPool([ProviderSpec(LocalProvider()), ProviderSpec(LocalProvider())])


def test_concurrency_must_allow_a_send() -> None:
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        ProviderPool([ProviderSpec(LocalProvider(), concurrency=0)])


class BrokenClose(LocalProvider):
    async def aclose(self) -> None:
        raise OSError("socket already gone")


async def test_closing_goes_on_past_a_sender_that_fails_to_close() -> None:
    last = LocalProvider("sms", "twilio")
    providers = ProviderPool([ProviderSpec(BrokenClose()), ProviderSpec(last)])
    await providers.aclose()
    assert last.closed
