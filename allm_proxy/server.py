"""The HTTP server: routes, limits, error mapping, logging. The work happens in the Engine.

    app = create_app(Engine(), ProxyConfig())
    uvicorn.run(app, host="127.0.0.1", port=8400)

Every answer carries `x-request-id`; every error, the proxy's own and the
provider's, is an OpenAI error envelope with the status OpenAI would use.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from . import errors
from .config import ProxyConfig
from .engine import CallOptions, Engine
from .types import ImageResponse, ImageStream, Operation
from .wire.openai import parse_request, render_error_event, render_event, render_models, render_response

log = logging.getLogger("allm_proxy")
access_log = logging.getLogger("allm_proxy.access")

_FILE_ID = re.compile(r"^img_[A-Za-z0-9_-]{20,64}$")
BODY_READ_TIMEOUT = 60.0


class _Call:
    """What the access log line needs to know about one request."""

    def __init__(self, request: Request) -> None:
        self.started = time.perf_counter()
        self.request = request
        self.options = CallOptions(
            session=request.headers.get("x-allm-session") or "default",
            cassette=request.headers.get("x-allm-cassette") or None,
        )
        self.bytes_out = 0

    def log(self, status: int) -> None:
        route = self.options.route
        access_log.info(
            "%s %s model=%s provider=%s status=%d ms=%.1f bytes=%d",
            self.request.method,
            self.request.url.path,
            route.requested_model if route else "-",
            route.provider if route else "-",
            status,
            (time.perf_counter() - self.started) * 1000,
            self.bytes_out,
        )


def create_app(engine: Engine, config: ProxyConfig | None = None) -> Starlette:
    """The ASGI app serving `engine` with the limits and access token of `config`."""
    config = config or ProxyConfig()
    access_token = config.access_token
    max_body = config.max_body_bytes

    def error_response(err: errors.ProxyError, call: _Call | None) -> Response:
        headers = err.response_headers()
        headers.setdefault("x-request-id", call.options.request_id if call else "req_none")
        content_type = getattr(err, "content_type", "application/json")
        body = err.body()
        if call is not None:
            call.bytes_out = len(body)
            call.log(err.status)
        return Response(body, status_code=err.status, headers=headers, media_type=content_type)

    def handler(fn: Callable[[Request, _Call], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            call = _Call(request)
            try:
                response = await fn(request, call)
            except errors.ProxyError as err:
                return error_response(err, call)
            except Exception:
                log.exception("unexpected error handling %s %s", request.method, request.url.path)
                return error_response(
                    errors.InternalProxyError(
                        "The proxy failed unexpectedly while handling this request; see the proxy's log "
                        f"for request {call.options.request_id}."
                    ),
                    call,
                )
            response.headers.setdefault("x-request-id", call.options.request_id)
            if not isinstance(response, StreamingResponse):
                call.bytes_out = len(response.body)
                call.log(response.status_code)
            return response

        return endpoint

    def authorize(request: Request, call: _Call) -> None:
        bearer = _bearer(request)
        if access_token is not None:
            presented = request.headers.get("x-allm-access-token") or bearer or ""
            if not hmac.compare_digest(presented.encode(), access_token.encode()):
                raise errors.AuthenticationError(
                    "This proxy requires its access token: give your client api_key=<the token> "
                    "(sent as Authorization: Bearer) or send the header X-ALLM-Access-Token. "
                    "Provider keys go in X-ALLM-Api-Key or the proxy's environment."
                )
            bearer = None  # the access token is never passed upstream
        call.options.client_bearer = bearer
        call.options.api_key = request.headers.get("x-allm-api-key") or None
        for name in ("openai-organization", "openai-project"):
            if name in request.headers:
                call.options.forward_headers[name] = request.headers[name]

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise _too_large(int(declared), max_body)
        chunks: list[bytes] = []
        size = 0

        async def collect() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body:
                    raise _too_large(size, max_body)
                chunks.append(chunk)

        try:
            await asyncio.wait_for(collect(), BODY_READ_TIMEOUT)
        except TimeoutError:
            raise errors.ProxyError(
                f"The request body did not arrive within {BODY_READ_TIMEOUT:.0f} s.",
                status=408, error_type="invalid_request_error", code="request_timeout",
            ) from None
        return b"".join(chunks)

    def images_endpoint(operation: Operation) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request, call: _Call) -> Response:
            authorize(request, call)
            body = await read_body(request)
            image_request = parse_request(operation, request.headers.get("content-type"), body)
            call.options.public_base_url = _public_base(request)
            result = await engine.run(image_request, call.options)
            if isinstance(result, ImageResponse):
                route = call.options.route
                payload = render_response(result, gpt_style=bool(route and route.family.gpt_style_response))
                headers = {k: v for k, v in result.headers.items() if k.lower() == "x-request-id"}
                return Response(payload, media_type="application/json", headers=headers)
            return stream_response(result, call)

        return handler(run)

    def stream_response(stream: ImageStream, call: _Call) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            status = 200
            try:
                async for event in stream:
                    chunk = render_event(event)
                    call.bytes_out += len(chunk)
                    yield chunk
            except errors.ProxyError as err:
                status = err.status
                yield render_error_event(err)
            except Exception:
                status = 500
                log.exception("stream failed for request %s", call.options.request_id)
                yield render_error_event(errors.InternalProxyError(
                    f"The stream failed inside the proxy; see its log for request {call.options.request_id}."))
            finally:
                await stream.aclose()
                call.log(status)

        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        headers.update({k: v for k, v in stream.headers.items() if k.lower() == "x-request-id"})
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def list_models(request: Request, call: _Call) -> Response:
        authorize(request, call)
        return Response(render_models(engine.list_models()), media_type="application/json")

    async def get_model(request: Request, call: _Call) -> Response:
        authorize(request, call)
        return JSONResponse(engine.describe_model(request.path_params["model_id"]))

    async def get_file(request: Request, call: _Call) -> Response:
        file_id = request.path_params["file_id"]
        hosted = engine.files.get(file_id) if _FILE_ID.match(file_id) else None
        if hosted is None:
            raise errors.NotFoundError(
                "No such image: hosted image URLs expire (after the proxy's file_ttl, 60 minutes by default) "
                "and do not survive a proxy restart. Ask for response_format='b64_json' to keep the bytes.",
                code="file_not_found",
            )
        return Response(hosted.data, media_type=hosted.mime_type, headers={"cache-control": "private, max-age=3600"})

    async def healthz(request: Request, call: _Call) -> Response:
        return JSONResponse({"status": "ok", "provider": engine.provider, "default_model": engine.default_model})

    routes: list[BaseRoute] = []
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/images/generations", images_endpoint("generate"), methods=["POST"]),
            Route(f"{prefix}/images/edits", images_endpoint("edit"), methods=["POST"]),
            Route(f"{prefix}/images/variations", images_endpoint("variation"), methods=["POST"]),
            Route(f"{prefix}/images/files/{{file_id}}", handler(get_file), methods=["GET"]),
            Route(f"{prefix}/models", handler(list_models), methods=["GET"]),
            Route(f"{prefix}/models/{{model_id:path}}", handler(get_model), methods=["GET"]),
        ]
    routes.append(Route("/healthz", handler(healthz), methods=["GET"]))
    if engine.cassette_library is not None:
        routes += engine.cassette_library.control_routes()

    async def http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        call = _Call(request)
        err: errors.ProxyError
        if exc.status_code == 405:
            err = errors.MethodNotAllowedError(
                f"Method {request.method} is not allowed on {request.url.path}.", headers=dict(exc.headers or {})
            )
        elif exc.status_code == 404:
            err = errors.NotFoundError(
                f"Unknown route: {request.method} {request.url.path}. This proxy serves /v1/images/generations, "
                "/v1/images/edits, /v1/images/variations and /v1/models.",
                code="unknown_url",
            )
        else:
            err = errors.ProxyError(str(exc.detail), status=exc.status_code, error_type="invalid_request_error")
        return error_response(err, call)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.aclose()

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_exception}, lifespan=lifespan)
    app.state.engine = engine
    app.state.config = config
    return app


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _public_base(request: Request) -> str:
    """Where this request reached us, so hosted image URLs work for the same client."""
    prefix = "/v1" if request.url.path.startswith("/v1/") else ""
    return f"{request.url.scheme}://{request.url.netloc}{prefix}"


def _too_large(size: int, limit: int) -> errors.PayloadTooLargeError:
    return errors.PayloadTooLargeError(
        f"The request body ({size / 1e6:.1f} MB or more) exceeds this proxy's limit of {limit / 1e6:.1f} MB. "
        "Send smaller images, or raise the limit with --max-body-mb."
    )


def app_from_env() -> Any:
    """An app for `uvicorn allm_proxy.server:app_from_env --factory` (config from ALLM_PROXY_CONFIG)."""
    import os

    from .config import load_config

    config = load_config(os.environ.get("ALLM_PROXY_CONFIG"))
    return create_app(Engine.from_config(config), config)
