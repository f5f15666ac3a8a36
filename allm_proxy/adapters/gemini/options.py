"""The Gemini adapter's options (`[providers.gemini]`, `image_adapter_opts`), checked once at build time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..options import AdapterOptions
from .errors import SAFETY_CODES

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
VARIATION_MODES = ("reject", "emulate")


@dataclass(frozen=True)
class GeminiOptions(AdapterOptions):
    """How the adapter talks to Gemini and which OpenAI features it emulates.

    - `base_url`, `api_version`: where generateContent lives
      (`{base}/{version}/models/{model}:generateContent`).
    - `variations`: "reject" (a 400 saying Gemini has none) or "emulate" (an edit asking for a variation).
    - `mask_hint`: also send the edit mask to the model, as a black-and-white image with an instruction.
    - `max_concurrency`: generateContent calls in flight at once (n > 1 fans out into n calls).
    - `safety_code`: the OpenAI code of a safety block, "content_policy_violation" (DALL-E's)
      or "moderation_blocked" (gpt-image's).
    """

    provider: ClassVar[str] = "gemini"

    base_url: str = DEFAULT_BASE_URL
    api_version: str = "v1beta"
    variations: str = "reject"
    mask_hint: bool = False
    max_concurrency: int = 4
    safety_code: str = "content_policy_violation"

    @classmethod
    def _values(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if raw.get("base_url"):
            values["base_url"] = str(raw["base_url"]).rstrip("/")
        if raw.get("api_version"):
            values["api_version"] = str(raw["api_version"]).strip("/")
        if "variations" in raw:
            values["variations"] = _choice("variations", raw["variations"], VARIATION_MODES)
        if "mask_hint" in raw:
            values["mask_hint"] = _bool("mask_hint", raw["mask_hint"])
        if "max_concurrency" in raw:
            values["max_concurrency"] = _positive_int("max_concurrency", raw["max_concurrency"])
        if "safety_code" in raw:
            values["safety_code"] = _choice("safety_code", raw["safety_code"], SAFETY_CODES)
        return values


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"gemini option {name} = {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _bool(name: str, value: object) -> bool:
    # Flags and environment variables arrive as strings.
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"gemini option {name} = {value!r} is not a boolean (true or false)")


def _positive_int(name: str, value: object) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1 or number > 64:
        raise ValueError(f"gemini option {name} = {value!r} must be an integer from 1 to 64")
    return number
