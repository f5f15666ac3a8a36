"""The OpenAI Images wire <-> core types. Pure functions: parse, render.

Parsing accepts exactly what the official SDKs send (spec section 10): JSON
generations, multipart edits and variations with `image` or `image[]`,
values as strings in multipart, `null` meaning "not given", file parts with
a wrong Content-Type, and any extra field (kept, in order, for providers
that pass requests through). Everything else becomes an `InvalidRequestError`
or `UnsupportedMediaTypeError` naming what to change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidRequestError, ProxyError, UnsupportedMediaTypeError
from ..types import (
    BOOL_FIELDS,
    INT_FIELDS,
    KNOWN_FIELDS,
    TEXT_FIELDS,
    ImageEvent,
    ImageRequest,
    ImageResponse,
    InputFile,
    Operation,
    b64decode_lenient,
)
from .multipart import MultipartError, parse_multipart

_IMAGE_FIELDS = ("image", "image[]")

JSON_PARSE_ERROR = (
    "We could not parse the JSON body of your request. The Images API expects a JSON object such as "
    '{"prompt": "a cat"} with Content-Type: application/json.'
)


def parse_request(operation: Operation, content_type: str | None, body: bytes) -> ImageRequest:
    """An `ImageRequest` from an HTTP body, or a 4xx error saying what is wrong."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        return _parse_multipart(operation, content_type or "", body)
    if media in ("application/json", "") or media.endswith("+json"):
        if operation == "variation":
            raise UnsupportedMediaTypeError(
                "Variations take multipart/form-data with the image as a file part named 'image'.",
            )
        return _parse_json(operation, body)
    expected = "application/json" if operation == "generate" else "multipart/form-data"
    raise UnsupportedMediaTypeError(
        f"Unsupported Content-Type {media!r}: image {operation} requests take {expected}.",
    )


def _parse_json(operation: Operation, body: bytes) -> ImageRequest:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(JSON_PARSE_ERROR + " (The body is not valid UTF-8.)") from None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise InvalidRequestError(JSON_PARSE_ERROR) from None
    if not isinstance(raw, dict):
        raise InvalidRequestError(
            f"The request body must be a JSON object, got a JSON {type(raw).__name__}. " + JSON_PARSE_ERROR
        )
    request = ImageRequest(operation=operation, encoding="json")
    for name, value in raw.items():
        if name in ("images", "mask") and operation == "edit":
            _set_json_edit_files(request, name, value)
        elif name in KNOWN_FIELDS:
            setattr(request, name, _coerce_json(name, value))
        else:
            request.extra.append((name, value))
    return request


def _coerce_json(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in TEXT_FIELDS:
        if not isinstance(value, str):
            raise _type_error(name, "a string", value)
        return value
    if name in INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not value.is_integer()):  # 1.5, inf and NaN alike
            raise _type_error(name, "an integer", value)
        return int(value)
    if name in BOOL_FIELDS:
        if not isinstance(value, bool):
            raise _type_error(name, "a boolean", value)
        return value
    return value


def _type_error(name: str, expected: str, value: Any) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid type for '{name}': expected {expected}, but got {json.dumps(value)[:60]} instead.",
        param=name, code="invalid_type",
    )


def _set_json_edit_files(request: ImageRequest, name: str, value: Any) -> None:
    """The JSON edit form: images as `{"image_url": "data:..."}` references."""
    refs = value if name == "images" else [value]
    if value is None:
        return
    if not isinstance(refs, list):
        raise _type_error(name, "a list of {\"image_url\": ...} objects", value)
    files = []
    for ref in refs:
        url = ref.get("image_url") if isinstance(ref, dict) else None
        if not isinstance(url, str) or not url.startswith("data:"):
            raise InvalidRequestError(
                f"Invalid '{name}': this proxy takes JSON edit images as data: URLs "
                '({"image_url": "data:image/png;base64,..."}); send files as multipart/form-data instead.',
                param=name, code="invalid_value",
            )
        header, _, payload = url.partition(",")
        try:
            data = b64decode_lenient(payload)
        except ValueError:
            raise InvalidRequestError(f"Invalid '{name}': the data: URL is not valid base64.", param=name) from None
        files.append(InputFile(data, filename=None, content_type=header[5:].split(";")[0] or None,
                               field="mask" if name == "mask" else "image[]"))
    if name == "mask":
        request.mask = files[0] if files else None
    else:
        request.images = files


