"""Typed keys under which the application keeps its components (aiohttp `AppKey`s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from actors.runtime import ActorSystem
    from actors.user_mailbox import UserMessage
    from pushd.access.api_keys import ApiKeyVerifier
    from pushd.access.audit_writer import AuditWriter
    from pushd.access.rate_limits import Limits
    from pushd.access.revocations import Revocations
    from pushd.access.user_tokens import TokenSigner
    from pushd.bus import Bus
    from pushd.config import Config
    from pushd.ingest.group_commit import NotificationIngest
    from pushd.ingest.request_hash import RequestHasher
    from pushd.ops.metrics import Metrics
    from pushd.realtime.cursors import CursorRecorder
    from pushd.realtime.sockets import OpenSockets
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
