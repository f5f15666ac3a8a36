"""Answers sent as they are made: SSE event streams, and big provider answers relayed as they arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from starlette.responses import StreamingResponse

from .. import errors
from ..call import Call
from ..journal import JournalCall
from ..pricing import PriceTable, account
from ..types import ImageRequest, ImageStream, RawBody
from ..wire.openai import render_event
from . import failures

# Upstream headers worth passing on: the provider's request id, which support desks ask for.
RELAYED = ("x-request-id",)


def relayed_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in RELAYED}


def event_stream(
    stream: ImageStream,
    call: Call,
    journal: JournalCall | None = None,
    *,
    prices: PriceTable | None = None,
    request: ImageRequest | None = None,
) -> StreamingResponse:
    """The OpenAI SSE answer; a failure half-way ends it with an `error` event, as OpenAI's do.

    A stream is priced as its images complete (the metric and journal carry it; no header can,
    since the headers are sent first)."""

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in stream:
                if journal is not None:
                    journal.saw_event(event)
                if event.kind == "completed" and prices is not None:
                    account(
                        call,
                        prices,
                        model=call.model,
                        images=1,
                        usage=event.usage,
                        quality=event.fields.get("quality") or (request.quality if request else None),
                        size=event.fields.get("size") or (request.size if request else None),
                    )
                yield render_event(event)
        except errors.ProxyError as err:
            call.finish(err.status)
            if journal is not None:
                journal.error = err
            yield failures.event(err)
        except Exception:
            call.finish(500)
            failures.log.exception("stream failed for request %s", call.request_id)
            yield failures.event(
                errors.InternalProxyError(
                    f"The stream failed inside the proxy; see its log for request {call.request_id}."
                )
            )
        finally:
            await stream.aclose()

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **relayed_headers(stream.headers)}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def relay(
    raw: RawBody, call: Call, journal: JournalCall | None = None, *, whole: Callable[[bytes], object] | None = None
) -> StreamingResponse:
    """The provider's answer, chunk by chunk as it arrives, never held whole; except for `whole`
    (the answer cache), which gets the complete body once its last chunk went by."""
    if journal is not None:
        journal.relayed_type = raw.content_type

    async def body() -> AsyncIterator[bytes]:
        seen: list[bytes] = []  # only for `whole`
        try:
            async for chunk in raw.chunks:
                if journal is not None:
                    journal.saw_chunk(chunk)
                if whole is not None:
                    seen.append(chunk)
                yield chunk
            if whole is not None and (raw.length is None or sum(map(len, seen)) == raw.length):
                whole(b"".join(seen))
        except Exception:
            call.finish(502)  # the provider broke off; the client's connection ends short too
            raise
        finally:
            await raw.close()

    headers = relayed_headers(raw.headers)
    if raw.length is not None:
        headers["content-length"] = str(raw.length)
    return StreamingResponse(body(), media_type=raw.content_type, headers=headers)
