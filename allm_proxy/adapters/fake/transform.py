"""Pillow work on the client's images for the fake provider: edits, variations, partial previews.

An edit with a mask honours it exactly: every pixel whose mask alpha is
above 0 keeps its value, so tests can check OpenAI's mask semantics
against the fake. Without a mask the whole image is recoloured towards the
prompt's palette and the prompt is written on it: visibly edited, still
recognisable.
"""

from __future__ import annotations

import io
import random

from PIL import Image as PILImage
from PIL import ImageFilter, ImageOps

from .render import Palette, mix, palette_for, scene, write_prompt


def load(data: bytes) -> PILImage.Image:
    """Decode to RGB, or RGBA when the image carries any alpha."""
    with PILImage.open(io.BytesIO(data)) as img:
        img.load()
        alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        return img.convert("RGBA" if alpha else "RGB")


def has_alpha(data: bytes) -> bool:
    """Whether an image carries alpha, from its header alone."""
    with PILImage.open(io.BytesIO(data)) as img:
        return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def edit(
    prompt: str,
    inputs: tuple[bytes, ...],
    mask: bytes | None,
    size: tuple[int, int],
    seed: int,
    *,
    alpha: bool,
    caption: str,
    tint_seed: int,
) -> PILImage.Image:
    """The first input edited following `prompt`; later inputs appear as inset thumbnails.

    `tint_seed` decides the recolouring without a mask; it leaves out the later inputs, so
    adding an image only adds its thumbnail.
    """
    base = _as_mode(load(inputs[0]), alpha)
    if base.size != size:
        base = base.resize(size, PILImage.Resampling.LANCZOS)
    others = [load(data) for data in inputs[1:]]
    if mask is None:
        out = _recolour(base, palette_for(prompt), tint_seed)
        _inset(out, others, where="bottom-right")
        # At the top: the bottom is where a generated input already shows its own prompt.
        write_prompt(out, prompt, caption=caption, at="top")
        return out
    region = editable_region(mask, size)
    box = region.getbbox()
    if box is None:
        return base  # a fully opaque mask protects every pixel
    area = (box[2] - box[0], box[3] - box[1])
    # Text in the middle, where a round or irregular editable area is usually widest.
    content = scene(
        prompt, area, seed, transparent=alpha, caption=caption if min(area) >= 160 else None, text_at="middle"
    )
    _inset(content, others, where="centre-low")
    out = base.copy()
    # A 0/255 mask makes paste a pure copy: protected pixels are never blended.
    out.paste(content.convert(out.mode), box[:2], region.crop(box))
    return out


def editable_region(mask: bytes, size: tuple[int, int]) -> PILImage.Image:
    """An L image, 255 where the mask's alpha is 0 (the area to edit), else 0."""
    with PILImage.open(io.BytesIO(mask)) as img:
        img.load()
        alpha = img.convert("RGBA").getchannel("A")
    if alpha.size != size:
        alpha = alpha.resize(size, PILImage.Resampling.NEAREST)
    return alpha.point(lambda a: 255 if a == 0 else 0)


def _as_mode(img: PILImage.Image, alpha: bool) -> PILImage.Image:
    if alpha:
        return img.convert("RGBA")
    if img.mode == "RGBA":
        flat = PILImage.new("RGB", img.size, (255, 255, 255))
        flat.paste(img, mask=img.getchannel("A"))
        return flat
    return img


def _recolour(base: PILImage.Image, palette: Palette, seed: int) -> PILImage.Image:
    rng = random.Random(seed)
    rgb = base.convert("RGB")
    toned = ImageOps.colorize(
        rgb.convert("L"),
        black=mix(palette.ground, (0, 0, 0), 0.5),
        white=mix(palette.sun, (255, 255, 255), 0.3),
        mid=palette.sky_mid,
    )
    out = PILImage.blend(rgb, toned, rng.uniform(0.42, 0.58))
    if base.mode == "RGBA":
        out.putalpha(base.getchannel("A"))
    return out


def _inset(canvas: PILImage.Image, others: list[PILImage.Image], *, where: str) -> None:
    """Framed thumbnails of `others` in a row, at the bottom right or centred low (in place)."""
    if not others:
        return
    width, height = canvas.size
    edge = max(8, min(width, height) // 4)
    border = max(1, edge // 40)
    gap = max(2, edge // 10)
    framed: list[PILImage.Image] = []
    for img in others:
        thumb = img.copy()
        thumb.thumbnail((edge, edge), PILImage.Resampling.LANCZOS)
        frame = PILImage.new(canvas.mode, (thumb.width + 2 * border, thumb.height + 2 * border), "white")
        frame.paste(thumb.convert(canvas.mode), (border, border), thumb if thumb.mode == "RGBA" else None)
        if sum(f.width + gap for f in framed) + frame.width > width - 2 * gap:
            break  # no room for more: the rest would fall off the canvas
        framed.append(frame)
    row = sum(f.width for f in framed) + gap * (len(framed) - 1)
    if where == "centre-low":
        # Below the prompt panel, which sits in the middle of a masked area.
        x, bottom = (width - row) // 2, min(height - gap, round(height * 0.6) + edge)
    else:
        x, bottom = width - gap - row, height - gap
    for frame in framed:
        canvas.paste(frame, (x, bottom - frame.height))
        x += frame.width + gap


def variation(data: bytes, size: tuple[int, int], index: int, seed: int, *, alpha: bool) -> PILImage.Image:
    """A related image: mirrored on odd indexes, slightly zoomed, hue-shifted and softened, by seed."""
    rng = random.Random(seed)
    img = _as_mode(load(data), alpha)
    if index % 2 == 1:
        img = ImageOps.mirror(img)
    zoom = rng.uniform(0.84, 0.95)
    w, h = img.size
    cw, ch = w * zoom, h * zoom
    left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    img = img.resize(size, PILImage.Resampling.BICUBIC, box=(left, top, left + cw, top + ch))
    shift = rng.choice((-1, 1)) * rng.randint(5, 14)
    hue, sat, val = img.convert("RGB").convert("HSV").split()
    hue = hue.point(lambda v: (v + shift) % 256)
    vivid = rng.uniform(0.88, 1.15)
    sat = sat.point(lambda v: min(255, round(v * vivid)))
    out = PILImage.merge("HSV", (hue, sat, val)).convert("RGB")
    radius = rng.choice((0.0, 0.7, 1.4))
    if radius:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    if img.mode == "RGBA":
        out.putalpha(img.getchannel("A"))
    return out


def coarse(final: PILImage.Image, step: int, steps: int) -> PILImage.Image:
    """A preview of `final` for streamed partial images: blurrier the earlier the step."""
    width, height = final.size
    block = 2 ** (steps - step + 2)  # 32, 16, 8 for three partials; the last is the sharpest
    small = final.resize((max(1, width // block), max(1, height // block)), PILImage.Resampling.BOX)
    return small.resize((width, height), PILImage.Resampling.BILINEAR)
