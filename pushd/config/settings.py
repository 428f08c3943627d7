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
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from pushd.channels.apns import ApnsProviderConfig
from pushd.channels.fcm import FcmProviderConfig
from pushd.channels.sms_http import HttpSmsConfig
from pushd.channels.sms_twilio import TwilioSmsConfig
from pushd.channels.smtp import SmtpProviderConfig
from pushd.channels.webhooks import WebhookConfig
from pushd.channels.webpush import WebPushProviderConfig
from pushd.config.types import ConfigError, NonNegativeFloat, Port, Positive, PositiveFloat
from pushd.config.validation_errors import ValidationFailure
from pushd.routing.categories import CategoryDefinition, slug_problem
from pushd.routing.plan import PlanStep
from pushd.routing.quiet_hours import ClockTime, QuietHours
from storage.jsondepth import CEILING as JSON_DEPTH_CEILING

# The shared value types and the error are re-exported: outside pushd/channels/,
# `pushd.config` stays the place to import them from.
__all__ = [
    "ChannelsConfig",
    "Config",
    "ConfigError",
    "NonNegativeFloat",
    "Port",
    "Positive",
    "PositiveFloat",
    "load_config",
]

ENV_PREFIX = "PUSHD_"


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


class SseConfig(_Section):
    heartbeat_interval: PositiveFloat = 15.0


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
    batch_max_items: Positive = 1000


class SchedulerConfig(_Section):
    poll_interval: PositiveFloat = 0.2
    batch_size: Positive = 500


class AudiencesConfig(_Section):
    chunk_size: Positive = 500
    max_sends_in_flight: Positive = 2
    lease_seconds: PositiveFloat = 30.0
    poll_interval: PositiveFloat = 5.0
    count_max: Positive = 100_000


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


class MetricsConfig(_Section):
    hot_path: bool = True


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    access: bool = False
    format: Literal["text", "json"] = "text"


class TwilioSmsProvider(TwilioSmsConfig, tag="twilio", tag_field="kind"):
    """`[[channels.sms]]` with `kind = "twilio"`."""


class HttpSmsProvider(HttpSmsConfig, tag="http", tag_field="kind"):
    """`[[channels.sms]]` with `kind = "http"`."""


SmsProvider = TwilioSmsProvider | HttpSmsProvider

PROVIDER_CHANNELS: Final = ("email", "webpush", "fcm", "apns", "sms")
"""The `[[channels.<channel>]]` arrays of providers, each in fallback order."""

PROVIDER_SECRETS: Final[Mapping[str, tuple[str, ...]]] = {
    "email": ("password",),
    "webpush": ("vapid_private_key",),
    "fcm": ("service_account_json",),
    "apns": ("private_key",),
    "sms": ("auth_token", "auth_value"),
}
"""The provider settings that may come from the environment:
`PUSHD_CHANNELS__<CHANNEL>__<PROVIDER NAME>__<SETTING>`."""

_CATEGORY_OR_DEFAULT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class ChannelsConfig(_Section):
    poll_interval: PositiveFloat = 1.0
    batch_size: Positive = 100
    lease_seconds: Annotated[float, msgspec.Meta(ge=1)] = 60.0
    max_attempts: Positive = 10
    max_age: PositiveFloat = 86_400.0
    backoff_base: PositiveFloat = 5.0
    backoff_cap: PositiveFloat = 900.0
    concurrency: Positive = 20
    breaker_failures: Positive = 5
    breaker_failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    breaker_window: Positive = 20
    breaker_cool_down: PositiveFloat = 30.0
    shutdown_timeout: NonNegativeFloat = 5.0
    yield_backlog: Annotated[int, msgspec.Meta(ge=0)] = 64
    yield_sends: Positive = 2
    yield_lag: NonNegativeFloat = 0.02
    public_url: str = ""
    plans: dict[str, list[PlanStep]] = msgspec.field(default_factory=dict)
    email: list[SmtpProviderConfig] = msgspec.field(default_factory=list)
    webpush: list[WebPushProviderConfig] = msgspec.field(default_factory=list)
    fcm: list[FcmProviderConfig] = msgspec.field(default_factory=list)
    apns: list[ApnsProviderConfig] = msgspec.field(default_factory=list)
    sms: list[SmsProvider] = msgspec.field(default_factory=list)
    webhook: WebhookConfig = msgspec.field(default_factory=WebhookConfig)

    def __post_init__(self) -> None:
        if self.backoff_cap < self.backoff_base:
            raise ValueError("backoff_cap must be at least backoff_base")
        if self.public_url and not re.fullmatch(r"https://[^\s/?#]+(/[^\s?#]*)?", self.public_url):
            raise ValueError(
                "public_url must be the https:// URL pushd is reached at from the "
                "internet, without query or fragment (unsubscribe links start with it)"
            )
        for category in self.plans:
            if not _CATEGORY_OR_DEFAULT.match(category):
                raise ValueError(
                    f'plans: {category!r} is not a category (lower-case slug) nor "default"'
                )
        for channel in PROVIDER_CHANNELS:
            names = [provider.name for provider in getattr(self, channel)]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise ValueError(f"{channel}: provider names used twice: {twice}")


