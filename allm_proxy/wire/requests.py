"""OpenAI Images requests, both ways: HTTP body -> `ImageRequest` (the server), and back (the adapter).

Parsing accepts exactly what the official SDKs send (docs/spec/openai-images.md §10): JSON
generations, multipart edits and variations with `image` or `image[]`,
values as strings in multipart, `null` meaning "not given", file parts with
a wrong Content-Type, and any extra field (kept, in order, for providers
that pass requests through). Everything else becomes an `InvalidRequestError`
or `UnsupportedMediaTypeError` naming what to change.

Rendering is the pass-through: a JSON generation whose bytes say exactly the
parsed request (`ImageRequest.verbatim`) goes on as it came; otherwise it keeps the client's form
(`ImageRequest.encoding`), every field it sent (typed ones and `extra`, in
order), and every file with its part name (`image` vs `image[]`), filename,
content type and bytes. Typed values are rendered as each form expects: JSON
values, or multipart strings (`2`, `true`). Multipart parts come in the order
the Python SDK uses (docs/spec/openai-images.md §10.3): `prompt`, the typed fields
alphabetically, the extra fields, then the files (`image`/`image[]`, extra
files such as `markup`, `mask`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError, UnsupportedMediaTypeError
from ..types import (
    BOOL_FIELDS,
    INT_FIELDS,
    KNOWN_FIELDS,
    TEXT_FIELDS,
    ImageRequest,
    InputFile,
    Operation,
    UploadBody,
    b64decode_lenient,
)
from .multipart import MultipartError, Part, encode_multipart, parse_multipart

_IMAGE_FIELDS = ("image", "image[]")

JSON_PARSE_ERROR = (
    "We could not parse the JSON body of your request. The Images API expects a JSON object such as "
    '{"prompt": "a cat"} with Content-Type: application/json.'
)


def parse_request(operation: Operation, content_type: str | None, body: bytes) -> ImageRequest:
    """An `ImageRequest` from an HTTP body, or a 4xx error saying what is wrong."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        return parse_multipart_request(operation, content_type or "", body)
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
    # Whether rendering this request again would send what the client sent (parsed-equal):
    # not when a typed field is null (rendering leaves it out) or an integer came as 2.0.
    verbatim = operation == "generate"
    for name, value in raw.items():
        if name in ("images", "mask") and operation == "edit":
            _set_json_edit_files(request, name, value)
        elif name in KNOWN_FIELDS:
            coerced = _coerce_json(name, value)
            verbatim = verbatim and coerced is not None and type(coerced) is type(value)
            setattr(request, name, coerced)
        else:
            request.extra.append((name, value))
    if verbatim:
        request.verbatim = body
    return request


def _coerce_json(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in TEXT_FIELDS:
        if not isinstance(value, str):
            raise _type_error(name, "a string", value)
        return value
    if name in INT_FIELDS:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not value.is_integer())
        ):  # 1.5, inf and NaN alike
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
        param=name,
        code="invalid_type",
    )


def _set_json_edit_files(request: ImageRequest, name: str, value: Any) -> None:
    """The JSON edit form: images as `{"image_url": "data:..."}` references."""
    refs = value if name == "images" else [value]
    if value is None:
        return
    if not isinstance(refs, list):
        raise _type_error(name, 'a list of {"image_url": ...} objects', value)
    files = []
    for ref in refs:
        url = ref.get("image_url") if isinstance(ref, dict) else None
        if not isinstance(url, str) or not url.startswith("data:"):
            raise InvalidRequestError(
                f"Invalid '{name}': this proxy takes JSON edit images as data: URLs "
                '({"image_url": "data:image/png;base64,..."}); send files as multipart/form-data instead.',
                param=name,
                code="invalid_value",
            )
        header, _, payload = url.partition(",")
        try:
            data = b64decode_lenient(payload)
        except ValueError:
            raise InvalidRequestError(f"Invalid '{name}': the data: URL is not valid base64.", param=name) from None
        files.append(
            InputFile(
                data,
                filename=None,
                content_type=header[5:].split(";")[0] or None,
                field="mask" if name == "mask" else "image[]",
            )
        )
    if name == "mask":
        request.mask = files[0] if files else None
    else:
        request.images = files


def parse_multipart_request(operation: Operation, content_type: str, body: bytes | Iterable[bytes]) -> ImageRequest:
    """The request of a multipart body, given whole or in pieces (a spooled upload)."""
    try:
        parts = parse_multipart(content_type, body)
    except MultipartError as exc:
        raise multipart_error(exc) from None
    return request_from_parts(operation, parts)


def multipart_error(exc: MultipartError) -> InvalidRequestError:
    return InvalidRequestError(f"Could not read the multipart/form-data body: {exc}.")


def request_from_parts(
    operation: Operation, parts: Iterable[Part], *, upload: Callable[[Part], InputFile] | None = None
) -> ImageRequest:
    """The request the parts say, in order; `upload(part)` makes each file's `InputFile` (a streamed
    upload's head and digest), else the part's bytes are the file."""
    request = ImageRequest(operation=operation, encoding="multipart")
    for part in parts:
        if part.name in _IMAGE_FIELDS or part.name == "mask":
            if not part.is_file:
                raise InvalidRequestError(
                    f"'{part.name}' must be a file part (with a filename), not a text field.",
                    param="image" if part.name != "mask" else "mask",
                    code="invalid_type",
                )
            file = upload(part) if upload is not None else _input_file(part)
            if part.name == "mask":
                if request.mask is not None:
                    raise InvalidRequestError("Only one 'mask' file may be sent.", param="mask")
                request.mask = file
            else:
                request.images.append(file)
        elif part.is_file:
            request.extra_files.append(upload(part) if upload is not None else _input_file(part))
        else:
            text = form_text(part)
            if part.name in KNOWN_FIELDS:
                setattr(request, part.name, _coerce_text(part.name, text))
            else:
                request.extra.append((part.name, text))
    return request


