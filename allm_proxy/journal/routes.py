"""`/allm/requests`: the journal over HTTP. The server mounts these behind its access token.

    GET    /allm/requests?session=S&status=400&operation=edit&limit=20   {"object": "list", "data": [...]}
    GET    /allm/requests/{id}                                            one entry
    GET    /allm/requests/{id}/inputs/{k}, /images/{k}                    the bytes, with their content type
    DELETE /allm/requests[?session=S]                                     {"object": "list", "deleted": N}
    GET    /allm/requests/stream                                          SSE: `event: entry`, one per new entry

Errors are OpenAI envelopes (raised as `errors.ProxyError`; the server renders them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from .. import errors
from ..wire import sse
from .store import Feed, Journal

PREFIX = "/allm/requests"
KEEPALIVE_SECONDS = 15.0
OPERATIONS = ("generate", "edit", "variation")


# A comment line keeps proxies from timing the feed out (spec: keepalives are comments, never empty events).
SSE_KEEPALIVE = b": keepalive\n\n"


def journal_routes(journal: Journal, *, keepalive: float = KEEPALIVE_SECONDS) -> list[BaseRoute]:
    """The `/allm/requests` routes over `journal`."""
    endpoints = _Endpoints(journal, keepalive)
    return [
        Route(PREFIX, endpoints.listing, methods=["GET", "DELETE"]),
        Route(f"{PREFIX}/stream", endpoints.stream, methods=["GET"]),
        Route(PREFIX + "/{entry_id}", endpoints.one, methods=["GET"]),
        Route(PREFIX + "/{entry_id}/{kind}/{index:int}", endpoints.blob, methods=["GET"]),
    ]


def parse_filters(query: Mapping[str, str]) -> dict[str, Any]:
    """`?session=&status=&operation=&limit=` as `Journal.list` keywords; a 400 naming what is wrong."""
    unknown = set(query) - {"session", "status", "operation", "limit"}
    if unknown:
        raise errors.UnknownParameterError(
            f"Unknown filter(s) {sorted(unknown)}; /allm/requests filters by session, status, operation and limit.",
            param=sorted(unknown)[0],
        )
    status = query.get("status")
    if status is not None and status != "error" and not status.isdigit():
        raise errors.InvalidRequestError(
            f"status={status!r} is not a status code (like 400) or 'error' (any 4xx or 5xx).", param="status"
        )
    operation = query.get("operation")
    if operation is not None and operation not in OPERATIONS:
        raise errors.InvalidRequestError(
            f"operation={operation!r} is not one of {', '.join(OPERATIONS)}.", param="operation"
        )
    limit = query.get("limit")
    if limit is not None and not limit.isdigit():
        raise errors.InvalidRequestError(f"limit={limit!r} is not a whole number.", param="limit")
    return {
        "session": query.get("session"),
        "status": status,
        "operation": operation,
        "limit": int(limit) if limit is not None else None,
    }


class _Endpoints:
    def __init__(self, journal: Journal, keepalive: float) -> None:
        self.journal = journal
        self.keepalive = keepalive

    async def listing(self, request: Request) -> Response:
        if request.method == "DELETE":
            session = request.query_params.get("session")
            return JSONResponse({"object": "list", "deleted": await self.journal.clear(session)})
        filters = parse_filters(request.query_params)
        entries = await self.journal.list(**filters)
        return JSONResponse({"object": "list", "data": entries})

    async def one(self, request: Request) -> Response:
        entry = await self.journal.get(request.path_params["entry_id"])
        if entry is None:
            raise _no_entry(request.path_params["entry_id"])
        return JSONResponse(entry)

    async def blob(self, request: Request) -> Response:
        entry_id, kind, index = (request.path_params[k] for k in ("entry_id", "kind", "index"))
        if kind not in ("inputs", "images"):
            raise errors.NotFoundError(f"Use /inputs/{index} or /images/{index}.", code="unknown_url")
        found = await self.journal.blob(entry_id, kind, int(index))
        if found is None:
            if await self.journal.get(entry_id) is None:
                raise _no_entry(entry_id)
            raise errors.NotFoundError(
                f"Entry {entry_id} has no {kind[:-1]} {index} with bytes: there is no such one, the journal let "
                "its bytes go (its max_image_mb bound), or the proxy never kept them (a provider URL, or an "
                "upload that streamed through to the provider).",
                code="journal_bytes_gone",
            )
        data, mime = found
        return Response(data, media_type=mime, headers={"cache-control": "private, max-age=3600"})

    async def stream(self, request: Request) -> Response:
        # Subscribed before the answer starts: a store that cannot subscribe (Redis down) is a 503 envelope.
        subscription = contextlib.AsyncExitStack()
        feed = await subscription.enter_async_context(self.journal.subscribe())
        return _FeedResponse(subscription, self._feed(feed))

    async def _feed(self, feed: Feed) -> AsyncIterator[bytes]:
        yield SSE_KEEPALIVE  # headers and a first byte now: EventSource reports "open"
        while True:
            try:
                entry_id = await asyncio.wait_for(feed.get(), self.keepalive)
            except TimeoutError:
                yield SSE_KEEPALIVE
                continue
            if entry_id is None:
                return  # the store's feed broke: the client reconnects (EventSource does by itself)
            entry = await self.journal.get(entry_id)
            if entry is not None:
                yield sse.encode("entry", json.dumps(entry).encode())


class _FeedResponse(StreamingResponse):
    """The SSE answer that ends its subscription however the answer ends (a client gone before the
    first byte included: the body's generator would never have started)."""

    def __init__(self, subscription: contextlib.AsyncExitStack, body: AsyncIterator[bytes]) -> None:
        super().__init__(
            body, media_type=sse.MEDIA_TYPE, headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
        )
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.subscription:
            await super().__call__(scope, receive, send)


def _no_entry(entry_id: str) -> errors.NotFoundError:
    return errors.NotFoundError(
        f"No journal entry {entry_id[:80]!r}: it was never there, was cleared, or is older than the newest "
        "max_entries (see [journal] in the config).",
        code="journal_entry_not_found",
    )
