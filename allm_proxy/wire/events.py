"""The OpenAI image stream's events (spec section 7): what an SSE event means on this wire."""

from __future__ import annotations

from typing import Literal

from ..types import EventKind
from .jsonbytes import loads
from .sse import Event

# The last part of an event's type, e.g. `image_generation.completed`.
KINDS: dict[str, EventKind] = {"partial_image": "partial_image", "completed": "completed"}
StreamEnd = Literal["done", "error", "completed"]


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
