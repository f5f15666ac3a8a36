"""The aiohttp-backed upstream transport behaves as httpx's own does for every caller."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from allm_proxy.upstream import AiohttpTransport, ChunkBudget
from tests.support.asgi_server import free_port, serve_asgi


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(
        body,
        headers={
            "x-seen-content-type": request.headers.get("content-type", ""),
            "x-seen-auth": request.headers.get("authorization", ""),
        },
    )


async def gzipped(request: Request) -> Response:
    return Response(gzip.compress(b'{"ok": true}'), media_type="application/json", headers={"content-encoding": "gzip"})


async def slow(request: Request) -> Response:
    await asyncio.sleep(2)
    return Response(b"late")


async def big(request: Request) -> Response:
    return Response(bytes(range(256)) * 8192, media_type="application/octet-stream")  # 2 MB


async def events(request: Request) -> StreamingResponse:
    async def gen() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"data: {i}\n\n".encode()
            await asyncio.sleep(0.2)

    return StreamingResponse(gen(), media_type="text/event-stream")


APP = Starlette(
    routes=[
        Route("/echo", echo, methods=["POST"]),
        Route("/gzip", gzipped),
        Route("/slow", slow),
        Route("/events", events),
        Route("/big", big),
    ]
)


@pytest.fixture(scope="module")
def upstream() -> str:  # type: ignore[misc]
    with serve_asgi(APP) as url:
        yield url


async def test_request_body_and_headers_arrive_unchanged(upstream: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        response = await client.post(
            f"{upstream}/echo",
            content=b"\x00binary\xff",
            headers={"content-type": "multipart/form-data; boundary=x", "authorization": "Bearer sk-test-t"},
        )
    assert response.content == b"\x00binary\xff"
    assert response.headers["x-seen-content-type"] == "multipart/form-data; boundary=x"
    assert response.headers["x-seen-auth"] == "Bearer sk-test-t"


async def test_gzip_answers_are_decoded_by_httpx_not_twice(upstream: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        response = await client.get(f"{upstream}/gzip")
    assert response.json() == {"ok": True}


@pytest.mark.slow  # timing
async def test_stream_chunks_arrive_as_they_are_sent(upstream: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        started = time.monotonic()
        async with client.stream("GET", f"{upstream}/events") as response:
            arrivals = [time.monotonic() - started async for _ in response.aiter_raw()]
    assert len(arrivals) >= 2 and arrivals[0] < 0.2 < arrivals[-1]


async def test_refused_connection_is_a_connect_error() -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port()}/")


async def test_slow_answer_is_a_read_timeout(upstream: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=httpx.Timeout(0.3)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{upstream}/slow")


async def test_connections_are_reused(upstream: str) -> None:
    transport = AiohttpTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(5):
            assert (await client.post(f"{upstream}/echo", content=b"x")).content == b"x"
        session = transport._session
        assert session is not None and session.connector is not None
        assert len(session.connector._conns) == 1  # one idle keep-alive connection, not five


def test_answers_in_flight_share_the_chunk_budget() -> None:
    budget = ChunkBudget(1024 * 1024, least=64 * 1024, most=256 * 1024)
    shares = []
    for reading in (0, 1, 4, 8, 16, 64):
        budget.reading = reading
        shares.append(budget.size() // 1024)
    assert shares == [256, 256, 256, 128, 64, 64]


async def test_a_body_is_counted_while_it_is_read_and_given_in_chunks_of_its_share(upstream: str) -> None:
    transport = AiohttpTransport()
    budget = transport._chunks
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", f"{upstream}/big") as whole:
            sizes = [len(chunk) async for chunk in whole.aiter_raw()]
        assert sum(sizes) == 2 * 1024 * 1024 and max(sizes) <= budget.most
        assert budget.reading == 0
        async with client.stream("GET", f"{upstream}/big") as half:
            chunks = half.aiter_raw()
            await anext(chunks)
            assert budget.reading == 1
        # Left half read: closing the answer ends its share, without the rest being read.
        assert budget.reading == 0


async def test_with_many_answers_in_flight_each_reads_its_smaller_share_by_size(upstream: str) -> None:
    transport = AiohttpTransport()
    transport._chunks = ChunkBudget(128 * 1024, least=16 * 1024, most=256 * 1024)  # one answer: 128 KB
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", f"{upstream}/big") as whole:
            sizes = [len(chunk) async for chunk in whole.aiter_raw()]
        chunked = await client.get(f"{upstream}/events")
    assert sum(sizes) == 2 * 1024 * 1024 and max(sizes) <= 128 * 1024 and min(sizes) > 0
    assert chunked.content == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"  # read(n) through chunk ends too
    assert transport._chunks.reading == 0


async def test_a_chunked_body_arrives_whole_through_its_chunk_ends(upstream: str) -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        response = await client.get(f"{upstream}/events")
    assert response.headers.get("transfer-encoding") == "chunked"
    assert response.content == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
