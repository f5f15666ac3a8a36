"""The thin reference proxy of issue 15: the yardstick for "cheaper than a thin proxy".

    python -m bench.reference_proxy --upstream http://127.0.0.1:PORT --port PORT [--log-level info]

Starlette and one `httpx.AsyncClient`: every POST to /v1/images/{generations,
edits,variations} is sent on to the upstream as it came (body, content type,
authorization) and the answer is streamed back as it arrives. Nothing is
parsed or checked: whatever a real proxy does on top of this is its cost.
It runs under uvicorn with uvicorn's defaults, as allm-proxy does.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

# Hop-by-hop and length headers are the server's to set, not the upstream's.
DROPPED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"})


def app(upstream: str) -> Starlette:
    """The reference proxy in front of `upstream` (its origin, e.g. ``http://127.0.0.1:9000``)."""
    client = httpx.AsyncClient(base_url=upstream, timeout=120.0, limits=httpx.Limits(max_connections=None))

    async def forward(request: Request) -> StreamingResponse:
        headers = {k: v for k, v in request.headers.items() if k in ("content-type", "authorization")}
        sent = client.build_request("POST", request.url.path, content=await request.body(), headers=headers)
        answer = await client.send(sent, stream=True)
        kept = {k: v for k, v in answer.headers.items() if k not in DROPPED}
        return StreamingResponse(
            answer.aiter_raw(), status_code=answer.status_code, headers=kept, background=BackgroundTask(answer.aclose)
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    routes = [Route(f"/v1/images/{op}", forward, methods=["POST"]) for op in ("generations", "edits", "variations")]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reference_proxy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--upstream", required=True, help="the upstream's origin, e.g. http://127.0.0.1:9000")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info", help="uvicorn's (info: an access-log line per request)")
    args = parser.parse_args(argv)
    uvicorn.run(app(args.upstream.rstrip("/")), host="127.0.0.1", port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
