"""The shape of a recorded answer, and how two shapes differ, in words.

A shape is what a client's code depends on, with the values left out: the
status; for errors the envelope's `type` and `code`; every JSON key path and
the type of its value (lists element by element, base64 images typed
``image``, not ``string``); the SSE event types in order; and the images the
answer carries, with their format and pixel size. Two answers with the same
shape are interchangeable for a client, whatever the prompt, the image bytes
or the ids inside them.

    old, new = shape_of(recorded_response), shape_of(fresh_response)
    differences(old, new)
    # ['data[0].url: gone', 'data[0].b64_json: new field', 'image 0 size 1024x1024 -> 1536x1024']

Works on vcrpy response dicts (``{"status", "headers", "body": {"string"}}``),
for OpenAI's Images API and Gemini's generateContent alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..imaging import decoded_size, format_of
from ..types import b64decode_lenient, sniff_mime
from .bodies import as_bytes
from .summary import content_type_of, event_payloads, response_images

# A string this short is no image; the first 64 base64 characters (48 bytes) hold any image's magic bytes.
_MIN_IMAGE_TEXT = 64
_MAX_NODES = 200_000


@dataclass(frozen=True)
class ImageShape:
    format: str  # png, jpeg, webp, or "unreadable"
    size: str  # "1024x1024", or "?" when the header does not decode


@dataclass(frozen=True)
class Shape:
    """What a client depends on in one answer (see the module docstring)."""

    status: int
    media_type: str
    error: tuple[str | None, str | None] | None = None  # (type, code) of an error envelope
    paths: dict[str, str] = field(default_factory=dict)  # JSON key path -> value type
    events: tuple[str, ...] | None = None  # SSE event types, for streams
    images: tuple[ImageShape, ...] = ()

    @property
    def error_label(self) -> str:
        """The error's code, else its type (``model_not_found``, ``NOT_FOUND``), else empty."""
        if self.error is None:
            return ""
        kind, code = self.error
        return code or kind or ""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "content_type": self.media_type,
            "error": None if self.error is None else {"type": self.error[0], "code": self.error[1]},
            "paths": self.paths,
            "events": None if self.events is None else list(self.events),
            "images": [{"format": i.format, "size": i.size} for i in self.images],
        }


def shape_of(response: dict[str, Any]) -> Shape:
    """The shape of a vcrpy response dict."""
    status = int(response.get("status", {}).get("code") or 0)
    content_type = content_type_of(response)
    media_type = content_type.split(";", 1)[0].strip()
    body = as_bytes(response.get("body", {}).get("string"))
    images = tuple(_image_shape(data) for data in response_images(response))
    if "text/event-stream" in content_type:
        paths: dict[str, str] = {}
        types: list[str] = []
        for n, event in enumerate(event_payloads(body)):
            data = _json(event)
            types.append(_event_type(data))
            _walk(data, f"events[{n}]", paths)
        return Shape(status, media_type, paths=paths, events=tuple(types), images=images)
    data = _json(body)
    paths = {}
    if data is not _NOT_JSON:
        _walk(data, "", paths)
    return Shape(status, media_type, error=_error_of(data) if status >= 400 else None, paths=paths, images=images)


def differences(old: Shape, new: Shape) -> list[str]:
    """What changed from `old` to `new`, one phrase each; empty when the shapes are the same."""
    if old.status != new.status:
        return [f"status {_status(old)} -> {_status(new)}"]
    out: list[str] = []
    if old.media_type != new.media_type:
        out.append(f"content-type {old.media_type or '(none)'} -> {new.media_type or '(none)'}")
    if old.error is not None or new.error is not None:
        # An error's message and details are for people; its type and code are what code checks.
        old_type, old_code = old.error or (None, None)
        new_type, new_code = new.error or (None, None)
        if old_type != new_type:
            out.append(f"error type {old_type} -> {new_type}")
        if old_code != new_code:
            out.append(f"error code {old_code} -> {new_code}")
        return out
    if old.events != new.events:
        out.append(f"events {_events(old.events)} -> {_events(new.events)}")
    out += _path_differences(old.paths, new.paths)
    if len(old.images) != len(new.images):
        out.append(f"images {len(old.images)} -> {len(new.images)}")
    for n, (was, now) in enumerate(zip(old.images, new.images, strict=False)):
        if was.format != now.format:
            out.append(f"image {n} format {was.format} -> {now.format}")
        if was.size != now.size:
            out.append(f"image {n} size {was.size} -> {now.size}")
    return out


