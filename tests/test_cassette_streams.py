"""Recording a stream: when an answer counts as whole, and replaying it event by event."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from allm_proxy.cassettes.streams import RecordingStream, ReplayStream

PARTIAL = b'event: image_generation.partial_image\ndata: {"type":"image_generation.partial_image"}\n\n'
COMPLETED = b'event: image_generation.completed\ndata: {"type":"image_generation.completed"}\n\n'
DONE = b"data: [DONE]\n\n"
ERROR = b'event: error\ndata: {"type":"error","error":{"message":"boom"}}\n\n'


class Chunks(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def recorder(*chunks: bytes) -> tuple[RecordingStream, Chunks, list[bytes]]:
    recorded: list[bytes] = []

    async def finish(body: bytes, timing: list[list[float]]) -> None:
        assert sum(int(length) for _, length in timing) == len(body)
        recorded.append(body)

    inner = Chunks(*chunks)
    return RecordingStream(inner, finish), inner, recorded


async def read_until(stream: RecordingStream, marker: bytes) -> None:
    """Read as the adapter does: stop at the chunk holding `marker`, then close."""
    async for chunk in stream:
        if marker in chunk:
            break
    await stream.aclose()


async def test_a_stream_read_to_its_end_is_recorded_once() -> None:
    stream, inner, recorded = recorder(PARTIAL, COMPLETED)
    assert b"".join([c async for c in stream]) == PARTIAL + COMPLETED
    await stream.aclose()
    assert recorded == [PARTIAL + COMPLETED] and inner.closed


@pytest.mark.parametrize("end", [DONE, ERROR])
async def test_a_stream_is_recorded_at_done_or_an_error_event_though_its_end_is_never_read(end: bytes) -> None:
    stream, inner, recorded = recorder(PARTIAL, COMPLETED if end == DONE else b"", end, b": trailing\n\n")
    await read_until(stream, end)
    assert recorded == [PARTIAL + (COMPLETED if end == DONE else b"") + end]
    assert inner.closed


async def test_a_stream_closed_by_the_client_after_completed_is_recorded() -> None:
    stream, _, recorded = recorder(PARTIAL, COMPLETED, b": keepalive\n\n", b"more bytes never read")
    await read_until(stream, b"keepalive")
    assert recorded == [PARTIAL + COMPLETED + b": keepalive\n\n"]


async def test_a_stream_abandoned_half_way_is_not_recorded() -> None:
    stream, inner, recorded = recorder(PARTIAL, COMPLETED)
    await read_until(stream, b"partial_image")
    assert recorded == [] and inner.closed


async def test_replay_yields_one_event_at_a_time() -> None:
    body = b": ping\n\n" + PARTIAL + COMPLETED + DONE
    assert [c async for c in ReplayStream(body)] == [b": ping\n\n", PARTIAL, COMPLETED, DONE]
