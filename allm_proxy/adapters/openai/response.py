"""OpenAI's `ImagesResponse` answer read off the HTTP response; the JSON itself is `wire.responses`.

What is left here is the transport side: a body that is not the answer
(empty, cut short, not JSON, `data` of the wrong shape) becomes a 502 that
names the upstream and what arrived, with the key masked.
"""

from __future__ import annotations

from typing import Any

import httpx

from ...types import ImageResponse
from ...wire.jsonbytes import loads_sparing_base64
from ...wire.responses import response_from_json
from .errors import unusable_body


def parse_images_response(
    response: httpx.Response, body: bytes, *, model: str | None, api_key: str | None = None
) -> ImageResponse:
    """The answer in `body` (a 2xx from OpenAI), or a 502 describing what arrived instead (key masked)."""
    try:
        raw = loads_sparing_base64(body)  # the base64 stays bytes: most answers are relayed unchanged
    except ValueError as exc:
        problem = "empty body" if not body.strip() else f"not JSON, or cut short: {exc}"
        raise unusable_body(response, body, problem, api_key) from None
    if not isinstance(raw, dict):
        raise unusable_body(response, body, f"a JSON {type(raw).__name__}, not an object", api_key)
    return answer_from_json(response, raw, body, model=model, api_key=api_key)


def answer_from_json(
    response: httpx.Response, raw: dict[str, Any], body: bytes, *, model: str | None, api_key: str | None
) -> ImageResponse:
    """`wire.responses.response_from_json`, its complaint a 502 naming the upstream."""
    try:
        return response_from_json(raw, body, model=model)
    except ValueError as exc:
        raise unusable_body(response, body, str(exc), api_key) from None