class RoutingConfig(_Section):
    mandatory_categories: list[str] = msgspec.field(default_factory=list)
    default_timezone: str = "UTC"
    quiet_hours: QuietHours | Literal["off"] = "off"
    allow_unknown_categories: bool = True
    categories_refresh_interval: PositiveFloat = 5.0
    categories: dict[str, CategoryDefinition] = msgspec.field(default_factory=dict)
    # Delivery optimisation (pushd/routing/engagement.py).
    engagement_lookback: PositiveFloat = 2_592_000.0
    engagement_min_reads: Annotated[int, msgspec.Meta(ge=1)] = 10
    best_hour_default: ClockTime = "09:00"

    def __post_init__(self) -> None:
        for slug, definition in self.categories.items():
            problem = slug_problem(slug)
            if problem is None:
                found = definition.problem()
                problem = None if found is None else f"{found[1]}: {found[0]}"
            if problem is not None:
                raise ValueError(f"categories.{slug}: {problem}")
        for category in self.mandatory_categories:
            if not _CATEGORY_OR_DEFAULT.match(category) or category == "default":
                raise ValueError(
                    f"mandatory_categories: {category!r} is not a category (lower-case slug)"
                )
        try:
            ZoneInfo(self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"default_timezone: unknown time zone {self.default_timezone!r}: use an "
                "IANA name such as Europe/Paris"
            ) from None


class PreferenceCenterConfig(_Section):
    link_max_age: NonNegativeFloat = 7_776_000.0


