"""The OpenAI adapter: a faithful pass-through to the OpenAI Images API."""

from __future__ import annotations

from .base import AdapterInfo, AdapterSetup, ImageAdapter


def _build(setup: AdapterSetup) -> ImageAdapter:
    raise NotImplementedError("the openai adapter is being written")


INFO = AdapterInfo(name="openai", factory=_build, key_env=("OPENAI_API_KEY",), needs_key=True, default_model="gpt-image-1.5")
