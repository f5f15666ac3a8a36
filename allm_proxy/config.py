"""Configuration: a TOML file, environment variables and flags, resolved once at the edge.

Precedence, first that is set wins: command-line flag, `ALLM_PROXY_*`
environment variable, the config file, the default. Nothing below the CLI
reads the environment except for provider keys (`OPENAI_API_KEY`, ...),
and those are read through the `env` mapping handed to the engine.

Example `allm.toml`:

    provider = "openai"              # default provider: fake | openai | gemini
    default_model = "gpt-image-1.5"

    [server]
    host = "127.0.0.1"
    port = 8400
    max_body_mb = 50
    header_timeout = 10               # seconds for a request line and headers (slow clients: 408)
    body_timeout = 60
    max_inflight = 256                # image requests at once; more get a 503 the SDKs retry
    workers = 1                       # worker processes on the port (more than 1 needs [state] url)

    [providers.openai]
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"     # or api_key = "..." (keep real keys out of files you commit)

    [providers.gemini]
    base_url = "https://generativelanguage.googleapis.com"
    api_version = "v1beta"
    variations = "emulate"

    [models."dall-e-3"]               # an alias: existing code keeps its model name
    provider = "gemini"
    model = "gemini-3-pro-image"

    [families."gpt-image-3"]          # teach the validator a new model family
    like = "gpt-image-2"
    match = ["gpt-image-3"]

    [cassettes]
    path = "cassettes/demo.yaml"
    record_mode = "once"

    [journal]                         # what /allm/requests and the inspector page show
    enabled = true
    max_entries = 1000
    max_image_mb = 256
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from .faults.config import faults_from_mapping
from .faults.grammar import Fault
from .pricing import PriceTable
from .state.settings import StateSettings


class RecordMode(enum.StrEnum):
    """What a cassette does with a request: vcrpy's four modes plus `off` (no cassette at all).

    A `str` enum, so `RecordMode("once") == "once"` and config files, flags and
    JSON hold plain strings; `RecordMode("bogus")` raises a ValueError that
    lists the valid values.
    """

    OFF = "off"
    NONE = "none"
    ONCE = "once"
    NEW_EPISODES = "new_episodes"
    ALL = "all"

    @classmethod
    def _missing_(cls, value: object) -> NoReturn:
        raise ValueError(f"record mode {value!r} is not one of {', '.join(cls)}")


DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class ModelAlias:
    """`[models."NAME"]`: the model name a client uses, routed to a provider's model."""

    name: str
    provider: str
    model: str


@dataclass
class CassetteSettings:
    """Where and how upstream traffic is recorded and replayed."""

    path: str | None = None
    directory: str | None = None
    record_mode: str = RecordMode.ONCE  # a RecordMode after __post_init__; plain strings are accepted
    match_on: tuple[str, ...] = ("method", "scheme", "host", "port", "path", "query", "body")
    allow_playback_repeats: bool = False
    replay_timing: str = "instant"  # or "recorded"
    filter_headers: tuple[str, ...] = ()
    filter_query: tuple[str, ...] = ()
    filter_body_fields: tuple[str, ...] = ()
    # MB of answers the server keeps to answer repeats of a request whose replay is always the same
    # (one recording, repeats allowed) without running it again; 0 turns that off.
    answer_cache_mb: float = 64.0

    def __post_init__(self) -> None:
        self.record_mode = RecordMode(self.record_mode)
        if self.answer_cache_mb < 0:
            raise ValueError(f"[cassettes] answer_cache_mb must not be negative, not {self.answer_cache_mb}")
        if self.replay_timing not in ("instant", "recorded"):
            raise ValueError(f"replay timing {self.replay_timing!r} is not 'instant' or 'recorded'")

    @property
    def enabled(self) -> bool:
        return self.record_mode != RecordMode.OFF and (self.path is not None or self.directory is not None)


@dataclass(frozen=True)
class JournalSettings:
    """`[journal]`: the request journal behind `/allm/requests` and the inspector page.

    At most `max_entries` entries are kept, and at most `max_image_mb` MB of their
    image bytes (uploads and answers); past either bound the oldest go first.
    """

    enabled: bool = True
    max_entries: int = 1000
    max_image_mb: float = 256.0

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError(f"[journal] max_entries must be at least 1, not {self.max_entries}")
        if self.max_image_mb < 0:
            raise ValueError(f"[journal] max_image_mb must not be negative, not {self.max_image_mb}")


