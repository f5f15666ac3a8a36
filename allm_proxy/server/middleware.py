"""The server's middleware, outermost first: the call, the access token, the in-flight limit (and,
innermost, the answer cache's door: `answer_cache.KeptAnswerMiddleware`).

Plain ASGI middleware (no BaseHTTPMiddleware: it buffers and costs a task per
request). Each rejects through the one error funnel (`failures.render`).
"""

from __future__ import annotations

import hmac
import re
from urllib.parse import unquote

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import errors
from ..call import Call
from ..journal import JournalCall
from ..journal import begin as begin_journal
from ..types import Operation
from .access_log import AccessLog
from .failures import log, printable, render, unexpected

# Client headers the provider should see, passed on as sent.
FORWARDED_HEADERS = ("openai-organization", "openai-project")
# Routes anyone may call even when an access token is set: liveness, the API description, and
# hosted images (their ids are unguessable, and SDK users fetch them with plain HTTP clients).
_PUBLIC = re.compile(r"^/(healthz|readyz|openapi\.json|(v1/)?images/files/[^/]+)$")
_IMAGE_ROUTES = re.compile(r"^(/v1)?/images/(generations|edits|variations)$")
_FILES = re.compile(r"^(/v1)?/images/files/[^/]+$")
_OPERATIONS: dict[str, Operation] = {"generations": "generate", "edits": "edit", "variations": "variation"}
_IMAGE_OPERATIONS = frozenset(_OPERATIONS.values())
# ASGI gives header names in lower case, as bytes.
_CALL_NAMES = ("x-allm-session", "x-allm-cassette", "x-allm-api-key", "authorization", "x-allm-fault")
_CALL_HEADERS = {name.encode(): name for name in (*_CALL_NAMES, *FORWARDED_HEADERS)}


async def send_error(err: errors.ProxyError, scope: Scope, send: Send, *, close: bool) -> None:
    """Answer `err` from middleware, before the app ran (the journal notes it like any error)."""
    state = scope.get("state", {})
    call: Call | None = state.get("call")
    journal: JournalCall | None = state.get("journal")
    if journal is not None:
        journal.error = err
    rendered = render(err, request_id=call.request_id if call else "req_none", close=close)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in rendered.headers.items()]
    headers += [(b"content-type", rendered.media_type.encode()), (b"content-length", str(len(rendered.body)).encode())]
    await send({"type": "http.response.start", "status": rendered.status, "headers": headers})
    await send({"type": "http.response.body", "body": rendered.body})


class CallMiddleware:
    """One `Call` per request, at `request.state.call`: the request id, session, cassette and keys the
    client sent; the `x-request-id` on every answer; the access-log line when the answer ends; and
    the last-resort 500 envelope for anything unexpected."""

    def __init__(self, app: ASGIApp, access: AccessLog | None = None) -> None:
        self.app = app
        self.access = access or AccessLog()  # the app's, which its lifespan flushes when it stops

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = call_headers(scope)
        call = Call(
            session=headers.get("x-allm-session") or "default",
            cassette=headers.get("x-allm-cassette") or None,
            client_key=headers.get("x-allm-api-key") or None,
            client_bearer=bearer(headers.get("authorization", "")),
            forward_headers={name: headers[name] for name in FORWARDED_HEADERS if name in headers},
            fault_header=headers.get("x-allm-fault") or None,
        )
        state = scope.setdefault("state", {})
        state["call"] = call
        operation = operation_label(scope)
        engine = getattr(scope["app"].state, "engine", None) if "app" in scope else None
        journal = state["journal"] = (
            begin_journal(engine, operation) if operation in _IMAGE_OPERATIONS and engine is not None else None
        )
        status: int | None = None
        recorded = logged = False

        async def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                await ended(scope, call, journal, operation)

        def log_line() -> None:
            nonlocal logged
            if not logged:
                logged = True
                self.access.line(scope, call)

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
                    # Recorded before the last bytes go: a client that has its answer finds it in the
                    # journal and the metrics. The log line waits until they went: nobody reads it back
                    # to the answer, and at one request at a time it was 4% of each answer's wait.
                    await record()
                    await send(message)
                    log_line()
                    return
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if status is None:
                log.exception("unexpected error handling %s %s", printable(scope["method"]), printable(scope["path"]))
                await send_error(unexpected(call.request_id), scope, tracked, close=True)
                call.finish(500)
            else:
                call.finish(500)  # the answer had begun; the client's connection ends short
                raise
        finally:
            call.finish(499)  # no complete answer: nobody was left to take it (nginx's "client closed request")
            try:
                await record()
            finally:
                log_line()


