"""OpenAI's image SSE stream, relayed event by event as it arrives (spec section 7).

Nothing is buffered beyond the event being read: each `data:` line becomes
an `ImageEvent` as soon as its blank line arrives. `aclose()` closes the
upstream response, so a client that goes away cancels the upstream request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx

from ..errors import UpstreamError
from ..types import EventKind, Image, ImageEvent, Usage
from ..wire.jsonbytes import loads
from ..wire.sse import EventSplitter, is_event_stream
from .openai_errors import mask, transport_error, unusable_body, where
from .openai_response import response_from_json

log = logging.getLogger("allm_proxy.adapters.openai")

_KINDS: dict[str, EventKind] = {"partial_image": "partial_image", "completed": "completed"}
# Fields an event carries outside `fields` (type is rebuilt from prefix and kind).
_OWN_FIELDS = frozenset({"type", "b64_json", "partial_image_index", "usage"})


class UpstreamEventStream:
    """An `ImageStream` over an open upstream SSE response."""

    def __init__(self, response: httpx.Response, *, prefix: str, model: str, api_key: str | None,
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
            if not is_event_stream(self._response.headers.get("content-type")):
                async for whole in self._whole_answer():
                    yield whole
                return
            splitter = EventSplitter()
            async for chunk in self._response.aiter_bytes():
                for sse_event in splitter.feed(chunk):
                    if sse_event.data is None:
                        continue  # a keepalive comment, or an `event:` line alone
                    if sse_event.is_done:
                        return
                    event = self._event(sse_event.data)
                    if event is not None:
                        yield event
                        if event.kind == "error":
                            return
            last = splitter.close()
            if last is not None and last.data is not None and last.data.strip() and not last.is_done:
                # The last event had no blank line after it; it is whole if its JSON is.
                final = self._event(last.data)
                if final is not None:
                    yield final
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
