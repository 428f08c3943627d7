"""The aiohttp application: components started as `cleanup_ctx` generators in dependency
order (shared state, storage, cursor recorder, mailbox actors, revocations, bus, ingest,
categories, channel dispatcher, scheduled release, audit, retention) and torn down in
reverse, after the sockets were closed with 1001."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from actors.channel_dispatch import ChannelDispatcher
from actors.transport import CloseCode
from actors.user_mailbox import UserMailboxes, UserMailboxStats
from pushd import api
from pushd.access.api_keys import API_KEY, ApiKeyVerifier, bootstrap_admin_key
from pushd.access.audit_writer import AuditWriter
from pushd.access.rate_limits import Limits, client_network
from pushd.access.revocations import Revocations
from pushd.access.user_tokens import TokenSigner
from pushd.api.errors import ApiError, error_middleware
from pushd.api.headers import add_response_headers, cors_preflight
from pushd.api.input_limits import document_limits
from pushd.api.request_ids import echo_request_id, request_id_middleware
from pushd.appkeys import (
    API_KEYS,
    AUDIENCES,
    AUDIT,
    BUS,
    CATEGORIES,
    CHANNELS,
    CONFIG,
    CURSORS,
    INGEST,
    LIMITS,
    MAILBOXES,
    METRICS,
    OPENAPI,
    OPTIMISER,
    OUTBOUND_URL_CHECK,
    PLAN_READS,
    PLANNER,
    PREFERENCE_LINKS,
    REQUEST_HASHER,
    REVOCATIONS,
    SCHEDULER,
    SOCKETS,
    STATE,
    STORAGE,
    TEMPLATES,
    TOKENS,
    UNSUBSCRIBE_LINKS,
    VAPID_PUBLIC_KEY,
    WEBHOOKS,
)
from pushd.audiences.fanout import Components, Fanout
from pushd.bus import open_bus
from pushd.channels.http_client import UrlChecker
from pushd.channels.registry import (
    build_provider_pool,
    dispatch_settings,
    first_vapid_public_key,
    outbound_check,
    preference_links,
    unsubscribe_links,
)
from pushd.channels.webhook_events import WebhookEventSweep, WebhookSubscribers
from pushd.config.settings import Config
from pushd.ingest.committed_publisher import CommittedPublisher
from pushd.ingest.group_commit import NotificationIngest
from pushd.ingest.release import ScheduledRelease
from pushd.ingest.request_hash import request_hasher
from pushd.ops.http_metrics import install_http_metrics
from pushd.ops.metrics import CountedBus, Metrics
from pushd.ops.retention import RetentionJob
from pushd.process import datadir
from pushd.process.key_ring import cipher_of, storage_keys
from pushd.realtime.cursors import CursorRecorder
from pushd.realtime.mailbox_feeder import MailboxFeeder
from pushd.realtime.sockets import OpenSockets
from pushd.routing.categories import CategoryRegistry
from pushd.routing.digests import DigestComposer
from pushd.routing.engagement import DeliveryOptimiser, EngagementPolicy
from pushd.routing.plan import ChannelPlanner
from pushd.routing.plan_reads import PlanReads
from pushd.routing.preferences import RoutingPolicy
from pushd.routing.templates import TemplateLimits, TemplateRenderer
from pushd.state import open_state
from storage import open_storage
from storage.records import NotificationRecord

log = logging.getLogger("pushd")


@dataclass(frozen=True)
class Identity:
    """What this process is, decided before the app is built."""

    node_id: str
    admin_key: str | None = None
    """PUSHD_ADMIN_KEY: registered as an admin key on start."""
    announce_admin_key: Callable[[str], None] | None = None
    """Called once with a key generated on first start (no key given, none stored)."""


IDENTITY: web.AppKey[Identity] = web.AppKey("identity", Identity)


async def _state_ctx(app: web.Application) -> AsyncIterator[None]:
    # First up, last down: every later component may count or signal through it. Started
    # by _revocations_ctx, once what revocations act on exists.
    config = app[CONFIG]
    state = open_state(config.state.url, prefix=config.state.prefix)
    app[STATE] = state
    app[LIMITS] = limits = Limits.build(state, config.limits)
    app[METRICS].read_rate_limits(limits.rejections)
    try:
        yield
    finally:
        await state.close()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    config, identity = app[CONFIG], app[IDENTITY]
    # Reads (or, on first start, writes) data_dir/secrets.json: off the loop.
    keys = await asyncio.to_thread(storage_keys, config)
    await asyncio.to_thread(datadir.warn_if_open_to_others, config)
    app[REQUEST_HASHER] = await asyncio.to_thread(request_hasher, config, keys)
    storage = await open_storage(
        config.storage_url, pool_size=config.storage.pool_size, cipher=cipher_of(keys)
    )
    try:
        version = await storage.migrate()
        log.info("storage ready: %s (schema version %d)", type(storage).__name__, version)
        generated = await bootstrap_admin_key(storage, identity.admin_key)
        if generated is not None and identity.announce_admin_key is not None:
            identity.announce_admin_key(generated)
        app[STORAGE] = storage
        app[METRICS].read_storage(storage)
        app[API_KEYS] = ApiKeyVerifier(storage, cache_ttl=config.auth.api_key_cache_ttl)
        yield
    finally:
        await storage.close()


async def _mailboxes_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    stats = UserMailboxStats()
    mailboxes = UserMailboxes(
        mailbox_size=config.actors.mailbox_size,
        idle_timeout=config.actors.idle_timeout,
        max_attempts=config.actors.max_attempts,
        stats=stats,
    )
    app[METRICS].read_mailboxes(mailboxes, stats)
    app[MAILBOXES] = mailboxes
    yield
    await mailboxes.stop(timeout=config.server.shutdown_timeout / 2)


async def _revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    # Built from the key cache and the mailboxes it acts on, and subscribed before the
    # shared state starts: no revocation published from then on is missed.
    state = app[STATE]
    revocations = Revocations(state, api_keys=app[API_KEYS], mailboxes=app[MAILBOXES])
    revocations.subscribe()
    await state.start()  # an unreachable Redis does not stop start-up: health says 503
    app[REVOCATIONS] = revocations
    yield


async def _bus_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    bus = CountedBus(
        open_bus(
            config.bus.url,
            node_id=app[IDENTITY].node_id,
            prefetch=config.bus.prefetch,
            shards=config.bus.shards,
        ),
        app[METRICS],
    )
    await bus.start(MailboxFeeder(app[MAILBOXES], app[METRICS]))
    app[BUS] = bus
    try:
        yield
    finally:
        await bus.close()  # stop consuming: unacknowledged messages go back to the broker


async def _ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    config, metrics = app[CONFIG], app[METRICS]
    ingest = NotificationIngest(
        app[STORAGE],
        app[BUS],
        node_id=app[IDENTITY].node_id,
        max_batch=config.ingest.max_batch,
        queue_size=config.ingest.queue_size,
        relay_page_size=config.ingest.relay_page_size,
        mark_interval=config.ingest.relay_mark_interval,
        on_commit=metrics.committed if metrics.hot_path else None,
    )
    await ingest.start()
    _read_relay(metrics, "ingest", ingest.publisher)
    app[INGEST] = ingest
    yield
    await ingest.close()  # commit and publish what was already accepted


async def _cursors_ctx(app: web.Application) -> AsyncIterator[None]:
    recorder = CursorRecorder(app[STORAGE], interval=app[CONFIG].mailbox.cursor_flush_interval)
    await recorder.start()
    metrics = app[METRICS]
    metrics.read_at_scrape(metrics.cursor_flush_failures, lambda: recorder.flush_failures)
    app[CURSORS] = recorder
    yield
    await recorder.close()  # write the last acks before storage closes


def _read_relay(metrics: Metrics, committer: str, publisher: CommittedPublisher) -> None:
    labels = {"committer": committer}
    metrics.read_labelled_at_scrape(
        metrics.outbox_relaying, lambda: [(labels, int(publisher.relaying))]
    )
    metrics.read_labelled_at_scrape(
        metrics.outbox_relay_lag, lambda: [(labels, round(publisher.relay_lag_seconds, 3))]
    )
    metrics.read_labelled_at_scrape(metrics.outbox_relayed, lambda: [(labels, publisher.relayed)])


async def _categories_ctx(app: web.Application) -> AsyncIterator[None]:
    # After storage (the stored categories), before the planner and retention read them.
    config = app[CONFIG]
    registry = CategoryRegistry(
        config.routing.categories,
        app[STORAGE],
        refresh_interval=config.routing.categories_refresh_interval,
    )
    await registry.start()
    app[CATEGORIES] = registry
    yield
    await registry.close()


async def _channels_ctx(app: web.Application, *, check_url: UrlChecker) -> AsyncIterator[None]:
    # After storage (the queue) and before the server accepts; stopped before storage
    # closes, once the sends in flight have ended (or channels.shutdown_timeout passed).
    config, storage, metrics = app[CONFIG], app[STORAGE], app[METRICS]
    links, preferences = app[UNSUBSCRIBE_LINKS], app[PREFERENCE_LINKS]
    settings = dispatch_settings(config.channels)  # before the senders: nothing to close
    # Reads key files and CA bundles: off the loop.
    providers = await asyncio.to_thread(
        build_provider_pool,
        config.channels,
        check_url=check_url,
        unsubscribe_url=None if links is None else links.url,
        preferences_url=None if preferences is None else preferences.url,
    )
    dispatcher = ChannelDispatcher(
        storage,
        providers,
        node_id=app[IDENTITY].node_id,
        settings=settings,
        observer=metrics.channels,
        # Requests between their plan read and their commit: with a push step, most of
        # a burst waits in the read (pushd/routing/plan_reads.py), not in the commit.
        inapp_backlog=lambda: app[INGEST].backlog + app[PLAN_READS].waiting,
        digests=DigestComposer(app[CATEGORIES].name_of),
    )
    metrics.channels.read_dispatcher(dispatcher, storage)
    categories = app[CATEGORIES]
    app[PLANNER] = ChannelPlanner(
        config.channels.plans,
        providers.channels,
        preferences=storage.get_preferences,
        policy=RoutingPolicy(
            mandatory_categories=config.routing.mandatory_categories,
            quiet_hours=config.routing.quiet_hours,
            default_timezone=config.routing.default_timezone,
            categories=categories,
        ),
        categories=categories,
        allow_unknown_categories=config.routing.allow_unknown_categories,
    )
    app[PLAN_READS] = plan_reads = PlanReads(storage)
    # Best hour and engagement order (pushd/routing/engagement.py), from `[routing]`.
    app[OPTIMISER] = DeliveryOptimiser(
        storage,
        categories,
        EngagementPolicy(
            lookback=config.routing.engagement_lookback,
            min_reads=config.routing.engagement_min_reads,
            default_clock=config.routing.best_hour_default,
        ),
    )
    dispatcher.start()
    app[CHANNELS] = dispatcher
    log.info(
        "channel providers: %s",
        "; ".join(
            f"{channel}: {', '.join(p.name for p in providers.providers_of(channel))}"
            for channel in providers.channels
        ),
    )
    try:
        yield
    finally:
        await plan_reads.close()
        await dispatcher.stop()


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    # After the bus (it publishes) and the channel dispatcher (it is nudged for the
    # released sends' steps due now); stopped before them.
    config, channels, metrics = app[CONFIG], app[CHANNELS], app[METRICS]

    def released(records: Sequence[NotificationRecord], at: int) -> None:
        channels.nudge()
        metrics.released(records, at)

    release = ScheduledRelease(
        app[STORAGE],
        app[BUS],
        node_id=app[IDENTITY].node_id,
        poll_interval=config.scheduler.poll_interval,
        batch_size=config.scheduler.batch_size,
        relay_page_size=config.ingest.relay_page_size,
        mark_interval=config.ingest.relay_mark_interval,
        on_released=released,
    )
    await release.start()
    _read_relay(metrics, "scheduler", release.publisher)
    metrics.read_at_scrape(
        metrics.scheduler_poll_age, lambda: round(time.monotonic() - release.polled_at, 3)
    )
    app[SCHEDULER] = release
    yield
    await release.close()


async def _webhook_events_ctx(app: web.Application) -> AsyncIterator[None]:
    # After storage; `delivery.updated` events and endpoint health come from the
    # deliveries' stored statuses, so a sweep stopped early loses nothing.
    storage = app[STORAGE]
    app[WEBHOOKS] = WebhookSubscribers(storage)
    sweep = WebhookEventSweep(storage, app[CONFIG].channels.webhook)
    await sweep.start()
    yield
    await sweep.close()


async def _audiences_ctx(app: web.Application) -> AsyncIterator[None]:
    # After ingest, the channel dispatcher and the webhook subscribers, which the
    # fan-out commits through; stopped before them. Unfinished sends are taken up on
    # start (docs/audiences.md).
    components = Components(
        storage=app[STORAGE],
        ingest=app[INGEST],
        planner=app[PLANNER],
        webhooks=app[WEBHOOKS],
        limits=app[LIMITS],
        channels=app[CHANNELS],
        metrics=app[METRICS],
        plan_reads=app[PLAN_READS],
        templates=app[TEMPLATES],
    )
    fanout = Fanout(components, app[CONFIG].audiences, node_id=app[IDENTITY].node_id)
    await fanout.start()
    app[AUDIENCES] = fanout
    yield
    await fanout.close()


async def _audit_ctx(app: web.Application) -> AsyncIterator[None]:
    # Started after storage and stopped before it closes: the queued records are
    # written on the way down (the HTTP handlers have finished by then).
    config = app[CONFIG]
    audit = AuditWriter(
        app[STORAGE],
        queue_size=config.audit.queue_size,
        max_batch=config.audit.max_batch,
        linger=config.audit.flush_interval,
        failed_auth_window=config.audit.unauthenticated_window,
    )
    await audit.start()
    metrics = app[METRICS]
    metrics.read_at_scrape(metrics.audit_records_not_stored, lambda: audit.logged_instead)
    metrics.read_at_scrape(metrics.audit_queue_depth, lambda: audit.queue_depth)
    app[AUDIT] = audit
    yield
    await audit.close()


async def _retention_ctx(app: web.Application) -> AsyncIterator[None]:
    # Last up, first down: a purge in flight is cancelled before anything it uses stops.
    config = app[CONFIG]
    job = RetentionJob(
        app[STORAGE],
        config.retention,
        idempotency_window=config.ingest.idempotency_window,
        category_retention=app[CATEGORIES].retention_overrides,
    )
    await job.start()
    yield
    await job.close()


async def _describe_api(app: web.Application) -> None:
    # Listing the IANA zones (for the document and for validation) walks the tz
    # database on disk: once, off the event loop.
    document = await asyncio.to_thread(api.describe_api, app[TOKENS].max_ttl)
    app[OPENAPI] = document_limits(document, app[CONFIG].limits)


async def _close_sockets(app: web.Application) -> None:
    await app[SOCKETS].close_all(CloseCode.GOING_AWAY)


async def _authenticate(request: web.Request) -> None:
    try:
        await request.app[API_KEYS].authenticate(request)
    except ApiError:
        # A failed authentication spends its source's budget: past it, 429 instead of
        # 401, decided before the request is audited (docs/security.md, audit trail).
        await request.app[LIMITS].unauthenticated.check(client_network(request.remote))
        raise
    # Spends one request of the key's budget (429 once spent), before any work is done.
    await request.app[LIMITS].api_keys.check(request[API_KEY].id)


def build_app(
    config: Config,
    *,
    identity: Identity,
    token_secret: str,
    outbound_url_check: UrlChecker | None = None,
) -> web.Application:
    """The whole server as one aiohttp app (not started: run it with an AppRunner).

    `outbound_url_check` replaces the check of the URLs the senders POST to that
    clients chose (web push endpoints, webhooks); for tests whose local endpoints are
    plain http on loopback, which the real one refuses whatever `outbound.allow_private`.
    """
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[request_id_middleware, cors_preflight, error_middleware],
    )
    app[CONFIG] = config
    app[IDENTITY] = identity
    app[METRICS] = metrics = Metrics(hot_path=config.metrics.hot_path)
    install_http_metrics(app, metrics)
    app[SOCKETS] = OpenSockets()
    app[TOKENS] = TokenSigner(
        token_secret,
        issuer=config.auth.token_issuer,
        audience=config.auth.token_audience,
        default_ttl=config.auth.token_ttl,
        max_ttl=config.auth.token_max_ttl,
        previous_secrets=config.auth.previous_token_secrets,
    )
    app.cleanup_ctx.extend(
        [_state_ctx, _storage_ctx, _cursors_ctx, _mailboxes_ctx, _revocations_ctx, _bus_ctx]
    )
    app.cleanup_ctx.append(_ingest_ctx)
    app.cleanup_ctx.append(_categories_ctx)
    app[UNSUBSCRIBE_LINKS] = unsubscribe_links(
        config.channels, token_secret, config.auth.previous_token_secrets
    )
    app[PREFERENCE_LINKS] = preference_links(
        config.channels,
        token_secret,
        config.auth.previous_token_secrets,
        max_age=config.preference_center.link_max_age,
    )
    app[VAPID_PUBLIC_KEY] = first_vapid_public_key(config.channels)
    app[TEMPLATES] = TemplateRenderer(
        TemplateLimits(
            max_source_bytes=config.templates.max_source_bytes,
            max_output_bytes=config.templates.max_output_bytes,
            render_timeout=config.templates.render_timeout,
            cache_size=config.templates.cache_size,
        )
    )
    check_url = outbound_url_check or outbound_check(config.outbound.allow_private)
    app[OUTBOUND_URL_CHECK] = check_url
    app.cleanup_ctx.append(functools.partial(_channels_ctx, check_url=check_url))
    app.cleanup_ctx.append(_scheduler_ctx)
    app.cleanup_ctx.append(_webhook_events_ctx)
    app.cleanup_ctx.append(_audiences_ctx)
    app.cleanup_ctx.append(_audit_ctx)
    app.cleanup_ctx.append(_retention_ctx)
    app.on_startup.append(_describe_api)
    app.on_response_prepare.append(add_response_headers)
    app.on_response_prepare.append(echo_request_id)
    app.on_shutdown.append(_close_sockets)
    api.add_routes(app, api.ROUTES, _authenticate)
    return app
