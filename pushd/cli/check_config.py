"""`pushd check-config`: the configuration `pushd serve` would run with, each value with
its source (file, environment, flag or default) and secrets redacted, then what is wrong
with it. Exit 0 when it is usable, 2 (with the errors, naming the setting) when not.

The configuration is loaded exactly as `serve` loads it (pushd/config/settings.py); the
sources are worked out beside it from the same inputs: the file's tables, the
`PUSHD_<SECTION>__<KEY>` and `PUSHD_CHANNELS__<CHANNEL>__<PROVIDER>__<SETTING>`
variables, and the flags.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from pushd.config.settings import ENV_PREFIX, Config, ConfigError, load_config
from pushd.ops.logs import without_url_password
from pushd.process.key_ring import parse_keys
from pushd.process.tls import server_tls

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 2

REDACTED: Final = "<redacted>"
SECRET_SETTINGS: Final = frozenset(
    {
        "password",
        "token_secret",
        "previous_token_secrets",
        "keys",
        "vapid_private_key",
        "service_account_json",
        "private_key",
        "auth_token",
        "auth_value",
        "secret",
    }
)
"""Settings whose value is never printed (only whether one is set)."""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `check-config` to the `pushd` parser."""
    check: argparse.ArgumentParser = commands.add_parser(
        "check-config",
        help="print the effective configuration with its sources, and what is wrong",
        description="Load the configuration as `pushd serve` would (defaults < file < "
        "environment < flags) and print every setting with where its value came from. "
        "Secrets are shown as <redacted>, URL passwords as ***.",
        epilog="exit codes: 0 the configuration is usable; 2 it is not (each error names "
        "the setting).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--config", help="TOML file (default: $PUSHD_CONFIG, else built-in defaults)"
    )
    check.add_argument("--data-dir", help="as for serve")
    check.add_argument("--storage-url", help="as for serve")
    check.add_argument("--format", choices=["toml", "json"], default="toml", dest="output")
    check.set_defaults(standalone=run)
    return check


def _flags(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    flags: dict[str, dict[str, Any]] = {}
    if args.data_dir is not None:
        flags.setdefault("server", {})["data_dir"] = args.data_dir
    if args.storage_url is not None:
        flags.setdefault("storage", {})["url"] = args.storage_url
    return flags


def problems(config: Config) -> list[str]:
    """What `serve` would refuse beyond the settings' own types: the encryption keys and
    the TLS files."""
    found = []
    for check in (lambda: parse_keys(config.encryption.keys), lambda: server_tls(config)):
        try:
            check()
        except ConfigError as exc:
            found.append(str(exc))
    return found


def sources(
    path: str | None,
    environ: Mapping[str, str],
    flags: Mapping[str, Mapping[str, Any]],
) -> dict[str, str]:
    """`"section.key"` -> where its value comes from, for every setting not a default.
    A provider's secret from the environment is `"channels.<channel>.<NAME>.<setting>"`."""
    found: dict[str, str] = {}
    if path is not None:
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            document = {}
        for section, values in document.items():
            for key in values if isinstance(values, dict) else ():
                found[f"{section}.{key}"] = f"file {path}"
    for name in environ:
        parts = name.removeprefix(ENV_PREFIX).lower().split("__")
        if name.startswith(ENV_PREFIX) and len(parts) in (2, 4):
            found[".".join(parts)] = f"env {name}"
    for section, values in flags.items():
        for key in values:
            found[f"{section}.{key}"] = "flag --" + key.replace("_", "-")
    return found


def _redacted(value: Any, key: str = "") -> Any:
    if key in SECRET_SETTINGS:
        return REDACTED if value else value
    if isinstance(value, dict):
        return {k: _redacted(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if isinstance(value, str):
        return without_url_password(value)
    return value


def effective(config: Config, origins: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Every section's settings: {"value": redacted value, "source": ...}."""
    shown: dict[str, dict[str, Any]] = {}
    for section, values in msgspec.to_builtins(config).items():
        shown[section] = {
            key: {
                "value": _redacted(value, key),
                "source": origins.get(f"{section}.{key}", "default"),
            }
            for key, value in values.items()
        }
    for name, origin in origins.items():
        parts = name.split(".")
        if parts[0] == "channels" and len(parts) == 4:  # a provider secret from env
            channel, provider, setting = parts[1:]
            entry = shown["channels"].get(channel)
            if entry is not None:
                entry["source"] += f"; {provider.upper()}.{setting} from {origin}"
    return shown


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return msgspec.json.encode(value).decode()


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum()
    return key if bare else msgspec.json.encode(key).decode()


def as_toml(shown: Mapping[str, Mapping[str, Any]]) -> str:
    """The effective configuration as TOML, each value's source in a comment."""
    lines = []
    for section, values in shown.items():
        lines.append(f"[{section}]")
        for key, entry in values.items():
            lines.append(f"{key} = {_toml_value(entry['value'])}  # {entry['source']}")
        lines.append("")
    return "\n".join(lines)


async def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Check; return the exit code. (Async only to share the CLI's dispatch.)"""
    path = args.config or os.environ.get("PUSHD_CONFIG")
    flags = _flags(args)
    try:
        config = load_config(path, overrides=flags)
    except ConfigError as exc:
        say(f"pushd: the configuration is not usable:\n  - {exc}")
        return EXIT_CONFIG
    shown = effective(config, sources(path, os.environ, flags))
    if args.output == "json":
        say(msgspec.json.format(msgspec.json.encode(shown), indent=2).decode())
    else:
        say(as_toml(shown))
    found = problems(config)
    if found:
        say("pushd: the configuration is not usable:\n" + "\n".join(f"  - {p}" for p in found))
        return EXIT_CONFIG
    say(f"# configuration OK (source: {path or 'built-in defaults'})")
    return EXIT_OK
