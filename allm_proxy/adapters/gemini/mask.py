"""OpenAI edit masks, honoured by the proxy itself: Gemini has no mask field.

OpenAI's rule: the mask's fully transparent pixels (alpha 0) mark where the
image may change. Gemini edits the whole picture, so the proxy composites the
edited result onto the original through the mask's alpha channel:

- alpha 255 (opaque mask): the original's pixel, exactly;
- alpha 0 (transparent): the edited pixel;
- in between (a feathered edge): a blend, weighted by alpha.

The edited result is first resized to the original's size when Gemini
answered with other dimensions, so the output always has the original's size.
"""

from __future__ import annotations

import io

from PIL import Image as PILImage

from ...imaging import encode

MASK_HINT_INSTRUCTION = (
    "The last image is a mask, not a picture to edit: change only the region that is white in the mask "
    "and keep everything that is black in the mask exactly as it is in the first image."
)


def composite_masked(original: bytes, mask: bytes, edited: bytes) -> PILImage.Image:
    """The edited image where the mask is transparent, the original where it is opaque."""
    with PILImage.open(io.BytesIO(original)) as img:
        base = img.convert("RGBA")
        keep_alpha = _has_transparency(img)
    with PILImage.open(io.BytesIO(edited)) as img:
        changed = img.convert("RGBA")
    if changed.size != base.size:
        changed = changed.resize(base.size, PILImage.Resampling.LANCZOS)
    with PILImage.open(io.BytesIO(mask)) as img:
        alpha = img.convert("RGBA").getchannel("A")
    # composite(a, b, m) takes a where m is 255 and b where m is 0, so the mask's opacity keeps the original.
    out = PILImage.composite(base, changed, alpha)
    return out if keep_alpha else out.convert("RGB")


def composite_bytes(
    original: bytes, mask: bytes, edited: bytes, output_format: str | None, compression: int | None
) -> bytes:
    """`composite_masked`, encoded. PNG unless asked otherwise: a lossless format keeps kept pixels exact."""
    return encode(composite_masked(original, mask, edited), output_format or "png", compression)


def mask_hint_png(mask: bytes) -> bytes:
    """The mask as black and white (white = may change), which a model reads better than alpha."""
    with PILImage.open(io.BytesIO(mask)) as img:
        alpha = img.convert("RGBA").getchannel("A")
    editable = alpha.point(lambda a: 255 if a == 0 else 0)
    return encode(editable.convert("RGB"), "png")


def _has_transparency(img: PILImage.Image) -> bool:
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        low, _high = img.convert("RGBA").getchannel("A").getextrema()
        return bool(low < 255)  # type: ignore[operator]
    return False
