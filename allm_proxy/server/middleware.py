"""The server's middleware, outermost first: the call, the access token, the in-flight limit.

Plain ASGI middleware (no BaseHTTPMiddleware: it buffers and costs a task per
request). Each rejects through the one error funnel (`failures.render`).
"""

from __future__ import annotations

import hmac
import logging
import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import errors
from ..call import Call
from .failures import log, printable, render, unexpected

access_log = logging.getLogger("allm_proxy.access")

# Client headers the provider should see, passed on as sent.
FORWARDED_HEADERS = ("openai-organization", "openai-project")
# Routes anyone may call even when an access token is set: liveness, the API description, and
# hosted images (their ids are unguessable, and SDK users fetch them with plain HTTP clients).
_PUBLIC = re.compile(r"^/(healthz|readyz|openapi\.json|(v1/)?images/files/[^/]+)$")
_IMAGE_ROUTES = re.compile(r"^(/v1)?/images/(generations|edits|variations)$")


async def send_error(err: errors.ProxyError, call: Call | None, send: Send, *, close: bool) -> None:
    rendered = render(err, request_id=call.request_id if call else "req_none", close=close)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in rendered.headers.items()]
    headers += [(b"content-type", rendered.media_type.encode()), (b"content-length", str(len(rendered.body)).encode())]
    await send({"type": "http.response.start", "status": rendered.status, "headers": headers})
    await send({"type": "http.response.body", "body": rendered.body})


class CallMiddleware:
    """One `Call` per request, at `request.state.call`: the request id, session, cassette and keys the
    client sent; the `x-request-id` on every answer; the access-log line when the answer ends; and
    the last-resort 500 envelope for anything unexpected."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        call = Call(
            session=headers.get("x-allm-session") or "default",
            cassette=headers.get("x-allm-cassette") or None,
            client_key=headers.get("x-allm-api-key") or None,
            client_bearer=bearer(headers),
            forward_headers={name: headers[name] for name in FORWARDED_HEADERS if name in headers},
        )
        scope.setdefault("state", {})["call"] = call
        status: int | None = None

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                raw = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in raw):
                    raw.append((b"x-request-id", call.request_id.encode()))
                message = {**message, "headers": raw}
            elif message["type"] == "http.response.body":
                call.bytes_out += len(message.get("body", b""))
                if not message.get("more_body", False):
                    call.finish(status or 500)
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if status is None:
                log.exception("unexpected error handling %s %s", printable(scope["method"]), printable(scope["path"]))
                await send_error(unexpected(call.request_id), call, send, close=True)
                call.finish(500)
            else:
                call.finish(500)  # the answer had begun; the client's connection ends short
                raise
        finally:
            call.finish(499)  # no complete answer: nobody was left to take it (nginx's "client closed request")
            log_call(scope, call)


def log_call(scope: Scope, call: Call) -> None:
    """The access-log line: one per request, written when its answer has ended."""
    route = call.route
    access_log.info(
        "%s %s model=%s provider=%s status=%d ms=%.1f bytes=%d",
        printable(scope["method"]),
        printable(scope["path"]),
        printable(route.requested_model or "-") if route else "-",
        route.provider if route else "-",
        call.status or 0,
        call.ms,
        call.bytes_out,
    )


def bearer(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class AccessTokenMiddleware:
    """With an access token set, every route but the public ones needs it; it is never passed upstream."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or _PUBLIC.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        call: Call = scope["state"]["call"]
        presented = Headers(scope=scope).get("x-allm-access-token") or call.client_bearer or ""
        call.client_bearer = None  # the bearer was (or should have been) the access token: never a provider key
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            err = errors.AuthenticationError(
                "This proxy requires its access token: give your client api_key=<the token> "
                "(sent as Authorization: Bearer) or send the header X-ALLM-Access-Token. "
                "Provider keys go in X-ALLM-Api-Key or the proxy's environment."
            )
            await send_error(err, call, send, close=scope["method"] not in ("GET", "HEAD"))
            return
        await self.app(scope, receive, send)


class InflightLimitMiddleware:
    """At most `limit` image requests at once; a stream keeps its slot until it ends. More get a 503
    the SDKs retry."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _IMAGE_ROUTES.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            err = errors.ServerOverloadedError(
                f"The proxy is handling {self.limit} image requests already; retry in a moment.",
                headers={"retry-after": "1"},
            )
            await send_error(err, scope["state"]["call"], send, close=True)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
