"""The configured providers (`[channels]` of config.toml) as the senders the channel
dispatcher sends through: one `ChannelSender` per `[[channels.<channel>]]` entry, in
the configured (fallback) order, each with its concurrency and circuit breaker.

The outbound URL check (`outbound.allow_private`) guards every URL a client chose: web
push endpoints and webhook URLs, checked again before each request. Unsubscribe links
in emails are signed with a key derived from the token secret, which every node of a
cluster shares, and point at `channels.public_url`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from actors.channel_dispatch import DispatchSettings
from actors.channel_outcomes import RetryPolicy
from actors.channel_providers import ProviderPool, ProviderSpec
from actors.channel_sender import ChannelSender
from actors.circuit_breaker import BreakerSettings
from actors.retry import Backoff
from pushd.channels.apns import ApnsSender
from pushd.channels.fcm import FcmSender
from pushd.channels.http_client import UrlChecker
from pushd.channels.outbound_url import check_outbound_url
from pushd.channels.sms_http import HttpSmsSender
from pushd.channels.sms_twilio import TwilioSmsSender, with_status_callback
from pushd.channels.smtp import SmtpSender
from pushd.channels.unsubscribe import PreferenceLinks, UnsubscribeLinks
from pushd.channels.webhooks import WebhookSender
from pushd.channels.webpush import WebPushSender, vapid_public_key
from pushd.config.settings import ChannelsConfig, ConfigError, HttpSmsProvider, TwilioSmsProvider

UNSUBSCRIBE_PATH = "/unsubscribe"
"""Where the links of `List-Unsubscribe` point, under `channels.public_url`."""

# Domain separation: the derived key signs unsubscribe links only.
_UNSUBSCRIBE_INFO = b"pushd unsubscribe links v1"


def outbound_check(allow_private: bool) -> UrlChecker:
    """The outbound URL check of `outbound.allow_private` (pushd/channels/outbound_url.py)."""
    return functools.partial(check_outbound_url, allow_private=allow_private)


def first_vapid_public_key(config: ChannelsConfig) -> str | None:
    """The public key browsers subscribe with: the first web push provider's (a
    subscription is bound to the key it was made with, see docs/channels.md)."""
    return vapid_public_key(config.webpush[0]) if config.webpush else None


def unsubscribe_links(
    config: ChannelsConfig, token_secret: str, previous_token_secrets: Sequence[str] = ()
) -> UnsubscribeLinks | None:
    """The signer of the emails' unsubscribe links, None without `public_url` (emails
    then carry no List-Unsubscribe). Its key is derived from the token secret, so that
    every node signs and checks alike, and a token secret rotation rotates it too."""
    if not config.public_url:
        return None
    return UnsubscribeLinks(
        _derive(token_secret),
        config.public_url.rstrip("/") + UNSUBSCRIBE_PATH,
        previous_secrets=[_derive(secret) for secret in previous_token_secrets],
    )


PREFERENCES_PATH = "/preferences"
"""Where the preference center's page is, under `channels.public_url`."""


def preference_links(
    config: ChannelsConfig,
    token_secret: str,
    previous_token_secrets: Sequence[str] = (),
    *,
    max_age: float,
) -> PreferenceLinks | None:
    """The signer of the preference center's links, None without `public_url` (emails
    then carry no footer link). Keyed like `unsubscribe_links`; its own label keeps the
    two kinds of links apart."""
    if not config.public_url:
        return None
    return PreferenceLinks(
        _derive(token_secret),
        config.public_url.rstrip("/") + PREFERENCES_PATH,
        previous_secrets=[_derive(secret) for secret in previous_token_secrets],
        max_age=max_age,
    )


def _derive(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_UNSUBSCRIBE_INFO)
    return hkdf.derive(secret.encode())


def dispatch_settings(config: ChannelsConfig) -> DispatchSettings:
    """How the dispatcher leases, retries and stops, from `[channels]`."""
    return DispatchSettings(
        batch_size=config.batch_size,
        poll_interval=config.poll_interval,
        lease=config.lease_seconds,
        shutdown_timeout=config.shutdown_timeout,
        yield_backlog=config.yield_backlog,
        yield_sends=config.yield_sends,
        yield_lag=config.yield_lag,
        retry=RetryPolicy(
            backoff=Backoff(base=config.backoff_base, cap=config.backoff_cap),
            max_attempts=config.max_attempts,
            max_age=config.max_age,
        ),
    )


def build_provider_pool(
    config: ChannelsConfig,
    *,
    check_url: UrlChecker,
    unsubscribe_url: Callable[[str, str], str] | None = None,
    preferences_url: Callable[[str], str] | None = None,
) -> ProviderPool:
    """Every configured provider's sender, in fallback order per channel, and the
    webhook sender.

    Concurrency: a provider with a connection bound of its own sends at most that many
    at once (SMTP `pool_size`, `max_connections`); FCM and APNs take
    `channels.concurrency`. Reads key files (APNs, FCM) and CA bundles: call it off the
    event loop. Raises `ConfigError` naming the provider when one cannot be built (no
    sender has opened a connection by then).
    """
    breaker = BreakerSettings(
        consecutive_failures=config.breaker_failures,
        failure_rate=config.breaker_failure_rate,
        window=config.breaker_window,
        cool_down=config.breaker_cool_down,
    )
    specs: list[ProviderSpec] = []

    def add(channel: str, name: str, make: Callable[[], ChannelSender], concurrency: int) -> None:
        try:
            sender = make()
        except ConfigError:
            raise
        except (ValueError, OSError) as exc:
            raise ConfigError(f"setting `channels.{channel}`, provider `{name}`: {exc}") from None
        specs.append(ProviderSpec(sender, concurrency=concurrency, breaker=breaker))

    for smtp in config.email:
        make_smtp = functools.partial(
            SmtpSender, smtp, unsubscribe_url=unsubscribe_url, preferences_url=preferences_url
        )
        add("email", smtp.name, make_smtp, smtp.pool_size)
    for push in config.webpush:
        make_push = functools.partial(WebPushSender, push, check_url=check_url)
        add("webpush", push.name, make_push, push.max_connections)
    for fcm in config.fcm:
        add("fcm", fcm.name, functools.partial(FcmSender, fcm), config.concurrency)
    for apns in config.apns:
        add("apns", apns.name, functools.partial(ApnsSender, apns), config.concurrency)
    for sms in config.sms:
        make_sms: Callable[[], ChannelSender]
        match sms:
            case HttpSmsProvider():
                make_sms = functools.partial(HttpSmsSender, sms)
            case TwilioSmsProvider():
                # Receipts come to pushd's route under public_url unless configured.
                twilio = with_status_callback(sms, config.public_url)
                make_sms = functools.partial(TwilioSmsSender, twilio)
        add("sms", sms.name, make_sms, sms.max_connections)
    hooks = config.webhook
    make_hooks = functools.partial(WebhookSender, hooks, check_url=check_url)
    add("webhook", hooks.name, make_hooks, hooks.max_connections)
    return ProviderPool(specs)
