"""The routes' endpoints. Each reads the engine and config from `request.app.state` and the call from
`request.state.call`; errors are raised, and the one error funnel answers them."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .. import errors
from ..call import Call
from ..engine import Engine
from ..pricing import account, format_usd
from ..state.health import readiness
from ..types import ImageRequest, ImageResponse, ImageResult, Operation, RawBody
from ..wire.openai import parse_request, render_models, render_response
from . import streaming
from .answer_cache import AnswerCache, Watch
from .faulted import shape_response
from .http_guard import CLIENT_LEFT, ClientLeft
from .uploads import UploadReader, is_streamed_upload, read_body

T = TypeVar("T")
_FILE_ID = re.compile(r"^img_[A-Za-z0-9_-]{20,64}$")


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _call(request: Request) -> Call:
    call: Call = request.state.call
    return call


async def generations(request: Request) -> Response:
    return await _images(request, "generate")


async def edits(request: Request) -> Response:
    return await _images(request, "edit")


async def variations(request: Request) -> Response:
    return await _images(request, "variation")


async def _images(request: Request, operation: Operation) -> Response:
    call = _call(request)
    call.can_relay = True
    engine = _engine(request)
    content_type = request.headers.get("content-type")
    if is_streamed_upload(operation, content_type):
        return await _upload(request, operation, content_type or "")
    try:
        body = await read_body(request)
    except ClientDisconnect:
        return Response(status_code=499)  # the client left before its body was in; logged as 499
    # Kept answers were looked up at the door (`KeptAnswerMiddleware`); it left the key to keep this one.
    watch: Watch | None = getattr(request.state, "answer_watch", None)
    call.public_base_url = _public_base(request)
    image_request = parse_request(operation, content_type, body)
    del body  # the parsed request holds what is needed; let a big upload go early
    return await _answer(request, image_request, engine.run(image_request, call), watch)


async def _upload(request: Request, operation: Operation, content_type: str) -> Response:
    """A multipart edit or variation: streamed through while it arrives when it may, else read into
    a spool and answered as any other request (server/uploads.py)."""
    call, engine = _call(request), _engine(request)
    call.public_base_url = _public_base(request)
    reader = UploadReader(request, operation, content_type, digest=request.state.journal is not None)
    started: asyncio.Future[ImageResult] | None = None

    def start(partial: ImageRequest) -> None:
        nonlocal started
        started = asyncio.ensure_future(engine.run(partial, call))

    try:
        try:
            image_request = await reader.read(engine, call, start)
            if request.state.journal is not None:
                request.state.journal.request = image_request  # a refused upload's entry shows it too
            if image_request.upload is not None:
                await engine.check_streamed(reader.checkable(image_request))
                reader.release()  # every check passed: the provider may have the end of the body
        except BaseException:
            reader.cancel()
            await _stopped(started)
            raise
        if image_request.upload is None and started is not None:
            await _stopped(started)  # the request took the full path after all
            started = None
        work = started if started is not None else engine.run(image_request, call)
        return await _answer(request, image_request, work)
    except ClientDisconnect:
        return Response(status_code=499)  # the client left mid-upload; logged as 499
    finally:
        reader.close()


async def _stopped(task: asyncio.Future[ImageResult] | None) -> None:
    """Cancel the engine's run of a streamed upload and wait until it has let go of the body."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def _answer(
    request: Request, image_request: ImageRequest, work: Awaitable[ImageResult], watch: Watch | None = None
) -> Response:
    """The client's answer to `work`; with a `watch`, also offered to the answer cache."""
    call = _call(request)
    journal = request.state.journal
    if journal is not None:
        journal.request = image_request
    result = await _unless_client_leaves(request, work)
    if result is None:
        return Response(status_code=499)  # nobody is left to answer; logged as 499
    answers: AnswerCache | None = request.app.state.answers if watch is not None else None
    if isinstance(result, RawBody):
        if answers is None or watch is None or not answers.may_keep(result.length):
            return streaming.relay(result, call, journal)
        cache, seen = answers, watch  # not Optional: the callback below runs after the last chunk
        relayed = streaming.relay(
            result, call, journal, whole=lambda body: cache.keep(seen, call, relayed, body, image_request, None)
        )
        return relayed
    if isinstance(result, ImageResponse):
        if journal is not None:
            journal.result = result
        payload = render_response(result, gpt_style=call.family.gpt_style_response)
        headers = streaming.relayed_headers(result.headers)
        cost = account(
            call,
            request.app.state.prices,
            model=result.model or call.model,
            images=len(result.images),
            usage=result.usage,
            quality=result.quality or image_request.quality,
            size=result.size or image_request.size,
        )
        if cost is not None:
            headers["x-allm-cost-usd"] = format_usd(cost)
        answer = Response(payload, media_type="application/json", headers=headers)
        if answers is not None and watch is not None:
            answers.keep(watch, call, answer, bytes(answer.body), image_request, result)
        return shape_response(answer, call.fault)  # `slow` and `truncate` act on the connection
    stream = streaming.event_stream(result, call, journal, prices=request.app.state.prices, request=image_request)
    return shape_response(stream, call.fault)


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`, cancelling it (and the upstream call under it) if the client disconnects.

    Starlette itself would let an abandoned request run to its end. `work` runs in this task; the
    client's leaving cancels the task, and that cancellation is taken back here. The connection
    tells of it (`http_guard.ClientLeft`) when the proxy serves; under another server, a watcher
    awaits the next ASGI message, which, once the body is read, is the disconnect.
    """
    task = asyncio.current_task()
    assert task is not None  # an ASGI app runs in a task
    left = False

    def client_left() -> None:
        nonlocal left
        left = True
        task.cancel()

    notice = request.scope.get("state", {}).get(CLIENT_LEFT)
    watcher = None
    if isinstance(notice, ClientLeft):
        notice.listen(client_left)
    else:
        watcher = asyncio.ensure_future(_watch_for_disconnect(request, client_left))
    try:
        result = await work
    except (Exception, asyncio.CancelledError):
        if not left:
            raise
        # Nobody is left to answer, whatever the cancellation became on its way out of `work`.
    finally:
        if watcher is not None:
            watcher.cancel()
        elif isinstance(notice, ClientLeft):
            notice.stop()
    if left:  # also when `work` took the cancellation as its own end and returned
        task.uncancel()
        return None
    return result


async def _watch_for_disconnect(request: Request, client_left: Callable[[], None]) -> None:
    for _ in range(1000):  # after the body, only the disconnect is expected; stay bounded anyway
        if (await request.receive())["type"] == "http.disconnect":
            client_left()
            return


async def list_models(request: Request) -> Response:
    return Response(render_models(_engine(request).list_models()), media_type="application/json")


async def get_model(request: Request) -> Response:
    return JSONResponse(_engine(request).describe_model(request.path_params["model_id"]))


async def get_file(request: Request) -> Response:
    file_id = request.path_params["file_id"]
    hosted = await _engine(request).files.get(file_id) if _FILE_ID.match(file_id) else None
    if hosted is None:
        raise errors.NotFoundError(
            "No such image: hosted image URLs expire (after the proxy's file_ttl, 60 minutes by default) "
            "and do not survive a proxy restart. Ask for response_format='b64_json' to keep the bytes.",
            code="file_not_found",
        )
    max_age = max(0, int(hosted.expires_at - time.time()))  # wall clock: every host agrees on it
    return Response(hosted.data, media_type=hosted.mime_type, headers={"cache-control": f"private, max-age={max_age}"})


async def healthz(request: Request) -> Response:
    engine = _engine(request)
    return JSONResponse({"status": "ok", "provider": engine.provider, "default_model": engine.default_model})


async def readyz(request: Request) -> Response:
    """Ready for traffic: the provider is configured and the state store answers (else a 503 envelope)."""
    return JSONResponse(await readiness(_engine(request)))


async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, headers={"content-type": content_type})


async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi_body, media_type="application/json")


def _public_base(request: Request) -> str:
    """Where this request reached us, so hosted image URLs work for the same client."""
    prefix = "/v1" if request.url.path.startswith("/v1/") else ""
    return f"{request.url.scheme}://{request.url.netloc}{prefix}"
