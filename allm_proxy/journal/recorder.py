"""Turning one request the server answered into a journal entry.

The server's call middleware opens a `JournalCall` when an image request
arrives; the endpoint tells it the parsed request, the answer (or the error)
and, for streamed and relayed answers, what went by; the access-log line
closes it (`finish`, with the `Call`), which builds the `Record` and appends
it. The engine wraps its upstream transport in `UpstreamRecorder`, which notes
every upstream call in the call's own list (`Call.upstream`, reached through
the call's scope): method, URL with secrets redacted, status, ms, and whether
the network or a cassette answered it. Nothing here hashes or decodes an
image: the store does that when somebody reads the entry.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from .. import errors
from ..call import UPSTREAM_NOTE, Call, current_scope
from ..cassettes.filters import SecretFilter
from ..types import Image, ImageEvent, ImageRequest, ImageResponse, InputFile, Usage
from ..validation import header_dimensions
from .record import Blob, Record

if TYPE_CHECKING:
    from ..engine import Engine
    from .store import BodySink, Journal

# Request fields that carry file bytes: described as `inputs`, never copied into `params`.
FILE_FIELDS = frozenset({"images", "mask", "extra_files"})
# The client's verbatim JSON body and its streaming upload are bookkeeping, not parameters
PARAM_FIELDS = tuple(
    f.name for f in dataclasses.fields(ImageRequest) if f.name not in {*FILE_FIELDS, "verbatim", "upload"}
)
_URL_FILTER = SecretFilter()  # the cassette filter's defaults: what the journal keeps of upstream URLs
_HOSTED = re.compile(r"/images/files/(img_[A-Za-z0-9_-]+)$")


class JournalCall:
    """What one request did, collected while it runs."""

    def __init__(self, engine: Engine, journal: Journal, operation: str) -> None:
        self.engine = engine
        self.journal = journal
        self.operation = operation
        self.time = time.time()
        self.request: ImageRequest | None = None
        self.result: ImageResponse | None = None
        self.error: errors.ProxyError | None = None
        self.streamed: list[Image] = []
        self.stream_usage: Usage | None = None
        self.relayed: BodySink | None = None  # a relayed answer, as it goes by
        self.relayed_type = "application/json"
        self._relayed_bytes = 0
        self.resident = False  # its answer's bytes are the answer cache's (see `Record.resident`)
        self.done = False

    def saw_event(self, event: ImageEvent) -> None:
        """A streamed event went to the client; its final images and usage are the answer's."""
        if event.kind == "completed":
            if event.image is not None:
                self.streamed.append(event.image)
            if event.usage is not None:
                self.stream_usage = event.usage

    def saw_chunk(self, chunk: bytes) -> None:
        """A relayed chunk went to the client; kept while within the journal's image budget."""
        if self.relayed is None:
            self.relayed = self.journal.body_sink()
        self._relayed_bytes += len(chunk)
        if self._relayed_bytes <= self.journal.settings.max_image_mb * 1024 * 1024:
            self.relayed.write(chunk)
        elif self.relayed.size:
            self.relayed.abandon()  # too big to keep: the entry says its images are not known

    async def finish(self, call: Call, *, method: str, path: str) -> None:
        """Append the entry; only the first call counts.

        The hot path only takes the facts (`EntryFacts`) and the blobs the store must account for and
        spill now; the entry's fields are written by its first reader (`Record.settle_fields`). Writing
        them here was half of what the journal cost a replayed answer (see docs/benchmarks.md).
        """
        if self.done:
            return
        self.done = True
        result = self.result
        error = miss = None
        if self.error is not None:
            # Rare, and the only use of the keys: redacted now, so an entry never holds one.
            secrets = {
                s for s in (call.api_key, call.client_key, call.client_bearer, *call.forward_headers.values()) if s
            }
            error = _redacted(self._envelope(), secrets)
            if isinstance(self.error, errors.CassetteMissError):
                miss = self.error.details
        facts = EntryFacts(self, method, path, call, self._cassette(call), result, error, miss)
        request = self.request
        record = Record(
            {"id": call.request_id},
            inputs=inputs_of(request) if request is not None else [],
            resident=self.resident,
            pending=facts.fill,
        )
        if self.relayed is not None and self.relayed.size:
            # Parsed by the first reader, not here: parsing every 3 MB answer relayed is most of what
            # the journal would cost on the hot path.
            record.relayed = self.relayed.blob(self.relayed_type)
        else:
            images = self.streamed or (result.images if result is not None else [])
            record.images = [_held_blob(i) if i.has_bytes else await self._url_blob(i) for i in images]
        await self.journal.append(record)

    async def _url_blob(self, image: Image) -> Blob:
        """An answered image given by URL: its bytes when the proxy hosts them or the URL holds them."""
        match = _HOSTED.search(image.url or "")
        # A URL the proxy hosts: its bytes are in the state store (a lookup, no copy in memory).
        hosted = await self.engine.files.get(match.group(1)) if match else None
        if hosted is not None:
            return Blob(hosted.data, len(hosted.data), declared_mime=hosted.mime_type)
        if (image.url or "").startswith("data:"):
            return Blob(image, len(image.url or "") * 3 // 4, declared_mime=image.mime_type)
        return Blob(None, 0, declared_mime=image.mime_type)  # a provider URL: the proxy never had the bytes

    def _envelope(self) -> dict[str, Any]:
        assert self.error is not None
        if isinstance(self.error, errors.UpstreamStatusError):
            try:
                body = json.loads(self.error.raw_body)
                if isinstance(body, dict):
                    return body
            except ValueError:
                pass
        return self.error.envelope()

    def _cassette(self, call: Call) -> str | None:
        library = self.engine.cassette_library
        if library is None:
            return None
        if call.cassette:
            return call.cassette
        active = library.active
        if active is None:
            return None
        if library.directory is not None and active.is_relative_to(library.directory):
            return str(active.relative_to(library.directory).as_posix())
        return str(active)


def begin(engine: Engine, operation: str) -> JournalCall | None:
    """A `JournalCall` for a request arriving now, or None when the engine keeps no journal."""
    journal = engine.journal
    return JournalCall(engine, journal, operation) if journal is not None else None


def params_of(request: ImageRequest) -> dict[str, Any]:
    """Every request field except file bytes; `extra` (untyped wire fields) as a mapping."""
    params = {name: getattr(request, name) for name in PARAM_FIELDS}
    params["extra"] = {key: value for key, value in request.extra}
    return params


def inputs_of(request: ImageRequest) -> list[Blob]:
    files: list[InputFile] = [*request.images, *([request.mask] if request.mask else []), *request.extra_files]
    return [_input_blob(f) for f in files]


def _input_blob(upload: InputFile) -> Blob:
    streamed = upload.streamed
    if streamed is None:
        return Blob(upload.data, len(upload.data), part=upload.field, declared_mime=upload.content_type)
    # An upload that streamed through: only its head is here (at most 64 kB), described now,
    # with the byte count and sha256 taken as it went by; the inspector shows no bytes for it.
    width, height = header_dimensions(upload.data)
    info = {
        "part": upload.field,
        "mime_type": upload.mime_type,
        "width": width,
        "height": height,
        "bytes": streamed.size,
        "sha256": streamed.sha256 or None,
        "streamed": True,
    }
    return Blob(None, streamed.size, part=upload.field, declared_mime=upload.content_type, info=info, dropped=True)


def _held_blob(image: Image) -> Blob:
    """An answered image whose bytes (or base64) the proxy holds: kept as it is, sized without decoding."""
    return Blob(image, _estimated_size(image), declared_mime=image.mime_type)


def _estimated_size(image: Image) -> int:
    # Without decoding: base64 is 4 characters for every 3 bytes.
    raw = image._data
    return len(raw) if raw is not None else image.b64_length() * 3 // 4


class EntryFacts:
    """What an entry's fields are written from, taken when its request ends (no key among them)."""

    __slots__ = (
        "cassette",
        "error",
        "headers",
        "method",
        "miss",
        "ms",
        "operation",
        "path",
        "request",
        "route",
        "session",
        "source",
        "started",
        "status",
        "upstream",
        "usage",
    )

    def __init__(
        self,
        journal: JournalCall,
        method: str,
        path: str,
        call: Call,
        cassette: str | None,
        result: ImageResponse | None,
        error: Any,
        miss: Any,
    ) -> None:
        self.method, self.path, self.cassette, self.error, self.miss = method, path, cassette, error, miss
        self.operation, self.started, self.request = journal.operation, journal.time, journal.request
        self.route, self.status, self.ms, self.session = call.route, call.status, call.ms, call.session
        self.source, self.upstream = call.source, call.upstream
        self.headers = result.headers if result is not None else None
        usage = journal.stream_usage
        self.usage = usage if usage is not None else (result.usage if result is not None else None)

    def fill(self, record: Record) -> None:
        """Write `record`'s fields (its first reader calls this, through `Record.settle_fields`)."""
        request, route = self.request, self.route
        fields: dict[str, Any] = {
            "id": record.fields["id"],
            "time": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="milliseconds"),
            "method": self.method,
            "path": self.path,
            "operation": self.operation,
            "model": (route.requested_model if route else None) or (request.model if request else None),
            "provider": route.provider if route else None,
            "provider_model": route.model if route else None,
            "status": self.status,
            "ms": round(self.ms, 1),
            "session": self.session,
            "cassette": self.cassette,
            "source": self.source,
            "stream": bool(request and request.stream),
            "params": params_of(request) if request is not None else {},
            "usage": self.usage.to_dict() if self.usage is not None else None,
            "error": self.error,
            "upstream": self.upstream,
            "miss": self.miss,
        }
        upstream_id = next((v for k, v in (self.headers or {}).items() if k.lower() == "x-request-id"), None)
        if upstream_id and upstream_id != fields["id"]:
            fields["upstream_request_id"] = upstream_id  # the x-request-id the client saw
        fields.update(record.fields)  # what the store wrote before (images_dropped) stays
        record.fields = fields


