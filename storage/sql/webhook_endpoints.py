"""Webhook endpoints (`storage.areas.webhook_endpoints`): SQL, row mapping, the
one-statement methods, and the webhook sweep's decisions (`SweepRound`), which each
backend runs inside its own transaction."""

# S608 (SQL built from strings): every query here is assembled at import time from the
# constants of this module only, lists from a backend's list form; values always travel
# as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from storage.areas.webhook_endpoints import EventBuilder
from storage.crypto import Cipher
from storage.records import (
    DeliveryUpdate,
    LeasedDelivery,
    NewWebhookEndpoint,
    WebhookEndpointDisabled,
    WebhookEndpointRecord,
    WebhookSecret,
    WebhookSecretState,
    WebhookSweepRound,
)
from storage.sql.common import Row, check_limit, encode_json, seal, unseal
from storage.sql.engine import SqlEngine

WEBHOOK_CHANNEL = "webhook"
GONE_CODE = "410"
"""The provider code a webhook row failed with when its endpoint answered 410 Gone."""

# endpoints and secrets -----------------------------------------------------------------

ENDPOINT_COLUMNS = (
    "id, url, description, event_types, enabled, disabled_reason, disabled_at, "
    "consecutive_failures, created_at, updated_at"
)
INSERT_ENDPOINT = (
    "INSERT INTO webhook_endpoints (id, url, description, event_types, enabled, "
    "consecutive_failures, created_at, updated_at) VALUES ($1, $2, $3, $4, TRUE, 0, $5, $5)"
)
# S105 below: SQL that stores a secret, not one.
INSERT_SECRET = (
    "INSERT INTO webhook_secrets (id, endpoint_id, secret, created_at, expires_at) "  # noqa: S105
    "SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $2)"
)
GET_ENDPOINT = f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
LIST_ENDPOINTS_FIRST = f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id LIMIT $1"
LIST_ENDPOINTS_AFTER = (
    f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id > $1 ORDER BY id LIMIT $2"
)
DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE id = $1 RETURNING id"
ENABLE_ENDPOINT = (
    "UPDATE webhook_endpoints SET enabled = TRUE, disabled_reason = NULL, disabled_at = NULL, "
    "consecutive_failures = 0, updated_at = $2 WHERE id = $1 RETURNING id"
)
ENABLED_ENDPOINTS = (
    "SELECT id, event_types, created_at FROM webhook_endpoints WHERE enabled ORDER BY id"
)
# A rotation, in one transaction: the first statement tells whether the endpoint exists;
# then expired secrets go, older ones get their expiry (never a later one), the new one
# is added.
TOUCH_ENDPOINT = "UPDATE webhook_endpoints SET updated_at = $2 WHERE id = $1 RETURNING id"
DROP_EXPIRED_SECRETS = (
    "DELETE FROM webhook_secrets WHERE endpoint_id = $1 AND expires_at IS NOT NULL "
    "AND expires_at <= $2"
)
EXPIRE_OLDER_SECRETS = (
    "UPDATE webhook_secrets SET expires_at = $2 WHERE endpoint_id = $1 "
    "AND (expires_at IS NULL OR expires_at > $2)"
)
_SIGNING = "(s.expires_at IS NULL OR s.expires_at > $2)"


def secret_states_sql(in_list: str) -> str:
    """The secrets of the endpoints in the list $1 that sign at $2, newest first."""
    return (
        "SELECT s.endpoint_id, s.id, s.created_at, s.expires_at FROM webhook_secrets s "
        f"WHERE s.endpoint_id {in_list} AND {_SIGNING} "
        "ORDER BY s.endpoint_id, s.created_at DESC, s.id DESC"
    )


def addresses_sql(in_list: str) -> str:
    """URL and signing secrets (sealed) of the enabled endpoints in the list $1 at $2."""
    return (
        "SELECT e.id, e.url, s.id, s.secret FROM webhook_endpoints e "
        "JOIN webhook_secrets s ON s.endpoint_id = e.id "
        f"WHERE e.id {in_list} AND e.enabled AND {_SIGNING} "
        "ORDER BY e.id, s.created_at DESC, s.id DESC"
    )


