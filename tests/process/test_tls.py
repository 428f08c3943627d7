"""`pushd serve` terminating TLS itself: a real process with a self-signed certificate
made for the test, reached over HTTPS and WSS."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.process.server_process import ServerProcess

ADMIN_KEY = "pk_tls_test_admin_key_0123456789abcdefghijklmn"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}

pytestmark = pytest.mark.slow


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM), made by openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


async def test_serve_speaks_https_and_wss(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    env = {
        "PUSHD_SERVER__TLS_CERT": str(cert),
        "PUSHD_SERVER__TLS_KEY": str(key),
        "PUSHD_ADMIN_KEY": ADMIN_KEY,
    }
    trust = ssl.create_default_context(cafile=str(cert))
    async with (
        await ServerProcess.start(tmp_path / "data", env=env) as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session,
    ):
        assert server.url.startswith("https://"), server.log()
        async with session.get(f"{server.url}/api/healthcheck") as response:
            assert response.status == 200
            assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        async with session.post(f"{server.url}/api/users", json={}, headers=AUTH) as response:
            user_id = (await response.json())["id"]
        async with session.post(f"{server.url}/api/users/{user_id}/tokens", headers=AUTH) as r:
            token = (await r.json())["token"]
        wss = server.url.replace("https://", "wss://")
        async with session.ws_connect(f"{wss}/ws") as ws:
            await ws.send_json({"type": "auth", "token": token})
            welcome = await ws.receive_json(timeout=10)
            assert welcome["type"] == "welcome"
            assert welcome["user_id"] == user_id
        # Plain HTTP to the TLS port is not served.
        plain = server.url.replace("https://", "http://")
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{plain}/api/healthcheck") as response:
                await response.read()


def test_a_certificate_without_its_key_stops_with_exit_2(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    result = _serve_with(tmp_path, {"PUSHD_SERVER__TLS_CERT": str(certificate[0])})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "server.tls_key" in result.stdout


def test_an_unusable_certificate_stops_with_exit_2(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    result = _serve_with(
        tmp_path, {"PUSHD_SERVER__TLS_CERT": str(bogus), "PUSHD_SERVER__TLS_KEY": str(bogus)}
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "server.tls_cert" in result.stdout


def _serve_with(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `pushd serve` with only `env` (and PATH) set; it is expected to stop by itself."""
    return subprocess.run(
        [sys.executable, "-m", "pushd", "serve", "--data-dir", str(data_dir), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