class TemplatesConfig(_Section):
    """Bounds of notification templates (pushd/routing/templates.py)."""

    max_source_bytes: Positive = 65_536
    max_output_bytes: Positive = 262_144
    render_timeout: PositiveFloat = 0.05
    cache_size: Positive = 256


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    actors: ActorsConfig = msgspec.field(default_factory=ActorsConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    sse: SseConfig = msgspec.field(default_factory=SseConfig)
    ingest: IngestConfig = msgspec.field(default_factory=IngestConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    audiences: AudiencesConfig = msgspec.field(default_factory=AudiencesConfig)
    mailbox: MailboxConfig = msgspec.field(default_factory=MailboxConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    outbound: OutboundConfig = msgspec.field(default_factory=OutboundConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    encryption: EncryptionConfig = msgspec.field(default_factory=EncryptionConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    channels: ChannelsConfig = msgspec.field(default_factory=ChannelsConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    templates: TemplatesConfig = msgspec.field(default_factory=TemplatesConfig)
    preference_center: PreferenceCenterConfig = msgspec.field(
        default_factory=PreferenceCenterConfig
    )

    @property
    def storage_url(self) -> str:
        """The storage URL in effect: the configured one, else SQLite in the data dir."""
        if self.storage.url:
            return self.storage.url
        return f"sqlite:///{Path(self.server.data_dir).resolve() / 'pushd.db'}"


def _explain(error: msgspec.ValidationError, source: str) -> ConfigError:
    failure = ValidationFailure.of(error)
    if failure.field_problem == "unknown":
        return ConfigError(
            f"{source}: unknown setting `{failure.field_path}` (see config.toml for every key)"
        )
    what = failure.what
    return ConfigError(f"{source}: setting `{failure.path}`: {what[0].lower()}{what[1:]}")


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
        if section == "channels" and "__" in key:
            continue  # a provider's secret (_provider_secrets)
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
            # Provider lists given as JSON hold secrets: never echoed.
            shown = name if section == "channels" else f"{name}={raw!r}"
            raise ConfigError(
                f"environment variable {shown} (setting `{section}.{key}`): {exc}"
            ) from None
        result.setdefault(section, {})[key] = value
    return result


class _ProviderSecret(typing.NamedTuple):
    variable: str
    channel: str
    provider: str
    """The provider's name as the variable spells it (`env_name`)."""
    setting: str
    value: str


def env_name(provider: str) -> str:
    """How `PUSHD_CHANNELS__<CHANNEL>__<PROVIDER>__<SETTING>` spells a provider's name:
    upper case, every character other than A-Z and 0-9 as `_`."""
    return re.sub(r"[^A-Z0-9]", "_", provider.upper())


def _provider_secrets(environ: Mapping[str, str]) -> list[_ProviderSecret]:
    prefix = f"{ENV_PREFIX}CHANNELS__"
    secrets = []
    for name, value in environ.items():
        parts = name.removeprefix(prefix).split("__") if name.startswith(prefix) else []
        if len(parts) < 2:
            continue  # not the channels section, or one of its own settings
        channel, provider, setting = [*parts, "", ""][:3]
        allowed = PROVIDER_SECRETS.get(channel.lower(), ())
        if len(parts) != 3 or setting.lower() not in allowed:
            raise ConfigError(
                f"environment variable {name}: a provider setting from the environment is "
                "PUSHD_CHANNELS__<CHANNEL>__<PROVIDER NAME>__<SETTING>, for these settings "
                f"only: {', '.join(f'{c}.{s}' for c, ss in PROVIDER_SECRETS.items() for s in ss)}"
            )
        secrets.append(_ProviderSecret(name, channel.lower(), provider, setting.lower(), value))
    return secrets


def _with_provider_secrets(
    document: dict[str, Any], secrets: list[_ProviderSecret], *, strict: bool
) -> dict[str, Any]:
    """`document` with each secret set on the provider it names (a copy; the providers
    themselves come from the file, or from a JSON `PUSHD_CHANNELS__<CHANNEL>`). `strict`:
    a secret for a provider not configured is an error."""
    channels = document.get("channels", {})
    if not secrets or not isinstance(channels, dict):
        return document
    channels = dict(channels)
    for secret in secrets:
        listed = channels.get(secret.channel, [])
        # Copies: the caller's document stays as it was. A malformed list is left for
        # validation to name.
        listed = listed if isinstance(listed, list) else []
        entries = [dict(e) if isinstance(e, dict) else e for e in listed]
        named = [
            e
            for e in entries
            if isinstance(e, dict) and env_name(str(e.get("name", ""))) == secret.provider
        ]
        if not named and strict:
            raise ConfigError(
                f"environment variable {secret.variable}: no [[channels.{secret.channel}]] "
                f"provider is named {secret.provider} (a provider's `name` in upper case, "
                "every character other than A-Z and 0-9 as _)"
            )
        for entry in named:
            entry[secret.setting] = secret.value
        if entries:
            channels[secret.channel] = entries
    return {**document, "channels": channels}


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
    environ = os.environ if environ is None else environ
    secrets = _provider_secrets(environ)
    try:
        # Type errors in the file name the file (with the secrets it may leave out).
        msgspec.convert(_with_provider_secrets(document, secrets, strict=False), Config)
    except msgspec.ValidationError as exc:
        raise _explain(exc, source) from None
    env = _env_overrides(environ)
    merged = _merge(_merge(document, env), overrides or {})
    merged = _with_provider_secrets(merged, secrets, strict=True)
    try:
        return msgspec.convert(merged, Config)
    except msgspec.ValidationError as exc:
        raise _explain(exc, "environment/flags") from None
