"""Every picture the tests make: solid colours, noise, masks, hostile files, in any format Pillow writes.

png_bytes((32, 32), (200, 40, 40, 255))        # a solid RGBA PNG
image_bytes((16, 8), mode="RGB", fmt="JPEG")  # the same maker, another mode and format
noise_png((40, 30))                            # every pixel differs from its neighbours
half_transparent_mask((64, 64))                # OpenAI mask: left half kept, right half edited
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from PIL import Image as PILImage
from PIL import ImageDraw

DEFAULT_COLOR = (40, 120, 200, 255)


def encoded(image: PILImage.Image, fmt: str = "PNG", **save_options: Any) -> bytes:
    """`image` saved as `fmt` (PNG, JPEG, WEBP, ...)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_options)
    return buf.getvalue()


def solid(
    size: tuple[int, int] = (64, 64), color: tuple[int, ...] = DEFAULT_COLOR, mode: str = "RGBA"
) -> PILImage.Image:
    """A one-colour picture; `color` is cut to the mode's bands (single-band modes take its first value)."""
    fill: int | tuple[int, ...] = color[0] if mode in ("L", "P", "1", "I") else color[: len(mode)]
    return PILImage.new(mode, size, fill)


def image_bytes(
    size: tuple[int, int] = (64, 64), color: tuple[int, ...] = DEFAULT_COLOR, mode: str = "RGBA", fmt: str = "PNG"
) -> bytes:
    """A solid picture encoded as `fmt`."""
    return encoded(solid(size, color, mode), fmt)


def png_bytes(size: tuple[int, int] = (64, 64), color: tuple[int, ...] = DEFAULT_COLOR, mode: str = "RGBA") -> bytes:
    """A solid PNG."""
    return image_bytes(size, color, mode, "PNG")


def noise_png(size: tuple[int, int], seed: int = 7, mode: str = "RGB") -> bytes:
    """A picture whose every pixel differs from its neighbours, so any change shows (deterministic per seed)."""
    w, h = size
    data = bytes((x * 37 + y * 91 + seed * 13 + c * 59) % 256 for y in range(h) for x in range(w) for c in range(3))
    return encoded(PILImage.frombytes("RGB", size, data).convert(mode))


def noise_jpeg(size: tuple[int, int] = (64, 64)) -> bytes:
    """A JPEG of Gaussian noise (random: different bytes each call)."""
    return encoded(PILImage.effect_noise(size, 40).convert("RGB"), "JPEG")


def gradient_png(size: tuple[int, int] = (256, 256), *, alpha: bool = False) -> bytes:
    """A structured picture: a gradient in every channel, so edits and crops show (`alpha`: 200 everywhere)."""
    red = PILImage.linear_gradient("L").resize(size)
    green = PILImage.radial_gradient("L").resize(size)
    blue = PILImage.linear_gradient("L").transpose(PILImage.Transpose.ROTATE_90).resize(size)
    img = PILImage.merge("RGB", (red, green, blue))
    if alpha:
        img.putalpha(200)
    return encoded(img)


def pixel(image: PILImage.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The bands of one pixel of a multi-band image (Pillow also answers a float or None for other modes)."""
    value = image.getpixel(xy)
    assert isinstance(value, tuple), (image.mode, value)
    return value


# -- masks (OpenAI's convention: transparent pixels are the ones to edit) ------------------------------


def half_transparent_mask(size: tuple[int, int]) -> bytes:
    """Opaque left half (kept), fully transparent right half (edited)."""
    mask = solid(size, (0, 0, 0, 255))
    w, h = size
    mask.paste((0, 0, 0, 0), (w // 2, 0, w, h))
    return encoded(mask)


def ellipse_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """Opaque everywhere (kept) except a transparent ellipse (edited)."""
    mask = solid(size, (0, 0, 0, 255))
    ImageDraw.Draw(mask).ellipse(box, fill=(0, 0, 0, 0))
    return encoded(mask)


def alpha_strip(alphas: list[int]) -> PILImage.Image:
    """A one-row black RGBA mask whose pixels have these alpha values, left to right."""
    mask = PILImage.new("RGBA", (len(alphas), 1))
    mask.putdata([(0, 0, 0, a) for a in alphas])
    return mask


# -- hostile files ----------------------------------------------------------------------------------


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of all zeros: a few kB that would decode to width*height pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    idat = zlib.compress(row * height, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def padded_png(size: tuple[int, int], total_bytes: int, mode: str = "RGBA") -> bytes:
    """A valid PNG of `size` that weighs `total_bytes`: a private ancillary chunk (`prVt`, CRC right)
    sits between its image data and IEND, so big uploads cost no encoding time."""
    small = png_bytes(size, mode=mode)
    iend = small.rindex(b"IEND") - 4  # the chunk starts with its 4-byte length
    room = total_bytes - len(small) - 12  # length, type and CRC of the padding chunk
    if room < 0:
        raise ValueError(f"a {size} PNG is already {len(small)} bytes")
    padding = bytes(room)
    chunk = struct.pack(">I", room) + b"prVt" + padding + struct.pack(">I", zlib.crc32(b"prVt" + padding))
    return small[:iend] + chunk + small[iend:]
