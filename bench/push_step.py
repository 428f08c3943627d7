"""`deliver.py --push-step`: every notification also plans a web push, due at once.

The bench runs a local push service (push_endpoint.py, a child process sharing the
cores: TLS, reads every body, answers 201), configures pushd with one web push provider
(a fresh VAPID key) and `outbound.allow_private` so that a loopback endpoint is allowed,
and trusts the service's self-signed certificate (SSL_CERT_FILE). Each user registers one
web push device through the API, with its own P-256 key and auth secret, so that every
push is encrypted for its own subscription. A run with the push step POSTs the same
notifications as one without, plus `"channels": [{"channel": "webpush", "unless_read":
false}]`: the server commits one delivery row per notification with it, and its
dispatcher sends the push while the notification also goes out in-app.

`PushProbe` is the run's `measure.RunProbe`: it counts what the push service accepted
in the window and after it, waits (bounded) for every push to arrive, and checks per
subscription that each accepted notification's push arrived exactly once; it also reads
the server's own counters (/metrics: attempts by outcome, queue gauges).
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from measure import PushStats
from services import BenchError, Child, started

PROVIDER = "bench"
BODY_EXTRA = ',"channels":[{"channel":"webpush","unless_read":false}]'
PUSH_TIMEOUT = 60.0  # longest wait for the run's last push after its frames arrived
PUSH_STALL = 10.0  # ...and the longest wait without any new push
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class PushService:
    child: Child
    origin: str
    cert: str


@contextlib.asynccontextmanager
async def push_service(work: Path, max_seconds: float) -> AsyncIterator[PushService]:
    """The local push service, in its own process, for as long as the block runs."""
    async with started("push_endpoint.py", max_seconds) as child:
        directory = work / "push-service"
        directory.mkdir()
        served = await child.call({"cmd": "serve", "directory": str(directory)}, timeout=30)
        print(f"   push service pid {child.pid} on {served['origin']}", flush=True)
        yield PushService(child, served["origin"], served["cert"])


def server_env(service: PushService) -> dict[str, str]:
    """pushd's settings for one web push provider that may send to the local service."""
    vapid = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    provider = {
        "name": PROVIDER,
        "vapid_private_key": vapid.decode(),
        "vapid_subject": "mailto:bench@example.com",
    }
    return {
        "PUSHD_CHANNELS__WEBPUSH": json.dumps([provider]),
        "PUSHD_OUTBOUND__ALLOW_PRIVATE": "true",
        # The service's self-signed certificate is the one CA the server trusts.
        "SSL_CERT_FILE": service.cert,
    }


def subscription(index: int) -> str:
    return f"u{index}"


def _public_key_b64url() -> str:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return _b64url(point)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


async def register_devices(url: str, key: str, user_ids: list[str], origin: str) -> None:
    """One web push device per user (its own keys), through the API."""
    gate = asyncio.Semaphore(32)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def one(index: int, user_id: str) -> None:
            device = {
                "kind": "webpush",
                "endpoint": f"{origin}/push/{subscription(index)}",
                "keys": {"p256dh": _public_key_b64url(), "auth": _b64url(secrets.token_bytes(16))},
            }
            async with gate, session.post(f"{url}/api/users/{user_id}/devices", json=device) as r:
                if r.status != 201:
                    raise BenchError(f"device registration: {r.status} {await r.text()}")

        await asyncio.gather(*(one(i, u) for i, u in enumerate(user_ids)))


