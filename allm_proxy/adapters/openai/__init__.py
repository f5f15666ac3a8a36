"""The `openai` provider: a faithful pass-through to the OpenAI Images API (see `adapter.OpenAIImages`).

engine = Engine(image_adapter="openai", image_adapter_opts={"base_url": "https://api.openai.com/v1"})
"""

from __future__ import annotations

from ...capabilities import PROVIDER_DECIDES
from ..base import AdapterInfo
from .adapter import OpenAIImages
from .options import OpenAIOptions

INFO = AdapterInfo(
    name="openai",
    factory=OpenAIImages,
    key_env=("OPENAI_API_KEY",),
    needs_key=True,
    default_model=PROVIDER_DECIDES,
    rules="openai",
    streams_uploads=True,
)

__all__ = ["INFO", "OpenAIImages", "OpenAIOptions"]
