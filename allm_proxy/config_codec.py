"""A resolved `ProxyConfig` as JSON and back, exactly: how `serve --workers N` hands its config to each worker.

    text = config_to_json(config)          # flags + environment + file, already merged
    assert config_from_json(text) == config

Generic over the dataclasses `ProxyConfig` is made of (read from their type
hints), so a field added to any of them travels without a change here. JSON,
not pickle: what a worker reads from its environment is data, never code.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any

from .config import ProxyConfig


def config_to_json(config: ProxyConfig) -> str:
    """`config` as one JSON object (tuples become lists, enums their values)."""
    try:
        return json.dumps(dataclasses.asdict(config), separators=(",", ":"))
    except TypeError as exc:  # e.g. a TOML datetime in a provider option
        raise ValueError(f"the resolved configuration cannot be handed to worker processes: {exc}") from None


def config_from_json(text: str) -> ProxyConfig:
    """The `ProxyConfig` that `config_to_json` wrote, rebuilt through the same constructors (and checks)."""
    config = _decode(ProxyConfig, json.loads(text))
    assert isinstance(config, ProxyConfig)
    return config


def _decode(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if kind is Any or value is None:
        return value
    if origin in (typing.Union, types.UnionType):
        choices = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _decode(choices[0], value) if len(choices) == 1 else value
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        return kind(
            **{
                f.name: _decode(hints[f.name], value[f.name])
                for f in dataclasses.fields(kind)
                if f.init and f.name in value
            }
        )
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_decode(item, v) for v in value)
    if origin is dict:
        item = typing.get_args(kind)[1]
        return {key: _decode(item, v) for key, v in value.items()}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    return value