_event_types = msgspec.json.Decoder(tuple[str, ...])
SECRET_COLUMN = "webhook_secrets.secret"  # noqa: S105 - a column name


def endpoint_params(endpoint: NewWebhookEndpoint) -> tuple[Any, ...]:
    """Parameters of INSERT_ENDPOINT."""
    return (
        endpoint.id,
        endpoint.url,
        endpoint.description,
        encode_json(list(endpoint.event_types)),
        endpoint.created_at,
    )


def secret_params(endpoint_id: str, secret: WebhookSecret, cipher: Cipher) -> tuple[Any, ...]:
    """Parameters of INSERT_SECRET, the value sealed."""
    return (
        secret.id,
        endpoint_id,
        seal(cipher, secret.secret, SECRET_COLUMN, secret.id),
        secret.created_at,
        secret.expires_at,
    )


def endpoint_from_row(row: Row, secrets: Iterable[WebhookSecretState]) -> WebhookEndpointRecord:
    """A row of ENDPOINT_COLUMNS, with its signing secrets."""
    return WebhookEndpointRecord(
        id=row[0],
        url=row[1],
        description=row[2],
        event_types=_event_types.decode(row[3]),
        enabled=bool(row[4]),
        disabled_reason=row[5],
        disabled_at=row[6],
        consecutive_failures=row[7],
        created_at=row[8],
        updated_at=row[9],
        secrets=tuple(secrets),
    )


# the sweep -----------------------------------------------------------------------------

# Deliveries whose final status webhooks were not told yet: the predicate of the partial
# index channel_deliveries_unannounced, written the same way so that both backends use it.
UNANNOUNCED = (
    "status IN ('sent', 'delivered', 'failed') "
    "AND (announced_status IS NULL OR announced_status <> status)"
)
UPDATE_COLUMNS = (
    "id, notification_id, user_id, seq, channel, device_id, endpoint_id, status, attempts, "
    "provider, fallback, provider_message_id, last_error, updated_at"
)
# The code of a webhook row's last attempt tells its endpoint's 410 Gone (looked up for
# webhook rows only: the others are most of the sweep's rows).
_LAST_CODE = (
    "CASE WHEN channel = 'webhook' THEN (SELECT h.provider_code FROM channel_delivery_history h "
    "WHERE h.delivery_id = channel_deliveries.id ORDER BY h.id DESC LIMIT 1) END"
)


def unannounced_sql(lock: str) -> str:
    """Up to $1 unannounced deliveries, oldest change first, with their last provider
    code; `lock` is the backend's row lock clause ("" for none)."""
    return (
        f"SELECT {UPDATE_COLUMNS}, {_LAST_CODE} FROM channel_deliveries WHERE {UNANNOUNCED} "
        f"ORDER BY updated_at, id LIMIT $1 {lock}"
    )


def endpoint_health_sql(in_list: str, lock: str) -> str:
    """Failure state of the endpoints in the list $1, in id order (the lock order)."""
    return (
        "SELECT id, enabled, consecutive_failures FROM webhook_endpoints "
        f"WHERE id {in_list} ORDER BY id {lock}"
    )


def mark_announced_sql(in_list: str) -> str:
    """Mark the deliveries in the list $1 announced at their current status."""
    return f"UPDATE channel_deliveries SET announced_status = status WHERE id {in_list}"


