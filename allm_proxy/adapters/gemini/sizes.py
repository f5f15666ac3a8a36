"""OpenAI `size` (+ `quality`) as a Gemini `imageConfig`: an aspect ratio and an imageSize tier.

Gemini never takes pixels (docs/spec/gemini-images.md §11): the nearest
aspect ratio the model supports (minimising |ln(W/H) - ln(ratio)|) and a tier
chosen from the long edge. What each model supports comes from its
`ModelFamily` in capabilities.py; this module only does the arithmetic.

    family = ModelCatalog().for_provider("gemini-3-pro-image", "gemini")
    image_config_for("1792x1024", "hd", family, model="gemini-3-pro-image")
    # GeminiImageConfig(aspect_ratio='16:9', image_size='2K')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...capabilities import ModelFamily
from ...errors import InvalidRequestError
from ...types import parse_size

# Tiers from small to large; Gemini spells the half-K tier as the literal "512".
TIER_ORDER = ("512", "1K", "2K", "4K")
_RANK = {tier: rank for rank, tier in enumerate(TIER_ORDER)}
# The longest edge each tier is asked to serve (docs/spec/gemini-images.md §11: <=1536 -> 1K, <=3072 -> 2K, else 4K).
TIER_LONG_EDGE = {"512": 512, "1K": 1536, "2K": 3072, "4K": 8192}

# The OpenAI sizes docs/spec/gemini-images.md §11 tabulates. dall-e-3's 1792-wide sizes are 1K there (Gemini's
# 1K 16:9 is ~1376x768) and reach 2K with quality=hd, so they cannot follow the long-edge rule.
_OPENAI_SIZE_TIERS = {
    "256x256": "512",
    "512x512": "512",
    "1024x1024": "1K",
    "1536x1024": "1K",
    "1024x1536": "1K",
    "1792x1024": "1K",
    "1024x1792": "1K",
}
# Qualities that ask for one tier more than the size alone would get.
HIGH_QUALITIES = frozenset({"high", "hd", "xhigh", "max"})
# A size whose ratio lies this far beyond the model's widest (or tallest) ratio is refused
# rather than silently squashed: within the range the nearest ratio is at most ~15% off.
RATIO_TOLERANCE = 1.15
# Models without imageSize tiers (gemini-2.5-flash-image) make about 1K images.
_FIXED_TIERS = ("1K",)


@dataclass(frozen=True)
class GeminiImageConfig:
    """The `generationConfig.imageConfig` of one call; None fields are omitted."""

    aspect_ratio: str | None = None
    image_size: str | None = None

    def to_json(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.aspect_ratio is not None:
            out["aspectRatio"] = self.aspect_ratio
        if self.image_size is not None:
            out["imageSize"] = self.image_size
        return out


def image_config_for(size: str | None, quality: str | None, family: ModelFamily, *, model: str) -> GeminiImageConfig:
    """The imageConfig for an OpenAI size on `model`; `auto`/absent leave both to the model.

    Raises `InvalidRequestError` (param `size`, code `invalid_size`) for a size the
    model cannot honour, saying what it can do.
    """
    try:
        wh = parse_size(size)
    except ValueError:
        raise InvalidRequestError(
            f"Invalid 'size': {size!r} is not WIDTHxHEIGHT (e.g. '1024x1024').", param="size", code="invalid_size"
        ) from None
    if wh is None:
        return GeminiImageConfig()
    assert size is not None
    ratio = nearest_ratio(wh, family.aspect_ratios, model=model, size=size)
    tier = choose_tier(size, wh, quality, family, model=model)
    return GeminiImageConfig(aspect_ratio=ratio, image_size=tier if family.image_sizes else None)


def ratio_value(ratio: str) -> float:
    """`"16:9"` -> 1.777..."""
    w, _, h = ratio.partition(":")
    return float(w) / float(h)


def nearest_ratio(wh: tuple[int, int], ratios: tuple[str, ...], *, model: str, size: str) -> str:
    """The supported ratio closest to W/H on a log scale (first listed wins a tie)."""
    if not ratios:
        raise InvalidRequestError(
            f"Invalid 'size' {size!r}: no aspect ratios are configured for `{model}`; "
            "add aspect_ratios to its [families] entry or omit size.",
            param="size",
            code="invalid_size",
        )
    wanted = math.log(wh[0] / wh[1])
    values = {r: ratio_value(r) for r in ratios}
    low, high = min(values.values()), max(values.values())
    if wh[0] / wh[1] < low / RATIO_TOLERANCE or wh[0] / wh[1] > high * RATIO_TOLERANCE:
        raise InvalidRequestError(
            f"Invalid 'size' {size!r} for `{model}`: its aspect ratio {wh[0] / wh[1]:.2f} is outside "
            f"what the model makes ({_format_ratio(low)} to {_format_ratio(high)}). "
            f"Supported aspect ratios: {', '.join(ratios)}; pick a size with one of them.",
            param="size",
            code="invalid_size",
        )
    return min(ratios, key=lambda r: abs(wanted - math.log(values[r])))


def choose_tier(size: str, wh: tuple[int, int], quality: str | None, family: ModelFamily, *, model: str) -> str:
    """The smallest supported tier that serves the size, one up for high/hd where the model has it."""
    supported = [t for t in TIER_ORDER if t in (family.image_sizes or _FIXED_TIERS)]
    base = _OPENAI_SIZE_TIERS.get(size) or _tier_for_long_edge(max(wh))
    tier = _at_least(supported, _RANK[base])
    if tier is None:
        top = supported[-1] if supported else "1K"
        tiers = ", ".join(family.image_sizes) if family.image_sizes else "none (a fixed ~1K output)"
        raise InvalidRequestError(
            f"Invalid 'size' {size!r} for `{model}`: its largest output is the {top} tier, so the long "
            f"edge can be at most {TIER_LONG_EDGE[top]} pixels (imageSize tiers: {tiers}). "
            f"Supported aspect ratios: {', '.join(family.aspect_ratios)}. "
            "Ask for a smaller size or a model with larger tiers.",
            param="size",
            code="invalid_size",
        )
    if quality in HIGH_QUALITIES:
        tier = _at_least(supported, _RANK[tier] + 1) or tier
    return tier


def _tier_for_long_edge(edge: int) -> str:
    for tier in TIER_ORDER:
        if edge <= TIER_LONG_EDGE[tier]:
            return tier
    return TIER_ORDER[-1]


def _at_least(supported: list[str], rank: int) -> str | None:
    return next((t for t in supported if _RANK[t] >= rank), None)


def _format_ratio(value: float) -> str:
    return f"{value:.2f}:1"
