"""Typed keys under which the application keeps its components (aiohttp `AppKey`s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from actors.channel_dispatch import ChannelDispatcher
    from actors.runtime import ActorSystem
    from actors.user_mailbox import UserMessage
    from pushd.access.api_keys import ApiKeyVerifier
    from pushd.access.audit_writer import AuditWriter
    from pushd.access.rate_limits import Limits
    from pushd.access.revocations import Revocations
    from pushd.access.user_tokens import TokenSigner
    from pushd.audiences.fanout import Fanout
    from pushd.bus import Bus
    from pushd.channels.http_client import UrlChecker
    from pushd.channels.unsubscribe import PreferenceLinks, UnsubscribeLinks
    from pushd.channels.webhook_events import WebhookSubscribers
    from pushd.config.settings import Config
    from pushd.ingest.group_commit import NotificationIngest
    from pushd.ingest.release import ScheduledRelease
    from pushd.ingest.request_hash import RequestHasher
    from pushd.ops.metrics import Metrics
    from pushd.realtime.cursors import CursorRecorder
    from pushd.realtime.sockets import OpenSockets
    from pushd.routing.categories import CategoryRegistry
    from pushd.routing.engagement import DeliveryOptimiser
    from pushd.routing.plan import ChannelPlanner
    from pushd.routing.plan_reads import PlanReads
    from pushd.routing.templates import TemplateRenderer
    from pushd.state import SharedState
    from storage import Storage

CONFIG: web.AppKey[Config] = web.AppKey("config")
STORAGE: web.AppKey[Storage] = web.AppKey("storage")
BUS: web.AppKey[Bus] = web.AppKey("bus")
MAILBOXES: web.AppKey[ActorSystem[str, UserMessage]] = web.AppKey("mailboxes")
INGEST: web.AppKey[NotificationIngest] = web.AppKey("ingest")
CURSORS: web.AppKey[CursorRecorder] = web.AppKey("cursors")
TOKENS: web.AppKey[TokenSigner] = web.AppKey("tokens")
API_KEYS: web.AppKey[ApiKeyVerifier] = web.AppKey("api_keys")
SOCKETS: web.AppKey[OpenSockets] = web.AppKey("sockets")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
STATE: web.AppKey[SharedState] = web.AppKey("state")
"""Rate-limit budgets and cross-node signals (pushd/state): in-process or Redis."""
LIMITS: web.AppKey[Limits] = web.AppKey("limits")
AUDIT: web.AppKey[AuditWriter] = web.AppKey("audit")
REVOCATIONS: web.AppKey[Revocations] = web.AppKey("revocations")
REQUEST_HASHER: web.AppKey[RequestHasher] = web.AppKey("request_hasher")
"""Keyed hashes of Idempotency-Key requests (pushd/ingest/request_hash.py)."""
CHANNELS: web.AppKey[ChannelDispatcher] = web.AppKey("channels")
"""Sends the due channel deliveries (actors/channel_dispatch.py); `nudge()` it after a
commit that planned deliveries due now."""
PLANNER: web.AppKey[ChannelPlanner] = web.AppKey("planner")
PLAN_READS: web.AppKey[PlanReads] = web.AppKey("plan_reads")
OPTIMISER: web.AppKey[DeliveryOptimiser] = web.AppKey("delivery_optimiser")
"""Chooses and expands the channel plan of a notification (pushd/routing/plan.py)."""
TEMPLATES: web.AppKey[TemplateRenderer] = web.AppKey("templates")
"""Compiles and renders notification templates, with its cache of compiled ones
(pushd/routing/templates.py)."""
UNSUBSCRIBE_LINKS: web.AppKey[UnsubscribeLinks | None] = web.AppKey("unsubscribe_links")
"""Signs (and checks) the emails' unsubscribe links; None without `channels.public_url`."""
PREFERENCE_LINKS: web.AppKey[PreferenceLinks | None] = web.AppKey("preference_links")
"""Signs (and checks) the preference center's links; None without `channels.public_url`."""
CATEGORIES: web.AppKey[CategoryRegistry] = web.AppKey("categories")
"""The defined categories, in memory (pushd/routing/categories.py); `refresh()` it after
changing a stored one."""
VAPID_PUBLIC_KEY: web.AppKey[str | None] = web.AppKey("vapid_public_key")
"""What browsers subscribe with (the first web push provider's); None without one."""
OUTBOUND_URL_CHECK: web.AppKey[UrlChecker] = web.AppKey("outbound_url_check")
"""The outbound URL check (`outbound.allow_private`) of the URLs clients choose: webhook
URLs at registration, and before each send (pushd/channels/outbound_url.py)."""
AUDIENCES: web.AppKey[Fanout] = web.AppKey("audiences")
"""Carries out broadcast and segment sends in the background (pushd/audiences/fanout.py);
`wake()` it after storing a send."""
WEBHOOKS: web.AppKey[WebhookSubscribers] = web.AppKey("webhooks")
"""The webhook endpoints subscribed to each event type, as planning reads them
(pushd/channels/webhook_events.py); `forget()` it after changing an endpoint."""
SCHEDULER: web.AppKey[ScheduledRelease] = web.AppKey("scheduler")
"""Releases due scheduled sends (pushd/ingest/release.py); `wake(due_at)` it after
storing one due before its next poll."""
