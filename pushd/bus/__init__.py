"""The bus between the nodes that accept notifications and the nodes that hold sockets.

`memory://` keeps everything in this process (embedded shape); `amqp://` uses RabbitMQ.
"""

from __future__ import annotations

from pushd.bus.protocol import Bus, BusError, BusMessage, BusUnavailableError, MessageHandler

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
    import importlib

    scheme = url.split(":", 1)[0].lower()
    target = _BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(sorted(_BACKENDS))
        raise BusError(f"bus.url {url!r} has scheme {scheme!r}; supported schemes are: {known}")
    module_name, class_name = target.split(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    bus: Bus = backend(url, node_id=node_id, prefetch=prefetch, shards=shards)
    return bus
