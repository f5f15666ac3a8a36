"""Answers kept to answer a repeat of a replayed request at once, without running it again.

A request whose every upstream call was replayed from a recording that every repeat gets (one
recording, repeats allowed: `Tape.answers_alike`) has an answer decided by what the client sent:
the same bytes and headers get the same answer, byte for byte, for as long as the cassettes do not
change. Test suites and load tests send such repeats all the time; answering them from the first
answer's bytes skips parsing, validation, the adapter, httpx and the cassette lookup, which were
nine tenths of a replay's CPU (docs/benchmarks.md).

    cache = AnswerCache.for_engine(engine)          # None when answers cannot be kept (see there)
    watch = cache.watch(scope, call, body)          # its key and what the cache sees now (None: never)
    kept = cache.answer(watch, call, journal)       # the kept answer, or None: run the request, then
    cache.keep(watch, call, response, body, ...)    # kept only if the run proved it repeatable

The lookup happens at the door (`KeptAnswerMiddleware`, the innermost of the server's middleware):
a kept answer is sent from there, before starlette routes the request and the endpoint runs; the
endpoint offers what it answers to the cache (`keep`) with the `Watch` the door left it.

What still happens for every request, kept answer or not: the access token, the in-flight limit,
the request id, the access-log line, the metrics and the journal entry (which shares the kept bytes
instead of copying them). What is kept is only ever an answer the full path gave; a kept answer
goes stale, and is dropped, when a cassette is chosen, rewound or recorded into (`generation`).
Nothing is kept for a fault, a stream, a hosted image URL (its id is new each time), an error, or a
request any part of which reached the network or took a replay cursor.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import errors
from ..call import Call, Delivery, Route
from ..journal import JournalCall
from ..journal.store import ResidentBody
from ..types import ImageRequest, ImageResponse, Usage
from .file_bytes import FileBytes, file_backed
from .middleware import image_operation
from .uploads import EARLY_BODY, is_streamed_upload, read_body

if TYPE_CHECKING:
    from ..engine import Engine

# Request headers that never change an answer but change from one request to the next.
VOLATILE_HEADERS = frozenset(
    {
        b"content-length",  # the body is in the key
        b"x-stainless-retry-count",  # the OpenAI SDKs count their retries
        b"idempotency-key",
        b"traceparent",
        b"tracestate",
        b"baggage",
        b"x-request-id",
        b"x-amzn-trace-id",
    }
)
# No single answer bigger than this share of the budget is kept.
LARGEST_SHARE = 4


@dataclass(frozen=True)
class Kept:
    """One answer as the client got it, and what its call and journal entry learned."""

    size: int  # its bytes (twice when file-backed) and its request's, against the budget
    status: int
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    generation: int
    route: Route | None
    delivery: Delivery | None
    upstream: tuple[dict[str, Any], ...]
    images: int
    usage: Usage | None
    cost_usd: float | None
    request: ImageRequest
    result: ImageResponse | None
    relayed_type: str | None  # a relayed answer: its entry parses the kept bytes when read


@dataclass(frozen=True)
class Watch:
    """What the cache saw when a request began: a run that changed either proves nothing."""

    key: Hashable
    generation: int
    hosted: int
    request_bytes: int  # the body in the key: it counts against the budget too


class AnswerCache:
    """Kept answers by request, least recently used dropped first past `max_bytes`."""

    def __init__(self, engine: Engine, max_bytes: int) -> None:
        assert engine.cassette_library is not None
        self.engine = engine
        self.library = engine.cassette_library
        self.max_bytes = max_bytes
        self._answers: OrderedDict[Hashable, Kept] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0

    @classmethod
    def for_engine(cls, engine: Engine) -> AnswerCache | None:
        """A cache for a replaying engine whose cassettes and cursors live in this process; None
        otherwise (with shared state, another worker may choose a cassette this one would not see)."""
        settings = engine.cassettes
        if settings is None or engine.cassette_library is None or engine.state.shared:
            return None
        max_bytes = int(settings.answer_cache_mb * 1024 * 1024)
        return cls(engine, max_bytes) if max_bytes > 0 else None

    def __len__(self) -> int:
        return len(self._answers)

    def may_answer(self, call: Call) -> bool:
        """Whether any answer may be kept for `call`: faults are decided per request, so none is
        while any is set (and its request goes on untouched: a fault may act on the connection)."""
        return not (call.fault_header or self.engine.faults.faults)

    def watch(self, scope: Scope, call: Call, body: bytes) -> Watch | None:
        """The key of this request, and what the cache sees now; None when no answer may be kept."""
        if not self.may_answer(call):
            return None
        headers = tuple(sorted(pair for pair in scope["headers"] if pair[0] not in VOLATILE_HEADERS))
        key = (scope["path"], scope.get("query_string", b""), headers, body)
        return Watch(key, self.library.generation, self.engine.files.stored, len(body))

    def answer(self, watch: Watch, call: Call, journal: JournalCall | None) -> Kept | None:
        """The kept answer to `watch`'s request, with its call and journal entry told what the first
        run told them; None when there is none (or it went stale)."""
        with self._lock:
            kept = self._answers.get(watch.key)
            if kept is None:
                return None
            if kept.generation != watch.generation:
                self._drop(watch.key)
                return None
            self._answers.move_to_end(watch.key)
            self.hits += 1
        call.route, call.delivery = kept.route, kept.delivery
        call.upstream = list(kept.upstream)  # the notes are shared: nobody changes a finished call's notes
        call.images, call.usage, call.cost_usd = kept.images, kept.usage, kept.cost_usd
        if journal is not None:
            journal.request, journal.result, journal.resident = kept.request, kept.result, True
            if kept.relayed_type is not None:
                journal.relayed_type = kept.relayed_type
                journal.relayed = ResidentBody(kept.body)
        return kept

    def may_keep(self, length: int | None) -> bool:
        """Whether an answer of `length` bytes (None: not known yet) could be kept at all."""
        return length is None or length * LARGEST_SHARE <= self.max_bytes

    def keep(
        self,
        watch: Watch,
        call: Call,
        response: Response,
        body: bytes,
        request: ImageRequest,
        result: ImageResponse | None,
    ) -> bool:
        """Keep `response` (whose bytes are `body`) for repeats of `watch`'s request, if its run
        proved that every repeat gets these bytes; whether it was kept."""
        size = len(body) + watch.request_bytes
        if not self._repeatable(watch, call, request, response.status_code) or not self.may_keep(size):
            return False
        body = file_backed(body)  # repeats are sent from a memory file, whose copy counts too
        if isinstance(body, FileBytes):
            size += len(body)
        kept = Kept(
            size=size,
            status=response.status_code,
            raw_headers=tuple(response.raw_headers),
            body=body,
            generation=watch.generation,
            route=call.route,
            delivery=call.delivery,
            # The first run's upstream calls, marked as answered from its kept bytes (the journal shows it).
            upstream=tuple({**note, "ms": 0.0, "kept": True} for note in call.upstream),
            images=call.images,
            usage=call.usage,
            cost_usd=call.cost_usd,
            request=request,
            result=result,
            relayed_type=(response.media_type or "application/json") if result is None else None,
        )
        with self._lock:
            if watch.key in self._answers:
                self._drop(watch.key)
            self._answers[watch.key] = kept
            self._bytes += size
            while self._bytes > self.max_bytes and self._answers:
                self._drop(next(iter(self._answers)))
        return True

    def _repeatable(self, watch: Watch, call: Call, request: ImageRequest, status: int) -> bool:
        notes = call.upstream
        return (
            status == 200
            and not request.stream
            and call.fault is None
            and not self.engine.faults.faults
            and bool(notes)
            and all(note.get("alike") for note in notes)
            and self.library.generation == watch.generation
            and self.engine.files.stored == watch.hosted
        )

    def _drop(self, key: Hashable) -> None:
        kept = self._answers.pop(key)
        self._bytes -= kept.size


class KeptAnswerMiddleware:
    """The answer cache at the door. A request with a JSON body to an image route, when answers are
    kept (replay, `AnswerCache.for_engine`), has its body read here; a kept answer to it is sent at
    once, before starlette's routing, `Request`, endpoint and `Response`, which were a tenth of a
    kept answer's CPU. Any other request goes on with the client's own `receive` (a fault acts on
    the connection through it) and the body read here left for the endpoint's `read_body` (or the
    error reading it raised, raised again there, for the one error funnel), and the request's
    `Watch` at `request.state.answer_watch` for the endpoint to `keep` its answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answers: AnswerCache | None = getattr(scope["app"].state, "answers", None) if "app" in scope else None
        if (
            answers is None
            or scope["type"] != "http"
            or not _whole_body_image_request(scope)
            or not answers.may_answer(scope["state"]["call"])
        ):
            await self.app(scope, receive, send)
            return
        state = scope["state"]
        try:
            body = await read_body(Request(scope, receive))
        except (errors.ProxyError, ClientDisconnect) as exc:
            state[EARLY_BODY] = exc
            await self.app(scope, receive, send)
            return
        watch = answers.watch(scope, state["call"], body)
        if watch is not None:
            kept = answers.answer(watch, state["call"], state.get("journal"))
            if kept is not None:
                await send({"type": "http.response.start", "status": kept.status, "headers": list(kept.raw_headers)})
                await send({"type": "http.response.body", "body": kept.body})
                return
            state["answer_watch"] = watch
        state[EARLY_BODY] = body
        await self.app(scope, receive, send)


def _whole_body_image_request(scope: Scope) -> bool:
    """A POST to an image route whose body the endpoint reads whole (`is_streamed_upload`)."""
    operation = image_operation(scope["path"]) if scope["method"] == "POST" else None
    if operation is None:
        return False
    content_type = next((value for name, value in scope["headers"] if name == b"content-type"), None)
    return not is_streamed_upload(operation, content_type.decode("latin-1") if content_type is not None else None)
