"""OpenAI's image SSE stream, relayed event by event as it arrives (docs/spec/openai-images.md §7).

Nothing is buffered beyond the event being read: each `data:` line becomes
an `ImageEvent` as soon as its blank line arrives. `aclose()` closes the
upstream response, so a client that goes away cancels the upstream request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator

import httpx

from ...errors import UpstreamError
from ...types import ImageEvent
from ...wire.events import completed_events, event_from_json
from ...wire.jsonbytes import loads
from ...wire.sse import EventSplitter, is_event_stream
from .errors import mask, transport_error, unusable_body, where
from .response import answer_from_json

log = logging.getLogger("allm_proxy.adapters.openai")


class UpstreamEventStream:
    """An `ImageStream` over an open upstream SSE response."""

    def __init__(
        self, response: httpx.Response, *, prefix: str, model: str | None, api_key: str | None, headers: dict[str, str]
    ) -> None:
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
        if event is None:
            log.debug("skipping a stream event of unknown type %r", payload.get("type"))
        elif event.error is not None:
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
            raise unusable_body(
                self._response, body, "a stream was asked for; this is neither SSE nor JSON", self._api_key
            )
        answer = answer_from_json(self._response, raw, body, model=self._model, api_key=self._api_key)
        for event in completed_events(answer, self._prefix):
            yield event
