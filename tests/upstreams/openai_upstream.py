"""A fake OpenAI Images API that speaks the wire of spec/openai-images.md and records what it receives.

    upstream = FakeOpenAI()
    with upstream.serving() as url:                  # http://127.0.0.1:PORT (the API is under /v1)
        upstream.script(rate_limited(retry_after_ms=10), ok())
        ...                                          # point a client or the proxy at url + "/v1"
        upstream.requests[0].fields                  # {"model": "gpt-image-1", "prompt": "a cat", ...}
        upstream.requests[0].parts                   # multipart parts in wire order (name, filename, ...)

Routes: `POST /v1/images/generations` (JSON), `POST /v1/images/edits` and
`POST /v1/images/variations` (multipart, parsed with starlette's own form
parser, not the proxy's), `GET /v1/files/{name}` for the images it hands out
as URLs. Answers are OpenAI's per model family: gpt-image models return
`b64_json` with the echo fields and `usage` (and refuse `response_format`,
as OpenAI does), DALL-E returns URLs unless `b64_json` is asked for, dall-e-3
adds `revised_prompt`, `stream=true` gets SSE (`partial_images` partial
events, then `.completed`). Unknown models get OpenAI's 404 `model_not_found`.
Every response carries `x-request-id` (`req_up_<n>`).

Replies are consumed in order, one per image request; with none scripted
every request gets `ok()` (or `default_reply`). Failure replies: `error(...)`
and its shortcuts, `hang`, `reset`, `garbage`, `truncated_json`,
`truncated_body`, `slow_stream`, `stream_ending_in_done`, and `raw` for an exact body (benchmarks).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from allm_proxy.server.faulted import drop_connection
from tests.support.images import image_bytes
from tests.upstreams.base import FakeUpstream

GPT_PREFIXES = ("gpt-image", "chatgpt-image")
DALLE_MODELS = ("dall-e-2", "dall-e-3")
DALLE_SIZES = {"dall-e-2": ("256x256", "512x512", "1024x1024"), "dall-e-3": ("1024x1024", "1792x1024", "1024x1792")}
MAX_HANG_SECONDS = 30.0
# Headers that differ between any two senders of the same call (boundary aside).
INCIDENTAL_HEADERS = frozenset(
    {"host", "content-length", "user-agent", "accept-encoding", "connection", "content-type", "accept"}
)


# -- what arrived -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One multipart part as it arrived."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def is_file(self) -> bool:
        return self.filename is not None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")

    def summary(self) -> tuple[str, str | None, str | None, str]:
        """(name, filename, content type, text or `sha256:...`): what a comparison needs."""
        value = f"sha256:{self.sha256}" if self.is_file else self.text
        return self.name, self.filename, self.content_type, value


@dataclass
class Received:
    """One request the fake received, kept whole."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    media_type: str
    json: Any = None
    parts: list[Part] = field(default_factory=list)
    # When (time.monotonic) the first and the last byte of the body arrived.
    first_byte_at: float = 0.0
    completed_at: float = 0.0

    @property
    def part_hashes(self) -> list[tuple[str, str | None, str | None, str]]:
        """(name, filename, content type, sha256 of the content) of every part, in wire order."""
        return [(p.name, p.filename, p.content_type, p.sha256) for p in self.parts]

    @property
    def fields(self) -> dict[str, Any]:
        """JSON members, or multipart text fields (the last value of a repeated name)."""
        if self.parts:
            return {p.name: p.text for p in self.parts if not p.is_file}
        return dict(self.json) if isinstance(self.json, dict) else {}

    def files(self, name: str | None = None) -> list[Part]:
        return [p for p in self.parts if p.is_file and (name is None or p.name == name)]

    @property
    def input_images(self) -> int:
        """Images to edit: `image`/`image[]` parts, or the JSON edit form's `images`."""
        if isinstance(self.json, dict):
            images = self.json.get("images")
            return len(images) if isinstance(images, list) else 0
        return len(self.files("image")) + len(self.files("image[]"))

    @property
    def bearer(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token or None if scheme.lower() == "bearer" else None

    def wire_summary(self) -> dict[str, Any]:
        """What must match between two senders of the same call.

        Left out: the multipart boundary, and the headers any HTTP client sets its
        own way (host, content-length, user-agent, accept-encoding, connection,
        the SDK's informational x-stainless-* headers).
        """
        headers = {
            k: v for k, v in self.headers.items() if k not in INCIDENTAL_HEADERS and not k.startswith("x-stainless-")
        }
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "media_type": self.media_type,
            "headers": headers,
            "json": self.json,
            "parts": [p.summary() for p in self.parts],
        }


