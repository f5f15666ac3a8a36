"""Validate an `ImageRequest` against the rules of its model family (docs/spec/openai-images.md §5).

Every rejection is a 400 that names the `param` and says what is allowed, in
the words OpenAI uses where we know them. Permissive families (model ids no
family matches) are checked for types and universal bounds only: the
provider decides the rest.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from PIL import Image as PILImage

from .capabilities import ModelFamily
from .errors import InvalidRequestError, UnknownParameterError, UnsupportedOperationError
from .types import OPTION_FIELDS, TEXT_FIELDS, ImageRequest, InputFile, parse_size

# Pillow refuses images above this many pixels, which stops decompression bombs
# (a tiny PNG that inflates to gigabytes) before they are decoded.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024


class _TooManyPixels(Exception):
    pass


# The largest image any family may ask for (Gemini's flexible sizes reach 8192x8192).
MAX_OUTPUT_EDGE = 16384
MAX_OUTPUT_PIXELS = 8192 * 8192

_CHOICES: dict[str, tuple[str, ...]] = {
    "response_format": ("url", "b64_json"),
    "background": ("transparent", "opaque", "auto"),
    "output_format": ("png", "jpeg", "webp"),
    "moderation": ("low", "auto"),
    "input_fidelity": ("high", "low"),
}


def validate_request(request: ImageRequest, family: ModelFamily, *, requested_model: str, inputs: bool = True) -> None:
    """Raise `InvalidRequestError` (or a subclass) when the family cannot take `request`.

    `inputs=False` leaves the uploaded files out: an upload streaming through has them
    checked when its last byte arrived (`server/uploads.py`)."""
    if request.operation not in family.operations:
        allowed = ", ".join(sorted(family.operations))
        raise UnsupportedOperationError(
            f"The model `{requested_model}` does not support image {_op_name(request.operation)}; "
            f"it supports: {allowed}.",
            param="model",
        )
    _check_text(request)
    _check_prompt(request, family)
    _check_fields(request, family, requested_model)
    _check_n(request, family, requested_model)
    _check_size(request, family, requested_model)
    _check_choices(request, family, requested_model)
    if inputs and request.operation in ("edit", "variation"):
        _check_inputs(request, family, requested_model)


def _op_name(operation: str) -> str:
    return {"generate": "generation", "edit": "edits", "variation": "variations"}[operation]


def _check_text(request: ImageRequest) -> None:
    """Every string must be real Unicode: a lone surrogate (JSON `"\\ud800"`) cannot be sent on as UTF-8."""
    named = [(name, getattr(request, name)) for name in TEXT_FIELDS]
    for name, value in [*named, *request.extra]:
        for text in _strings([name, value]):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequestError(
                    f"Invalid '{name}': it contains a lone UTF-16 surrogate, which is not valid Unicode text. "
                    "Send well-formed UTF-8 text.",
                    param=name,
                    code="invalid_value",
                ) from None


def _strings(value: Any) -> Iterator[str]:
    """The strings in a JSON value (keys included), without recursion: nesting depth is the client's choice."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _check_prompt(request: ImageRequest, family: ModelFamily) -> None:
    if request.operation == "variation":
        return
    if request.prompt is None:
        raise InvalidRequestError(
            "Missing required parameter: 'prompt'. Describe the image you want.",
            param="prompt",
            code="missing_required_parameter",
        )
    if not isinstance(request.prompt, str):
        raise InvalidRequestError(
            f"Invalid type for 'prompt': expected a string, but got {type(request.prompt).__name__}.",
            param="prompt",
            code="invalid_type",
        )
    if not request.prompt.strip():
        raise InvalidRequestError(
            "'prompt' must not be empty. Describe the image you want.", param="prompt", code="empty_string"
        )
    if not family.permissive and len(request.prompt) > family.prompt_max:
        raise InvalidRequestError(
            f"Invalid 'prompt': string too long. Expected a string with maximum length {family.prompt_max}, "
            f"but got a string with length {len(request.prompt)} instead.",
            param="prompt",
            code="string_above_max_length",
        )


def _check_fields(request: ImageRequest, family: ModelFamily, model: str) -> None:
    if family.permissive:
        return
    accepted = family.accepted_fields(request.operation)
    for name in OPTION_FIELDS:
        value = getattr(request, name)
        if value is None or name in accepted:
            continue
        if name == "stream" and value is False:
            continue  # stream=false is what the SDK sends for "no streaming"
        raise UnknownParameterError(
            f"Unknown parameter: '{name}'. The model `{model}` does not take '{name}'.", param=name
        )
    if request.operation == "variation" and request.stream:
        raise UnknownParameterError("Unknown parameter: 'stream'. Variations cannot stream.", param="stream")


