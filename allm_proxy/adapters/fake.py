"""FakeImages: deterministic generated images, scripted replies; no key, no network."""

from __future__ import annotations

from .base import AdapterInfo, AdapterSetup, ImageAdapter


def _build(setup: AdapterSetup) -> ImageAdapter:
    raise NotImplementedError("the fake adapter is being written")


INFO = AdapterInfo(name="fake", factory=_build, key_env=(), needs_key=False, default_model="gpt-image-1.5")
