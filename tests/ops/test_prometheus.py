"""A real Prometheus scrapes a real pushd: every series of docs/metrics.md reaches it, and
every PromQL expression of the Grafana dashboard parses and names exported series.

Debian's `prometheus` (scripts/services.sh installs it) runs with its own config,
storage and port in the test's tmp dir, scraping `pushd serve` every second with the
API key as bearer token. pushd gets an email provider (a local SMTP server) so that the
channel series exist; the traffic covers users, a token, a WebSocket receiving, sends
(in-app and email), a 404 and a 429. Series whose labels are known up front are exported
at 0 before their first event (docs/metrics.md), and are checked as present like the
others. Both processes are ended by their PID.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.channels.smtp_server import LocalSmtpServer, RecordingHandler
from tests.ops.test_metrics import catalogue
from tests.process.server_process import ServerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "pushd-dashboard.json"

ADMIN_KEY = "pk_prometheus_test_admin_key_0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
TOKEN_SECRET = "prometheus-test-token-secret-0123456789abcdefghijklmnop"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
TIMEOUT = aiohttp.ClientTimeout(total=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape_config(target: str) -> str:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "pushd",
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "metrics_path": "/metrics",
                "authorization": {"credentials": ADMIN_KEY},
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    return json.dumps(config)  # YAML is a superset of JSON


class Prometheus:
    """A started `prometheus`, its HTTP API at `url`."""

    def __init__(self, process: asyncio.subprocess.Process, url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    async def query(self, session: aiohttp.ClientSession, expr: str) -> dict[str, Any]:
        async with session.get(f"{self.url}/api/v1/query", params={"query": expr}) as response:
            answer: dict[str, Any] = await response.json()
            return answer

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)  # by its PID: started here
            try:
                async with asyncio.timeout(20):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_prometheus(tmp_path: Path, target: str) -> Prometheus:
    binary = shutil.which("prometheus")
    assert binary is not None, (
        "the prometheus binary is missing: run scripts/services.sh (apt-get install prometheus)"
    )
    config, data, log = tmp_path / "prometheus.yml", tmp_path / "tsdb", tmp_path / "prom.log"
    await asyncio.to_thread(config.write_text, scrape_config(target), "utf-8")
    port = free_port()
    log_file = await asyncio.to_thread(log.open, "wb")
    try:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log_file,
            stderr=log_file,
        )
    finally:
        log_file.close()
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}", log)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for _ in range(300):
            if process.returncode is not None:
                text = await asyncio.to_thread(log.read_text, "utf-8", "replace")
                raise AssertionError(f"prometheus exited at start-up:\n{text}")
            try:
                async with session.get(f"{prometheus.url}/-/ready") as response:
                    if response.status == 200:
                        return prometheus
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    await prometheus.stop()
    raise AssertionError("prometheus was not ready within 30 s")


@pytest.fixture
async def smtp() -> AsyncIterator[LocalSmtpServer]:
    server = LocalSmtpServer(RecordingHandler())
    await server.start()
    yield server
    await server.stop()


def pushd_env(smtp_port: int) -> dict[str, str]:
    provider = {
        "name": "local-relay",
        "host": "127.0.0.1",
        "port": smtp_port,
        "security": "none",
        "from_address": "pushd@example.com",
        "timeout": 2.0,
    }
    return {
        "PUSHD_ADMIN_KEY": ADMIN_KEY,
        "PUSHD_AUTH__TOKEN_SECRET": TOKEN_SECRET,
        "PUSHD_CHANNELS__EMAIL": json.dumps([provider]),
        "PUSHD_CHANNELS__POLL_INTERVAL": "0.1",
        # Two failed authentications per address, then 429 (the traffic's 429).
        "PUSHD_LIMITS__UNAUTHENTICATED_BURST": "2",
        "PUSHD_LIMITS__UNAUTHENTICATED_RATE": "0.01",
    }


async def traffic(session: aiohttp.ClientSession, url: str) -> None:
    """Users, a token, a WebSocket receiving, sends, a 404 and a 429."""
    body = {"external_id": "prometheus-user", "email": "someone@example.com"}
    async with session.post(f"{url}/api/users", json=body, headers=AUTH) as response:
        assert response.status == 201, await response.text()
        user_id = (await response.json())["id"]
    async with session.get(f"{url}/api/users/{user_id}", headers=AUTH) as response:
        assert response.status == 200
    async with session.post(f"{url}/api/users/{user_id}/tokens", json=None, headers=AUTH) as r:
        assert r.status == 201, await r.text()
        token = (await r.json())["token"]
    ws_url = url.replace("http", "ws", 1) + "/ws"
    async with session.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "auth", "token": token})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        for index in range(3):
            send = {"user_id": user_id, "title": f"hello {index}"}
            if index == 2:
                send["channels"] = [{"channel": "email"}]
            async with session.post(f"{url}/api/notifications", json=send, headers=AUTH) as r:
                assert r.status == 202, await r.text()
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "notification", frame
    async with session.get(f"{url}/api/no-such-route/{user_id}", headers=AUTH) as response:
        assert response.status == 404
    statuses = []
    for _ in range(4):
        bad = {"Authorization": "Bearer pk_not_a_key_of_this_server_0123456789abcdef"}
        async with session.get(f"{url}/api/users", headers=bad) as response:
            statuses.append(response.status)
    assert 429 in statuses, statuses


def exported_names(answer: dict[str, Any]) -> set[str]:
    assert answer["status"] == "success", answer
    return {sample["metric"]["__name__"] for sample in answer["data"]["result"]}


def series_names(name: str, kind: str) -> list[str]:
    """The series Prometheus stores for a metric of the catalogue."""
    return [name + suffix for suffix in HISTOGRAM_SUFFIXES] if kind == "histogram" else [name]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            expressions += [target["expr"] for target in inner.get("targets", [])]
    return expressions


async def wait_for(
    prometheus: Prometheus, session: aiohttp.ClientSession, expr: str, what: str
) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for _ in range(150):
        answer = await prometheus.query(session, expr)
        if answer.get("status") == "success" and answer["data"]["result"]:
            return answer
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: {expr!r} never returned a sample; last answer {answer}")


async def test_prometheus_scrapes_every_documented_series(
    tmp_path: Path, smtp: LocalSmtpServer
) -> None:
    catalogue_series = catalogue()
    assert len(catalogue_series) > 40  # the doc's table was parsed
    server = await ServerProcess.start(tmp_path / "pushd", env=pushd_env(smtp.port))
    async with server, aiohttp.ClientSession(timeout=TIMEOUT) as session:
        prometheus = await start_prometheus(tmp_path, urlsplit(server.url).netloc)
        try:
            await traffic(session, server.url)
            await wait_for(prometheus, session, 'up{job="pushd"} == 1', "pushd scraped")
            # A scrape taken after the traffic (its last request was the 429).
            await wait_for(
                prometheus,
                session,
                'pushd_http_requests_total{status="429"} > 0',
                "the traffic's 429 scraped",
            )
            await wait_for(
                prometheus,
                session,
                'pushd_channel_attempts_total{channel="email",outcome="sent"} > 0',
                "the email send scraped",
            )
            exported = exported_names(
                await prometheus.query(session, 'count by (__name__) ({__name__=~"pushd_.+"})')
            )
            missing = [
                series
                for name, kind in catalogue_series
                for series in series_names(name, kind)
                if series not in exported
            ]
            assert not missing, f"series of docs/metrics.md Prometheus does not have: {missing}"

            # Route templates, never raw paths; the 404 under `unmatched`.
            routes = await prometheus.query(session, "count by (route) (pushd_http_requests_total)")
            labels = {sample["metric"]["route"] for sample in routes["data"]["result"]}
            assert "/api/users/{userId}" in labels, labels
            assert "unmatched" in labels, labels
            assert not [label for label in labels if "usr_" in label], labels
            delivered = await prometheus.query(session, "pushd_delivery_latency_seconds_count")
            assert float(delivered["data"]["result"][0]["value"][1]) >= 3

            failures = []
            for expr in dashboard_expressions():
                answer = await prometheus.query(session, expr)
                if answer.get("status") != "success":
                    failures.append(f"{expr!r}: {answer.get('error')}")
                    continue
                unknown = set(re.findall(r"\bpushd_\w+", expr)) - exported
                if unknown:
                    failures.append(f"{expr!r} names series pushd does not export: {unknown}")
            assert not failures, "dashboard expressions:\n" + "\n".join(failures)
        finally:
            await prometheus.stop()
        assert await server.stop() == 0, server.log()
