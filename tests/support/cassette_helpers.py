"""Helpers for the cassette tests (no tests here): a tiny upstream, call contexts, a dead transport."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from allm_proxy.call import CallScope, scope
from allm_proxy.cassettes import CassetteLibrary
from allm_proxy.config import CassetteSettings
from tests.support.images import png_bytes
from tests.upstreams.base import FakeUpstream

OPENAI_KEY = "sk-test-cas-012345"
GEMINI_KEY = "test-gemini-key-cassette-42"
ORG_ID = "org-test-cassette-secret"
COOKIE = "sid=test-cookie-cassette-77"
SECRETS = (OPENAI_KEY, GEMINI_KEY, ORG_ID, COOKIE.split("=", 1)[1])
UPSTREAM = "http://127.0.0.1:9/v1"  # never connected to when the ASGI transport is used
ANSWER_SIZE = (8, 8)  # the pixels of every image Upstream answers with


class Upstream(FakeUpstream[None, str]):
    """A fake image API: every answer carries a serial number, so replay order is visible.

    It answers every call the same way (nothing to script); `requests` logs the paths called.
    `serial_offset`: added to every serial, to tell two upstreams' answers apart.
    """

    def __init__(self, *, event_delay: float = 0.0, serial_offset: int = 0) -> None:
        self.event_delay = event_delay
        self.serial_offset = serial_offset
        super().__init__(
            Starlette(
                routes=[
                    Route("/v1/images/generations", self.generations, methods=["POST"]),
                    Route("/v1/images/edits", self.edits, methods=["POST"]),
                    Route("/v1/stream", self.stream, methods=["POST"]),
                    Route("/v1/echo-key", self.echo_key, methods=["POST"]),
                    Route("/v1beta/models/{model}:generateContent", self.gemini, methods=["POST"]),
                ]
            )
        )

    @property
    def calls(self) -> int:
        """Calls that reached this upstream."""
        return len(self.requests)

    def _serial(self, request: Request) -> int:
        return self.serial_offset + self._arrive(request.url.path)

    async def generations(self, request: Request) -> Response:
        data = await request.json()
        serial = self._serial(request)
        image = png_bytes(ANSWER_SIZE, (serial % 255, 0, 0), "RGB")
        body = {
            "created": serial,
            "prompt": data.get("prompt"),
            "data": [{"b64_json": base64.b64encode(image).decode()}],
        }
        return JSONResponse(
            body, headers={"set-cookie": COOKIE, "openai-organization": ORG_ID, "x-request-id": f"req_{serial}"}
        )

    async def edits(self, request: Request) -> Response:
        async with request.form() as form:
            upload = form["image"]
            assert not isinstance(upload, str)
            image = await upload.read()
            prompt = form["prompt"]
        serial = self._serial(request)
        return JSONResponse(
            {
                "created": serial,
                "prompt": prompt,
                "image_sha256": hashlib.sha256(image).hexdigest(),
                "data": [{"b64_json": base64.b64encode(png_bytes(ANSWER_SIZE, mode="RGB")).decode()}],
            }
        )

    async def stream(self, request: Request) -> Response:
        serial = self._serial(request)
        delay = self.event_delay

        async def events() -> Any:
            for i in range(3):
                if i:
                    await asyncio.sleep(delay)
                payload = {
                    "type": "image_generation.partial_image",
                    "i": i,
                    "serial": serial,
                    "b64_json": base64.b64encode(png_bytes(ANSWER_SIZE, mode="RGB")).decode(),
                }
                yield f"event: image_generation.partial_image\ndata: {json.dumps(payload)}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def echo_key(self, request: Request) -> Response:
        self._arrive(request.url.path)
        message = f"Incorrect API key provided: {request.headers.get('authorization', '')}"
        return JSONResponse({"error": {"message": message}}, status_code=401)

    async def gemini(self, request: Request) -> Response:
        serial = self._serial(request)
        image = base64.b64encode(png_bytes(ANSWER_SIZE, mode="RGB")).decode()
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {
                            "parts": [
                                {"text": f"serial {serial}"},
                                {"inlineData": {"mimeType": "image/png", "data": image}},
                            ]
                        }
                    }
                ]
            }
        )


class DeadUpstream(httpx.AsyncBaseTransport):
    """The upstream is down: any request that reaches it is counted and fails."""

    def __init__(self) -> None:
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        raise httpx.ConnectError("upstream is stopped", request=request)


def context(session: str = "default", cassette: str | None = None, api_key: str | None = OPENAI_KEY) -> CallScope:
    return CallScope(session=session, cassette=cassette, secrets=(api_key,) if api_key else ())


async def send(
    library: CassetteLibrary,
    inner: httpx.AsyncBaseTransport,
    method: str,
    path: str,
    *,
    session: str = "default",
    cassette: str | None = None,
    headers: dict[str, str] | None = None,
    base: str = UPSTREAM,
    **kwargs: Any,
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
