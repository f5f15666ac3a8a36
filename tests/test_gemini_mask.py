"""Masks honoured by compositing (gemini/mask.py): Gemini edits everything, the proxy keeps what the mask keeps."""

from __future__ import annotations

import io

from PIL import Image as PILImage

from allm_proxy.adapters.gemini.mask import composite_masked, mask_hint_png
from tests.support.images import alpha_strip, encoded, image_bytes, pixel, png_bytes, solid


def test_feathered_mask_blends_by_alpha() -> None:
    original = png_bytes((3, 1), (200, 0, 0), "RGB")
    edited = png_bytes((3, 1), (0, 0, 200), "RGB")
    mask = alpha_strip([255, 128, 0])
    out = composite_masked(original, encoded(mask), edited)
    kept, blended, changed = (pixel(out, (x, 0)) for x in range(3))
    assert kept == (200, 0, 0) and changed == (0, 0, 200)
    assert 90 <= blended[0] <= 110 and 90 <= blended[2] <= 110


def test_an_edit_of_another_size_is_resized_to_the_original() -> None:
    original = png_bytes((30, 20), (5, 5, 5), "RGB")
    edited = image_bytes((96, 64), (250, 250, 250), "RGB", "JPEG")
    mask = png_bytes((30, 20), (0, 0, 0, 0))
    out = composite_masked(original, mask, edited)
    assert out.size == (30, 20) and out.mode == "RGB"
    assert all(channel > 240 for channel in pixel(out, (15, 10)))


def test_transparent_pixels_of_the_original_stay_transparent_where_kept() -> None:
    original = solid((2, 1), (9, 9, 9, 255))
    original.putpixel((0, 0), (0, 0, 0, 0))
    mask = png_bytes((2, 1), (0, 0, 0, 255))
    out = composite_masked(encoded(original), mask, png_bytes((2, 1), (255, 0, 0), "RGB"))
    assert out.mode == "RGBA" and pixel(out, (0, 0))[3] == 0 and pixel(out, (1, 0)) == (9, 9, 9, 255)


def test_mask_hint_is_white_where_the_model_may_paint() -> None:
    mask = alpha_strip([255, 0])
    hint = PILImage.open(io.BytesIO(mask_hint_png(encoded(mask)))).convert("L")
    assert [hint.getpixel((x, 0)) for x in range(2)] == [0, 255]
