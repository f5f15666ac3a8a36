"""Small Pillow helpers shared by adapters: decode sizes, encode and transcode formats."""

from __future__ import annotations

import io

from PIL import Image as PILImage

from .types import sniff_mime

FORMAT_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
MIME_FORMAT = {v: k for k, v in FORMAT_MIME.items()}


def decoded_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from the image header (no full decode)."""
    with PILImage.open(io.BytesIO(data)) as img:
        return img.size


def format_of(data: bytes) -> str | None:
    """'png', 'jpeg' or 'webp' from the magic bytes; None for anything else."""
    mime = sniff_mime(data)
    return MIME_FORMAT.get(mime) if mime else None


def encode(img: PILImage.Image, output_format: str = "png", compression: int | None = None) -> bytes:
    """Encode deterministically. `compression` is OpenAI's output_compression (0-100, 100 = best)."""
    buf = io.BytesIO()
    fmt = output_format.lower()
    if fmt == "jpeg":
        if img.mode not in ("RGB", "L"):
            img = _flatten(img)
        img.save(buf, format="JPEG", quality=_quality(compression), optimize=False)
    elif fmt == "webp":
        if compression is None or compression >= 100:
            img.save(buf, format="WEBP", lossless=True, method=0)
        else:
            img.save(buf, format="WEBP", quality=_quality(compression), method=0)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unsupported output format {output_format!r}; use png, jpeg or webp")
    return buf.getvalue()


def transcode(data: bytes, output_format: str, compression: int | None = None) -> bytes:
    """Re-encode `data` as `output_format` unless it already is that format (no recompression)."""
    if format_of(data) == output_format.lower() and compression is None:
        return data
    with PILImage.open(io.BytesIO(data)) as img:
        img.load()
        return encode(img, output_format, compression)


def _quality(compression: int | None) -> int:
    return 95 if compression is None else max(1, min(100, int(compression)))


def _flatten(img: PILImage.Image) -> PILImage.Image:
    rgba = img.convert("RGBA")
    background = PILImage.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