def _check_n(request: ImageRequest, family: ModelFamily, model: str) -> None:
    n = request.n
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidRequestError(
            f"Invalid type for 'n': expected an integer, but got {n!r}.", param="n", code="invalid_type"
        )
    if n < 1:
        raise InvalidRequestError(f"{n} is less than the minimum of 1 - 'n'", param="n", code="integer_below_min_value")
    limit = 10 if family.permissive else family.n_max
    if n > limit:
        hint = " dall-e-3 makes one image per request." if limit == 1 else ""
        raise InvalidRequestError(
            f"{n} is greater than the maximum of {limit} - 'n' (model `{model}`).{hint}",
            param="n",
            code="integer_above_max_value",
        )


def _check_size(request: ImageRequest, family: ModelFamily, model: str) -> None:
    size = request.size
    if size is None:
        return
    if not isinstance(size, str):
        raise InvalidRequestError(
            f"Invalid type for 'size': expected a string like '1024x1024', got {size!r}.",
            param="size",
            code="invalid_type",
        )
    if size != "auto":
        try:
            parse_size(size)
        except ValueError:
            raise InvalidRequestError(
                f"Invalid 'size': {size!r} is not WIDTHxHEIGHT (e.g. '1024x1024'). "
                f"Supported for `{model}`: {family.describe_sizes() or 'any WIDTHxHEIGHT'}.",
                param="size",
                code="invalid_size",
            ) from None
    if family.permissive:
        _check_size_bounds(size, model)
        return
    if family.size_allowed(size):
        return
    if size == "auto" and family.default_size:
        raise InvalidRequestError(
            f"'auto' is not one of [{_quoted(family.sizes)}] - 'size' (model `{model}`)",
            param="size",
            code="invalid_size",
        )
    if family.flexible_sizes is not None:
        wh = parse_size(size)
        reason = family.flexible_sizes.check(*wh) if wh else None
        raise InvalidRequestError(
            f"Invalid 'size' {size!r} for `{model}`: {reason}. Supported: {family.describe_sizes()}.",
            param="size",
            code="invalid_size",
        )
    raise InvalidRequestError(
        f"'{size}' is not one of [{_quoted(family.sizes)}] - 'size' (model `{model}`)",
        param="size",
        code="invalid_size",
    )


def _check_size_bounds(size: str, model: str) -> None:
    """What a permissive family still checks: no provider makes bigger images (the known families' own
    limits are tighter), and the fake must never be asked to allocate gigapixels."""
    wh = parse_size(size)
    if wh is None:
        return
    width, height = wh
    if min(wh) < 1 or max(wh) > MAX_OUTPUT_EDGE or width * height > MAX_OUTPUT_PIXELS:
        raise InvalidRequestError(
            f"Invalid 'size' {size!r} for `{model}`: width and height must be 1 to {MAX_OUTPUT_EDGE} pixels "
            f"and the image at most {MAX_OUTPUT_PIXELS // 1_000_000} megapixels (8192x8192).",
            param="size",
            code="invalid_size",
        )


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _check_choices(request: ImageRequest, family: ModelFamily, model: str) -> None:
    choices = dict(_CHOICES)
    if not family.permissive:
        if family.qualities:
            choices["quality"] = family.qualities
        if family.styles:
            choices["style"] = family.styles
    for name, allowed in choices.items():
        value = getattr(request, name)
        if value is None:
            continue
        if value not in allowed:
            raise InvalidRequestError(
                f"Invalid value for '{name}': {value!r} is not one of [{_quoted(allowed)}] (model `{model}`).",
                param=name,
                code="invalid_value",
            )
    if request.background == "transparent" and request.output_format == "jpeg":
        raise InvalidRequestError(
            "background 'transparent' needs output_format 'png' or 'webp'; JPEG has no alpha channel.",
            param="background",
            code="invalid_value",
        )
    _check_int_range(request.output_compression, "output_compression", 0, 100)
    _check_int_range(request.partial_images, "partial_images", 0, 3)


