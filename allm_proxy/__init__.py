"""allm-proxy: the OpenAI Images API in front of OpenAI, Gemini or a deterministic fake."""

from __future__ import annotations

from .adapters import AdapterInfo, register_adapter
from .adapters.fake import FakeScript
from .call import Call
from .config import CassetteSettings, ModelAlias, ProxyConfig, load_config
from .engine import (
    Engine,
    aedit_image,
    agenerate_image,
    aimage_variations,
    edit_image,
    generate_image,
    image_variations,
)
from .errors import ProxyError
from .types import Image, ImageEvent, ImageRequest, ImageResponse, InputFile, Usage

__version__ = "0.1.0"

__all__ = [
    "AdapterInfo",
    "Call",
    "CassetteSettings",
    "Engine",
    "FakeScript",
    "Image",
    "ImageEvent",
    "ImageRequest",
    "ImageResponse",
    "InputFile",
    "ModelAlias",
    "ProxyConfig",
    "ProxyError",
    "Usage",
    "__version__",
    "aedit_image",
    "agenerate_image",
    "aimage_variations",
    "edit_image",
    "generate_image",
    "image_variations",
    "load_config",
    "register_adapter",
]
