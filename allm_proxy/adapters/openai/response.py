"""OpenAI's `ImagesResponse` JSON as an `ImageResponse`, parsed once, base64 left as text.

The body is kept whole in `raw_json`, so when the proxy converts nothing the
client gets exactly the bytes OpenAI sent; the parse only exposes the parts
the engine may need (images to host or fetch, usage, echo fields).
"""

from __future__ import annotations

from typing import Any

import httpx

from ...errors import UpstreamError
from ...types import Image, ImageResponse, Usage
from .errors import unusable_body
from .json import loads

ECHO_FIELDS = ("background", "output_format", "quality", "size")
_OWN_FIELDS = frozenset({"created", "data", "usage", *ECHO_FIELDS})
_IMAGE_FIELDS = frozenset({"b64_json", "url", "revised_prompt"})


def parse_images_response(response: httpx.Response, body: bytes, *, model: str | None,
                          api_key: str | None = None) -> ImageResponse:
    """The answer in `body` (a 2xx from OpenAI), or a 502 describing what arrived instead (key masked)."""
    try:
        raw = loads(body)
    except ValueError as exc:
        problem = "empty body" if not body.strip() else f"not JSON, or cut short: {exc}"
        raise unusable_body(response, body, problem, api_key) from None
    if not isinstance(raw, dict):
        raise unusable_body(response, body, f"a JSON {type(raw).__name__}, not an object", api_key)
    return response_from_json(raw, body, model=model, response=response, api_key=api_key)


def response_from_json(raw: dict[str, Any], body: bytes | None, *, model: str | None,
                       response: httpx.Response | None = None, api_key: str | None = None) -> ImageResponse:
    data = raw.get("data")
    if data is None:
        data = []
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        if response is not None and body is not None:
            raise unusable_body(response, body, "'data' is not a list of image objects", api_key)
        raise UpstreamError("OpenAI's answer has a 'data' that is not a list of image objects.")
    output_format = _str_or_none(raw.get("output_format"))
    mime = f"image/{output_format}" if output_format in ("png", "jpeg", "webp", "gif") else None
    result = ImageResponse(
        images=[image_from_json(item, mime) for item in data],
        model=model,
        usage=Usage.from_dict(raw["usage"]) if isinstance(raw.get("usage"), dict) else None,
        background=_str_or_none(raw.get("background")),
        output_format=output_format,
        quality=_str_or_none(raw.get("quality")),
        size=_str_or_none(raw.get("size")),
        extra={key: value for key, value in raw.items() if key not in _OWN_FIELDS},
        raw_json=body,
    )
    created = raw.get("created")
    if isinstance(created, int) and not isinstance(created, bool):
        result.created = created
    return result


def image_from_json(item: dict[str, Any], mime_type: str | None) -> Image:
    """One `data[]` entry; the provider's base64 text is kept, never decoded here."""
    b64 = item.get("b64_json")
    url = item.get("url")
    extra = {key: value for key, value in item.items() if key not in _IMAGE_FIELDS}
    revised = _str_or_none(item.get("revised_prompt"))
    if isinstance(b64, str):
        return Image(b64_json=b64, mime_type=mime_type, revised_prompt=revised, extra=extra)
    return Image(url if isinstance(url, str) else None, revised_prompt=revised, extra=extra)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
