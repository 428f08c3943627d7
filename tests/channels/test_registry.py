"""The registry (pushd/channels/registry.py): the configured providers as the
dispatcher's senders, in fallback order, and the settings and links built from config."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pushd.channels.registry import (
    build_provider_pool,
    dispatch_settings,
    first_vapid_public_key,
    unsubscribe_links,
)
from pushd.channels.webpush import load_vapid_private_key, public_key_b64url
from pushd.config.settings import ChannelsConfig, ConfigError, load_config
from tests.channels.harness import allow_every_url, pkcs8_pem

VAPID = pkcs8_pem(ec.generate_private_key(ec.SECP256R1()))
SECRET = "a-token-secret-of-at-least-32-characters"


def channels(**settings: Any) -> ChannelsConfig:
    return load_config(None, environ={}, overrides={"channels": settings}).channels


def smtp(name: str, pool_size: int = 4) -> dict[str, Any]:
    return {"name": name, "from_address": "pushd@example.com", "pool_size": pool_size}


async def test_providers_in_configured_order_with_their_concurrency() -> None:
    config = channels(
        concurrency=7,
        breaker_failures=3,
        email=[smtp("relay-1", pool_size=2), smtp("relay-2")],
        webpush=[{"name": "vapid", "vapid_private_key": VAPID, "vapid_subject": "mailto:o@x.io"}],
        sms=[{"kind": "http", "name": "gw", "url": "https://sms.example.com", "from_number": "x"}],
    )
    pool = build_provider_pool(config, check_url=allow_every_url)
    try:
        assert pool.channels == ("email", "webpush", "sms", "webhook")
        email = pool.providers_of("email")
        assert [(p.name, p.concurrency, p.is_fallback) for p in email] == [
            ("relay-1", 2, False),
            ("relay-2", 4, True),
        ]
        assert pool.providers_of("webpush")[0].concurrency == 100  # its max_connections
        [webhooks] = pool.providers_of("webhook")
        assert webhooks.name == "webhooks"
    finally:
        await pool.aclose()


def test_a_provider_that_cannot_be_built_is_named() -> None:
    config = channels(
        apns=[{"name": "apple", "team_id": "T", "key_id": "K", "private_key": "/nonexistent.p8"}]
    )
    with pytest.raises(ConfigError, match="APNs provider `apple`: private_key"):
        build_provider_pool(config, check_url=allow_every_url)


def test_dispatch_settings_come_from_the_channels_section() -> None:
    settings = dispatch_settings(
        channels(batch_size=7, lease_seconds=9.0, max_attempts=4, backoff_base=0.5)
    )
    assert (settings.batch_size, settings.lease, settings.retry.max_attempts) == (7, 9.0, 4)
    assert settings.retry.backoff.base == 0.5


def test_browsers_subscribe_with_the_first_web_push_key() -> None:
    assert first_vapid_public_key(channels()) is None
    second = pkcs8_pem(ec.generate_private_key(ec.SECP256R1()))
    config = channels(
        webpush=[
            {"name": "a", "vapid_private_key": VAPID, "vapid_subject": "mailto:o@x.io"},
            {"name": "b", "vapid_private_key": second, "vapid_subject": "mailto:o@x.io"},
        ]
    )
    assert first_vapid_public_key(config) == public_key_b64url(load_vapid_private_key(VAPID))


def test_unsubscribe_links_are_signed_with_the_token_secret_and_its_rotation() -> None:
    """Every node derives the same key from the shared token secret: a link one node
    signed verifies on another, and still after the secret was rotated."""
    assert unsubscribe_links(channels(), SECRET) is None
    config = channels(public_url="https://push.example.com/")
    links = unsubscribe_links(config, SECRET)
    assert links is not None
    url = links.url("usr_1", "billing")
    assert url.startswith("https://push.example.com/unsubscribe?token=")
    token = url.partition("token=")[2]
    rotated = unsubscribe_links(config, "a-new-token-secret-of-32-characters!!", [SECRET])
    assert rotated is not None
    assert tuple(rotated.verify(token)) == ("usr_1", "billing")
    other = unsubscribe_links(config, "another-secret-of-at-least-32-characters")
    assert other is not None
    with pytest.raises(ValueError, match="bad signature"):
        other.verify(token)
