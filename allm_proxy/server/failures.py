"""The one error funnel: every error the server answers becomes a response here.

HTTP answers (the exception handlers, the middleware's last resort), the
SSE error event of a stream that fails half-way, the cassette control route
and the connection guard below the application (`http_guard`) all render a `ProxyError` through
`render`, so status, headers and body can never disagree between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .. import errors
from ..faults.kinds import ConnectionResetFault
from ..wire.openai import render_error_event
from .faulted import reset_response

log = logging.getLogger("allm_proxy")

NO_REQUEST_ID = "req_none"


@dataclass(frozen=True)
class Rendered:
    status: int
    headers: dict[str, str]
    body: bytes
    media_type: str


def render(err: errors.ProxyError, *, request_id: str = NO_REQUEST_ID, close: bool = False) -> Rendered:
    """`err` as an HTTP answer. `close`: answered before the body was read, so the client
    cannot keep the connection busy sending a body nobody reads."""
    headers = err.response_headers()
    headers.setdefault("x-request-id", request_id)
    if close:
        headers["connection"] = "close"
    return Rendered(err.status, headers, err.body(), err.media_type())


def response(err: errors.ProxyError, request: Request) -> Response:
    """The starlette answer for `err`, for the request it ends."""
    call = getattr(request.state, "call", None)
    journal = getattr(request.state, "journal", None)
    if journal is not None:
        journal.error = err
    if isinstance(err, ConnectionResetFault):
        return reset_response()  # the `reset` fault: no answer at all, the connection just drops
    reads_body = request.method not in ("GET", "HEAD")
    close = reads_body and not getattr(request.state, "body_read", False)
    rendered = render(err, request_id=call.request_id if call else NO_REQUEST_ID, close=close)
    return Response(
        rendered.body, status_code=rendered.status, headers=rendered.headers, media_type=rendered.media_type
    )


def event(err: errors.ProxyError) -> bytes:
    """`err` as the SSE `error` event that ends a stream whose headers are already sent."""
    return render_error_event(err)


def unexpected(request_id: str) -> errors.InternalProxyError:
    return errors.InternalProxyError(
        f"The proxy failed unexpectedly while handling this request; see the proxy's log for request {request_id}."
    )


def from_http_exception(request: Request, exc: HTTPException) -> errors.ProxyError:
    """Starlette's routing errors (unknown route, wrong method) as the proxy's own errors."""
    method, path = printable(request.method), printable(request.url.path)
    if exc.status_code == 405:
        return errors.MethodNotAllowedError(
            f"Method {method} is not allowed on {path}.", headers=dict(exc.headers or {})
        )
    if exc.status_code == 404:
        hint = getattr(request.app.state, "unknown_route_hint", None) or (
            "This proxy serves /v1/images/generations, /v1/images/edits, /v1/images/variations and /v1/models."
        )
        return errors.NotFoundError(f"Unknown route: {method} {path}. {hint}", code="unknown_url")
    return errors.error_class(exc.status_code)(str(exc.detail))


async def handle_proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ProxyError)
    return response(exc, request)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return response(from_http_exception(request, exc), request)


EXCEPTION_HANDLERS = {errors.ProxyError: handle_proxy_error, HTTPException: handle_http_exception}


def printable(text: str, limit: int = 200) -> str:
    """Client-controlled text made safe for a log line: no newlines or control characters to forge lines."""
    return text[:limit].encode("unicode_escape", "backslashreplace").decode("ascii")
