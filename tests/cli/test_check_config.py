"""`pushd check-config`: the effective configuration with each value's source, secrets
redacted, and exit 2 with the errors naming the setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

# Every test here runs `python -m pushd` in a process of its own.
pytestmark = pytest.mark.slow

SMTP_PASSWORD = "smtp-password-from-env-123"
TOKEN_SECRET = "token-secret-from-env-456"
DB_PASSWORD = "db-password-789"


def check_config(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PUSHD_")}
    return subprocess.run(
        [sys.executable, "-m", "pushd", "check-config", *argv],
        capture_output=True, text=True, timeout=60, check=False, env=environment | (env or {}),
    )  # fmt: skip


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pushd.toml"
    path.write_text(text)
    return str(path)


def test_every_value_with_its_source_and_no_secret(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[log]\nformat = "json"\n\n[[channels.email]]\nname = "relay"\n'
        'host = "smtp.example.com"\nusername = "mailer"\nfrom_address = "p@example.com"\n',
    )
    result = check_config(
        "--config", config, "--data-dir", str(tmp_path), "--format", "json",
        env={
            "PUSHD_CHANNELS__EMAIL__RELAY__PASSWORD": SMTP_PASSWORD,
            "PUSHD_AUTH__TOKEN_SECRET": TOKEN_SECRET,
            "PUSHD_STORAGE__URL": f"postgresql://pushd:{DB_PASSWORD}@db.internal/pushd",
        },
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    document, _, footer = result.stdout.rpartition("}")
    shown: dict[str, Any] = json.loads(document + "}")
    assert "configuration OK" in footer
    assert shown["log"]["format"] == {"value": "json", "source": f"file {config}"}
    assert shown["log"]["level"] == {"value": "info", "source": "default"}
    assert shown["server"]["data_dir"]["source"] == "flag --data-dir"
    assert shown["auth"]["token_secret"] == {
        "value": "<redacted>",
        "source": "env PUSHD_AUTH__TOKEN_SECRET",
    }
    assert shown["storage"]["url"]["value"] == "postgresql://pushd:***@db.internal/pushd"
    [relay] = shown["channels"]["email"]["value"]
    assert (relay["username"], relay["password"]) == ("mailer", "<redacted>")
    assert "PUSHD_CHANNELS__EMAIL__RELAY__PASSWORD" in shown["channels"]["email"]["source"]
    for secret in (SMTP_PASSWORD, TOKEN_SECRET, DB_PASSWORD):
        assert secret not in result.stdout + result.stderr


def test_toml_output_parses_back(tmp_path: Path) -> None:
    result = check_config("--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    body = result.stdout.rsplit("# configuration OK", 1)[0]
    parsed = tomllib.loads(body)
    assert parsed["server"]["port"] == 8080
    assert "# default" in result.stdout


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("[bus]\nurll = 'memory://'\n", {}, "unknown setting `bus.urll`"),
        ('[log]\nformat = "xml"\n', {}, "`log.format`"),
        ("", {"PUSHD_SERVER__PORT": "eighty"}, "setting `server.port`"),
        ('[server]\ntls_cert = "/no/such.pem"\n', {}, "server.tls_cert"),
    ],
)
def test_errors_exit_2_naming_the_setting(
    tmp_path: Path, text: str, env: dict[str, str], named: str
) -> None:
    result = check_config("--config", write_config(tmp_path, text), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not usable" in result.stdout
    assert named in result.stdout


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = check_config("--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "does not exist" in result.stdout