async def ended(scope: Scope, call: Call, journal: JournalCall | None, operation: str | None) -> None:
    """The one place a finished request is recorded: the journal entry and the metrics (its log line
    is queued with `AccessLog.line`, once the answer went)."""
    if journal is not None:
        await journal.finish(call, method=scope["method"], path=scope["path"])
    metrics = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
    if metrics is not None:
        metrics.observe(call, operation=operation)


def image_operation(path: str) -> Operation | None:
    """generate, edit or variation for an image route's path; None for any other."""
    image_route = _IMAGE_ROUTES.match(path)
    return _OPERATIONS[image_route.group(2)] if image_route else None


def operation_label(scope: Scope) -> str | None:
    """The `operation` metric label (for the image routes, the journal's operation too); None for
    routes not counted (health, metrics, the inspector)."""
    path = scope["path"]
    operation = image_operation(path)
    if operation is not None:
        return operation
    if _FILES.match(path):
        return "file"
    if path.startswith("/allm") or path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        return None
    return "models" if "/models" in path else "unknown"


def call_headers(scope: Scope) -> dict[str, str]:
    """The request headers a `Call` is made from, each its first value (as starlette's `Headers.get`
    gives), in one pass over the request's headers instead of one per header."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = _CALL_HEADERS.get(raw_name)
        if name is not None and name not in found:
            found[name] = raw_value.decode("latin-1")
    return found


def bearer(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class AccessTokenMiddleware:
    """With an access token set, every route but the public ones needs it; it is never passed upstream."""

    def __init__(self, app: ASGIApp, *, token: str | None, public_metrics: bool = False) -> None:
        self.app = app
        self.token = token
        self.public_metrics = public_metrics  # `[server] public_metrics`: scrapers need no token

    def _public(self, path: str) -> bool:
        return bool(_PUBLIC.match(path)) or (self.public_metrics and path == "/metrics")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        call: Call = scope["state"]["call"]
        presented = Headers(scope=scope).get("x-allm-access-token") or call.client_bearer or _page_token(scope)
        call.client_bearer = None  # the bearer was (or should have been) the access token: never a provider key
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            err = errors.AuthenticationError(
                "This proxy requires its access token: give your client api_key=<the token> "
                "(sent as Authorization: Bearer) or send the header X-ALLM-Access-Token. "
                "Provider keys go in X-ALLM-Api-Key or the proxy's environment."
            )
            await send_error(err, scope, send, close=scope["method"] not in ("GET", "HEAD"))
            return
        await self.app(scope, receive, send)


def _page_token(scope: Scope) -> str:
    """The inspector page's token: a browser cannot add headers to page loads, images or EventSource,
    so GETs under /allm/ may carry `?access_token=` (the access log never prints query strings)."""
    if scope["method"] != "GET" or not scope["path"].startswith("/allm"):
        return ""
    for name, _, value in (p.partition("=") for p in scope.get("query_string", b"").decode("latin-1").split("&")):
        if name == "access_token":
            return unquote(value)
    return ""


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
            await send_error(err, scope, send, close=True)
            return
        self.inflight += 1
        gauge = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
        if gauge is not None:
            gauge.inflight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
            if gauge is not None:
                gauge.inflight.dec()
