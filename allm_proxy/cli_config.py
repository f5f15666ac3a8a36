"""The flags of `serve` (and of the commands that take its options) resolved into one `ProxyConfig`.

Precedence, first that is set wins: the flag, its `ALLM_PROXY_*` environment variable (click reads
both), the config file, the default. Every bad value is one `click.UsageError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
from click.decorators import FC

from .config import ProxyConfig, cassette_settings_from_mapping, load_config
from .faults.grammar import parse_faults

# (click parameter name, environment variable) for every serve option that a
# config file can also set. Flags beat the environment, which beats the file.
ENV = {
    "host": "ALLM_PROXY_HOST",
    "port": "ALLM_PROXY_PORT",
    "provider": "ALLM_PROXY_PROVIDER",
    "default_model": "ALLM_PROXY_DEFAULT_MODEL",
    "fake_script": "ALLM_PROXY_FAKE_SCRIPT",
    "cassette": "ALLM_PROXY_CASSETTE",
    "cassette_dir": "ALLM_PROXY_CASSETTE_DIR",
    "record_mode": "ALLM_PROXY_RECORD_MODE",
    "replay_timing": "ALLM_PROXY_REPLAY_TIMING",
    "openai_base_url": "ALLM_PROXY_OPENAI_BASE_URL",
    "gemini_base_url": "ALLM_PROXY_GEMINI_BASE_URL",
    "timeout": "ALLM_PROXY_TIMEOUT",
    "access_token": "ALLM_PROXY_ACCESS_TOKEN",
    "max_body_mb": "ALLM_PROXY_MAX_BODY_MB",
    "log_level": "ALLM_PROXY_LOG_LEVEL",
    "materialize_urls": "ALLM_PROXY_MATERIALIZE_URLS",
    "gemini_api_version": "ALLM_PROXY_GEMINI_API_VERSION",
    "gemini_variations": "ALLM_PROXY_GEMINI_VARIATIONS",
    "gemini_mask_hint": "ALLM_PROXY_GEMINI_MASK_HINT",
    "gemini_max_concurrency": "ALLM_PROXY_GEMINI_MAX_CONCURRENCY",
    "gemini_safety_code": "ALLM_PROXY_GEMINI_SAFETY_CODE",
    "journal": "ALLM_PROXY_JOURNAL",
    "fault_seed": "ALLM_PROXY_FAULT_SEED",
    "state_url": "ALLM_PROXY_STATE_URL",
    "workers": "ALLM_PROXY_WORKERS",
}

# Flags that become one option of one provider: (flag name, provider, option key).
PROVIDER_FLAGS = (
    ("openai_base_url", "openai", "base_url"),
    ("gemini_base_url", "gemini", "base_url"),
    ("gemini_api_version", "gemini", "api_version"),
    ("gemini_variations", "gemini", "variations"),
    ("gemini_mask_hint", "gemini", "mask_hint"),
    ("gemini_max_concurrency", "gemini", "max_concurrency"),
    ("gemini_safety_code", "gemini", "safety_code"),
    ("fake_script", "fake", "script_path"),
)

# Flags that set a field of the config of the same meaning: (flag name, config field).
_PLAIN_FLAGS = (
    ("host", "host"),
    ("provider", "provider"),
    ("default_model", "default_model"),
    ("access_token", "access_token"),
    ("log_level", "log_level"),
    ("port", "port"),
    ("timeout", "timeout"),
    ("fault_seed", "fault_seed"),
    ("workers", "workers"),
)
# Flags that choose the cassette: (flag name, [cassettes] key).
_CASSETTE_FLAGS = (
    ("cassette", "path"),
    ("cassette_dir", "directory"),
    ("record_mode", "record_mode"),
    ("replay_timing", "replay_timing"),
)


def option(*names: str, key: str, **kwargs: Any) -> Callable[[FC], FC]:
    """A `serve` option that an `ALLM_PROXY_*` environment variable can also set."""
    return click.option(*names, envvar=ENV[key], show_envvar=True, **kwargs)


def config_option(help: str) -> Callable[[FC], FC]:
    """`--config PATH` (or `ALLM_PROXY_CONFIG`): the TOML file a command's flags are laid over."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="ALLM_PROXY_CONFIG",
        show_envvar=True,
        help=help,
    )


def resolve_config(ctx: click.Context, config_path: Path | None, flags: Mapping[str, Any]) -> ProxyConfig:
    """The config file (if any) with every flag the user gave laid over it; a usage error for any bad value."""
    from .server.workers import check_workers

    def given(name: str) -> bool:
        return flags.get(name) is not None and ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT

    try:
        config = load_config(config_path)
        _apply_settings(config, flags, given)
        _apply_providers(config, flags, given)
        _apply_cassettes(config, flags, given)
        check_workers(config)  # N > 1 without shared state: a usage error saying why
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx=ctx) from None
    return config


def _apply_settings(config: ProxyConfig, flags: Mapping[str, Any], given: Callable[[str], bool]) -> None:
    for flag, name in _PLAIN_FLAGS:
        if given(flag):
            setattr(config, name, flags[flag])
    if given("max_body_mb"):
        config.max_body_bytes = int(flags["max_body_mb"] * 1024 * 1024)
    if given("journal"):
        config.journal = dataclasses.replace(config.journal, enabled=flags["journal"])
    if flags.get("fault"):  # repeatable, no variable: it replaces the config's [[faults]]
        config.faults = parse_faults(flags["fault"], where="--fault")
    if given("state_url"):  # a URL that does not parse is a ValueError naming the form
        config.state = dataclasses.replace(config.state, url=flags["state_url"])


def _apply_providers(config: ProxyConfig, flags: Mapping[str, Any], given: Callable[[str], bool]) -> None:
    for flag, provider, key in PROVIDER_FLAGS:
        if given(flag):
            config.providers.setdefault(provider, {})[key] = flags[flag]
    if given("materialize_urls"):
        for name in ("openai", "gemini"):
            config.providers.setdefault(name, {})["materialize_urls"] = flags["materialize_urls"]


def _apply_cassettes(config: ProxyConfig, flags: Mapping[str, Any], given: Callable[[str], bool]) -> None:
    chosen = {key: flags[flag] for flag, key in _CASSETTE_FLAGS if given(flag)}
    if not chosen:
        return
    merged = dataclasses.asdict(config.cassettes)
    # A cassette file and a cassette directory exclude each other: the flag replaces the file's choice.
    if "path" in chosen:
        merged["directory"] = None
    if "directory" in chosen:
        merged["path"] = None
    config.cassettes = cassette_settings_from_mapping({**merged, **chosen}, source="flags")
