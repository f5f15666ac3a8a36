"""OpenAI's image SSE stream, relayed event by event as it arrives (spec section 7).

Nothing is buffered beyond the event being read: each `data:` line becomes
an `ImageEvent` as soon as its blank line arrives. `aclose()` closes the
upstream response, so a client that goes away cancels the upstream request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from ...errors import UpstreamError
from ...types import EventKind, Image, ImageEvent, Usage
from .errors import mask, transport_error, unusable_body, where
from .json import loads
from .response import response_from_json

log = logging.getLogger("allm_proxy.adapters.openai")

_KINDS: dict[str, EventKind] = {"partial_image": "partial_image", "completed": "completed"}
# Fields an event carries outside `fields` (type is rebuilt from prefix and kind).
_OWN_FIELDS = frozenset({"type", "b64_json", "partial_image_index", "usage"})


class UpstreamEventStream:
    """An `ImageStream` over an open upstream SSE response."""

    def __init__(self, response: httpx.Response, *, prefix: str, model: str | None, api_key: str | None,
                 headers: dict[str, str]) -> None:
        self.headers = headers
        self._response = response
        self._prefix = prefix
        self._model = model
        self._api_key = api_key
        self._events = self._read()

    def __aiter__(self) -> AsyncIterator[ImageEvent]:
        return self._events

    async def aclose(self) -> None:
        # The generator's own cleanup does not run if it never started, so close
        # the response here too: either way the upstream connection is released.
        try:
            await self._events.aclose()
        finally:
            await self._response.aclose()

    async def _read(self) -> AsyncGenerator[ImageEvent, None]:
        url = self._response.request.url
        try:
            if not _is_event_stream(self._response):
                async for whole in self._whole_answer():
                    yield whole
                return
            data_lines: list[bytes] = []
            async with aclosing(sse_lines(self._response)) as lines:
                async for line in lines:
                    if line:
                        if line.startswith(b"data:"):
                            data_lines.append(line[6:] if line[5:6] == b" " else line[5:])
                        # `event:` names repeat the JSON type, and `:` lines are keepalive comments.
                        continue
                    if not data_lines:
                        continue
                    data = b"\n".join(data_lines)
                    data_lines.clear()
                    if data.strip() == b"[DONE]":
                        return
                    event = self._event(data)
                    if event is not None:
                        yield event
                        if event.kind == "error":
                            return
            data = b"\n".join(data_lines)
            if data.strip() and data.strip() != b"[DONE]":
                # The last event had no blank line after it; it is whole if its JSON is.
                last = self._event(data)
                if last is not None:
                    yield last
        except httpx.HTTPError as exc:
            raise transport_error(exc, url, self._api_key) from exc
        finally:
            await self._response.aclose()

    def _event(self, data: bytes) -> ImageEvent | None:
        """The event in one `data:` payload; None for one to skip."""
        try:
            payload = loads(data)
        except ValueError:
            snippet = mask(data[:120].decode("utf-8", "replace"), self._api_key)
            raise UpstreamError(
                f"OpenAI at {where(self._response.request.url)} sent a stream event that is not JSON "
                f"(cut short?): {snippet!r}"
            ) from None
        if not isinstance(payload, dict):
            kind = type(payload).__name__
            raise UpstreamError(f"OpenAI sent a stream event that is a JSON {kind}, not an object.")
        event = event_from_json(payload, self._prefix)
        if event is not None and event.error is not None:
            # The client may not own the key (the proxy's own): an echo of it never reaches them.
            key = self._api_key
            event.error = {k: mask(v, key) if isinstance(v, str) else v for k, v in event.error.items()}
        return event

    async def _whole_answer(self) -> AsyncIterator[ImageEvent]:
        """A JSON answer to a stream request: its images as completed events, so none is lost."""
        body = await self._response.aread()
        try:
            raw = loads(body)
        except ValueError:
            raw = None
        if not isinstance(raw, dict):
            raise unusable_body(self._response, body, "a stream was asked for; this is neither SSE nor JSON",
                                self._api_key)
        answer = response_from_json(raw, body, model=self._model, response=self._response,
                                    api_key=self._api_key)
        echo = {key: getattr(answer, key) for key in ("size", "quality", "background", "output_format")}
        fields: dict[str, Any] = {"created_at": answer.created}
        fields.update({key: value for key, value in echo.items() if value is not None})
        for image in answer.images:
            yield ImageEvent(kind="completed", prefix=self._prefix, image=image, usage=answer.usage,
                             fields=dict(fields))


def event_from_json(payload: dict[str, Any], default_prefix: str) -> ImageEvent | None:
    """One SSE data object as an `ImageEvent`; every field kept, in order.

    An object with an `error` key is an error event (the SDKs raise on it).
    A type this proxy does not know yet (a newer API's event) is logged and
    skipped: `ImageEvent` has no kind for it, and the SDKs ignore such types.
    """
    if "error" in payload:
        error = payload["error"]
        return ImageEvent(kind="error", error=error if isinstance(error, dict) else {"message": str(error)})
    event_type = str(payload.get("type") or f"{default_prefix}.partial_image")
    prefix, _, kind_name = event_type.rpartition(".")
    kind = _KINDS.get(kind_name)
    if kind is None:
        log.debug("skipping a stream event of unknown type %r", event_type)
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


async def sse_lines(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The lines of an SSE body as bytes, without their `\\n` or `\\r\\n`, as they arrive.

    Bytes, not text: events carry megabytes of base64 that are parsed as bytes,
    so decoding them to `str` first would be a wasted pass. A line split over
    many chunks is joined once, when its end arrives.
    """
    pending: list[bytes] = []
    async for chunk in response.aiter_bytes():
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            pending.append(chunk[start:end])
            line = b"".join(pending) if len(pending) > 1 else pending[0]
            pending.clear()
            yield line[:-1] if line.endswith(b"\r") else line
            start = end + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        line = b"".join(pending)
        yield line[:-1] if line.endswith(b"\r") else line


def _is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower() == "text/event-stream"
