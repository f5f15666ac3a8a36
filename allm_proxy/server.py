"""The HTTP server: routes, limits, error mapping, logging. The work happens in the Engine.

    app = create_app(Engine(), ProxyConfig())
    uvicorn.run(app, host="127.0.0.1", port=8400, **uvicorn_options())
    # or, with the limits, signal handling and exit status of `allm-proxy serve`:
    run_server(Engine(), ProxyConfig())

Every answer carries `x-request-id`; every error, the proxy's own and the
provider's, is an OpenAI error envelope with the status OpenAI would use.
The limits (body size, timeouts, concurrency) are listed in docs/limits.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import errors
from .config import ProxyConfig, ServerLimits
from .engine import CallOptions, Engine
from .metrics import CallRecord, Metrics
from .openapi import openapi_document
from .pricing import PriceTable, account, format_usd
from .state.health import readiness
from .types import ImageResponse, ImageStream, Operation
from .wire.openai import parse_request, render_error_event, render_event, render_models, render_response

T = TypeVar("T")
log = logging.getLogger("allm_proxy")
access_log = logging.getLogger("allm_proxy.access")

_FILE_ID = re.compile(r"^img_[A-Za-z0-9_-]{20,64}$")


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
        self.body_read = request.method in ("GET", "HEAD")
        # hook: metrics - the operation label (None: not counted, e.g. /metrics itself, /healthz)
        self.operation: str | None = None
        self.logged = False

    def log(self, status: int) -> None:
        if self.logged:
            return  # one line (and one count) per request, whichever path answered it
        self.logged = True
        route = self.options.route
        metrics: Metrics | None = getattr(self.request.app.state, "metrics", None)
        if metrics is not None and self.operation is not None:  # hook: metrics - updated with the log line
            metrics.observe(CallRecord(
                operation=self.operation, model=route.requested_model or "-" if route else "-",
                provider=route.provider if route else "-", status=status,
                seconds=time.perf_counter() - self.started, facts=self.options.facts,
                model_known=route is None or not route.family.name.endswith("generic")))
        access_log.info(
            "%s %s model=%s provider=%s status=%d ms=%.1f bytes=%d",
            _printable(self.request.method),
            _printable(self.request.url.path),
            _printable(route.requested_model or "-") if route else "-",
            route.provider if route else "-",
            status,
            (time.perf_counter() - self.started) * 1000,
            self.bytes_out,
        )


def create_app(engine: Engine, config: ProxyConfig | None = None, *, limits: ServerLimits | None = None) -> Starlette:
    """The ASGI app serving `engine` with the limits and access token of `config`."""
    config = config or ProxyConfig()
    limits = limits or config.limits
    access_token = config.access_token
    max_body = config.max_body_bytes
    openapi_body = json.dumps(openapi_document()).encode()
    inflight = 0
    metrics = Metrics()  # hook: metrics - one registry per app
    prices = PriceTable.from_config(config.prices)  # hook: cost

    def error_response(err: errors.ProxyError, call: _Call | None) -> Response:
        headers = err.response_headers()
        headers.setdefault("x-request-id", call.options.request_id if call else "req_none")
        if call is not None and not call.body_read:
            # We answer before reading the body: close, so the client cannot keep us busy draining it.
            headers["connection"] = "close"
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
                log.exception("unexpected error handling %s %s", _printable(request.method),
                              _printable(request.url.path))
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

    async def read_body(request: Request, call: _Call) -> bytes:
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
            await asyncio.wait_for(collect(), limits.body_timeout)
        except TimeoutError:
            raise errors.ProxyError(
                f"The request body did not arrive within {limits.body_timeout:g} s. Send it faster, or send "
                "smaller images.",
                status=408, error_type="invalid_request_error", code="request_timeout",
            ) from None
        call.body_read = True
        return b"".join(chunks)

    def images_endpoint(operation: Operation) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request, call: _Call) -> Response:
            nonlocal inflight
            call.operation = operation  # hook: metrics
            authorize(request, call)
            if inflight >= limits.max_inflight:
                raise errors.ProxyError(
                    f"The proxy is handling {limits.max_inflight} image requests already; retry in a moment.",
                    status=503, error_type="server_error", code="server_overloaded", headers={"retry-after": "1"},
                )
            inflight += 1
            metrics.inflight.inc()  # hook: metrics
            held = True

            def release() -> None:
                nonlocal inflight, held
                if held:
                    held = False
                    inflight -= 1
                    metrics.inflight.dec()  # hook: metrics

            stream_holds_slot = False
            try:
                body = await read_body(request, call)
                image_request = parse_request(operation, request.headers.get("content-type"), body)
                del body  # the parsed request holds what is needed; let a big upload go early
                call.options.public_base_url = _public_base(request)
                call.options.relay_body = True
                result = await _unless_client_leaves(request, engine.run(image_request, call.options))
                if result is None:
                    call.log(499)  # nginx's "client closed request": nobody is left to answer
                    return Response(status_code=499)
                if isinstance(result, ImageResponse) and result.raw_body is not None:
                    streamed = relay_response(result, call, release)
                elif isinstance(result, ImageResponse):
                    route = call.options.route
                    payload = render_response(result, gpt_style=bool(route and route.family.gpt_style_response))
                    headers = {k: v for k, v in result.headers.items() if k.lower() == "x-request-id"}
                    cost = account(  # hook: cost - images, usage and price of the answer, for header and metrics
                        call.options.facts, prices, provider=route.provider if route else "-",
                        model=result.model or (route.model if route else None), images=len(result.images),
                        usage=result.usage, quality=result.quality or image_request.quality,
                        size=result.size or image_request.size)
                    if cost is not None:
                        headers["x-allm-cost-usd"] = format_usd(cost)
                    return Response(payload, media_type="application/json", headers=headers)
                else:
                    streamed = stream_response(result, call, release, image_request)
                stream_holds_slot = True  # a stream keeps its max_inflight slot until it ends
                return streamed
            finally:
                if not stream_holds_slot:
                    release()

        return handler(run)

    def relay_response(result: ImageResponse, call: _Call, release: Callable[[], None]) -> StreamingResponse:
        raw = result.raw_body
        assert raw is not None

        async def body() -> AsyncIterator[bytes]:
            status = 499  # unless the loop ends: the client left mid-answer
            try:
                async for chunk in raw.chunks:
                    call.bytes_out += len(chunk)
                    yield chunk
                status = 200
            except Exception:
                status = 502  # the provider broke off; the client's connection ends short too
                raise
            finally:
                release()
                await raw.close()
                call.log(status)

        headers = {k: v for k, v in result.headers.items() if k.lower() == "x-request-id"}
        if raw.length is not None:
            headers["content-length"] = str(raw.length)
        return StreamingResponse(body(), media_type=raw.content_type, headers=headers)

    def stream_response(stream: ImageStream, call: _Call, release: Callable[[], None],
                        image_request: Any = None) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            status = 499  # unless the loop ends: the client left mid-stream
            try:
                async for event in stream:
                    if event.kind == "completed":  # hook: cost - a stream is priced as its images complete
                        route = call.options.route
                        account(call.options.facts, prices, provider=route.provider if route else "-",
                                model=route.model if route else None, images=1, usage=event.usage,
                                quality=event.fields.get("quality") or getattr(image_request, "quality", None),
                                size=event.fields.get("size") or getattr(image_request, "size", None))
                    chunk = render_event(event)
                    call.bytes_out += len(chunk)
                    yield chunk
                status = 200
            except errors.ProxyError as err:
                status = err.status
                yield render_error_event(err)
            except Exception:
                status = 500
                log.exception("stream failed for request %s", call.options.request_id)
                yield render_error_event(errors.InternalProxyError(
                    f"The stream failed inside the proxy; see its log for request {call.options.request_id}."))
            finally:
                release()
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
        call.operation = "file"  # hook: metrics
        file_id = request.path_params["file_id"]
        hosted = await engine.files.get(file_id) if _FILE_ID.match(file_id) else None  # hook: state
        if hosted is None:
            raise errors.NotFoundError(
                "No such image: hosted image URLs expire (after the proxy's file_ttl, 60 minutes by default) "
                "and do not survive a proxy restart. Ask for response_format='b64_json' to keep the bytes.",
                code="file_not_found",
            )
        max_age = max(0, int(hosted.expires_at - time.time()))  # hook: state - wall clock, shared by hosts
        return Response(hosted.data, media_type=hosted.mime_type,
                        headers={"cache-control": f"private, max-age={max_age}"})

    def guarded(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request, _Call], Awaitable[Response]]:
        async def run(request: Request, call: _Call) -> Response:
            authorize(request, call)
            return await endpoint(request)

        return run

    async def healthz(request: Request, call: _Call) -> Response:
        return JSONResponse({"status": "ok", "provider": engine.provider, "default_model": engine.default_model})

    async def readyz(request: Request, call: _Call) -> Response:  # hook: state
        return JSONResponse(await readiness(engine))

    async def metrics_endpoint(request: Request, call: _Call) -> Response:  # hook: metrics
        if not config.public_metrics:
            authorize(request, call)
        body, content_type = metrics.render()
        return Response(body, media_type=None, headers={"content-type": content_type})

    async def openapi(request: Request, call: _Call) -> Response:
        return Response(openapi_body, media_type="application/json")

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
    routes.append(Route("/readyz", handler(readyz), methods=["GET"]))  # hook: state
    routes.append(Route("/metrics", handler(metrics_endpoint), methods=["GET"]))  # hook: metrics
    routes.append(Route("/openapi.json", handler(openapi), methods=["GET"]))
    if engine.cassette_library is not None:
        # Switching cassettes changes what every client gets: it takes the access token too.
        for control in engine.cassette_library.control_routes():
            assert isinstance(control, Route)
            routes.append(Route(control.path, handler(guarded(control.endpoint)), methods=list(control.methods or ())))

    async def http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        call = _Call(request)
        call.operation = "unknown" if exc.status_code == 404 else None  # hook: metrics
        err: errors.ProxyError
        if exc.status_code == 405:
            err = errors.MethodNotAllowedError(
                f"Method {_printable(request.method)} is not allowed on {_printable(request.url.path)}.",
                headers=dict(exc.headers or {}),
            )
        elif exc.status_code == 404:
            err = errors.NotFoundError(
                f"Unknown route: {_printable(request.method)} {_printable(request.url.path)}. This proxy serves "
                "/v1/images/generations, /v1/images/edits, /v1/images/variations and /v1/models.",
                code="unknown_url",
            )
        else:
            err = errors.ProxyError(str(exc.detail), status=exc.status_code, error_type="invalid_request_error")
        return error_response(err, call)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Build the adapters now: a bad provider option stops start-up with its message
        # instead of failing the first request, and the first request is not slower.
        await engine.prepare()
        try:
            yield
        finally:
            await engine.aclose()

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_exception}, lifespan=lifespan)
    app.state.engine = engine
    app.state.metrics = metrics  # hook: metrics
    app.state.config = config
    app.state.limits = limits
    return app


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`, cancelling it (and the upstream call under it) if the client disconnects.

    Once the body is read, the next ASGI message is the client's disconnect;
    starlette itself would let an abandoned request run to its end.
    """
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        for _ in range(1000):  # after the body, only the disconnect is expected; stay bounded anyway
            if (await request.receive())["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            return None  # the client left
        raise
    finally:
        watcher.cancel()


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
        f"The request body ({size / 2**20:.1f} MB or more) exceeds this proxy's limit of {limit / 2**20:.1f} MB. "
        "Send smaller images, or raise the limit with --max-body-mb."
    )


