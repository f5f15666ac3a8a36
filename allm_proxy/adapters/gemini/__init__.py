"""The `gemini` provider: OpenAI image requests as Gemini generateContent calls (see `adapter.GeminiImages`).

engine = Engine(image_adapter="gemini", env={"GEMINI_API_KEY": "..."})
"""

from __future__ import annotations

from ...capabilities import ModelDefault
from ..base import AdapterInfo
from .adapter import GeminiImages
from .options import GeminiOptions

INFO = AdapterInfo(
    name="gemini",
    factory=GeminiImages,
    key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    needs_key=True,
    default_model=ModelDefault(fixed="gemini-3-pro-image"),
    rules="gemini",
)

__all__ = ["INFO", "GeminiImages", "GeminiOptions"]
