"""The OpenAI `ImagesResponse` JSON, both ways: rendered for clients (the server), parsed from OpenAI (the adapter).

Parsing keeps the provider's base64 as text and the body whole in
`raw_json`, so when the proxy converts nothing the client gets exactly the
bytes OpenAI sent; it only exposes what the engine may need (images to host
or fetch, usage, echo fields).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..types import Image, ImageResponse, Usage
from .jsonbytes import Splicer

# The GPT-image settings an answer echoes (docs/spec/openai-images.md §6), in OpenAI's order.
ECHO_FIELDS = ("background", "output_format", "quality", "size")
_OWN_FIELDS = frozenset({"created", "data", "usage", *ECHO_FIELDS})
_IMAGE_FIELDS = frozenset({"b64_json", "url", "revised_prompt"})


def render_response(response: ImageResponse, *, gpt_style: bool) -> bytes:
    """The `ImagesResponse` JSON. The echo fields and usage appear where the family has them."""
    if response.raw_json is not None:
        return response.raw_json
    spliced = Splicer()
    body: dict[str, Any] = {"created": response.created}
    if gpt_style and response.background is not None:
        body["background"] = response.background
    body["data"] = [_image_json(image, spliced) for image in response.images]
    if gpt_style:
        for key in ECHO_FIELDS:
            value = getattr(response, key)
            if key != "background" and value is not None:  # keys in alphabetical order, as OpenAI sends them
                body[key] = value
        if response.usage is not None:
            body["usage"] = response.usage.to_dict()
    for key, value in response.extra.items():
        body.setdefault(key, value)
    return spliced.dumps(body)


def _image_json(image: Image, spliced: Splicer) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if image.has_bytes:
        item["b64_json"] = spliced.placeholder(image)
    elif image.url is not None:
        item["url"] = image.url
    if image.revised_prompt is not None:
        item["revised_prompt"] = image.revised_prompt
    item.update({k: v for k, v in image.extra.items() if k not in item})
    return item


def render_models(models: Iterable[Mapping[str, Any]]) -> bytes:
    return json.dumps({"object": "list", "data": list(models)}).encode()


def response_from_json(raw: dict[str, Any], body: bytes | None, *, model: str | None) -> ImageResponse:
    """OpenAI's answer, parsed; `body` (its bytes) is kept as `raw_json` to relay unchanged.

    ValueError when `data` is not a list of image objects (the adapter makes it a 502).
    """
    data = raw.get("data")
    if data is None:
        data = []
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("'data' is not a list of image objects")
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
    """One `data[]` entry; the provider's base64 text (or its bytes, a view) is kept, never decoded here."""
    b64 = item.get("b64_json")
    url = item.get("url")
    extra = {key: value for key, value in item.items() if key not in _IMAGE_FIELDS}
    revised = _str_or_none(item.get("revised_prompt"))
    if isinstance(b64, str | memoryview):
        return Image(b64_json=b64, mime_type=mime_type, revised_prompt=revised, extra=extra)
    return Image(url if isinstance(url, str) else None, revised_prompt=revised, extra=extra)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
