"""The Gemini adapter: OpenAI image requests as Gemini generateContent calls."""

from __future__ import annotations

from .base import AdapterInfo, AdapterSetup, ImageAdapter


def _build(setup: AdapterSetup) -> ImageAdapter:
    raise NotImplementedError("the gemini adapter is being written")


INFO = AdapterInfo(name="gemini", factory=_build, key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"), needs_key=True, default_model="gemini-3-pro-image")
