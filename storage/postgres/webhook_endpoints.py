"""Webhook endpoints on PostgreSQL: the sweep round in one transaction. The deliveries
are taken FOR UPDATE SKIP LOCKED, so that the sweeps of several nodes share the work
and never wait for each other; the endpoints whose failures are counted are locked in
id order."""

from __future__ import annotations

from storage.areas.webhook_endpoints import EventBuilder
from storage.postgres.engine import PostgresEngine
from storage.records import WebhookSweepRound
from storage.sql.webhook_endpoints import (
    ENABLED_ENDPOINTS,
    Candidate,
    SweepRound,
    WebhookEndpointsSql,
    endpoint_health_sql,
    mark_announced_sql,
    subscribers_of,
    unannounced_sql,
)

_UNANNOUNCED = unannounced_sql("FOR UPDATE SKIP LOCKED")
_HEALTH = endpoint_health_sql("= ANY($1::text[])", "FOR UPDATE")
_MARK = mark_announced_sql("= ANY($1::text[])")
_NOTHING = WebhookSweepRound(announced=0, webhook_rows=0)


class PostgresWebhookEndpoints(WebhookEndpointsSql, PostgresEngine):
    """`WebhookEndpoints` on PostgreSQL."""

    async def announce_delivery_updates(
        self,
        *,
        limit: int,
        build: EventBuilder,
        event_type: str,
        max_consecutive_failures: int,
        at: int,
    ) -> WebhookSweepRound:
        """See `WebhookEndpoints.announce_delivery_updates`."""
        async with self._transaction() as connection:
            rows = await connection.fetch(_UNANNOUNCED, limit)
            if not rows:
                return _NOTHING
            sweep = SweepRound([Candidate.of(row) for row in rows], at)
            if sweep.announces:
                subscribers = subscribers_of(await connection.fetch(ENABLED_ENDPOINTS), event_type)
                sweep.fan_out(subscribers, build, self._cipher)
            endpoint_ids = sweep.webhook_endpoint_ids
            if endpoint_ids:
                health = await connection.fetch(_HEALTH, endpoint_ids)
                sweep.account(health, max_consecutive_failures)
            sweep.mark_announced(_MARK, sweep.delivery_ids)
            for sql, params in sweep.statements:
                await connection.execute(sql, *params)
            return sweep.result()