def _path_differences(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Gone, new and retyped paths; below a path already named, nothing more is said."""
    out: list[str] = []
    named: list[str] = []
    for path in sorted(old.keys() | new.keys(), key=_path_order(old, new)):
        if any(_below(path, parent) for parent in named):
            continue
        if path not in new:
            out.append(f"{path}: gone")
        elif path not in old:
            out.append(f"{path}: new field")
        elif old[path] != new[path]:
            out.append(f"{path}: {old[path]} -> {new[path]}")
        else:
            continue
        named.append(path)
    return out


def _path_order(old: dict[str, str], new: dict[str, str]) -> Any:
    # The order the paths appear in the answers (old first), so parents come before children.
    position = {p: i for i, p in enumerate([*old, *(p for p in new if p not in old)])}
    return lambda path: position[path]


def _below(path: str, parent: str) -> bool:
    return path.startswith(parent) and path[len(parent) : len(parent) + 1] in (".", "[")


def _status(shape: Shape) -> str:
    return f"{shape.status} {shape.error_label}".rstrip()


def _events(events: tuple[str, ...] | None) -> str:
    return "(not a stream)" if events is None else "[" + ", ".join(events) + "]"


class _NotJson:
    pass


_NOT_JSON: Any = _NotJson()


def _json(body: bytes) -> Any:
    if not body.strip():
        return _NOT_JSON
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def _event_type(data: Any) -> str:
    """OpenAI events name their type; Gemini's stream chunks do not (each is a response)."""
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return str(data["type"])
    return "message" if data is not _NOT_JSON else "text"


def _error_of(data: Any) -> tuple[str | None, str | None] | None:
    """(type, code) of OpenAI's envelope, or (status, code) of Google's (`NOT_FOUND`, `404`)."""
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return (None, None)
    error = data["error"]
    kind = error.get("type") if isinstance(error.get("type"), str) else error.get("status")
    code = error.get("code")
    if isinstance(code, str):
        return (kind if isinstance(kind, str) else None, code)
    # Google's numeric code repeats the HTTP status; its `status` is the name code checks.
    return (kind if isinstance(kind, str) else None, None)


def _walk(data: Any, root: str, out: dict[str, str]) -> None:
    """Every key path under `root` and the type of its value (bounded, no recursion)."""
    stack: list[tuple[str, Any]] = [(root, data)]
    for _ in range(_MAX_NODES):
        if not stack:
            return
        path, value = stack.pop()
        if path:
            out[path] = _type_name(value)
        if isinstance(value, dict):
            children = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        stack += reversed(children)


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    if value is _NOT_JSON:
        return "text"
    return "image" if _is_image_text(str(value)) else "string"


def _is_image_text(text: str) -> bool:
    """Base64 image data (or a data: URL of one): its values are pixels, its type is "image"."""
    if text.startswith("data:image/"):
        return True
    if len(text) < _MIN_IMAGE_TEXT:
        return False
    try:
        return sniff_mime(b64decode_lenient(text[:_MIN_IMAGE_TEXT])) is not None
    except ValueError:
        return False


def _image_shape(data: bytes) -> ImageShape:
    try:
        width, height = decoded_size(data)
    except Exception:  # Pillow raises many types for a broken header
        return ImageShape(format_of(data) or "unreadable", "?")
    return ImageShape(format_of(data) or "unreadable", f"{width}x{height}")
