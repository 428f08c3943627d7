"""Configuration: defaults in these Structs, overridden by config.toml, then by
environment variables (`PUSHD_<SECTION>__<KEY>`), then by command-line flags.

config.toml at the top of the repository lists every setting with its default; a test
checks that it parses to exactly these defaults so the two cannot drift.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from storage.jsondepth import CEILING as JSON_DEPTH_CEILING

ENV_PREFIX = "PUSHD_"

Positive = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    data_dir: str = "./data"
    shutdown_timeout: PositiveFloat = 10.0
    max_body_bytes: Positive = 1_048_576
    node_id: str = ""
    uvloop: bool = True
    listen_backlog: Positive = 4096
    header_timeout: PositiveFloat = 10.0
    keepalive_timeout: PositiveFloat = 75.0
    max_connections_per_address: Annotated[int, msgspec.Meta(ge=0)] = 256
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def tls(self) -> bool:
        """Whether `pushd serve` terminates TLS itself (both files configured)."""
        return bool(self.tls_cert and self.tls_key)


class StorageConfig(_Section):
    url: str = ""
    pool_size: Positive = 10


class BusConfig(_Section):
    url: str = "memory://"
    prefetch: Positive = 256
    shards: Positive = 8


class ActorsConfig(_Section):
    mailbox_size: Positive = 1024
    idle_timeout: PositiveFloat = 60.0
    socket_queue_size: Positive = 1024
    max_attempts: Positive = 3


class AuthConfig(_Section):
    token_secret: str = ""
    token_ttl: Positive = 3600
    token_max_ttl: Positive = 86400
    token_issuer: str = "pushd"  # noqa: S105 - a claim value, not a secret
    token_audience: str = "pushd-ws"  # noqa: S105 - a claim value, not a secret
    ws_auth_timeout: PositiveFloat = 10.0
    api_key_cache_ttl: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    previous_token_secrets: list[str] = msgspec.field(default_factory=list)


class IngestConfig(_Section):
    max_batch: Positive = 512
    queue_size: Positive = 8192
    idempotency_window: PositiveFloat = 86400.0
    relay_page_size: Positive = 500
    relay_mark_interval: PositiveFloat = 1.0


class MailboxConfig(_Section):
    backlog_max_count: Positive = 10_000
    backlog_max_age: PositiveFloat = 604800.0
    replay_page_size: Positive = 200
    cursor_flush_interval: PositiveFloat = 0.5


class StateConfig(_Section):
    url: str = "memory://"
    prefix: str = "pushd:"


RecipientRate = Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]*/(second|minute|hour|day)$")]
_PER = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def parse_rate(rate: str) -> tuple[int, float]:
    """`"600/hour"` -> (600, 3600.0): at most that many per that many seconds."""
    count, _, unit = rate.partition("/")
    return int(count), _PER[unit]


class LimitsConfig(_Section):
    api_key_rate: Annotated[float, msgspec.Meta(ge=0)] = 1000.0
    api_key_burst: Annotated[int, msgspec.Meta(ge=0)] = 2000
    per_recipient: dict[str, RecipientRate] = msgspec.field(
        default_factory=lambda: {"inapp": "3600/hour"}
    )
    title_max_chars: Positive = 1024
    body_max_chars: Positive = 16384
    data_max_bytes: Positive = 16384
    json_max_depth: Annotated[int, msgspec.Meta(ge=2, le=JSON_DEPTH_CEILING)] = 32
    ws_max_frame_bytes: Positive = 65536
    max_sockets_per_user: Annotated[int, msgspec.Meta(ge=0)] = 16
    unauthenticated_rate: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    unauthenticated_burst: Annotated[int, msgspec.Meta(ge=0)] = 20


class AuditConfig(_Section):
    queue_size: Positive = 8192
    max_batch: Positive = 512
    flush_interval: Annotated[float, msgspec.Meta(ge=0)] = 0.2
    unauthenticated_window: PositiveFloat = 60.0


# `<key id>:<standard base64 of 32 bytes>`, e.g. from `openssl rand -base64 32`.
EncryptionKey = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,32}:[A-Za-z0-9+/]{43}=$")]


class EncryptionConfig(_Section):
    enabled: bool = True
    keys: list[EncryptionKey] = msgspec.field(default_factory=list)


NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]


class RetentionConfig(_Section):
    notifications_max_age: NonNegativeFloat = 7_776_000.0
    per_category: dict[str, NonNegativeFloat] = msgspec.field(default_factory=dict)
    batch_size: Positive = 1000
    interval: PositiveFloat = 300.0
    audit_max_age: NonNegativeFloat = 34_560_000.0


class OutboundConfig(_Section):
    allow_private: bool = False


class HttpConfig(_Section):
    cors_origins: list[str] = msgspec.field(default_factory=list)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    access: bool = False


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    actors: ActorsConfig = msgspec.field(default_factory=ActorsConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    mailbox: MailboxConfig = msgspec.field(default_factory=MailboxConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    outbound: OutboundConfig = msgspec.field(default_factory=OutboundConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    encryption: EncryptionConfig = msgspec.field(default_factory=EncryptionConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)

    @property
    def storage_url(self) -> str:
        """The storage URL in effect: the configured one, else SQLite in the data dir."""
        if self.storage.url:
            return self.storage.url
        return f"sqlite:///{Path(self.server.data_dir).resolve() / 'pushd.db'}"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and what is expected."""


