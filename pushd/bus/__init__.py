"""The bus between the nodes that accept notifications and the nodes that hold sockets.

`memory://` keeps everything in this process (embedded shape); `amqp://` uses RabbitMQ.
"""

from __future__ import annotations

from pushd.bus.protocol import Bus, BusError, BusMessage, BusUnavailableError, MessageHandler
from storage.backend_urls import backend_class

__all__ = ["Bus", "BusError", "BusMessage", "BusUnavailableError", "MessageHandler", "open_bus"]

# URL scheme -> backend. Drivers are imported only when their scheme is used.
_BACKENDS = {
    "memory": "pushd.bus.memory:MemoryBus",
    "amqp": "pushd.bus.rabbitmq:RabbitBus",
    "amqps": "pushd.bus.rabbitmq:RabbitBus",
}


def open_bus(url: str, *, node_id: str, prefetch: int = 256, shards: int = 8) -> Bus:
    """Build the backend named by the URL's scheme (not yet connected: call `start`).

    `node_id` names this process's queue so a restarted node finds its own messages;
    `shards` is how many routing keys users are spread over.
    """
    backend = backend_class(url, _BACKENDS, setting="bus.url", error=BusError)
    bus: Bus = backend(url, node_id=node_id, prefetch=prefetch, shards=shards)
    return bus
