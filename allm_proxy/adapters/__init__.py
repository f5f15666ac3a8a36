"""The adapter registry: built-in providers register exactly as third-party ones do.

Built-ins (`fake`, `openai`, `gemini`) and the entry points of the group
`allm_proxy.adapters` are loaded on first lookup (see `registry`);
`register_adapter` adds one by hand.
"""

from __future__ import annotations

from .base import AdapterFactory, AdapterInfo, AdapterSetup, ImageAdapter
from .options import AdapterOptions
from .registry import ENTRY_POINT_GROUP, AdapterLoadError, AdapterRegistry

_REGISTRY = AdapterRegistry()


def register_adapter(info: AdapterInfo) -> None:
    """Make a provider available by name (`Engine(image_adapter=name)`, `--provider name`)."""
    _REGISTRY.register(info)


def get_adapter_info(name: str) -> AdapterInfo:
    """The provider `name`; ValueError listing every known provider when there is none."""
    return _REGISTRY.get(name)


def adapter_names() -> list[str]:
    """Every known provider name: registered, built-in and installed through entry points."""
    return _REGISTRY.names()


__all__ = [
    "ENTRY_POINT_GROUP",
    "AdapterFactory",
    "AdapterInfo",
    "AdapterLoadError",
    "AdapterOptions",
    "AdapterRegistry",
    "AdapterSetup",
    "ImageAdapter",
    "adapter_names",
    "get_adapter_info",
    "register_adapter",
]
