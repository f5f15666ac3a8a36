"""What a decided fault does before (or instead of) the adapter: the engine's one call into faults.

Error kinds raise their error; `timeout` holds, then raises a 504; `latency`
waits and lets the request go on; `reset` raises `ConnectionResetFault`,
which the server turns into a dropped connection. `truncate`, `stream_cut`
and `stream_error` answer with what the built-in fake provider renders for
the same request, so no upstream or cassette ever sees the request. `slow`
changes nothing here: the server paces the real answer (server/faulted.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .. import errors
from ..call import Call
from ..types import EventStream, ImageEvent, ImageRequest, ImageResponse, ImageStream, RawBody
from .grammar import Fault, FaultSpecError
from .injector import HEADER, FaultDecision, FaultInjector
from .kinds import DEFAULT_MS, ERROR_KINDS, ConnectionResetFault, error_for, note, stream_error, timeout_error

if TYPE_CHECKING:
    from ..adapters.fake import FakeImages


async def intercept(
    injector: FaultInjector, request: ImageRequest, call: Call, *, timeout: float
) -> ImageResponse | ImageStream | None:
    """Decide this routed call's fault and act on it; sets `call.fault`.

    Returns the answer when the fault replaces it (truncate, stream kinds), None when the
    request goes on to its provider; raises the error of an error kind.
    """

    try:
        decision = injector.decide(
            request.operation, stream=bool(request.stream), session=call.session, header=call.fault_header
        )
    except FaultSpecError as exc:
        raise errors.InvalidRequestError(
            f"The {HEADER} header does not parse: {exc}. Example: {HEADER}: rate_limit; times=1",
            code="invalid_fault_header",
        ) from None
    call.fault = decision
    if decision is None:
        return None
    fault, origin = decision.fault, decision.origin_text
    if fault.kind in ERROR_KINDS:
        raise error_for(fault.kind, origin, fault.ms)
    if fault.kind == "timeout":
        held_ms = fault.ms if fault.ms is not None else timeout * 1000
        await asyncio.sleep(held_ms / 1000)  # a client that gives up first cancels this (the server watches)
        raise timeout_error(origin, held_ms)
    if fault.kind == "latency":
        await asyncio.sleep((fault.ms if fault.ms is not None else DEFAULT_MS) / 1000)
        return None
    if fault.kind == "slow":
        return None
    if fault.kind == "reset":
        raise ConnectionResetFault(f"The connection was reset. {note('reset', origin)}")
    answer = await _render(injector.fake, request, call)
    if isinstance(answer, ImageResponse):
        return answer  # truncate: the server cuts the rendered body
    return EventStream(_cut(answer, fault, origin))


async def _render(fake: FakeImages, request: ImageRequest, call: Call) -> ImageResponse | ImageStream:
    """What the built-in fake answers to the same request, on the same model family."""
    faked = dataclasses.replace(request, model=call.model)
    stand_in = Call(route=call.route, session=call.session, request_id=call.request_id)
    operation = {"generate": fake.generate, "edit": fake.edit, "variation": fake.variation}
    answer = await operation[request.operation](faked, stand_in)
    assert not isinstance(answer, RawBody)  # the fake never relays
    return answer


async def _cut(stream: ImageStream, fault: Fault, origin: str) -> AsyncIterator[ImageEvent]:
    """At most `after` events of `stream`, never its `completed`; then the end, or an error event."""
    sent = 0
    try:
        async for event in stream:
            if sent >= fault.after or event.kind == "completed":
                break
            yield event
            sent += 1
    finally:
        await stream.aclose()
    if fault.kind == "stream_error":
        raise stream_error(origin)


__all__ = ["FaultDecision", "intercept"]
