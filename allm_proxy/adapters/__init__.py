"""The adapter registry: built-in providers register exactly as third-party ones do."""

from __future__ import annotations

from .base import AdapterFactory, AdapterInfo, AdapterSetup, ImageAdapter

_REGISTRY: dict[str, AdapterInfo] = {}


def register_adapter(info: AdapterInfo) -> None:
    """Make a provider available by name (`Engine(image_adapter=name)`, `--provider name`)."""
    _REGISTRY[info.name] = info


def get_adapter_info(name: str) -> AdapterInfo:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown image adapter {name!r}; known adapters: {known}") from None


def adapter_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # Imported lazily so that importing allm_proxy stays cheap and side-effect free.
    from . import fake, gemini, openai

    for module in (fake, openai, gemini):
        if module.INFO.name not in _REGISTRY:
            register_adapter(module.INFO)


__all__ = [
    "AdapterFactory",
    "AdapterInfo",
    "AdapterSetup",
    "ImageAdapter",
    "adapter_names",
    "get_adapter_info",
    "register_adapter",
]
