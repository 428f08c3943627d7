"""Prometheus metrics at `GET /metrics` (API key of any role), via aioprometheus.

Every name is listed in docs/architecture.md ("Metrics"). Two kinds of figures:
instruments this module's callers increment (`accepted`, `mailbox_handoffs`,
`connections`), and figures their owner keeps itself (the actor runtime may not import
this library; the audit writer and the cursor recorder count in their own loops), which
are read into their instrument at each scrape (`read_at_scrape`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aioprometheus.collectors import Counter, Gauge, Registry
from aioprometheus.renderer import render

from actors.runtime import ActorSystem
from actors.user_mailbox import UserMailboxStats
from pushd.ops.channel_metrics import ChannelMetrics


class Metrics:
    """This process's instruments, in a registry of their own (several apps can share a
    process in tests without colliding)."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.registry = Registry()
        self._readings: list[tuple[Counter | Gauge, Callable[[], int]]] = []
        self.accepted = self._counter(
            "pushd_notifications_accepted_total", "Notifications committed and answered 202."
        )
        self.mailbox_handoffs = self._counter(
            "pushd_mailbox_handoffs_total",
            "Bus messages handed to a local user mailbox (one per user with a live "
            "mailbox here, whatever its number of sockets; not frames written to sockets).",
        )
        self.connections = Gauge(
            "pushd_websocket_connections",
            "Open, authenticated WebSockets and Server-Sent Events streams.",
            registry=self.registry,
        )
        self.actors = Gauge(
            "pushd_mailbox_actors", "Live per-user mailbox actors.", registry=self.registry
        )
        self.queued_messages = Gauge(
            "pushd_mailbox_queued_messages",
            "Messages waiting in the user mailboxes.",
            registry=self.registry,
        )
        self.actors_started = self._counter(
            "pushd_mailbox_actors_started_total", "User mailbox actors started."
        )
        self.actors_passivated = self._counter(
            "pushd_mailbox_actors_passivated_total",
            "User mailbox actors stopped after idling without sockets.",
        )
        self.messages_processed = self._counter(
            "pushd_mailbox_messages_processed_total",
            "Messages user mailboxes handled (deliveries, sockets attached and detached).",
        )
        self.actor_restarts = self._counter(
            "pushd_mailbox_actor_restarts_total",
            "Times a user mailbox failed to handle a message and was restarted to retry it.",
        )
        self.dead_letters = self._counter(
            "pushd_mailbox_dead_letters_total",
            "Messages a user mailbox gave up on after its last attempt (the user's sockets "
            "are closed so that their clients resume).",
        )
        self.sockets_dropped = self._counter(
            "pushd_mailbox_sockets_dropped_total",
            "Sockets a user mailbox dropped because they refused a frame (send queue full: "
            "a slow consumer, or the socket was closing).",
        )
        self.audit_records_not_stored = self._counter(
            "pushd_audit_records_not_stored_total",
            "Audit records storage refused even after retries, written to the log instead.",
        )
        self.cursor_flush_failures = self._counter(
            "pushd_cursor_flush_failures_total",
            "Cursor writes storage refused (the cursors are kept for the next flush).",
        )
        self.channels = ChannelMetrics(self.registry)
        """Channel deliveries: the dispatcher's observer, and its gauges."""

    def _counter(self, name: str, doc: str) -> Counter:
        return Counter(name, doc, registry=self.registry)

    def read_at_scrape(self, instrument: Counter | Gauge, read: Callable[[], int]) -> None:
        """Set the label-less `instrument` to `read()` before each scrape, for a figure
        its owner keeps (a counter must only grow: `read` a monotonic one)."""
        self._readings.append((instrument, read))

    def read_mailboxes(self, mailboxes: ActorSystem[Any, Any], stats: UserMailboxStats) -> None:
        """Read the user mailboxes' own figures (`stats`: the one they all count into)
        at each scrape."""
        readings: list[tuple[Counter | Gauge, Callable[[], int]]] = [
            (self.actors, lambda: len(mailboxes)),
            (self.queued_messages, lambda: mailboxes.queued_messages),
            (self.actors_started, lambda: mailboxes.actors_started),
            (self.actors_passivated, lambda: mailboxes.actors_passivated),
            (self.messages_processed, lambda: mailboxes.messages_processed),
            (self.actor_restarts, lambda: mailboxes.restarts),
            (self.dead_letters, lambda: mailboxes.dead_letters),
            (self.sockets_dropped, lambda: stats.connections_dropped),
        ]
        self._readings.extend(readings)

    @staticmethod
    def total(counter: Counter) -> int:
        """A label-less counter's value (0 before its first increment)."""
        try:
            value = counter.get({})
        except KeyError:
            return 0
        return int(value) if isinstance(value, int | float) else 0

    async def handle(self, request: web.Request) -> web.Response:
        """The Prometheus exposition of every instrument, in the format `Accept` asks."""
        for instrument, read in self._readings:
            instrument.set({}, read())
        await self.channels.refresh()
        body, headers = render(self.registry, request.headers.getall("Accept", []))
        return web.Response(body=body, headers=headers)