COUNT_UNANNOUNCED = f"SELECT count(*) FROM channel_deliveries WHERE {UNANNOUNCED}"
INSERT_WEBHOOK_ROW = (
    "INSERT INTO channel_deliveries (id, notification_id, user_id, seq, channel, endpoint_id, "
    "status, due_at, first_due_at, cancel_on_read, event, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, 'webhook', $5, 'queued', $6, $6, FALSE, $7, $6, $6) "
    "ON CONFLICT (id) DO NOTHING"
)
SET_FAILURES = (
    "UPDATE webhook_endpoints SET consecutive_failures = $2, updated_at = $3 WHERE id = $1"
)
# Only an enabled endpoint: the reason it was first disabled for is kept.
DISABLE_ENDPOINT = (
    "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, disabled_at = $3, "
    "updated_at = $3 WHERE id = $1 AND enabled"
)
EVENT_COLUMN = "channel_deliveries.event"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One unannounced delivery as the sweep reads it."""

    update: DeliveryUpdate
    seq: int
    endpoint_id: str | None
    provider_code: str | None

    @classmethod
    def of(cls, row: Row) -> Candidate:
        """A row of `unannounced_sql`."""
        update = DeliveryUpdate(
            delivery_id=row[0],
            notification_id=row[1],
            user_id=row[2],
            channel=row[4],
            device_id=row[5],
            status=row[7],
            attempts=row[8],
            provider=row[9],
            fallback=bool(row[10]),
            provider_message_id=row[11],
            error=row[12],
            updated_at=row[13],
        )
        return cls(update, seq=row[3], endpoint_id=row[6], provider_code=row[14])


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: str
    created_at: int


def subscribers_of(rows: Iterable[Row], event_type: str) -> list[Subscriber]:
    """The rows of ENABLED_ENDPOINTS that receive `event_type`."""
    return [Subscriber(row[0], row[2]) for row in rows if event_type in _event_types.decode(row[1])]


@dataclass
class _Health:
    enabled: bool
    failures: int
    changed: bool = False


@dataclass
class SweepRound:
    """What one round of the sweep writes, decided from what it read (pure: no I/O)."""

    candidates: list[Candidate]
    at: int
    statements: list[tuple[str, Sequence[Any]]] = field(default_factory=list)
    disabled: list[WebhookEndpointDisabled] = field(default_factory=list)
    webhook_rows: int = 0

    @property
    def webhook_endpoint_ids(self) -> list[str]:
        """The endpoints whose rows this round accounts for, sorted (the lock order)."""
        return sorted({c.endpoint_id for c in self._webhook_rows() if c.endpoint_id})

    @property
    def announces(self) -> bool:
        """Whether deliveries of other channels are to be announced (subscribers needed)."""
        return any(c.update.channel != WEBHOOK_CHANNEL for c in self.candidates)

    def fan_out(
        self, subscribers: Sequence[Subscriber], build: EventBuilder, cipher: Cipher
    ) -> None:
        """One webhook row per change and subscriber that existed when it happened."""
        for candidate in self.candidates:
            update = candidate.update
            if update.channel == WEBHOOK_CHANNEL:
                continue
            for subscriber in subscribers:
                if subscriber.created_at > update.updated_at:
                    continue
                row_id, event = build(update, subscriber.id)
                sealed = seal(cipher, encode_json(event), EVENT_COLUMN, row_id)
                params = (
                    row_id,
                    update.notification_id,
                    update.user_id,
                    candidate.seq,
                    subscriber.id,
                    self.at,
                    sealed,
                )
                self.statements.append((INSERT_WEBHOOK_ROW, params))
                self.webhook_rows += 1

    def account(self, health_rows: Iterable[Row], max_consecutive_failures: int) -> None:
        """Endpoint failure counts from this round's webhook rows, in change order."""
        health = {row[0]: _Health(bool(row[1]), row[2]) for row in health_rows}
        for candidate in self._webhook_rows():
            state = health.get(candidate.endpoint_id or "")
            if state is None:
                continue  # the endpoint was deleted
            self._count(state, candidate, max_consecutive_failures)
        for endpoint_id, state in health.items():
            if state.changed:
                self.statements.append((SET_FAILURES, (endpoint_id, state.failures, self.at)))
        for disabled in self.disabled:
            params = (disabled.endpoint_id, disabled.reason, disabled.at)
            self.statements.append((DISABLE_ENDPOINT, params))

    def _count(self, state: _Health, candidate: Candidate, limit: int) -> None:
        if candidate.update.status != "failed":
            state.changed = state.changed or state.failures != 0
            state.failures = 0
            return
        state.changed, state.failures = True, state.failures + 1
        reason = _disable_reason(candidate, state.failures, limit) if state.enabled else None
        if reason is not None and candidate.endpoint_id is not None:
            state.enabled = False
            self.disabled.append(
                WebhookEndpointDisabled(
                    endpoint_id=candidate.endpoint_id, reason=reason, at=self.at
                )
            )

    def mark_announced(self, sql: str, ids_param: Any) -> None:
        """Add the statement (`mark_announced_sql`) that marks every candidate announced."""
        self.statements.append((sql, (ids_param,)))

    def result(self) -> WebhookSweepRound:
        """What the round did, once its statements ran."""
        return WebhookSweepRound(
            announced=len(self.candidates),
            webhook_rows=self.webhook_rows,
            disabled=tuple(self.disabled),
        )

    @property
    def delivery_ids(self) -> list[str]:
        """Every candidate's id."""
        return [candidate.update.delivery_id for candidate in self.candidates]

    def _webhook_rows(self) -> list[Candidate]:
        return [c for c in self.candidates if c.update.channel == WEBHOOK_CHANNEL]


