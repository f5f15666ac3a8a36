"""What the fake says besides pixels: OpenAI-like usage figures and dall-e-3's revised prompt.

The token figures follow what OpenAI bills for gpt-image-1, so code that
reports or budgets usage sees realistic numbers without a real call.
"""

from __future__ import annotations

import math
import random

from .render import seed_of

# Output image tokens for a 1024x1024 image by quality (OpenAI's gpt-image-1 pricing table);
# other sizes scale by area, which reproduces the table's 1024x1536 row exactly.
_OUTPUT_TOKENS_1024 = {"low": 272, "medium": 1056, "high": 4160}
# Qualities of other families, mapped to the gpt-image tier they cost like.
_QUALITY_TIER = {"standard": "medium", "hd": "high", "xhigh": "high", "max": "high"}
_TILE = 512
_TOKENS_PER_TILE = 65
_TOKENS_PER_IMAGE = 85


def resolved_quality(quality: str | None) -> str:
    """The quality a GPT-style response echoes: low, medium or high, never auto."""
    if quality in _OUTPUT_TOKENS_1024:
        return quality
    return _QUALITY_TIER.get(quality or "auto", "high")


def output_tokens(size: tuple[int, int], quality: str | None) -> int:
    per_megapixel = _OUTPUT_TOKENS_1024[resolved_quality(quality)]
    return max(1, round(per_megapixel * size[0] * size[1] / (1024 * 1024)))


def text_tokens(prompt: str | None) -> int:
    return math.ceil(len(prompt or "") / 4)


def image_tokens(size: tuple[int, int]) -> int:
    """Input tokens for one image: scaled as OpenAI's vision models do, then 512px tiles."""
    fit = min(1.0, 2048 / max(size))
    shrink = fit * min(1.0, 768 / (min(size) * fit))
    tiles = math.ceil(size[0] * shrink / _TILE) * math.ceil(size[1] * shrink / _TILE)
    return tiles * _TOKENS_PER_TILE + _TOKENS_PER_IMAGE


_ADJECTIVES = {
    "vivid": ("vivid, high-contrast", "richly coloured, dramatic", "bold, cinematic"),
    "natural": ("naturalistic", "soft, true-to-life", "understated, photographic"),
}
_FORMS = ("digital illustration", "detailed painting", "photograph", "concept artwork")
_DETAILS = (
    "rendered with careful attention to light and texture",
    "with a balanced composition and a gentle depth of field",
    "framed as a wide shot in soft atmospheric light",
    "with crisp detail in the foreground and a hazy, luminous background",
)


_LEADING_WORDS = {"a", "an", "the", "this", "that", "some", "my", "our", "two", "three"}


def revised_prompt(prompt: str, style: str | None) -> str:
    """A plausible dall-e-3 style rewrite: same subject, more words about the picture."""
    rng = random.Random(seed_of("revised", prompt, style))
    subject = " ".join(prompt.split()).rstrip(" .!?")
    first, _, rest = subject.partition(" ")
    if first.lower() in _LEADING_WORDS:
        subject = f"{first.lower()} {rest}".strip()
    adjective = rng.choice(_ADJECTIVES.get(style or "vivid", _ADJECTIVES["vivid"]))
    article = "An" if adjective[0] in "aeiou" else "A"
    return f"{article} {adjective} {rng.choice(_FORMS)} of {subject}, {rng.choice(_DETAILS)}."