def _printable(text: str, limit: int = 200) -> str:
    """Client-controlled text made safe for a log line: no newlines or control characters to forge lines."""
    return text[:limit].encode("unicode_escape", "backslashreplace").decode("ascii")


# -- the HTTP/1.1 connection layer ------------------------------------------------


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on what the application never sees.

    uvicorn bounds idle keep-alive connections but not a request head that
    trickles in (slow loris), nor the rest of a body nobody reads any more.
    Here the client gets `header_timeout` seconds, from the connection
    opening or the previous response, to deliver a complete request line and
    headers; then it gets a 408 envelope and the connection is closed. A
    request that is not HTTP/1.1 gets a 400 envelope instead of plain text.
    """

    header_timeout: float = ServerLimits.header_timeout
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_client()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_client()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_client()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _waiting_on_client(self) -> bool:
        """True while nothing in the application bounds the wait: a request head, or a body after the answer."""
        if self.transport is None or self.transport.is_closing():
            return False
        their, ours = self.conn.their_state, self.conn.our_state
        return their is h11.IDLE or (their is h11.SEND_BODY and ours in (h11.DONE, h11.MUST_CLOSE))

    def _watch_client(self) -> None:
        if not self._waiting_on_client():
            self._cancel_deadline()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if not self._waiting_on_client():
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._send_envelope(408, errors.ProxyError(
                f"The request line and headers did not arrive within {self.header_timeout:g} s.",
                status=408, error_type="invalid_request_error", code="request_timeout",
            ))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._send_envelope(400, errors.InvalidRequestError(
            "The request is not valid HTTP/1.1 (a malformed request line or header, or headers over 16 KB).",
            code="invalid_http",
        ))
        self.transport.close()

    def _send_envelope(self, status: int, err: errors.ProxyError) -> None:
        body = err.body()
        headers = [("content-type", "application/json"), ("content-length", str(len(body))),
                   ("connection", "close"), ("x-request-id", "req_none")]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)) or b"")
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            pass  # a response is already under way; closing is all that is left


def guarded_protocol(header_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class to give uvicorn (`http=`), with this header deadline."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout})


def uvicorn_options(limits: ServerLimits | None = None) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.Config` / `uvicorn.run` that apply `limits` at the connection level."""
    limits = limits or ServerLimits()
    return {
        "http": guarded_protocol(limits.header_timeout),
        "timeout_keep_alive": limits.keep_alive,
        "timeout_graceful_shutdown": limits.graceful_shutdown,
        "limit_concurrency": limits.max_connections,
    }