def _disable_reason(candidate: Candidate, failures: int, limit: int) -> str | None:
    if candidate.provider_code == GONE_CODE:
        return (
            "the endpoint answered 410 Gone (it asks not to be called again); fix the "
            "receiver, then enable the endpoint again"
        )
    if failures >= limit:
        return (
            f"{failures} events in a row failed for good (limit {limit}); the last one: "
            f"{(candidate.update.error or 'no error recorded')[:300]}. Fix the receiver, "
            "then enable the endpoint again"
        )
    return None


async def webhook_addresses_of(
    engine: SqlEngine, endpoint_ids: Sequence[str], now: int
) -> dict[str, dict[str, str]]:
    """`WebhookEndpoints.webhook_addresses` over a backend's primitives."""
    if not endpoint_ids:
        return {}
    # The primitives this package's modules share (storage/sql/engine.py).
    sql = addresses_sql(engine._in_list(1))
    rows = await engine._fetch_all(sql, engine._list_param(endpoint_ids), now)
    secrets: dict[str, list[str]] = {}
    urls: dict[str, str] = {}
    for endpoint_id, url, secret_id, sealed in rows:
        urls[endpoint_id] = url
        value = unseal(engine._cipher, sealed, SECRET_COLUMN, secret_id)
        secrets.setdefault(endpoint_id, []).append(value or "")
    return {e: {"url": urls[e], "secret": ",".join(secrets[e])} for e in urls}


async def with_webhook_addresses(
    engine: SqlEngine, leased: list[LeasedDelivery], now: int
) -> list[LeasedDelivery]:
    """`leased` with each webhook row's address filled in (`webhook_addresses`); a
    row whose endpoint is disabled or gone keeps {} (the worker skips it). Called by
    `lease_due_deliveries` after the lease: one more read, only when webhook rows came."""
    wanted = sorted(
        {d.endpoint_id for d in leased if d.channel == WEBHOOK_CHANNEL and d.endpoint_id}
    )
    if not wanted:
        return leased
    found = await webhook_addresses_of(engine, wanted, now)
    return [
        msgspec.structs.replace(d, address=found[d.endpoint_id])
        if d.channel == WEBHOOK_CHANNEL and d.endpoint_id in found
        else d
        for d in leased
    ]


