"""An `ImageRequest` back on the OpenAI wire: the JSON or multipart body the client sent.

The pass-through keeps the client's form (`ImageRequest.encoding`), every
field it sent (typed ones and `extra`, in order), and every file with its
part name (`image` vs `image[]`), filename, content type and bytes. Typed
values are rendered as each form expects: JSON values, or multipart strings
(`2`, `true`). Multipart parts come in the order the Python SDK uses
(spec section 10.3): `prompt`, the typed fields alphabetically, the extra
fields, then the files (`image`/`image[]`, extra files such as `markup`, `mask`).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...types import KNOWN_FIELDS, ImageRequest, InputFile

# Typed fields after `prompt`, alphabetically: the SDK's signature order.
_TEXT_FIELDS = tuple(sorted(name for name in KNOWN_FIELDS if name != "prompt"))


@dataclass
class Body:
    """A rendered request body and its Content-Type."""

    content: bytes
    content_type: str


def render_body(request: ImageRequest, model: str | None) -> Body:
    """The body for `request`, sending `model` (the provider model, aliases resolved)."""
    if request.encoding == "multipart":
        return render_multipart(request, model)
    return render_json(request, model)


def typed_fields(request: ImageRequest, model: str | None) -> Iterator[tuple[str, Any]]:
    """(name, value) of every typed field the client gave; `None` means it did not."""
    if request.prompt is not None:
        yield "prompt", request.prompt
    for name in _TEXT_FIELDS:
        value = model if name == "model" else getattr(request, name)
        if value is not None:
            yield name, value


def render_json(request: ImageRequest, model: str | None) -> Body:
    payload: dict[str, Any] = dict(typed_fields(request, model))
    if request.operation == "edit":
        # The JSON edit form (spec section 3): images travel as data: URLs.
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
    boundary = secrets.token_hex(16)
    delimiter = b"--" + boundary.encode("ascii") + b"\r\n"
    chunks: list[bytes] = []
    for name, value in typed_fields(request, model):
        for field_name, text in form_values(name, value):
            chunks += [delimiter, _text_part_head(field_name), text.encode(), b"\r\n"]
    for name, value in request.extra:
        for field_name, text in form_values(name, value):
            chunks += [delimiter, _text_part_head(field_name), text.encode(), b"\r\n"]
    files = [*request.images, *request.extra_files, *([request.mask] if request.mask is not None else [])]
    for upload in files:
        # The bytes go in as they are: one copy, in the final join.
        chunks += [delimiter, _file_part_head(upload), upload.data, b"\r\n"]
    chunks.append(b"--" + boundary.encode("ascii") + b"--\r\n")
    return Body(b"".join(chunks), f"multipart/form-data; boundary={boundary}")


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


def _text_part_head(name: str) -> bytes:
    return b'Content-Disposition: form-data; name="' + _quote(name) + b'"\r\n\r\n'


def _file_part_head(upload: InputFile) -> bytes:
    # A part with no filename would read as a text field upstream; the SDKs call such files "upload".
    head = (b'Content-Disposition: form-data; name="' + _quote(upload.field) + b'"; filename="'
            + _quote(upload.filename or "upload") + b'"\r\n')
    # The client's label is kept even when wrong (spec rule 3: the provider sniffs);
    # a file that came with none (library callers) gets the type its bytes show.
    content_type = upload.content_type or upload.mime_type
    head += b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n"
    return head + b"\r\n"


def _quote(value: str) -> bytes:
    """Escape a name for a Content-Disposition parameter as browsers and httpx do."""
    escaped = value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return escaped.encode()
