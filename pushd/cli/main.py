"""The `pushd` command: `serve` runs the server, `migrate` upgrades the database, `keys`
manages API keys (pushd/cli/api_keys.py), `rekey` re-encrypts under the active encryption key
(pushd/cli/rekey.py), `seed` fills a database with test data (pushd/cli/seed.py),
`check-config` explains the configuration (pushd/cli/check_config.py); `send`, `users` and
`status` talk to a running server (pushd/cli/send.py, users.py, status.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiohttp import web

from pushd.app import Identity, build_app
from pushd.cli import api_keys as cli_keys
from pushd.cli import check_config as cli_check_config
from pushd.cli import rekey as cli_rekey
from pushd.cli import seed as cli_seed
from pushd.cli import send as cli_send
from pushd.cli import status as cli_status
from pushd.cli import users as cli_users
from pushd.config.settings import Config, ConfigError, load_config
from pushd.ops import logs
from pushd.process import datadir, http_server, interpreter
from pushd.process.key_ring import parse_keys
from pushd.process.tls import server_tls
from storage import StorageError, open_storage

log = logging.getLogger("pushd")

EXIT_CONFIG = 2
EXIT_STARTUP = 1
EXIT_FORCED_SHUTDOWN = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pushd", description="Self-hosted notification server.")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config", help="TOML file (default: $PUSHD_CONFIG, else built-in defaults)"
        )
        sub.add_argument("--data-dir", help="where the SQLite file, node id and secrets live")
        sub.add_argument("--storage-url", help="sqlite:///path.db or postgresql://user@host/db")
        sub.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    serve = commands.add_parser("serve", help="run the HTTP + WebSocket server")
    common(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080; 0 picks a free one)")
    serve.add_argument("--bus-url", help="memory:// or amqp://user:pass@host:5672/vhost")
    migrate = commands.add_parser("migrate", help="bring the database schema up to date and exit")
    common(migrate)
    cli_keys.add_parser(commands, common)
    cli_rekey.add_parser(commands, common)
    cli_seed.add_parser(commands, common)
    # These set `standalone`: they load no configuration before running (check-config
    # loads it itself, to report what is wrong with it; the others talk to a server).
    cli_check_config.add_parser(commands)
    cli_send.add_parser(commands)
    cli_users.add_parser(commands)
    cli_status.add_parser(commands)
    return parser


def _flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    flags = {
        ("server", "host"): getattr(args, "host", None),
        ("server", "port"): getattr(args, "port", None),
        ("server", "data_dir"): args.data_dir,
        ("storage", "url"): args.storage_url,
        ("bus", "url"): getattr(args, "bus_url", None),
        ("log", "level"): args.log_level,
    }
    overrides: dict[str, dict[str, Any]] = {}
    for (section, key), value in flags.items():
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return overrides


def _print(message: str) -> None:
    print(message, flush=True)


def _announce_admin_key(key: str) -> None:
    _print(f"admin API key (shown once, store it now): {key}")


async def _serve(
    config: Config, identity: Identity, token_secret: str, tls: ssl.SSLContext | None = None
) -> int:
    app = build_app(config, identity=identity, token_secret=token_secret)
    # Handlers go in before anything can announce readiness: a supervisor that sends
    # SIGTERM right after seeing "listening" must get a clean shutdown, not a kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = http_server.app_runner(
        app,
        config.server,
        handle_signals=False,
        shutdown_timeout=config.server.shutdown_timeout / 2,
        access_log=logging.getLogger("aiohttp.access") if config.log.access else None,
    )
    try:
        await runner.setup()
    except StorageError as exc:
        _print(f"pushd: cannot start: {exc}")
        return EXIT_STARTUP
    except ConfigError as exc:  # a channel provider that cannot be built (its key files)
        _print(f"pushd: config error: {exc}")
        return EXIT_CONFIG
    site = web.TCPSite(
        runner,
        config.server.host,
        config.server.port,
        ssl_context=tls,
        backlog=config.server.listen_backlog,
    )
    try:
        await site.start()
    except OSError as exc:
        _print(f"pushd: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}")
        await runner.cleanup()
        return EXIT_STARTUP
    storage_kind, bus_kind = config.storage_url.split(":", 1)[0], config.bus.url.split(":", 1)[0]
    scheme = "https" if tls is not None else "http"
    interpreter.freeze_startup_objects()
    for host, port, *_ in runner.addresses:
        _print(
            f"pushd listening on {scheme}://{host}:{port} "
            f"(storage: {storage_kind}, bus: {bus_kind})"
        )

    await stop.wait()
    _print("pushd: shutting down")
    try:
        await asyncio.wait_for(runner.cleanup(), timeout=config.server.shutdown_timeout)
    except TimeoutError:
        _print(
            f"pushd: shutdown took longer than {config.server.shutdown_timeout}s; stopped anyway"
        )
        return EXIT_FORCED_SHUTDOWN
    _print("pushd: stopped")
    return 0


async def _migrate(config: Config) -> int:
    storage = await open_storage(config.storage_url, pool_size=1)
    try:
        before = await storage.schema_version()
        after = await storage.migrate()
    finally:
        await storage.close()
    _print(
        f"schema version {before} -> {after}"
        if after != before
        else f"schema already at version {after}"
    )
    return 0


def _loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when enabled and installed: the same asyncio semantics, with the socket and
    timer machinery in C, which is most of a notification server's per-message cost."""
    if not config.server.uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


_CONFIGURED: dict[
    str, Callable[[Config, argparse.Namespace, Callable[[str], None]], Coroutine[Any, Any, int]]
] = {"keys": cli_keys.run, "rekey": cli_rekey.run, "seed": cli_seed.run}
"""The commands that run on the loaded configuration, besides serve and migrate."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pushd` console script."""
    args = _parser().parse_args(argv)
    standalone = getattr(args, "standalone", None)
    if standalone is not None:
        logs.configure("warning", "text")
        code: int = asyncio.run(standalone(args, _print))
        return code
    config_path = args.config or os.environ.get("PUSHD_CONFIG")
    try:
        config = load_config(config_path, overrides=_flag_overrides(args))
        parse_keys(config.encryption.keys)  # a bad key stops start-up here, named
        # Certificate files are read here, before the loop runs.
        tls = server_tls(config) if args.command == "serve" else None
    except ConfigError as exc:
        _print(f"pushd: config error: {exc}")
        return EXIT_CONFIG
    logs.configure(config.log.level, config.log.format)
    node_id = None
    if args.command == "serve":
        # Files in the data dir are read here, before the loop runs; reading them may log.
        node_id = datadir.node_id(config)
        logs.configure(config.log.level, config.log.format, node_id)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
            if args.command == "serve":
                admin_key = os.environ.get("PUSHD_ADMIN_KEY") or None
                identity = Identity(node_id or "", admin_key, _announce_admin_key)
                interpreter.tune_for_serving()
                return runner.run(_serve(config, identity, datadir.token_secret(config), tls))
            configured = _CONFIGURED.get(args.command)
            if configured is not None:
                return runner.run(configured(config, args, _print))
            return runner.run(_migrate(config))
    except StorageError as exc:
        _print(f"pushd: {exc}")
        return EXIT_STARTUP