def _check_int_range(value: object, name: str, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(
            f"Invalid type for '{name}': expected an integer, but got {value!r}.", param=name, code="invalid_type"
        )
    if not low <= value <= high:
        raise InvalidRequestError(
            f"Invalid '{name}': {value} is not between {low} and {high}.", param=name, code="invalid_value"
        )


def _check_inputs(request: ImageRequest, family: ModelFamily, model: str) -> None:
    if not request.images:
        raise InvalidRequestError(
            "Missing required parameter: 'image'. Send the image to edit as a file part named 'image' "
            "(or several as 'image[]').",
            param="image",
            code="missing_required_parameter",
        )
    limit = 1 if request.operation == "variation" else (16 if family.permissive else family.max_input_images)
    if len(request.images) > limit:
        raise InvalidRequestError(
            f"Too many images: got {len(request.images)}, `{model}` takes at most {limit}.",
            param="image",
            code="too_many_images",
        )
    sizes = [image_dimensions(f, "image") for f in request.images]
    if family.square_png_input:
        first = request.images[0]
        if first.mime_type != "image/png" or sizes[0][0] != sizes[0][1]:
            raise InvalidRequestError(
                f"Invalid input image: `{model}` needs a square PNG image, got {first.mime_type} "
                f"{sizes[0][0]}x{sizes[0][1]}.",
                param="image",
                code="invalid_image_format",
            )
        if first.size > 4 * 1024 * 1024:
            raise InvalidRequestError(
                f"Invalid input image: `{model}` needs a PNG under 4 MB.", param="image", code="image_too_large"
            )
    if request.mask is not None:
        check_mask(request.mask, sizes[0])


def image_dimensions(upload: InputFile, param: str) -> tuple[int, int]:
    """(width, height) of an upload, or a 400 saying why it is not a usable image."""
    if upload.mime_type not in ("image/png", "image/jpeg", "image/webp"):
        raise InvalidRequestError(
            f"Invalid '{param}': the file {upload.filename or '(unnamed)'} is not a PNG, JPEG or WEBP image "
            f"(its first bytes are {upload.data[:8]!r}).",
            param=param,
            code="invalid_image_format",
        )
    if upload.streamed is not None:
        return _streamed_dimensions(upload, param)
    try:
        with PILImage.open(io.BytesIO(upload.data)) as img:
            width, height = img.size
            # Checked from the header, before any decoding: a decompression bomb is a few kB of
            # file declaring gigapixels. (Pillow's own global limit is left alone for host apps.)
            if width * height > MAX_IMAGE_PIXELS:
                raise _TooManyPixels
            if img.format == "JPEG":
                img.load()  # JPEG's verify() checks nothing: only decoding finds a truncated file
            else:
                img.verify()  # PNG: every chunk's CRC, up to IEND, without decoding pixels
    except (_TooManyPixels, PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise InvalidRequestError(
            f"Invalid '{param}': the image is larger than {MAX_IMAGE_PIXELS} pixels; downscale it before sending.",
            param=param,
            code="image_too_large",
        ) from None
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise InvalidRequestError(
            f"Invalid '{param}': the file {upload.filename or '(unnamed)'} could not be read as an image "
            f"({type(exc).__name__}). Is it truncated or corrupt?",
            param=param,
            code="invalid_image",
        ) from None
    return width, height


def _streamed_dimensions(upload: InputFile, param: str) -> tuple[int, int]:
    """The size of a file that streamed through, from its head: the server hands one over only
    when its structure was checked whole on the way (`StreamedFile.intact`) and its head tells
    the size (`header_dimensions`); any other file it checks from its bytes, as above."""
    assert upload.streamed is not None and upload.streamed.intact, "only an intact streamed file is checked here"
    width, height = header_dimensions(upload.data)
    assert width is not None and height is not None, "the head of a streamed file tells its size"
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidRequestError(
            f"Invalid '{param}': the image is larger than {MAX_IMAGE_PIXELS} pixels; downscale it before sending.",
            param=param,
            code="image_too_large",
        )
    return width, height


def header_dimensions(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from an image's header (its first bytes are enough); Pillow decodes no pixels."""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            return image.width, image.height
    except Exception:  # not an image Pillow knows: the sizes stay unknown
        return None, None


def check_mask(mask: InputFile, image_size: tuple[int, int]) -> None:
    """A mask must be a PNG with an alpha channel and the size of the (first) image."""
    size = image_dimensions(mask, "mask")
    if mask.mime_type != "image/png":
        raise InvalidRequestError(
            f"Invalid 'mask': it must be a PNG with an alpha channel, got {mask.mime_type}.",
            param="mask",
            code="invalid_image_format",
        )
    if size != image_size:
        raise InvalidRequestError(
            f"Invalid 'mask': its size {size[0]}x{size[1]} differs from the image's {image_size[0]}x{image_size[1]}; "
            "the mask must have the same dimensions as the image.",
            param="mask",
            code="invalid_mask",
        )
    with PILImage.open(io.BytesIO(mask.data)) as img:
        has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    if not has_alpha:
        raise InvalidRequestError(
            "Invalid 'mask': it has no alpha channel. Fully transparent pixels (alpha 0) mark the area to edit, "
            "so the mask must be an RGBA (or LA) PNG.",
            param="mask",
            code="invalid_mask",
        )