async def server_channel_metrics(url: str, key: str) -> tuple[dict[str, float], dict[str, float]]:
    """The server's web push attempts by outcome and its queue gauges (/metrics)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"{url}/metrics", headers=headers) as response,
    ):
        if response.status != 200:
            raise BenchError(f"GET /metrics: {response.status}")
        text = await response.text()
    attempts: dict[str, float] = {}
    queue: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        name, labels, value = match.group(1), dict(_LABEL.findall(match.group(2))), match.group(3)
        if labels.get("channel") != "webpush":
            continue
        if name == "pushd_channel_attempts_total":
            outcome = labels.get("outcome", "?")
            attempts[outcome] = attempts.get(outcome, 0.0) + float(value)
        elif name.startswith("pushd_channel_queue_") or name == "pushd_channel_oldest_due_seconds":
            queue[name.removeprefix("pushd_channel_")] = float(value)
    return attempts, queue


@dataclass
class PushProbe:
    """`measure.RunProbe` of a run with the push step."""

    service: PushService
    server_url: str
    key: str
    users: int
    duration: float
    body_extra: str = BODY_EXTRA
    pids: dict[str, int] = field(default_factory=dict)
    _counts: dict[str, Any] = field(default_factory=dict)  # the service's, before the run
    _attempts: dict[str, float] = field(default_factory=dict)  # the server's, before
    _at_window_end: int = 0

    def __post_init__(self) -> None:
        self.pids = {"push_service": self.service.child.pid}

    async def start(self) -> None:
        """Read the counters the runs are measured against (once, before the first)."""
        self._counts = await self._service_counts()
        self._attempts, _ = await server_channel_metrics(self.server_url, self.key)

    async def _service_counts(self) -> dict[str, Any]:
        return await self.service.child.call({"cmd": "counts"}, timeout=10)

    async def window_started(self) -> None:
        pass  # the run counts from the previous run's end (nothing is sent in between)

    async def window_ended(self) -> None:
        self._at_window_end = int((await self._service_counts())["pushes"])

    async def run_ended(
        self, accepted: array.array[int], n_base: int, window: tuple[int, int]
    ) -> PushStats:
        expected = len(accepted)
        before = self._counts
        began, last_progress, seen = time.monotonic(), time.monotonic(), -1
        while True:
            counts = await self._service_counts()
            received = int(counts["pushes"]) - int(before["pushes"])
            if received >= expected or time.monotonic() - began > PUSH_TIMEOUT:
                break
            if received != seen:
                seen, last_progress = received, time.monotonic()
            elif time.monotonic() - last_progress > PUSH_STALL:
                break
            await asyncio.sleep(0.2)  # polling another process's counter
        await asyncio.sleep(0.5)  # a duplicate or late push still on its way
        counts = await self._service_counts()
        received = int(counts["pushes"]) - int(before["pushes"])
        attempts, queue = await self._settled_metrics(received)

        wanted = Counter(subscription((n - n_base) % self.users) for n in accepted)
        got = Counter(counts["per_subscription"])
        got.subtract(before["per_subscription"])
        lost = sum(max(0, count - got[name]) for name, count in wanted.items())
        duplicates = sum(max(0, count - wanted[name]) for name, count in got.items())
        refused = Counter(counts["refused"])
        refused.subtract(before["refused"])
        outcomes = {k: int(v - self._attempts.get(k, 0.0)) for k, v in attempts.items()}
        start_ns, window_end_ns = window
        last_ns = int(counts["last_ns"])
        complete = lost == 0 and received > 0
        stats = PushStats(
            expected=expected,
            received=received,
            in_window=self._at_window_end - int(before["pushes"]),
            per_s=(self._at_window_end - int(before["pushes"])) / self.duration,
            overall_per_s=received / max(1e-9, (last_ns - start_ns) / 1e9),
            drain_s=max(0.0, (last_ns - window_end_ns) / 1e9) if complete else None,
            lost=lost,
            duplicates=duplicates,
            refused={k: v for k, v in refused.items() if v},
            outcomes={k: v for k, v in outcomes.items() if v},
            queue=queue,
        )
        self._counts, self._attempts = counts, attempts
        return stats

    async def _settled_metrics(self, received: int) -> tuple[dict[str, float], dict[str, float]]:
        """The server's counters once it recorded the sends the service saw (a send is
        counted after its answer arrived), at most 5 s later."""
        deadline = time.monotonic() + 5.0
        while True:
            attempts, queue = await server_channel_metrics(self.server_url, self.key)
            sent = attempts.get("sent", 0.0) - self._attempts.get("sent", 0.0)
            idle = not queue.get("queue_due") and not queue.get("queue_sending")
            if (sent >= received and idle) or time.monotonic() > deadline:
                return attempts, queue
            await asyncio.sleep(0.2)