def _parse_multipart(operation: Operation, content_type: str, body: bytes) -> ImageRequest:
    try:
        parts = parse_multipart(content_type, body)
    except MultipartError as exc:
        raise InvalidRequestError(f"Could not read the multipart/form-data body: {exc}.") from None
    request = ImageRequest(operation=operation, encoding="multipart")
    for part in parts:
        if part.name in _IMAGE_FIELDS or part.name == "mask":
            if not part.is_file:
                raise InvalidRequestError(
                    f"'{part.name}' must be a file part (with a filename), not a text field.",
                    param="image" if part.name != "mask" else "mask", code="invalid_type",
                )
            upload = InputFile(part.data, filename=part.filename, content_type=part.content_type, field=part.name)
            if part.name == "mask":
                if request.mask is not None:
                    raise InvalidRequestError("Only one 'mask' file may be sent.", param="mask")
                request.mask = upload
            else:
                request.images.append(upload)
        elif part.is_file:
            request.extra_files.append(
                InputFile(part.data, filename=part.filename, content_type=part.content_type, field=part.name)
            )
        else:
            try:
                text = part.text()
            except MultipartError as exc:
                raise InvalidRequestError(f"Invalid '{part.name}': {exc}; send form fields as UTF-8 text.",
                                          param=part.name, code="invalid_value") from None
            if part.name in KNOWN_FIELDS:
                setattr(request, part.name, _coerce_text(part.name, text))
            else:
                request.extra.append((part.name, text))
    return request


def _coerce_text(name: str, text: str) -> Any:
    if name in INT_FIELDS:
        try:
            return int(text.strip())
        except ValueError:
            raise _type_error(name, "an integer", text) from None
    if name in BOOL_FIELDS:
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise _type_error(name, "'true' or 'false'", text)
    return text


# -- rendering ------------------------------------------------------------------


def render_response(response: ImageResponse, *, gpt_style: bool) -> bytes:
    """The `ImagesResponse` JSON. The echo fields and usage appear where the family has them."""
    if response.raw_json is not None:
        return response.raw_json
    spliced = _Splicer()
    body: dict[str, Any] = {"created": response.created}
    if gpt_style and response.background is not None:
        body["background"] = response.background
    body["data"] = [_image_json(image, spliced) for image in response.images]
    if gpt_style:
        for key in ("output_format", "quality", "size"):
            value = getattr(response, key)
            if value is not None:
                body[key] = value
        if response.usage is not None:
            body["usage"] = response.usage.to_dict()
    for key, value in response.extra.items():
        body.setdefault(key, value)
    return spliced.dumps(body)


def _image_json(image: Any, spliced: _Splicer) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if image.has_bytes:
        item["b64_json"] = spliced.placeholder(image)
    elif image.url is not None:
        item["url"] = image.url
    if image.revised_prompt is not None:
        item["revised_prompt"] = image.revised_prompt
    item.update({k: v for k, v in image.extra.items() if k not in item})
    return item


class _Splicer:
    """json.dumps with base64 images spliced in as bytes afterwards.

    Base64 never needs JSON escaping, yet json.dumps scans every character of
    a string: for a 1024x1024 image that is most of the cost of an answer.
    Each image goes into the document as a short placeholder, and its bytes
    replace the placeholder in the encoded output.
    """

    def __init__(self) -> None:
        self._images: list[bytes] = []
        self._token = "allm-b64-" + uuid.uuid4().hex

    def placeholder(self, image: Any) -> str:
        data = image.b64_bytes()
        if not _plain_json_text(data):
            # A provider's text with quotes, backslashes or line breaks: let json escape it.
            return str(image.b64_json())
        self._images.append(data)
        return f"{self._token}-{len(self._images) - 1}"

    def dumps(self, document: Any) -> bytes:
        encoded = json.dumps(document, separators=(",", ":")).encode()
        if not self._images:
            return encoded
        pieces = encoded.split(self._token.encode() + b"-")
        out = [pieces[0]]
        for piece in pieces[1:]:
            index, _, rest = piece.partition(b'"')
            out += [self._images[int(index)], b'"', rest]
        return b"".join(out)


def _plain_json_text(data: bytes) -> bool:
    """True when `data` can stand inside a JSON string (and an SSE data line) as it is.
    Base64 always can; this guards text a provider sent as base64. Each test is one C scan."""
    return data.isascii() and not any(c in data for c in (b'"', b"\\", b"\n", b"\r", b"\t", b"\x00"))


def render_event(event: ImageEvent) -> bytes:
    """One SSE event, `event: <type>\\ndata: <json>\\n\\n` (spec section 7)."""
    spliced = _Splicer()
    if event.kind == "error":
        payload: dict[str, Any] = {"type": "error", "error": event.error or {}}
    else:
        payload = {"type": event.type}
        if event.image is not None:
            payload["b64_json"] = spliced.placeholder(event.image)
        for key, value in event.fields.items():
            payload.setdefault(key, value)
        if event.kind == "partial_image":
            payload["partial_image_index"] = event.partial_image_index or 0
        if event.usage is not None:
            payload["usage"] = event.usage.to_dict()
    return b"event: " + payload["type"].encode() + b"\ndata: " + spliced.dumps(payload) + b"\n\n"


def render_error_event(error: ProxyError) -> bytes:
    return render_event(ImageEvent(kind="error", error=error.envelope()["error"]))


def render_models(models: Iterable[Mapping[str, Any]]) -> bytes:
    return json.dumps({"object": "list", "data": list(models)}).encode()