def _input_file(part: Part) -> InputFile:
    return InputFile(part.data, filename=part.filename, content_type=part.content_type, field=part.name)


def form_text(part: Part) -> str:
    """A text part's value, or the 400 for one that is not UTF-8."""
    try:
        return part.text()
    except MultipartError as exc:
        raise InvalidRequestError(
            f"Invalid '{part.name}': {exc}; send form fields as UTF-8 text.",
            param=part.name,
            code="invalid_value",
        ) from None


def says_exactly(parts: Iterable[Part]) -> bool:
    """True when rendering the request these parts make would send the same parts again
    (the multipart twin of `ImageRequest.verbatim`): each typed field once, in the form
    `form_values` writes it (`2`, `true`), every file labelled with a Content-Type.
    Part order and the boundary may differ; part contents and headers do not.
    """
    seen: set[str] = set()
    for part in parts:
        if part.is_file:
            if part.content_type is None:
                return False  # rendering labels it with the type its bytes show
            continue
        if part.name not in KNOWN_FIELDS:
            continue  # extras go on as the strings they came as
        if part.name in seen:
            return False  # the last one wins; rendering sends it once
        seen.add(part.name)
        try:
            value = _coerce_text(part.name, form_text(part))
        except InvalidRequestError:
            return False
        if list(form_values(part.name, value)) != [(part.name, part.text())]:
            return False
    return True


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


# -- rendering (the openai adapter's pass-through) ----------------------------------

# Typed fields after `prompt`, alphabetically: the SDK's signature order.
_SDK_ORDER = tuple(sorted(name for name in KNOWN_FIELDS if name != "prompt"))


@dataclass
class Body:
    """A rendered request body and its Content-Type."""

    content: bytes
    content_type: str
    # A multipart body streaming through as the client sends it (then `content` is empty).
    upload: UploadBody | None = None


def render_body(request: ImageRequest, model: str | None) -> Body:
    """The body for `request`, sending `model` (the provider model, aliases resolved).

    The fast path: a JSON body the client sent that says exactly this request (`verbatim`)
    goes on as it came, with no second encoding."""
    if request.verbatim is not None and request.encoding == "json" and model == request.model:
        return Body(request.verbatim, "application/json")
    if request.upload is not None and model == request.model:
        return Body(b"", request.upload.content_type, upload=request.upload)
    if any(f.streamed is not None for f in [*request.images, *request.extra_files, request.mask] if f):
        # Only the head of a streamed file is here: rendering would send a truncated file.
        raise RuntimeError("a request whose uploads streamed through cannot be rendered again")
    if request.encoding == "multipart":
        return render_multipart(request, model)
    return render_json(request, model)


def typed_fields(request: ImageRequest, model: str | None) -> Iterator[tuple[str, Any]]:
    """(name, value) of every typed field the client gave; `None` means it did not."""
    if request.prompt is not None:
        yield "prompt", request.prompt
    for name in _SDK_ORDER:
        value = model if name == "model" else getattr(request, name)
        if value is not None:
            yield name, value


def render_json(request: ImageRequest, model: str | None) -> Body:
    payload: dict[str, Any] = dict(typed_fields(request, model))
    if request.operation == "edit":
        # The JSON edit form (docs/spec/openai-images.md §3): images travel as data: URLs.
        if request.images:
            payload["images"] = [{"image_url": _data_url(f)} for f in request.images]
        if request.mask is not None:
            payload["mask"] = {"image_url": _data_url(request.mask)}
    for name, value in request.extra:
        payload[name] = value
    return Body(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), "application/json")


def _data_url(upload: InputFile) -> str:
    return f"data:{upload.mime_type};base64,{base64.b64encode(upload.data).decode('ascii')}"


def render_multipart(request: ImageRequest, model: str | None) -> Body:
    parts = [
        Part(field_name, text.encode())
        for name, value in [*typed_fields(request, model), *request.extra]
        for field_name, text in form_values(name, value)
    ]
    files = [*request.images, *request.extra_files, *([request.mask] if request.mask is not None else [])]
    # A part with no filename would read as a text field upstream; the SDKs call such files "upload".
    # The client's label is kept even when wrong (docs/spec/openai-images.md §0 rule 3: the provider sniffs);
    # a file that came with none (library callers) gets the type its bytes show.
    parts += [
        Part(
            upload.field,
            upload.data,
            filename=upload.filename or "upload",
            content_type=upload.content_type or upload.mime_type,
        )
        for upload in files
    ]
    content, content_type = encode_multipart(parts)
    return Body(content, content_type)


def form_values(name: str, value: Any) -> Iterator[tuple[str, str]]:
    """A value as multipart text fields, the way the SDKs flatten them.

    Strings (what multipart extras already are) stay as sent; booleans are
    `true`/`false`; nested objects use bracket keys (`svg[model]`); lists
    repeat `name[]`; `None` is left out (the SDK leaves it out too).
    """
    if value is None:
        return
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, bool):
        yield name, "true" if value else "false"
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from form_values(f"{name}[{key}]", inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from form_values(f"{name}[]", inner)
    else:
        yield name, str(value)
