"""Webhook endpoints on SQLite: the sweep round, one write job (the single writer keeps
two rounds from taking the same deliveries)."""

from __future__ import annotations

import sqlite3

from storage.areas.webhook_endpoints import EventBuilder
from storage.crypto import Cipher
from storage.records import WebhookSweepRound
from storage.sql.common import encode_json
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
from storage.sqlite.engine import SqliteEngine, fetch_all, write_transaction

_UNANNOUNCED = unannounced_sql("")
_NOTHING = WebhookSweepRound(announced=0, webhook_rows=0)


class _Sweep:
    """One round's parameters, run on the worker thread."""

    def __init__(
        self,
        *,
        limit: int,
        build: EventBuilder,
        event_type: str,
        max_consecutive_failures: int,
        at: int,
        cipher: Cipher,
        in_list: str,
    ) -> None:
        self.limit = limit
        self.build = build
        self.event_type = event_type
        self.max_consecutive_failures = max_consecutive_failures
        self.at = at
        self.cipher = cipher
        self.health_sql = endpoint_health_sql(in_list, "")
        self.mark_sql = mark_announced_sql(in_list)

    def run(self, connection: sqlite3.Connection) -> WebhookSweepRound:
        # Most rounds find nothing: they do not take the write lock.
        if not fetch_all(connection, _UNANNOUNCED, (1,)):
            return _NOTHING
        with write_transaction(connection):
            rows = fetch_all(connection, _UNANNOUNCED, (self.limit,))
            sweep = SweepRound([Candidate.of(row) for row in rows], self.at)
            if sweep.announces:
                subscribers = subscribers_of(
                    fetch_all(connection, ENABLED_ENDPOINTS, ()), self.event_type
                )
                sweep.fan_out(subscribers, self.build, self.cipher)
            endpoint_ids = sweep.webhook_endpoint_ids
            if endpoint_ids:
                health = fetch_all(connection, self.health_sql, (encode_json(endpoint_ids),))
                sweep.account(health, self.max_consecutive_failures)
            sweep.mark_announced(self.mark_sql, encode_json(sweep.delivery_ids))
            for sql, params in sweep.statements:
                fetch_all(connection, sql, params)
            return sweep.result()


class SqliteWebhookEndpoints(WebhookEndpointsSql, SqliteEngine):
    """`WebhookEndpoints` on SQLite."""

    async def announce_delivery_updates(
        self,
        *,
        limit: int,
        build: EventBuilder,
        event_type: str,
        max_consecutive_failures: int,
        at: int,
    ) -> WebhookSweepRound:
        """See `WebhookEndpoints.announce_delivery_updates`. `build` and the sealing run
        on the worker thread, inside the transaction."""
        sweep = _Sweep(
            limit=limit,
            build=build,
            event_type=event_type,
            max_consecutive_failures=max_consecutive_failures,
            at=at,
            cipher=self._cipher,
            in_list=self._in_list(1),
        )
        return await self._run(sweep.run)
