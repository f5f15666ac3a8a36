"""The OpenAI image stream's events (docs/spec/openai-images.md §7), both ways: rendered for clients,
parsed from OpenAI.

Each event is `event: <type>\ndata: <json>\n\n`, the JSON `type` equal to
the event name; an error after the 200 is an `error` event whose data has
an `error` object (the SDKs raise on it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from ..errors import ProxyError
from ..types import EventKind, Image, ImageEvent, ImageResponse, Usage
from . import sse
from .jsonbytes import Splicer, loads
from .sse import Event

# The last part of an event's type, e.g. `image_generation.completed`.
KINDS: dict[str, EventKind] = {"partial_image": "partial_image", "completed": "completed"}
StreamEnd = Literal["done", "error", "completed"]
# The echo fields (`responses.ECHO_FIELDS`) in the order events carry them (docs/spec/openai-images.md §7).
_EVENT_ECHO = ("size", "quality", "background", "output_format")
# Fields an event carries outside `fields` (type is rebuilt from prefix and kind).
_OWN_FIELDS = frozenset({"type", "b64_json", "partial_image_index", "usage"})


def render_event(event: ImageEvent) -> bytes:
    """One SSE event, `event: <type>\\ndata: <json>\\n\\n` (docs/spec/openai-images.md §7)."""
    spliced = Splicer()
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
    return sse.encode(payload["type"], spliced.dumps(payload))


def render_error_event(error: ProxyError) -> bytes:
    return render_event(ImageEvent(kind="error", error=error.envelope()["error"]))


def event_from_json(payload: dict[str, Any], default_prefix: str) -> ImageEvent | None:
    """One SSE data object as an `ImageEvent`; every field kept, in order.

    An object with an `error` key is an error event (the SDKs raise on it).
    A type this proxy does not know yet (a newer API's event) gives None, to
    skip: `ImageEvent` has no kind for it, and the SDKs ignore such types.
    """
    if "error" in payload:
        error = payload["error"]
        return ImageEvent(kind="error", error=error if isinstance(error, dict) else {"message": str(error)})
    event_type = str(payload.get("type") or f"{default_prefix}.partial_image")
    prefix, _, kind_name = event_type.rpartition(".")
    kind = KINDS.get(kind_name)
    if kind is None:
        return None
    b64 = payload.get("b64_json")
    index = payload.get("partial_image_index")
    usage = payload.get("usage")
    return ImageEvent(
        kind=kind,
        prefix=prefix or default_prefix,
        image=Image(b64_json=b64) if isinstance(b64, str) else None,
        partial_image_index=index if isinstance(index, int) else None,
        usage=Usage.from_dict(usage) if isinstance(usage, dict) else None,
        fields={key: value for key, value in payload.items() if key not in _OWN_FIELDS},
    )


def completed_events(answer: ImageResponse, prefix: str) -> Iterator[ImageEvent]:
    """A whole answer to a stream request, as one completed event per image, so none is lost."""
    fields: dict[str, Any] = {"created_at": answer.created}
    fields.update({key: getattr(answer, key) for key in _EVENT_ECHO if getattr(answer, key) is not None})
    for image in answer.images:
        yield ImageEvent(kind="completed", prefix=prefix, image=image, usage=answer.usage, fields=dict(fields))


def event_type(event: Event) -> str | None:
    """The event's type: its `event:` name, else its JSON `type`, "error" for an object with an `error` key.

    None for an event with no data, `[DONE]`, or data that is not a JSON object.
    """
    if event.data is None or event.is_done:
        return None
    if event.name:
        return event.name
    try:
        payload = loads(event.data)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    if "error" in payload:
        return "error"
    kind = payload.get("type")
    return kind if isinstance(kind, str) else None


def stream_end(event: Event) -> StreamEnd | None:
    """How far `event` takes an image stream; None while more is to come.

    `done` (`data: [DONE]`) and `error` end it: the SDKs stop reading there.
    `completed` delivers its last image: a client may close the stream after it.
    """
    if event.is_done:
        return "done"
    kind = event_type(event)
    if kind == "error":
        return "error"
    if kind is not None and kind.endswith(".completed"):
        return "completed"
    return None