class WebhookEndpointsSql(SqlEngine):
    """`WebhookEndpoints` but `announce_delivery_updates`, which each backend runs in
    its own transaction."""

    async def create_webhook_endpoint(self, endpoint: NewWebhookEndpoint) -> WebhookEndpointRecord:
        """See `WebhookEndpoints.create_webhook_endpoint`."""
        await self._write_many(
            [
                (INSERT_ENDPOINT, endpoint_params(endpoint)),
                (INSERT_SECRET, secret_params(endpoint.id, endpoint.secret, self._cipher)),
            ]
        )
        secret = endpoint.secret
        return WebhookEndpointRecord(
            id=endpoint.id,
            url=endpoint.url,
            description=endpoint.description,
            event_types=endpoint.event_types,
            enabled=True,
            disabled_reason=None,
            disabled_at=None,
            consecutive_failures=0,
            created_at=endpoint.created_at,
            updated_at=endpoint.created_at,
            secrets=(
                WebhookSecretState(
                    id=secret.id, created_at=secret.created_at, expires_at=secret.expires_at
                ),
            ),
        )

    async def get_webhook_endpoint(
        self, endpoint_id: str, *, now: int
    ) -> WebhookEndpointRecord | None:
        """See `WebhookEndpoints.get_webhook_endpoint`."""
        row = await self._fetch_one(GET_ENDPOINT, endpoint_id)
        if row is None:
            return None
        return (await self._with_secrets([row], now))[0]

    async def list_webhook_endpoints(
        self, *, after_id: str | None, limit: int, now: int
    ) -> list[WebhookEndpointRecord]:
        """See `WebhookEndpoints.list_webhook_endpoints`."""
        check_limit(limit)
        if after_id is None:
            rows = await self._fetch_all(LIST_ENDPOINTS_FIRST, limit)
        else:
            rows = await self._fetch_all(LIST_ENDPOINTS_AFTER, after_id, limit)
        return await self._with_secrets(rows, now)

    async def delete_webhook_endpoint(self, endpoint_id: str) -> bool:
        """See `WebhookEndpoints.delete_webhook_endpoint`."""
        return await self._write_one(DELETE_ENDPOINT, endpoint_id) is not None

    async def rotate_webhook_secret(
        self, endpoint_id: str, secret: WebhookSecret, *, previous_valid_until: int
    ) -> WebhookEndpointRecord | None:
        """See `WebhookEndpoints.rotate_webhook_secret`."""
        at = secret.created_at
        results = await self._write_many(
            [
                (TOUCH_ENDPOINT, (endpoint_id, at)),
                (DROP_EXPIRED_SECRETS, (endpoint_id, at)),
                (EXPIRE_OLDER_SECRETS, (endpoint_id, previous_valid_until)),
                (INSERT_SECRET, secret_params(endpoint_id, secret, self._cipher)),
            ]
        )
        if not results[0]:
            return None
        return await self.get_webhook_endpoint(endpoint_id, now=at)

    async def enable_webhook_endpoint(
        self, endpoint_id: str, *, at: int
    ) -> WebhookEndpointRecord | None:
        """See `WebhookEndpoints.enable_webhook_endpoint`."""
        if await self._write_one(ENABLE_ENDPOINT, endpoint_id, at) is None:
            return None
        return await self.get_webhook_endpoint(endpoint_id, now=at)

    async def subscribed_webhook_endpoints(self, event_type: str) -> list[str]:
        """See `WebhookEndpoints.subscribed_webhook_endpoints`."""
        rows = await self._fetch_all(ENABLED_ENDPOINTS)
        return [subscriber.id for subscriber in subscribers_of(rows, event_type)]

    async def webhook_addresses(
        self, endpoint_ids: Sequence[str], *, now: int
    ) -> dict[str, dict[str, str]]:
        """See `WebhookEndpoints.webhook_addresses`."""
        return await webhook_addresses_of(self, endpoint_ids, now)

    async def pending_delivery_updates(self) -> int:
        """See `WebhookEndpoints.pending_delivery_updates`."""
        return int((await self._fetch_one(COUNT_UNANNOUNCED))[0])

    async def _with_secrets(self, rows: Sequence[Row], now: int) -> list[WebhookEndpointRecord]:
        if not rows:
            return []
        ids = [row[0] for row in rows]
        states: dict[str, list[WebhookSecretState]] = {}
        for endpoint_id, secret_id, created_at, expires_at in await self._fetch_all(
            secret_states_sql(self._in_list(1)), self._list_param(ids), now
        ):
            state = WebhookSecretState(id=secret_id, created_at=created_at, expires_at=expires_at)
            states.setdefault(endpoint_id, []).append(state)
        return [endpoint_from_row(row, states.get(row[0], ())) for row in rows]