@dataclass(frozen=True)
class ServerLimits:
    """Timeouts and limits of the HTTP layer (the body size limit is `ProxyConfig.max_body_bytes`).

    `header_timeout`: the request line and headers must arrive within this many
    seconds of the connection opening (or of the previous response on a
    keep-alive connection), else the connection gets a 408 and is closed; this
    is what stops slow-loris clients, which uvicorn alone lets linger.
    `body_timeout`: the whole body must arrive within this many seconds.
    `max_inflight`: image requests handled at once; more get a 503 with
    `retry-after`, which the SDKs retry. `max_connections`: uvicorn's own
    backstop (`limit_concurrency`), counted over open connections.
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive: int = 5
    graceful_shutdown: int = 30
    max_inflight: int = 256
    max_connections: int | None = 1024


@dataclass
class ProxyConfig:
    """Everything the server and engine need, already resolved."""

    host: str = "127.0.0.1"
    port: int = 8400
    provider: str = "fake"
    default_model: str | None = None
    access_token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_level: str = "info"
    timeout: float = 600.0
    connect_timeout: float = 5.0
    file_ttl: float = 3600.0
    # Per-provider options (`[providers.NAME]`), e.g. base_url, api_key_env, variations.
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, ModelAlias] = field(default_factory=dict)
    families: dict[str, dict[str, Any]] = field(default_factory=dict)
    cassettes: CassetteSettings = field(default_factory=CassetteSettings)
    limits: ServerLimits = field(default_factory=lambda: ServerLimits())
    journal: JournalSettings = field(default_factory=JournalSettings)
    # the server-wide fault list (`[[faults]]`, `serve --fault`) and `fault_seed`
    faults: tuple[Fault, ...] = ()
    fault_seed: int | None = None
    # [state], [server] public_metrics, [prices."MODEL-OR-PREFIX"]
    state: StateSettings = field(default_factory=StateSettings)
    public_metrics: bool = False
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: int = 1  # `[server] workers`, `serve --workers N`: uvicorn worker processes

    def provider_options(self, name: str) -> dict[str, Any]:
        return dict(self.providers.get(name, {}))


_TOP_KEYS = {
    "provider",
    "default_model",
    "server",
    "providers",
    "models",
    "families",
    "cassettes",
    "timeout",
    "connect_timeout",
    "journal",
    "faults",
    "fault_seed",
    "state",
    "prices",
}
_STATE_KEYS = {"url", "prefix", "cursor_ttl", "journal_max"}
_LIMIT_KEYS = {"header_timeout", "body_timeout", "keep_alive", "graceful_shutdown", "max_inflight", "max_connections"}
_SERVER_KEYS = {
    "host",
    "port",
    "access_token",
    "max_body_mb",
    "log_level",
    "file_ttl",
    "public_metrics",
    "workers",
} | _LIMIT_KEYS


def load_config(path: str | Path | None) -> ProxyConfig:
    """Read a TOML config file (None gives the defaults). Unknown keys are errors."""
    if path is None:
        return ProxyConfig()
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    return config_from_mapping(raw, source=str(path))


def config_from_mapping(raw: Mapping[str, Any], *, source: str = "config") -> ProxyConfig:
    """A `ProxyConfig` from a parsed config file; ValueError naming the table and key for anything wrong."""
    _reject_unknown(raw, _TOP_KEYS, source)
    config = ProxyConfig()
    for key, convert in (("provider", str), ("default_model", str), ("timeout", float), ("connect_timeout", float)):
        if key in raw:
            setattr(config, key, convert(raw[key]))
    _server_from_mapping(config, raw.get("server", {}), f"{source} [server]")
    config.providers = {str(k): dict(v) for k, v in raw.get("providers", {}).items()}
    for name, alias in raw.get("models", {}).items():
        if "provider" not in alias or "model" not in alias:
            raise ValueError(f'{source} [models."{name}"] needs both provider and model')
        config.aliases[name] = ModelAlias(name=name, provider=str(alias["provider"]), model=str(alias["model"]))
    config.families = {str(k): dict(v) for k, v in raw.get("families", {}).items()}
    config.faults, config.fault_seed = faults_from_mapping(raw, source=source)
    state = dict(raw.get("state", {}))
    _reject_unknown(state, _STATE_KEYS, f"{source} [state]")
    config.state = StateSettings(**state)
    config.prices = {str(k): dict(v) for k, v in raw.get("prices", {}).items()}
    PriceTable.from_config(config.prices)  # a bad price table fails at load, naming the table
    cassettes = dict(raw.get("cassettes", {}))
    if cassettes:
        config.cassettes = cassette_settings_from_mapping(cassettes, source=f"{source} [cassettes]")
    journal = dict(raw.get("journal", {}))
    if journal:
        _reject_unknown(journal, {"enabled", "max_entries", "max_image_mb"}, f"{source} [journal]")
        config.journal = JournalSettings(**journal)
    return config


# `[server]` keys that set a config field as they are: (key, field, conversion).
_SERVER_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("host", "host", str),
    ("port", "port", int),
    ("access_token", "access_token", str),
    ("log_level", "log_level", str),
    ("file_ttl", "file_ttl", float),
    ("workers", "workers", int),
    ("public_metrics", "public_metrics", bool),
)


def _server_from_mapping(config: ProxyConfig, server: Mapping[str, Any], source: str) -> None:
    _reject_unknown(server, _SERVER_KEYS, source)
    for key, name, convert in _SERVER_FIELDS:
        if key in server:
            setattr(config, name, convert(server[key]))
    if "max_body_mb" in server:
        config.max_body_bytes = int(float(server["max_body_mb"]) * 1024 * 1024)
    limit_values = {key: server[key] for key in _LIMIT_KEYS if key in server}
    if limit_values:
        config.limits = dataclasses.replace(config.limits, **limit_values)


# The keys of a `[cassettes]` table: the settings' own fields, and `dir` for `directory`.
CASSETTE_KEYS = frozenset({f.name for f in dataclasses.fields(CassetteSettings)} | {"dir"})


def cassette_settings_from_mapping(raw: Mapping[str, Any], *, source: str = "cassettes") -> CassetteSettings:
    names = CASSETTE_KEYS
    _reject_unknown(raw, names, source)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        key = "directory" if key == "dir" else key
        if key in ("match_on", "filter_headers", "filter_query", "filter_body_fields"):
            value = tuple(value)
        values[key] = value
    return CassetteSettings(**values)


def _reject_unknown(raw: Mapping[str, Any], allowed: AbstractSet[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
