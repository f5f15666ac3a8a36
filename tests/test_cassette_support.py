"""Helpers for the cassette tests (no tests here): a tiny upstream, call contexts, a dead transport."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from PIL import Image as PILImage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from allm_proxy.call import CallScope, scope
from allm_proxy.cassettes import CassetteLibrary
from allm_proxy.config import CassetteSettings

OPENAI_KEY = "sk-test-cas-012345"
GEMINI_KEY = "test-gemini-key-cassette-42"
ORG_ID = "org-test-cassette-secret"
COOKIE = "sid=test-cookie-cassette-77"
SECRETS = (OPENAI_KEY, GEMINI_KEY, ORG_ID, COOKIE.split("=", 1)[1])
UPSTREAM = "http://127.0.0.1:9/v1"  # never connected to when the ASGI transport is used


def png(size: tuple[int, int] = (8, 8), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


class Upstream:
    """A fake image API: every answer carries a serial number, so replay order is visible."""

    def __init__(self, *, event_delay: float = 0.0) -> None:
        self.calls = 0
        self.event_delay = event_delay
        self.app = Starlette(routes=[
            Route("/v1/images/generations", self.generations, methods=["POST"]),
            Route("/v1/images/edits", self.edits, methods=["POST"]),
            Route("/v1/stream", self.stream, methods=["POST"]),
            Route("/v1/echo-key", self.echo_key, methods=["POST"]),
            Route("/v1beta/models/{model}:generateContent", self.gemini, methods=["POST"]),
        ])

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    def _next(self) -> int:
        self.calls += 1
        return self.calls

    async def generations(self, request: Request) -> Response:
        data = await request.json()
        serial = self._next()
        body = {"created": serial, "prompt": data.get("prompt"),
                "data": [{"b64_json": base64.b64encode(png(color=(serial % 255, 0, 0))).decode()}]}
        return JSONResponse(body, headers={"set-cookie": COOKIE, "openai-organization": ORG_ID,
                                           "x-request-id": f"req_{serial}"})

    async def edits(self, request: Request) -> Response:
        async with request.form() as form:
            upload = form["image"]
            assert not isinstance(upload, str)
            image = await upload.read()
            prompt = form["prompt"]
        serial = self._next()
        return JSONResponse({"created": serial, "prompt": prompt,
                             "image_sha256": hashlib.sha256(image).hexdigest(),
                             "data": [{"b64_json": base64.b64encode(png()).decode()}]})

    async def stream(self, request: Request) -> Response:
        serial = self._next()
        delay = self.event_delay

        async def events() -> Any:
            for i in range(3):
                if i:
                    await asyncio.sleep(delay)
                payload = {"type": "image_generation.partial_image", "i": i, "serial": serial,
                           "b64_json": base64.b64encode(png()).decode()}
                yield f"event: image_generation.partial_image\ndata: {json.dumps(payload)}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def echo_key(self, request: Request) -> Response:
        self._next()
        message = f"Incorrect API key provided: {request.headers.get('authorization', '')}"
        return JSONResponse({"error": {"message": message}}, status_code=401)

    async def gemini(self, request: Request) -> Response:
        serial = self._next()
        image = base64.b64encode(png()).decode()
        return JSONResponse({"candidates": [{"content": {"parts": [
            {"text": f"serial {serial}"}, {"inlineData": {"mimeType": "image/png", "data": image}}]}}]})


class DeadUpstream(httpx.AsyncBaseTransport):
    """The upstream is down: any request that reaches it is counted and fails."""

    def __init__(self) -> None:
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        raise httpx.ConnectError("upstream is stopped", request=request)


def context(session: str = "default", cassette: str | None = None,
            api_key: str | None = OPENAI_KEY) -> CallScope:
    return CallScope(session=session, cassette=cassette, secrets=(api_key,) if api_key else ())


async def send(
    library: CassetteLibrary, inner: httpx.AsyncBaseTransport, method: str, path: str, *,
    session: str = "default", cassette: str | None = None, headers: dict[str, str] | None = None,
    base: str = UPSTREAM, **kwargs: Any,
) -> httpx.Response:
    """One upstream call as an adapter would make it, inside a call context."""
    with scope(context(session, cassette)):
        async with httpx.AsyncClient(transport=library.transport(inner)) as client:
            auth = {"authorization": f"Bearer {OPENAI_KEY}"}
            return await client.request(method, base + path, headers={**auth, **(headers or {})}, **kwargs)


def library_for(path: Path, record_mode: str = "once", **settings: Any) -> CassetteLibrary:
    return CassetteLibrary(CassetteSettings(path=str(path), record_mode=record_mode, **settings))


def written_files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())