_MSGSPEC_PATH = re.compile(r"^(?P<what>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`")


def _explain(error: msgspec.ValidationError, source: str) -> ConfigError:
    match = _MSGSPEC_PATH.match(str(error))
    assert match is not None  # the pattern accepts any string
    what, path = match["what"], match["path"] or ""
    unknown = _UNKNOWN_FIELD.match(what)
    if unknown:
        key = f"{path}.{unknown['key']}" if path else unknown["key"]
        return ConfigError(f"{source}: unknown setting `{key}` (see config.toml for every key)")
    return ConfigError(f"{source}: setting `{path}`: {what[0].lower()}{what[1:]}")


def _section_types() -> dict[str, type[_Section]]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in Config.__struct_fields__}


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`PUSHD_SERVER__PORT=9000` -> {"server": {"port": 9000}}, typed per field."""
    sections = _section_types()
    result: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        section_type = sections.get(section)
        if section_type is None or key not in section_type.__struct_fields__:
            raise ConfigError(f"environment variable {name}: no setting `{section}.{key}`")
        field_type = typing.get_type_hints(section_type, include_extras=True)[key]
        try:
            if typing.get_origin(field_type) in (list, dict):
                # Lists and tables (e.g. http.cors_origins) are given as JSON.
                value = msgspec.json.decode(raw, type=field_type)
            else:
                value = msgspec.convert(raw, field_type, strict=False)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(
                f"environment variable {name}={raw!r} (setting `{section}.{key}`): {exc}"
            ) from None
        result.setdefault(section, {})[key] = value
    return result


def _merge(base: dict[str, Any], overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in overrides.items():
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"setting `{section}` must be a table, not a value")
        target.update(values)
    return merged


def load_config(
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the configuration: defaults < `path` (TOML, optional) < environment < overrides.

    Raises `ConfigError` naming the key for an unknown setting, a wrong type, an unreadable
    file or invalid TOML.
    """
    document: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {source} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"config file {source} cannot be read: {exc.strerror}") from None
    try:
        msgspec.convert(document, Config)  # type errors in the file name the file
    except msgspec.ValidationError as exc:
        raise _explain(exc, source) from None
    env = _env_overrides(os.environ if environ is None else environ)
    merged = _merge(_merge(document, env), overrides or {})
    try:
        return msgspec.convert(merged, Config)
    except msgspec.ValidationError as exc:
        raise _explain(exc, "environment/flags") from None