@dataclass(frozen=True)
class Aborted:
    """A request whose body never arrived whole: the sender stopped (or was stopped) part-way."""

    path: str
    headers: dict[str, str]
    received: int  # body bytes that did arrive
    declared: int | None  # the Content-Length it announced


# -- what to answer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One scripted answer; build it with the functions below."""

    kind: str
    status: int = 200
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    seconds: float = 0.0
    done: bool = False  # a stream ends with `data: [DONE]`


def ok() -> Reply:
    """OpenAI's answer for the request's model family (the default)."""
    return Reply("ok")


def error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    envelope = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return Reply("raw", status=status, body=json.dumps(envelope).encode(), headers=dict(headers or {}))


def bad_request(
    message: str = "Invalid value for 'size'.",
    *,
    code: str | None = "invalid_value",
    param: str | None = "size",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    return error(400, message, code=code, param=param, headers=headers)


def unauthorized() -> Reply:
    return error(
        401,
        "Incorrect API key provided: sk-test-***. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def model_not_found(model: str = "gpt-image-0") -> Reply:
    return error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def rate_limited(
    *, retry_after_ms: int | None = 10, retry_after: str | None = None, should_retry: str | None = None
) -> Reply:
    headers = {}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if should_retry is not None:
        headers["x-should-retry"] = should_retry
    return error(
        429,
        "Rate limit reached for images per minute. Please try again in 1s.",
        type="requests",
        code="rate_limit_exceeded",
        headers=headers,
    )


def server_error(status: int = 500, *, headers: Mapping[str, str] | None = None) -> Reply:
    return error(
        status,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
        headers=headers,
    )


def hang(seconds: float = 10.0) -> Reply:
    """Answer nothing until the client goes away (or `seconds`, at most 30, pass)."""
    return Reply("hang", seconds=min(seconds, MAX_HANG_SECONDS))


def reset() -> Reply:
    """Read the request, then reset the connection (TCP RST) without an answer."""
    return Reply("reset")


def garbage(
    body: bytes = b"<html><body>502 Bad Gateway</body></html>",
    *,
    status: int = 200,
    content_type: str = "application/json",
) -> Reply:
    """A body that is not what it claims to be."""
    return Reply("raw", status=status, body=body, content_type=content_type)


def truncated_json() -> Reply:
    """A complete HTTP answer whose JSON is cut in the middle."""
    return Reply("truncated_json")


def truncated_body() -> Reply:
    """Content-Length of the whole answer, half of it sent, then the connection closes."""
    return Reply("truncated_body")


def slow_stream(delay: float) -> Reply:
    """The usual answer; a stream sleeps `delay` seconds before each event."""
    return Reply("ok", seconds=delay)


def stream_ending_in_done() -> Reply:
    """The usual answer; a stream sends `data: [DONE]` after `.completed` (both SDKs stop there, spec section 7)."""
    return Reply("ok", done=True)


def raw(
    body: bytes, *, status: int = 200, content_type: str = "application/json", headers: Mapping[str, str] | None = None
) -> Reply:
    """Exactly this body (a pre-built answer, for benchmarks)."""
    return Reply("raw", status=status, body=body, content_type=content_type, headers=dict(headers or {}))


# -- the fake -----------------------------------------------------------------------------------


class FakeOpenAI(FakeUpstream[Reply, Received]):
    """The fake OpenAI Images API: an ASGI app (starlette inside) plus what it recorded.

    `valid_keys`: the keys it accepts (None: any `sk-...`). `image`: bytes to
    answer with instead of a small generated PNG per image. `stream_delay`:
    seconds before each SSE event.
    """

    # `reset` and `truncated_body` break the connection, which needs uvicorn's h11 protocol object.
    serve_options: ClassVar[dict[str, Any]] = {"http": "h11"}

    def __init__(
        self, *, valid_keys: set[str] | None = None, image: bytes | None = None, stream_delay: float = 0.0
    ) -> None:
        routes = [
            Route("/v1/images/generations", self._images, methods=["POST"]),
            Route("/v1/images/edits", self._images, methods=["POST"]),
            Route("/v1/images/variations", self._images, methods=["POST"]),
            Route("/v1/files/{name}", self._file, methods=["GET"]),
        ]
        super().__init__(Starlette(routes=routes))
        self.valid_keys = valid_keys
        self.stream_delay = stream_delay
        self.default_reply = ok()
        self.served_images: list[bytes] = []
        self.streams_cancelled = 0
        self.streams_finished = 0
        self.aborted: list[Aborted] = []
        self.bodies_begun = 0  # request bodies whose first byte arrived (complete or not)
        self._fixed_image = image
        self._fixed_b64 = base64.b64encode(image).decode("ascii") if image is not None else None
        self._files: dict[str, bytes] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # uvicorn's receive is a method of the connection's cycle, which holds the
        # socket's transport: `reset` and `truncated_body` need it to break the connection.
        scope["fake_openai.transport"] = getattr(getattr(receive, "__self__", None), "transport", None)
        await self.app(scope, receive, send)

    def reset(self) -> None:
        """Forget recorded requests, queued answers, served images and counts (between tests sharing one fake)."""
        with self._lock:
            super().reset()
            self.served_images.clear()
            self.aborted.clear()
            self.bodies_begun = 0
            self.default_reply = ok()
            self.streams_cancelled = self.streams_finished = 0

    # -- handling ---------------------------------------------------------------------------

    async def _images(self, request: Request) -> Response:
        received = await _receive(request, self._body_began)
        if isinstance(received, Aborted):
            with self._lock:
                self.aborted.append(received)
            return Response(b"", status_code=400)  # nobody reads it: the sender is gone
        with self._lock:
            number = self._arrive(received)
            reply = self._take(self.default_reply)
        headers = {"x-request-id": f"req_up_{number}", **reply.headers}
        if reply.kind == "raw":
            assert reply.body is not None
            return Response(reply.body, status_code=reply.status, headers=headers, media_type=reply.content_type)
        if reply.kind == "reset":
            await _break_connection(request, reset=True)
            return Response(b"", status_code=500)
        if reply.kind == "hang":
            deadline = time.monotonic() + reply.seconds
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.02)
            return Response(b"", status_code=504, headers=headers)
        problem = self._refusal(received)
        if problem is not None:
            return Response(
                json.dumps(problem[1]).encode(), status_code=problem[0], headers=headers, media_type="application/json"
            )
        fields = received.fields
        if _truthy(fields.get("stream")):
            delay = reply.seconds or self.stream_delay
            return StreamingResponse(
                self._events(received, delay, done=reply.done), media_type="text/event-stream", headers=headers
            )
        body = self._answer(received, number)
        if reply.kind == "truncated_json":
            return Response(body[: len(body) // 2], headers=headers, media_type="application/json")
        if reply.kind == "truncated_body":
            return _TruncatedResponse(body, headers=headers)
        return Response(body, headers=headers, media_type="application/json")

    def _body_began(self) -> None:
        with self._lock:
            self.bodies_begun += 1

    def _refusal(self, received: Received) -> tuple[int, dict[str, Any]] | None:
        """The error OpenAI would answer this request with, if any."""
        key = received.bearer
        if key is None:
            return 401, _envelope(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth "
                "(i.e. Authorization: Bearer YOUR_KEY).",
                None,
                None,
            )
        if (self.valid_keys is not None and key not in self.valid_keys) or not key.startswith("sk-"):
            return 401, _envelope(
                f"Incorrect API key provided: {key[:6]}***. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                None,
                "invalid_api_key",
            )
        fields = received.fields
        model = str(fields.get("model") or "dall-e-2")
        operation = received.path.rsplit("/", 1)[-1]
        if not (model.startswith(GPT_PREFIXES) or model in DALLE_MODELS):
            return 404, _envelope(
                f"The model `{model}` does not exist or you do not have access to it.", "model", "model_not_found"
            )
        if operation != "variations" and not fields.get("prompt"):
            return 400, _envelope("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
        if model.startswith(GPT_PREFIXES) and fields.get("response_format") is not None:
            return 400, _envelope("Unknown parameter: 'response_format'.", "response_format", "unknown_parameter")
        size = fields.get("size")
        if model in DALLE_SIZES and size is not None and size not in DALLE_SIZES[model]:
            allowed = ", ".join(f"'{v}'" for v in DALLE_SIZES[model])
            return 400, _envelope(f"'{size}' is not one of [{allowed}] - 'size'", "size", "invalid_size")
        if operation == "variations" and model != "dall-e-2":
            return 400, _envelope(
                f"Invalid value: '{model}'. Supported values are: 'dall-e-2'.", "model", "invalid_value"
            )
        if operation == "edits" and model == "dall-e-3":
            return 400, _envelope(
                "Invalid value: 'dall-e-3'. Value must be 'dall-e-2' or a GPT image model.", "model", "invalid_value"
            )
        if operation != "generations" and not received.input_images:
            return 400, _envelope("Missing required parameter: 'image'.", "image", "missing_required_parameter")
        return None

    def _answer(self, received: Received, number: int) -> bytes:
        fields = received.fields
        model = str(fields.get("model") or "dall-e-2")
        n = int(fields.get("n") or 1)
        out: dict[str, Any] = {"created": int(time.time())}
        if model.startswith(GPT_PREFIXES):
            echo = _gpt_echo(fields)
            out["background"] = "opaque" if echo["background"] == "auto" else echo["background"]
            out["data"] = [{"b64_json": self._b64(number, i, echo["output_format"])} for i in range(n)]
            out["output_format"] = echo["output_format"]
            out["quality"] = "high" if echo["quality"] == "auto" else echo["quality"]
            out["size"] = "1024x1024" if echo["size"] == "auto" else echo["size"]
            out["usage"] = _usage(n, received.input_images)
            return json.dumps(out).encode()
        data: list[dict[str, Any]] = []
        for i in range(n):
            if fields.get("response_format") == "b64_json":
                item = {"b64_json": self._b64(number, i, "png")}
            else:
                name = f"img-{number}-{i}.png"
                self._files[name] = self._image(number, i, "png")
                item = {"url": f"{self.base_url}/v1/files/{name}"}
            if model == "dall-e-3":
                item["revised_prompt"] = f"A revised prompt: {fields.get('prompt')}"
            data.append(item)
        out["data"] = data
        return json.dumps(out).encode()

    async def _events(self, received: Received, delay: float, *, done: bool = False) -> Any:
        fields = received.fields
        prefix = "image_edit" if received.path.endswith("/edits") else "image_generation"
        echo = _gpt_echo(fields)
        partials = int(fields.get("partial_images") or 0)
        number = len(self.requests)
        finished = False
        try:
            for index in range(partials + 1):
                if delay:
                    await asyncio.sleep(delay)
                event: dict[str, Any] = {
                    "type": f"{prefix}.partial_image",
                    "b64_json": "",
                    "created_at": int(time.time()),
                    **echo,
                }
                if index < partials:
                    event["b64_json"] = self._b64(number, 100 + index, echo["output_format"])
                    event["partial_image_index"] = index
                else:
                    event["type"] = f"{prefix}.completed"
                    event["b64_json"] = self._b64(number, 0, echo["output_format"])
                    event["usage"] = _usage(1, received.input_images)
                    yield b": keepalive\n\n"
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            if done:
                yield b"data: [DONE]\n\n"
            finished = True
        finally:
            with self._lock:
                if finished:
                    self.streams_finished += 1
                else:
                    self.streams_cancelled += 1

    async def _file(self, request: Request) -> Response:
        data = self._files.get(request.path_params["name"])
        if data is None:
            return Response(
                json.dumps(_envelope("No such file.", None, None)).encode(),
                status_code=404,
                media_type="application/json",
            )
        return Response(data, media_type="image/png")

    def _b64(self, number: int, index: int, fmt: str) -> str:
        if self._fixed_b64 is not None:
            return self._fixed_b64
        return base64.b64encode(self._image(number, index, fmt)).decode("ascii")

    def _image(self, number: int, index: int, fmt: str) -> bytes:
        """A small image, different per request and index, that the test can compare bytes of."""
        if self._fixed_image is not None:
            data = self._fixed_image
        else:
            seed = hashlib.sha256(f"{number}/{index}".encode()).digest()
            mode = "RGBA" if fmt in ("png", "webp") else "RGB"
            data = image_bytes((8, 8), tuple(seed), mode, fmt.upper())
            # Only generated images are recorded: a benchmark's fixed image would pile up.
            self.served_images.append(data)
        return data


class _TruncatedResponse(Response):
    """Declares the whole body's length, sends half, then closes the connection."""

    def __init__(self, body: bytes, *, headers: Mapping[str, str]) -> None:
        super().__init__(b"", headers=dict(headers), media_type="application/json")
        self._whole = body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        headers.append((b"content-length", str(len(self._whole)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = self._whole[: len(self._whole) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        await asyncio.sleep(0.05)  # let the half reach the client before the close
        transport = scope.get("fake_openai.transport")
        if transport is not None:
            transport.close()
        await receive()  # http.disconnect: uvicorn then knows the cut was on purpose


async def _break_connection(request: Request, *, reset: bool) -> None:
    transport = request.scope.get("fake_openai.transport")
    if transport is None:
        raise RuntimeError("reset() needs uvicorn's h11 server (FakeOpenAI.serving())")
    drop_connection(transport, reset=reset)
    await request.receive()


async def _receive(request: Request, began: Callable[[], None]) -> Received | Aborted:
    """The request, its body read whole; `Aborted` when the sender left before the body's end."""
    chunks: list[bytes] = []
    first_byte_at = 0.0
    headers = {k.lower(): v for k, v in request.headers.items()}
    declared = headers.get("content-length")
    try:
        async for chunk in request.stream():
            if chunk and not first_byte_at:
                first_byte_at = time.monotonic()
                began()
            chunks.append(chunk)
    except ClientDisconnect:
        arrived = sum(len(c) for c in chunks)
        return Aborted(request.url.path, headers, arrived, int(declared) if declared else None)
    body = b"".join(chunks)
    request._body = body  # starlette's own form parser reads the body from here
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    received = Received(
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        media_type=media_type,
        first_byte_at=first_byte_at,
        completed_at=time.monotonic(),
    )
    if media_type == "application/json":
        received.json = json.loads(body)
    elif media_type == "multipart/form-data":
        # starlette's parser, not the proxy's: a bug in one must not hide in both.
        async with request.form(max_part_size=64 * 1024 * 1024) as form:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    received.parts.append(
                        Part(name, await value.read(), value.filename, value.headers.get("content-type"))
                    )
                else:
                    received.parts.append(Part(name, value.encode()))
    return received


def _envelope(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _truthy(value: Any) -> bool:
    return value is True or value == "true"


def _gpt_echo(fields: Mapping[str, Any]) -> dict[str, str]:
    return {
        "size": str(fields.get("size") or "auto"),
        "quality": str(fields.get("quality") or "auto"),
        "background": str(fields.get("background") or "auto"),
        "output_format": str(fields.get("output_format") or "png"),
    }


def _usage(n: int, input_images: int) -> dict[str, Any]:
    image_in = 40 * input_images
    return {
        "input_tokens": 10 + image_in,
        "input_tokens_details": {"image_tokens": image_in, "text_tokens": 10},
        "output_tokens": 50 * n,
        "total_tokens": 10 + image_in + 50 * n,
    }