def _redacted(data: Any, secrets: set[str]) -> Any:
    """`data` with every secret replaced (providers echo keys in error messages)."""
    if not secrets:
        return data
    text = json.dumps(data)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 8:
            text = text.replace(json.dumps(secret)[1:-1], "<redacted>")
    return json.loads(text)


# -- the upstream side ------------------------------------------------------------------


class UpstreamRecorder(httpx.AsyncBaseTransport):
    """Notes each upstream call of the journaled call in progress; passes everything through.

    `replayable`: a cassette layer sits under this transport, so a call counts as
    `cassette` unless `mark_network` (under the cassette layer) sees it go out.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, *, replayable: bool = False) -> None:
        self._inner = inner
        self._replayable = replayable

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scope = current_scope.get()
        if scope is None or scope.upstream is None:
            return await self._inner.handle_async_request(request)
        note: dict[str, Any] = {
            "method": request.method,
            "url": redact_url(str(request.url), set(scope.secrets)),
            "status": None,
            "ms": None,
            "source": "cassette" if self._replayable else "upstream",
        }
        request.extensions[UPSTREAM_NOTE] = note
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except errors.CassetteMissError as err:
            note["error"] = err.code
            raise
        except Exception as exc:
            note["error"] = type(exc).__name__
            raise
        finally:
            note["ms"] = round((time.perf_counter() - started) * 1000, 1)
            scope.upstream.append(note)
        note["status"] = response.status_code
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class NetworkMark(httpx.AsyncBaseTransport):
    """Sits under the cassette layer: a call that reaches it went to the network, not a cassette."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        note = request.extensions.get(UPSTREAM_NOTE)
        if isinstance(note, dict):
            note["source"] = "upstream"
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def redact_url(url: str, secrets: set[str]) -> str:
    """`url` without `key=`-style query parameters and without any known secret (the cassette filter's rules)."""
    return _URL_FILTER.url(url, secrets)


def upstream_transport(inner: httpx.AsyncBaseTransport, library: Any) -> httpx.AsyncBaseTransport:
    """The engine's upstream stack with the journal's two taps: around it, and under its cassette layer."""
    if library is None:
        return UpstreamRecorder(inner)
    return UpstreamRecorder(library.transport(NetworkMark(inner)), replayable=True)