def bind_warning(host: str, access_token: str | None) -> str | None:
    """The warning to print when `host` lets other machines in and no access token guards the keys."""
    if access_token or _is_loopback(host):
        return None
    return (f"WARNING: binding {host} without --access-token: anyone who can reach this port can spend "
            "your provider keys.")


def _is_loopback(host: str) -> bool:
    from .state.settings import host_is_loopback  # hook: state - one loopback rule

    return host_is_loopback(host)


def run_server(engine: Engine, config: ProxyConfig, *, limits: ServerLimits | None = None,
               log_level: str = "warning") -> None:
    """Serve until SIGINT or SIGTERM; both finish in-flight requests first (up to `graceful_shutdown` s).

    SIGTERM, how service managers and `docker stop` ask a server to stop,
    then returns normally (exit status 0), where uvicorn alone would re-raise
    it and die with status -15. Recordings are flushed by the app's lifespan.
    """
    limits = limits or config.limits
    server = uvicorn.Server(uvicorn.Config(
        create_app(engine, config, limits=limits), host=config.host, port=config.port, log_level=log_level,
        access_log=False, lifespan="on", **uvicorn_options(limits),
    ))
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return
    # uvicorn restores this handler after its graceful shutdown and raises SIGTERM again: end here, cleanly.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run()
    except _Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Stopped(Exception):
    pass


def _exit_cleanly(signum: int, frame: object) -> None:
    raise _Stopped


def app_from_env() -> Any:
    """An app for `uvicorn allm_proxy.server:app_from_env --factory` (config from ALLM_PROXY_CONFIG)."""
    import os

    from .config import load_config

    config = load_config(os.environ.get("ALLM_PROXY_CONFIG"))
    return create_app(Engine.from_config(config), config)
