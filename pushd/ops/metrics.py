"""Prometheus metrics at `GET /metrics` (API key required), via aioprometheus."""

from __future__ import annotations

import time

from aiohttp import web
from aioprometheus.collectors import Counter, Gauge, Registry
from aioprometheus.renderer import render


class Metrics:
    """This process's instruments, in a registry of their own (several apps can share a
    process in tests without colliding)."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.registry = Registry()
        self.accepted = Counter(
            "pushd_notifications_accepted_total",
            "Notifications committed and answered 202.",
            registry=self.registry,
        )
        self.delivered = Counter(
            "pushd_frames_delivered_total",
            "Bus messages handed to a local user mailbox.",
            registry=self.registry,
        )
        self.connections = Gauge(
            "pushd_websocket_connections", "Open, authenticated WebSockets.", registry=self.registry
        )
        self.actors = Gauge(
            "pushd_mailbox_actors", "Live per-user mailbox actors.", registry=self.registry
        )

    @staticmethod
    def total(counter: Counter) -> int:
        """A label-less counter's value (0 before its first increment)."""
        try:
            value = counter.get({})
        except KeyError:
            return 0
        return int(value) if isinstance(value, int | float) else 0

    async def handle(self, request: web.Request) -> web.Response:
        body, headers = render(self.registry, request.headers.getall("Accept", []))
        return web.Response(body=body, headers=headers)
