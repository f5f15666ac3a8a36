"""Pillow drawing for the fake provider: a seeded landscape that shows its prompt.

Everything here is a pure function of its arguments, so the same request
always gives the same pixels. The landscape is drawn at a small working
resolution and scaled up: that makes shapes soft for free and keeps a
1024x1024 image well under the fake's time budget. Text is drawn at full
resolution so it stays crisp.
"""

from __future__ import annotations

import colorsys
import hashlib
import itertools
import math
import random
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter, ImageFont

RGB = tuple[int, int, int]
WORK_EDGE = 768
_MAX_TEXT_CHARS = 400


def seed_of(*parts: object) -> int:
    """A stable 64-bit seed (Python's own hash() is salted per process)."""
    text = "\x1f".join(repr(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Palette:
    """Colours of one scene; derived from the prompt alone, so every index of a request matches."""

    sky_top: RGB
    sky_mid: RGB
    horizon: RGB
    sun: RGB
    glow: RGB
    ground: RGB
    haze: RGB
    night: bool


def _hls(h: float, lightness: float, s: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, max(0.0, min(1.0, lightness)), max(0.0, min(1.0, s)))
    return round(r * 255), round(g * 255), round(b * 255)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


# Sky schemes as (hue, lightness, saturation) for top, middle and horizon, then sun and glow:
# hand-picked so that every prompt lands on a sky that looks like a sky.
_SKIES: tuple[tuple[tuple[float, float, float], ...], ...] = (
    ((0.62, 0.30, 0.55), (0.90, 0.62, 0.55), (0.08, 0.78, 0.90), (0.12, 0.90, 1.0), (0.05, 0.72, 0.9)),  # dawn
    ((0.58, 0.48, 0.62), (0.56, 0.70, 0.60), (0.52, 0.87, 0.50), (0.14, 0.95, 1.0), (0.13, 0.88, 0.9)),  # day
    ((0.72, 0.22, 0.50), (0.95, 0.48, 0.60), (0.06, 0.62, 0.95), (0.10, 0.85, 1.0), (0.04, 0.65, 1.0)),  # dusk
    ((0.50, 0.22, 0.55), (0.46, 0.45, 0.45), (0.14, 0.76, 0.70), (0.13, 0.90, 1.0), (0.12, 0.75, 0.9)),  # teal
    ((0.58, 0.52, 0.50), (0.11, 0.74, 0.80), (0.07, 0.66, 0.95), (0.12, 0.92, 1.0), (0.08, 0.70, 1.0)),  # golden
    ((0.66, 0.08, 0.50), (0.67, 0.18, 0.45), (0.72, 0.34, 0.40), (0.15, 0.92, 0.3), (0.62, 0.70, 0.4)),  # night
)
_GROUND_HUES = (0.30, 0.36, 0.47, 0.75, 0.05, 0.62)


def palette_for(prompt: str, *, muted: bool = False) -> Palette:
    rng = random.Random(seed_of("palette", prompt))
    scheme = rng.randrange(len(_SKIES))
    jitter = rng.uniform(-0.035, 0.035)
    damp = 0.65 if muted else 1.0
    top, mid, horizon, sun, glow = (_hls(h + jitter, li, s * damp) for h, li, s in _SKIES[scheme])
    night = scheme == len(_SKIES) - 1
    ground = _hls(rng.choice(_GROUND_HUES) + jitter, 0.13 if night else 0.2, 0.45 * damp)
    return Palette(top, mid, horizon, sun, glow, ground, mix(horizon, mid, 0.4), night)


def scene(
    prompt: str,
    size: tuple[int, int],
    seed: int,
    *,
    transparent: bool = False,
    muted: bool = False,
    caption: str | None = None,
    text_at: str = "bottom",
) -> PILImage.Image:
    """A landscape of `size` with `prompt` written on it; RGBA with a clear sky when `transparent`."""
    width, height = size
    palette = palette_for(prompt, muted=muted)
    rng = random.Random(seed)
    scale = min(1.0, WORK_EDGE / max(width, height))
    # Tiny or extreme sizes (Gemini allows 1x8) are drawn on a usable canvas and squeezed.
    work = (max(32, round(width * scale)), max(32, round(height * scale)))
    layer = PILImage.new("RGBA", work, (0, 0, 0, 0))
    _draw_sky_objects(layer, palette, rng)
    _draw_ridges(layer, palette, rng)
    # Pillow's polygons are aliased; a sub-pixel blur before upscaling smooths the steps.
    soften = ImageFilter.BoxBlur(0.5)
    if transparent:
        # Premultiplied, or the clear sky's black would bleed into every edge.
        img = layer.convert("RGBa").filter(soften).resize(size, PILImage.Resampling.BICUBIC).convert("RGBA")
    else:
        sky = sky_gradient(work, palette)
        sky.alpha_composite(layer)
        img = sky.convert("RGB").filter(soften).resize(size, PILImage.Resampling.BICUBIC)
    write_prompt(img, prompt, caption=caption, at=text_at)
    return img


def sky_gradient(size: tuple[int, int], palette: Palette) -> PILImage.Image:
    # A 1-pixel-wide strip stretched sideways is far cheaper than colouring every pixel.
    width, height = size
    strip = PILImage.new("RGBA", (1, height))
    stops = [(0.0, palette.sky_top), (0.55, palette.sky_mid), (1.0, palette.horizon)]
    values = []
    for y in range(height):
        t = y / max(1, height - 1)
        for (t0, c0), (t1, c1) in itertools.pairwise(stops):
            if t <= t1:
                values.append((*mix(c0, c1, (t - t0) / (t1 - t0)), 255))
                break
    strip.putdata(values)
    return strip.resize((width, height), PILImage.Resampling.NEAREST)


def _draw_sky_objects(layer: PILImage.Image, palette: Palette, rng: random.Random) -> None:
    width, height = layer.size
    short = min(width, height)
    cx, cy = rng.uniform(0.18, 0.82) * width, rng.uniform(0.18, 0.42) * height
    radius = short * rng.uniform(0.06, 0.10)
    glow_r = int(radius * rng.uniform(3.2, 4.5))
    if palette.night:
        draw = ImageDraw.Draw(layer)
        for _ in range(int(width * height / 900)):
            x, y = rng.uniform(0, width), rng.uniform(0, height * 0.55)
            draw.point((x, y), fill=(255, 255, 240, rng.randint(90, 230)))
    glow_mask = PILImage.new("L", layer.size, 0)
    falloff = PILImage.radial_gradient("L").point(lambda v: round(150 * max(0.0, 1 - v / 128) ** 2))
    glow_mask.paste(falloff.resize((2 * glow_r, 2 * glow_r)), (round(cx) - glow_r, round(cy) - glow_r))
    _paint(layer, palette.glow, glow_mask)
    # The disk is drawn 4x larger and shrunk: an antialiased edge, which ImageDraw cannot do.
    big = PILImage.new("L", (round(radius * 8), round(radius * 8)), 0)
    ImageDraw.Draw(big).ellipse((0, 0, big.width - 1, big.height - 1), fill=255)
    disk = PILImage.new("L", layer.size, 0)
    disk.paste(big.resize((round(radius * 2),) * 2, PILImage.Resampling.BOX), (round(cx - radius), round(cy - radius)))
    _paint(layer, palette.sun, disk)
    # Clouds are blurred at a quarter of the size: a wide blur at full size is the slowest step here.
    quarter = (max(1, width // 4), max(1, height // 4))
    clouds = PILImage.new("L", quarter, 0)
    cloud_draw = ImageDraw.Draw(clouds)
    qw, qh = quarter
    for _ in range(rng.randint(2, 4)):
        bx, by = rng.uniform(-0.1, 1.0) * qw, rng.uniform(0.08, 0.45) * qh
        span = rng.uniform(0.15, 0.32) * qw
        for _ in range(5):
            ox, oy = rng.uniform(0, span), rng.uniform(-0.02, 0.02) * qh
            rx, ry = rng.uniform(0.04, 0.09) * qw, rng.uniform(0.015, 0.035) * qh
            cloud_draw.ellipse((bx + ox - rx, by + oy - ry, bx + ox + rx, by + oy + ry), fill=170)
    clouds = clouds.filter(ImageFilter.GaussianBlur(min(qw, qh) / 60)).resize(layer.size, PILImage.Resampling.BILINEAR)
    _paint(layer, mix(palette.sun, (255, 255, 255), 0.6), clouds)


def _paint(layer: PILImage.Image, colour: RGB, mask: PILImage.Image) -> None:
    box = mask.getbbox()
    if box is None:
        return
    # Compositing only the painted box, not the whole layer: most masks cover a small part.
    solid = PILImage.new("RGBA", (box[2] - box[0], box[3] - box[1]), (*colour, 0))
    solid.putalpha(mask.crop(box))
    layer.alpha_composite(solid, dest=box[:2])


def _draw_ridges(layer: PILImage.Image, palette: Palette, rng: random.Random) -> None:
    width, height = layer.size
    draw = ImageDraw.Draw(layer)
    count = rng.randint(3, 4)
    rolling = rng.random() < 0.4
    for i in range(count):
        near = (i + 1) / count
        base = height * (0.52 + 0.34 * near**1.3)
        amp = height * (0.05 if rolling else 0.11) * (1.2 - near * 0.4)
        points = _ridge_line(rng, width, base, amp, 7 if rolling else 15)
        colour = mix(palette.haze, palette.ground, near**0.8)
        draw.polygon([*points, (width, height), (0, height)], fill=(*colour, 255))


def _ridge_line(rng: random.Random, width: int, base: float, amp: float, steps: int) -> list[tuple[float, float]]:
    heights = [rng.uniform(-1, 1) for _ in range(steps + 1)]
    smooth = [(heights[max(0, i - 1)] + 2 * heights[i] + heights[min(steps, i + 1)]) / 4 for i in range(steps + 1)]
    out: list[tuple[float, float]] = []
    for i in range((steps * 8) + 1):
        # Cosine interpolation between control points: rounded hills, no sharp kinks.
        pos = i / 8
        j = min(int(pos), steps - 1)
        t = (1 - _cos_step(pos - j)) / 2
        h = smooth[j] * (1 - t) + smooth[j + 1] * t
        out.append((width * pos / steps, base - amp * h))
    return out


def _cos_step(t: float) -> float:
    return math.cos(math.pi * t)


# -- text -----------------------------------------------------------------------------


def write_prompt(img: PILImage.Image, prompt: str, *, caption: str | None = None, at: str = "bottom") -> None:
    """The prompt, wrapped, on a translucent panel at the bottom, top or middle of `img` (in place)."""
    width, height = img.size
    short = min(width, height)
    if short < 48 or not prompt.strip():
        return
    font_size = max(9, round(short / 24))
    font = ImageFont.load_default(size=font_size)
    margin = round(short * 0.04)
    max_lines = 4 if height > width * 1.2 else 3
    lines = wrap_text(" ".join(prompt[:_MAX_TEXT_CHARS].split()), font, width - 4 * margin, max_lines)
    small = ImageFont.load_default(size=max(8, round(font_size * 0.6)))
    line_h = round(font_size * 1.25)
    pad = max(2, margin // 2)
    caption_h = round(font_size * 0.9) if caption else 0
    panel_h = 2 * pad + line_h * len(lines) + caption_h
    top = {"top": margin, "middle": (height - panel_h) // 2}.get(at, height - margin - panel_h)
    box = (margin, top, width - margin, top + panel_h)
    region = img.crop(box).convert("RGBA")
    overlay = PILImage.new("RGBA", region.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).rounded_rectangle(
        (0, 0, region.size[0] - 1, region.size[1] - 1), radius=pad, fill=(12, 14, 24, 130)
    )
    region.alpha_composite(overlay)
    draw = ImageDraw.Draw(region)
    y = pad
    for line in lines:
        draw.text((margin, y), line, font=font, fill=(255, 255, 255, 255))
        y += line_h
    if caption:
        draw.text((margin, y), caption, font=small, fill=(220, 224, 235, 255))
    img.paste(region if img.mode == "RGBA" else region.convert(img.mode), box[:2])


def wrap_text(
    text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: float, max_lines: int
) -> list[str]:
    """Greedy word wrap by rendered width; overlong words break, overflow ends in an ellipsis."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= max_width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while font.getlength(word) > max_width and len(word) > 1:
            cut = max(1, len(word) - 1)
            while cut > 1 and font.getlength(word[:cut]) > max_width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
        if len(lines) >= max_lines:
            break
    if current and len(lines) < max_lines:
        lines.append(current)
    if len(lines) > max_lines or (len(lines) == max_lines and " ".join(lines) != text):
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > max_width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "…"
    return lines
