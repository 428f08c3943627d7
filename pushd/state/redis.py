"""Shared state in Redis (`redis://`, `rediss://`): limiters are Lua scripts, so each
check-and-count is one atomic step on the server whichever node calls it, timed by the
Redis server's clock (one clock for the whole cluster); signals are Redis pub/sub, read
by one listener task this object owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from actors.retry import Backoff
from pushd.state.backend_common import call_signal_handler, check_bucket_args, check_window_args
from pushd.state.protocol import (
    RateDecision,
    SignalHandler,
    StateError,
    StateUnavailableError,
)

log = logging.getLogger("pushd.state")

CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 5.0
# How often the listener looks for channels subscribed after `start`.
LISTEN_POLL_SECONDS = 0.25
# Between attempts of the signal listener to get its connection back.
RECONNECT_BACKOFF = Backoff(base=0.1, cap=5.0)
# Subscribed at all times, so the listener holds a connection (and notices losing it)
# even before anything else is subscribed.
_ALIVE_CHANNEL = "~alive"

# Connection loss and timeouts, but also what a reachable Redis answers when it cannot
# serve (OOM, READONLY replica after a failover, LOADING): all mean "not now".
_UNAVAILABLE = (redis_errors.RedisError, OSError)

# Both scripts implement exactly `take_from_bucket` and `hit_weighted_window` of
# pushd/state/memory.py; the contract suite runs the same checks on both.
_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1]) or burst
local at = tonumber(saved[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed, retry = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'at', string.format('%.6f', now))
-- Once full again the bucket is the same as no key: let it expire then.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, string.format('%.6f', retry), math.floor(tokens)}
"""

_WINDOW_SCRIPT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local index = math.floor(now / window)
local saved = redis.call('HMGET', KEYS[1], 'index', 'current', 'previous')
local saved_index = tonumber(saved[1])
local current, previous = 0, 0
if saved_index == index then
  current, previous = tonumber(saved[2]), tonumber(saved[3])
elseif saved_index == index - 1 then
  previous = tonumber(saved[2])
end
local elapsed = now / window - index
local estimate = previous * (1 - elapsed) + current
if estimate + 1 <= limit then
  redis.call('HSET', KEYS[1], 'index', string.format('%d', index),
             'current', current + 1, 'previous', previous)
  -- Counts nothing once the window after this one is over.
  redis.call('PEXPIRE', KEYS[1], math.ceil(((index + 2) * window - now) * 1000) + 1000)
  return {1, '0', math.max(0, math.floor(limit - estimate - 1))}
end
local wait
if current + 1 > limit then
  wait = (index + 1 - now / window) + math.max(0, 1 - (limit - 1) / current)
else
  wait = math.max(0, (1 - (limit - 1 - current) / previous) - elapsed)
end
return {0, string.format('%.6f', wait * window), 0}
"""

_Result = TypeVar("_Result")


class RedisState:
    """`SharedState` over Redis; every key and channel starts with `prefix`."""

    def __init__(self, url: str, *, prefix: str = "pushd:") -> None:
        parts = urlsplit(url)
        # For messages only: never the password.
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        self._prefix = prefix
        # Names this node's connections in CLIENT LIST (operators, and the tests).
        self.client_name = "pushd:" + "".join(
            c if c.isalnum() or c in ":-_." else "_" for c in prefix
        )
        self._client: aioredis.Redis = aioredis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
            # Pings an idle pub/sub connection, so a dead one is noticed and replaced.
            health_check_interval=10,
            client_name=self.client_name,
        )
        self._take_token = self._client.register_script(_BUCKET_SCRIPT)
        self._hit_window = self._client.register_script(_WINDOW_SCRIPT)
        self._handlers: dict[str, list[SignalHandler]] = {_ALIVE_CHANNEL: []}
        self._listener: asyncio.Task[None] | None = None
        self._listener_problem: str | None = "not started"
        self._first_attempt = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        """Start the listener and wait for its first attempt to subscribe."""
        if self._listener is not None or self._closed:
            raise StateError("a shared state starts once; create a new one")
        self._listener = asyncio.create_task(self._listen(), name="state-signals")
        await self._first_attempt.wait()

    async def _call(self, call: Callable[[], Awaitable[_Result]]) -> _Result:
        if self._listener is None or self._closed:
            raise StateUnavailableError("the Redis state is not started, or closed")
        try:
            return await call()
        except _UNAVAILABLE as exc:
            raise StateUnavailableError(f"Redis at {self._where} cannot be reached: {exc}") from exc

    async def take_token(self, key: str, *, rate: float, burst: int) -> RateDecision:
        check_bucket_args(rate, burst)
        result: list[Any] = await self._call(
            lambda: self._take_token(keys=[f"{self._prefix}tb:{key}"], args=[rate, burst])
        )
        return RateDecision(result[0] == 1, float(result[1]), int(result[2]))

    async def hit_window(self, key: str, *, limit: int, window: float) -> RateDecision:
        check_window_args(limit, window)
        result: list[Any] = await self._call(
            lambda: self._hit_window(keys=[f"{self._prefix}win:{key}"], args=[limit, window])
        )
        return RateDecision(result[0] == 1, float(result[1]), int(result[2]))

    async def publish(self, channel: str, message: bytes) -> None:
        await self._call(lambda: self._client.publish(self._channel(channel), message))

    def subscribe(self, channel: str, handler: SignalHandler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    def _channel(self, channel: str) -> str:
        return f"{self._prefix}sig:{channel}"

    async def ping(self) -> None:
        await self._call(self._client.ping)
        if self._listener_problem is not None:
            raise StateUnavailableError(
                f"Redis at {self._where}: signal listener down: {self._listener_problem}"
            )

    async def _listen(self) -> None:
        attempt = 0
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await self._relay(pubsub)
            except _UNAVAILABLE as exc:
                if self._listener_problem is None:
                    log.warning("Redis at %s: signal listener lost: %s", self._where, exc)
                    attempt = 0  # it was up: the first retry after a loss comes soon
                self._listener_problem = str(exc) or type(exc).__name__
            finally:
                self._first_attempt.set()
                with contextlib.suppress(*_UNAVAILABLE):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            await RECONNECT_BACKOFF.wait(attempt)
            attempt += 1

    async def _relay(self, pubsub: aioredis.client.PubSub) -> None:
        """Subscribe to every channel that has handlers, and run them per message."""
        subscribed: set[str] = set()
        prefix = f"{self._prefix}sig:".encode()
        while True:
            wanted = set(self._handlers) - subscribed
            if wanted:
                await pubsub.subscribe(*(self._channel(channel) for channel in wanted))
                subscribed |= wanted
                if self._listener_problem is not None and self._listener_problem != "not started":
                    log.info("Redis at %s: signal listener back", self._where)
                self._listener_problem = None
                self._first_attempt.set()
            message = await pubsub.get_message(timeout=LISTEN_POLL_SECONDS)
            if message is None or message.get("type") != "message":
                continue
            channel = bytes(message["channel"]).removeprefix(prefix).decode()
            for handler in list(self._handlers.get(channel, ())):
                await call_signal_handler(handler, channel, bytes(message["data"]))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            # wait(), not await: our own cancellation still propagates.
            await asyncio.wait([self._listener])
        await self._client.aclose()
