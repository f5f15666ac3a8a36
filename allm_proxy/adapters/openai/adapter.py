"""The OpenAI adapter: a faithful pass-through to the OpenAI Images API.

What the client sent goes upstream as it was sent: the same form (JSON or
multipart), every field (unknown ones included, in order), every file with
its part name, filename and content type, and the model the engine resolved
(aliases applied). What OpenAI answers comes back as it was answered: the
body kept whole for relaying, errors with their status, envelope and retry
headers, streams event by event.

    engine = Engine(image_adapter="openai", image_adapter_opts={"base_url": "https://api.openai.com/v1"})
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time

import httpx

from ...call import Call
from ...errors import UpstreamError
from ...types import ImageRequest, ImageResponse, ImageResult, RawBody
from ...wire.requests import Body, render_body
from ..base import AdapterSetup
from .errors import relayed_headers, status_error, transport_error
from .options import OpenAIOptions
from .relay import relay, relayable
from .response import parse_images_response
from .stream import UpstreamEventStream

log = logging.getLogger("allm_proxy.adapters.openai")

_PATHS = {"generate": "/images/generations", "edit": "/images/edits", "variation": "/images/variations"}
_STREAM_PREFIX = {"generate": "image_generation", "edit": "image_edit"}
# The statuses the SDKs retry (docs/spec/openai-images.md §9); used only when max_retries > 0.
_RETRY_STATUSES = frozenset({408, 409, 429})
_MAX_RETRY_DELAY = 60.0


class OpenAIImages:
    """`ImageAdapter` for the OpenAI Images API (and servers that speak it)."""

    name = "openai"

    def __init__(self, setup: AdapterSetup) -> None:
        self._http = setup.http
        self.options = OpenAIOptions.from_mapping(setup.options)
        # Parsed once: httpx parses a URL string again for every request it builds.
        self._urls = {operation: httpx.URL(self.options.base_url + path) for operation, path in _PATHS.items()}

    async def generate(self, request: ImageRequest, ctx: Call) -> ImageResult:
        return await self._call(request, ctx)

    async def edit(self, request: ImageRequest, ctx: Call) -> ImageResult:
        return await self._call(request, ctx)

    async def variation(self, request: ImageRequest, ctx: Call) -> ImageResponse:
        result = await self._call(request, ctx)
        # The validator refuses stream=true for variations, so this is always a whole answer.
        assert isinstance(result, ImageResponse)
        return result

    async def aclose(self) -> None:
        """Nothing to close: the HTTP client belongs to the engine."""

    async def _call(self, request: ImageRequest, ctx: Call) -> ImageResult:
        body = render_body(request, request.model)  # None: the client named none; OpenAI picks
        response = await self._send(self._urls[request.operation], body, ctx)
        request_id = response.headers.get("x-request-id")
        headers = {"x-request-id": request_id} if request_id else {}
        if request.wants_stream and request.operation in _STREAM_PREFIX:
            return UpstreamEventStream(
                response,
                prefix=_STREAM_PREFIX[request.operation],
                model=ctx.model,
                api_key=ctx.api_key,
                headers=headers,
            )
        length = relayable(response) if ctx.relay else None
        answer: ImageResponse | RawBody
        if length is not None:
            answer = await relay(response, length, api_key=ctx.api_key)
        else:
            content = await self._read(response, ctx)
            answer = parse_images_response(response, content, model=ctx.model, api_key=ctx.api_key)
        answer.headers.update(headers)
        return answer

    async def _send(self, url: httpx.URL, body: Body, ctx: Call) -> httpx.Response:
        """POST the body; a 2xx response comes back open (its body unread), anything else raises.

        With `max_retries` > 0, failures the SDKs would retry are retried here
        first, with their delays; the loop is bounded by `max_retries`.
        """
        headers = {**ctx.forward_headers, "accept": "application/json", "content-type": body.content_type}
        if ctx.api_key:
            headers["authorization"] = f"Bearer {ctx.api_key}"
        if body.upload is not None and body.upload.length is not None:
            headers["content-length"] = str(body.upload.length)  # the same bytes the client announced
        attempts = 1 + self.options.max_retries
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            # A streamed upload is sent again from its start (the server spools it while it streams).
            content = body.upload.chunks() if body.upload is not None else body.content
            request = self._http.build_request("POST", url, content=content, headers=headers)
            started = time.perf_counter()
            try:
                response = await self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                if not last and _retryable_exception(exc):
                    await asyncio.sleep(_backoff(attempt))
                    continue
                raise transport_error(exc, request.url, ctx.api_key) from exc
            log.debug(
                "openai POST %s -> %d in %.1f ms",
                request.url.path,
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
            if response.is_success:
                return response
            if response.is_redirect or response.status_code < 400:
                await response.aclose()
                # The API never redirects; a 3xx comes from something in between (a captive portal,
                # a wrong base URL), and relaying it would hand the SDK a redirect to nowhere.
                raise UpstreamError(
                    f"OpenAI at {request.url.host}:{request.url.port or 443} answered HTTP {response.status_code} "
                    f"(to {response.headers.get('location', 'nowhere')}) instead of an answer; "
                    "check --openai-base-url."
                )
            content = await self._read(response, ctx)
            if not last and _should_retry(response):
                await asyncio.sleep(_retry_delay(response, attempt))
                continue
            raise status_error(response, content, ctx.api_key)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _read(self, response: httpx.Response, ctx: Call) -> bytes:
        try:
            return await response.aread()
        except httpx.HTTPError as exc:
            raise transport_error(exc, response.request.url, ctx.api_key) from exc
        finally:
            await response.aclose()


def _retryable_exception(exc: httpx.HTTPError) -> bool:
    return isinstance(exc, httpx.TransportError)


def _should_retry(response: httpx.Response) -> bool:
    forced = response.headers.get("x-should-retry")
    if forced == "true":
        return True
    if forced == "false":
        return False
    return response.status_code in _RETRY_STATUSES or response.status_code >= 500


def _retry_delay(response: httpx.Response, attempt: int) -> float:
    """`retry-after-ms`, then `retry-after` (seconds or a date), else exponential backoff, as the SDKs do."""
    delay: float | None = None
    relayed = relayed_headers(response.headers)
    try:
        if "retry-after-ms" in relayed:
            delay = float(relayed["retry-after-ms"]) / 1000
        elif "retry-after" in relayed:
            value = relayed["retry-after"]
            try:
                delay = float(value)
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                delay = when.timestamp() - time.time()
    except (ValueError, TypeError):
        delay = None
    if delay is not None and 0 < delay <= _MAX_RETRY_DELAY:
        return delay
    return _backoff(attempt)


def _backoff(attempt: int) -> float:
    return float(min(0.5 * 2**attempt, 8.0))
