"""The library API: generate, edit and vary images in-process, sync or async, no server.

from allm_proxy import Engine, generate_image
engine = Engine()                                   # the built-in fake provider
resp = generate_image(engine, "a watercolor kestrel", size="512x512", n=2)
png = resp.images[0].to_binary()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..call import Call
from ..types import KNOWN_FIELDS, Image, ImageRequest, ImageResponse, InputFile

if TYPE_CHECKING:
    from . import Engine

ImageInput = bytes | str | os.PathLike[str] | Image | InputFile


# Every typed request field but the prompt is an option (the images are arguments of their own).
_OPTION_FIELDS = frozenset(KNOWN_FIELDS) - {"prompt"}


def _build_request(
    operation: str,
    prompt: str | None,
    images: list[InputFile],
    mask: InputFile | None,
    opts: dict[str, Any],
) -> tuple[ImageRequest, Call]:
    call = Call(client_key=opts.pop("api_key", None), session=opts.pop("session", "default"))
    extra = opts.pop("extra", None) or {}
    unknown = set(opts) - _OPTION_FIELDS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; use extra={{...}} for provider fields")
    size = opts.pop("size", None)
    if isinstance(size, tuple | list):
        size = f"{int(size[0])}x{int(size[1])}"
    request = ImageRequest(
        operation=operation,  # type: ignore[arg-type]
        prompt=prompt,
        images=images,
        mask=mask,
        size=size,
        extra=list(extra.items()),
        encoding="json" if operation == "generate" else "multipart",
        **opts,
    )
    return request, call


def to_input_file(value: ImageInput, field_name: str = "image") -> InputFile:
    """bytes, a path, an `Image` or an `InputFile` as an upload."""
    if isinstance(value, InputFile):
        return value
    if isinstance(value, Image):
        return InputFile(value.to_binary(), filename="image", content_type=value.mime_type, field=field_name)
    if isinstance(value, bytes | bytearray):
        return InputFile(bytes(value), filename="upload", field=field_name)
    path = Path(value)
    return InputFile(path.read_bytes(), filename=path.name, field=field_name)


def _image_list(image: ImageInput | list[ImageInput]) -> list[InputFile]:
    if isinstance(image, list | tuple):
        return [to_input_file(i, "image[]") for i in image]
    return [to_input_file(image)]


async def _finish(engine: Engine, request: ImageRequest, call: Call) -> ImageResponse:
    result = await engine.run(request, call)
    if isinstance(result, ImageResponse):
        return result
    raise TypeError("stream=True returns events; use engine.run() directly to iterate them")


async def agenerate_image(engine: Engine, prompt: str, **opts: Any) -> ImageResponse:
    """Generate images from a prompt. Options: model, size ("WxH" or (w, h)), n, response_format,
    quality, style, background, output_format, output_compression, moderation, user, api_key, extra."""
    request, call = _build_request("generate", prompt, [], None, opts)
    return await _finish(engine, request, call)


async def aedit_image(
    engine: Engine, image: ImageInput | list[ImageInput], prompt: str, mask: ImageInput | None = None, **opts: Any
) -> ImageResponse:
    """Edit one image (or several, as a list) following a prompt; transparent mask pixels mark the area."""
    request, call = _build_request(
        "edit", prompt, _image_list(image), to_input_file(mask, "mask") if mask is not None else None, opts
    )
    return await _finish(engine, request, call)


async def aimage_variations(engine: Engine, image: ImageInput, **opts: Any) -> ImageResponse:
    """Variations of one image."""
    request, call = _build_request("variation", None, [to_input_file(image)], None, opts)
    return await _finish(engine, request, call)


def generate_image(engine: Engine, prompt: str, **opts: Any) -> ImageResponse:
    """Sync twin of `agenerate_image`.

    resp = generate_image(engine, "a kestrel", size=(512, 512), n=2)
    """
    return engine.run_sync(agenerate_image(engine, prompt, **opts))


def edit_image(
    engine: Engine, image: ImageInput | list[ImageInput], prompt: str, mask: ImageInput | None = None, **opts: Any
) -> ImageResponse:
    """Sync twin of `aedit_image`."""
    return engine.run_sync(aedit_image(engine, image, prompt, mask, **opts))


def image_variations(engine: Engine, image: ImageInput, **opts: Any) -> ImageResponse:
    """Sync twin of `aimage_variations`."""
    return engine.run_sync(aimage_variations(engine, image, **opts))
