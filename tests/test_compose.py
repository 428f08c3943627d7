"""docker-compose.yml (the cluster shape, issue #15) says only what pushd understands.

A compose file is checked by nothing at run time until someone starts it: a misspelt
`PUSHD_STORAGE_URL` would leave both nodes on their own SQLite files, and a published
port that is not the one pushd listens on would answer nothing. So:

- every PUSHD_* variable set for a pushd node is a setting pushd reads, mapped through
  pushd's own environment scheme (`load_config`, which refuses an unknown
  `PUSHD_<SECTION>__<KEY>` and converts each value to the setting's type), or one of the
  few variables pushd reads by name (`os.environ.get("PUSHD_...")` in pushd/);
- every port published for a node is the port that node listens on, on every interface
  (its settings: the Dockerfile's ENV, then the compose environment), and Prometheus
  scrapes exactly the nodes, at that port;
- the storage, bus and state URLs name services of the file;
- every file the compose file mounts exists in the repository, Grafana's dashboard is
  mounted where its provider (deploy/grafana/provisioning/) loads dashboards from, and
  its data source is the Prometheus of the file;
- `docker compose config -q` (or the standalone `docker-compose`) accepts the file with
  the required secrets set and refuses it without them. Without either binary the test
  fails: scripts/services.sh installs `docker-compose` where neither is found.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]

from pushd.config.settings import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# What a user puts in .env: values of the right shape, so that load_config checks them.
SECRETS = {
    "PUSHD_ADMIN_KEY": "pk_compose_test_admin_key_0123456789abcdef",
    "PUSHD_TOKEN_SECRET": "compose-test-token-secret-0123456789abcdef0123456789",
    "PUSHD_ENCRYPTION_KEYS": '["k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]',
}
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _pushd_nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from the repository's Dockerfile."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def _interpolated(value: object) -> str:
    """A compose value with `${VAR...}` replaced as `docker compose` would with SECRETS."""
    return INTERPOLATION.sub(lambda m: SECRETS.get(m.group(1), ""), str(value))


def _dockerfile_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (the image the nodes run)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    last_stage = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for line in last_stage.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _node_environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: _interpolated(value) for name, value in service["environment"].items()}


def _variables_read_by_name() -> set[str]:
    """PUSHD_* variables pushd's code reads directly (not through the settings scheme)."""
    found: set[str] = set()
    pattern = re.compile(r"""environ(?:\.get\(|\[)\s*["'](PUSHD_[A-Z0-9_]+)["']""")
    for path in (ROOT / "pushd").rglob("*.py"):
        found.update(pattern.findall(path.read_text()))
    return found


def _node_config(service: dict[str, Any]) -> Config:
    environ = {**_dockerfile_env(), **_node_environment(service)}
    return load_config(None, environ={k: v for k, v in environ.items() if "__" in k})


def test_the_cluster_has_two_pushd_nodes_built_from_the_dockerfile() -> None:
    nodes = _pushd_nodes(_compose())
    assert len(nodes) == 2, f"pushd nodes (services with `build`): {sorted(nodes)}"
    node_ids = {_node_config(s).server.node_id for s in nodes.values()}
    assert len(node_ids) == 2, "each node needs its own PUSHD_SERVER__NODE_ID"
    assert "" not in node_ids


@pytest.mark.parametrize("node", sorted(_pushd_nodes(_compose())))
def test_every_pushd_variable_is_one_pushd_reads(node: str) -> None:
    environment = _node_environment(_pushd_nodes(_compose())[node])
    by_name = _variables_read_by_name()
    assert "PUSHD_ADMIN_KEY" in by_name  # the scan finds what it must
    for name in environment:
        assert name.startswith("PUSHD_"), f"{node}: {name} is not a pushd variable"
        if "__" not in name:
            assert name in by_name, f"{node}: pushd never reads {name}"
    # Raises ConfigError naming the variable for a setting that does not exist or a
    # value that does not fit the setting's type.
    config = _node_config(_pushd_nodes(_compose())[node])
    assert config.storage.url.startswith("postgresql://")
    assert config.bus.url.startswith("amqp://")
    assert config.state.url.startswith("redis://")
    assert config.encryption.keys, "nodes sharing a database need the same key ring"


@pytest.mark.parametrize("node", sorted(_pushd_nodes(_compose())))
def test_published_ports_are_the_ones_the_node_listens_on(node: str) -> None:
    service = _pushd_nodes(_compose())[node]
    config = _node_config(service)
    assert config.server.host == "0.0.0.0", f"{node} listens on {config.server.host} only"
    published = [str(p).rpartition(":")[2] for p in service["ports"]]
    assert published, f"{node} publishes no port"
    for container_port in published:
        assert int(container_port) == config.server.port, (
            f"{node} publishes container port {container_port}; it listens on {config.server.port}"
        )


def test_service_urls_name_services_of_the_file() -> None:
    compose = _compose()
    for node, service in _pushd_nodes(compose).items():
        config = _node_config(service)
        for url in (config.storage.url, config.bus.url, config.state.url):
            host = urlsplit(url).hostname
            assert host in compose["services"], f"{node}: {url} names no service of the file"


def test_prometheus_scrapes_every_node_at_its_port() -> None:
    compose = _compose()
    nodes = _pushd_nodes(compose)
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "pushd"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    expected = {f"{name}:{_node_config(s).server.port}" for name, s in nodes.items()}
    assert targets == expected
    assert job["metrics_path"] == "/metrics"


def test_every_mounted_file_exists() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_grafana_loads_the_dashboard_from_prometheus_of_the_file() -> None:
    compose = _compose()
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "pushd.yaml").read_text())[
        "providers"
    ]
    mounts = [str(v).split(":")[:2] for v in compose["services"]["grafana"]["volumes"]]
    (target,) = [t for source, t in mounts if source.endswith("pushd-dashboard.json")]
    assert Path(target).parent == Path(provider["options"]["path"])
    sources = [
        d
        for path in (provisioning / "datasources").glob("*.y*ml")
        for d in yaml.safe_load(path.read_text())["datasources"]
    ]
    urls = {urlsplit(d["url"]) for d in sources if d["type"] == "prometheus"}
    published = {str(p).rpartition(":")[2] for p in compose["services"]["prometheus"]["ports"]}
    assert {(u.hostname, str(u.port)) for u in urls} <= {("prometheus", p) for p in published}
    assert urls


def _compose_command() -> list[str]:
    """`docker compose` (the plugin) if it answers, else the standalone `docker-compose`."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    pytest.fail(
        "neither `docker compose` nor `docker-compose` is installed: the compose file "
        "cannot be checked (scripts/services.sh installs Debian's docker-compose)"
    )


def _compose_config(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
        env=environ,
    )


def test_docker_compose_accepts_the_file() -> None:
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    accepted = _compose_config({**base, **SECRETS})
    assert accepted.returncode == 0, accepted.stderr
    refused = _compose_config(base)
    assert refused.returncode != 0, "the secrets must be required, not defaulted"
    assert "PUSHD_ADMIN_KEY" in refused.stderr + refused.stdout
