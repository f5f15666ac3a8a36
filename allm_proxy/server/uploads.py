"""Multipart edits and variations, read as they arrive: streamed through to the provider, or spooled.

Every byte of the body goes to a spool (`tempfile.SpooledTemporaryFile`: memory up to
`SPOOL_IN_MEMORY`, a temp file beyond) while the one multipart parser
(`wire.multipart.MultipartStream`) reads it: text parts whole, file parts through a
`FileProbe` (head, byte count, sha256, PNG CRC walk), never whole.

As soon as a file part has begun, the `model` has arrived and the text fields so far make a
request the engine may stream (`Engine.streams_upload`), the engine runs it with a
`StreamedUpload` for its body: the provider gets the client's bytes from the spool, as they
come, except the last few (the closing boundary), held back until the whole request passed
its checks. Then:

- every check of the full path runs on the complete request, the files checked from their
  heads (an intact PNG) or, for any other file, from their bytes read back from the spool;
  a failure cancels the provider's request (it sees a body cut short) and answers the 400
  the full path gives;
- a typed field that came after the decision and changes what was decided, or a body that
  does not parse, cancels it too, and the request takes the full path from the spool;
- a client that leaves, a body over the size limit or too slow cancels it as well.

A request the engine may not stream (cassettes, faults, an alias, a field the proxy rewrites,
no `model`) is parsed from the spool once the body is in: one copy of its files in memory,
not the chunks, their join and the parsed copy.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO

from starlette.requests import Request

from .. import errors
from ..call import Call
from ..engine import Engine
from ..probe import FileProbe
from ..types import KNOWN_FIELDS, ImageRequest, InputFile, Operation
from ..validation import header_dimensions
from ..wire.multipart import MultipartError, MultipartStream, Part, boundary_of, is_multipart, part_head
from ..wire.requests import parse_multipart_request, request_from_parts, says_exactly
from .http_guard import BODY_IN

# A body this big stays in memory; a bigger one goes on to a temp file.
SPOOL_IN_MEMORY = 1024 * 1024
# How much the provider is sent at a time, read back from the spool. Smaller steps cost CPU on
# the way out (at 256 kB, a 10 MB edit took 44% more CPU than read whole; at 512 kB the same);
# bigger ones would hold a 1 MB upload back until it is all in.
_SEND_STEP = 512 * 1024


class UploadCancelled(Exception):
    """The body the provider was getting will not be finished (refused, or the client left)."""


class Spool:
    """The body so far, in the order it came; readers wait for more with `grown`."""

    def __init__(self, expected: int | None = None) -> None:
        spooled = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed by close()
        if expected is not None and expected > SPOOL_IN_MEMORY:
            spooled.rollover()  # a body announced as big goes to the file at once, not via a copy in memory
        self._file: IO[bytes] = spooled
        self.size = 0
        self._grew = asyncio.Event()

    def append(self, chunk: bytes) -> None:
        self._file.seek(0, 2)
        self._file.write(chunk)
        self.size += len(chunk)

    def read(self, offset: int, count: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(count)

    def pieces(self) -> Iterator[bytes]:
        """The whole body, a piece at a time (for the parser of the full path)."""
        for offset in range(0, self.size, _SEND_STEP):
            yield self.read(offset, _SEND_STEP)

    def changed(self) -> None:
        """Wake every reader waiting in `grown`."""
        self._grew.set()
        self._grew = asyncio.Event()

    async def grown(self) -> None:
        await self._grew.wait()

    def close(self) -> None:
        self._file.close()


class StreamedUpload:
    """The `UploadBody` of a request streaming through: the spool, up to what may go out yet."""

    def __init__(self, spool: Spool, content_type: str, length: int | None) -> None:
        self.content_type = content_type
        self.length = length
        self._spool = spool
        self.releasable = 0  # bytes the provider may have now
        self.released = False  # every check passed: the rest (the closing boundary) may go too
        self.cancelled = False

    async def chunks(self) -> AsyncIterator[bytes]:
        offset = 0
        while True:
            if self.cancelled:
                raise UploadCancelled("the upload was refused or abandoned before its end")
            limit = self._spool.size if self.released else self.releasable
            # Whole steps while the body still arrives: a write per client chunk (64 kB) costs more
            # CPU than the few milliseconds a step waits.
            if offset < limit and (self.released or limit - offset >= _SEND_STEP):
                piece = self._spool.read(offset, min(limit - offset, _SEND_STEP))
                offset += len(piece)
                yield piece
            elif self.released:
                return
            else:
                await self._spool.grown()


class UploadReader:
    """Reads one multipart body into the spool and the parser (see the module docstring)."""

    def __init__(self, request: Request, operation: Operation, content_type: str, *, digest: bool) -> None:
        self.request = request
        self.operation = operation
        self.content_type = content_type
        self.spool = Spool(_declared_length(request))
        self.parts: list[Part] = []
        self.upload: StreamedUpload | None = None
        self.decided: ImageRequest | None = None  # the request the engine runs, as it stood when it started
        self._digest = digest
        self._probes: dict[int, FileProbe] = {}  # id() of a file part -> the probe of that file
        self._safe = 0  # the body's bytes that cannot hold the closing delimiter yet
        self._text: bytearray | None = None  # the text part being read
        self._files_begun = False
        self._check = False  # a text part ended after a file began: the decision may be due
        self._problem: MultipartError | None = None
        try:
            boundary = boundary_of(content_type)
        except MultipartError as exc:
            self._problem = exc
            boundary = b"-"
        # At most this many bytes at the end of what arrived are held back: the closing delimiter.
        self._hold = len(boundary) + 8  # b"\r\n--" + boundary + b"--\r\n"
        self._parser = MultipartStream(boundary, on_begin=self._begin, on_data=self._data, on_end=self._end)

    # -- the parser's callbacks ------------------------------------------------------------------

    def _begin(self, headers: list[tuple[bytes, bytes]]) -> None:
        part = part_head(headers)
        self.parts.append(part)
        if part.is_file:
            self._probes[id(part)] = FileProbe(digest=self._digest)
            if not self._files_begun:
                self._files_begun = self._check = True
        else:
            self._text = bytearray()

    def _data(self, view: memoryview) -> None:
        probe = self._probes.get(id(self.parts[-1]))
        if probe is not None:
            probe.feed(view)
        elif self._text is not None:
            self._text += view

    def _end(self) -> None:
        if self._text is not None:
            self.parts[-1].data = bytes(self._text)
            self._text = None
            self._check = self._check or self._files_begun

    # -- reading ------------------------------------------------------------------------------

    async def read(self, engine: Engine, call: Call, start: Callable[[ImageRequest], None]) -> ImageRequest:
        """Read the whole body, calling `start(request)` once it may stream; the complete request."""
        async for chunk in body_chunks(self.request):
            self.spool.append(chunk)
            if self._problem is None:
                try:
                    self._parser.feed(chunk)
                except MultipartError as exc:
                    self._problem = exc  # the full path names it, from the spool
            if not self._parser.ended:
                self._safe = max(0, self.spool.size - self._hold)
            if self.upload is not None:
                self.upload.releasable = self._safe
                self.spool.changed()
            elif self._check and self._problem is None:
                self._check = False
                partial = self._decide(engine, call)
                if partial is not None:
                    start(partial)
        self.request.state.body_read = True
        return self._finish()

    def _decide(self, engine: Engine, call: Call) -> ImageRequest | None:
        """The request to stream, when the model is known and the text fields so far say one that may."""
        texts = [p for p in self.parts if not p.is_file and (p is not self.parts[-1] or self._text is None)]
        files = [p for p in self.parts if p.is_file]
        if not any(p.name == "model" for p in texts) or not says_exactly([*texts, *files]):
            return None
        try:
            partial = request_from_parts(self.operation, texts)
        except errors.ProxyError:
            return None
        if not engine.streams_upload(partial, call):
            return None
        self.upload = StreamedUpload(self.spool, self.content_type, _declared_length(self.request))
        self.upload.releasable = self._safe
        partial.upload = self.upload
        self.decided = partial
        return partial

    def _finish(self) -> ImageRequest:
        """The complete request: with its files' heads when it streams (checked here), else parsed
        from the spool (the full path). Raises the full path's 400 for an invalid one."""
        if self._problem is None:
            try:
                self._parser.finish()
            except MultipartError as exc:
                self._problem = exc
        if self.upload is None or self.decided is None or self._problem is not None:
            return self.whole_request()
        final = request_from_parts(self.operation, self.parts, upload=self._streamed_file)
        changed = any(getattr(final, name) != getattr(self.decided, name) for name in KNOWN_FIELDS)
        if changed or not says_exactly(self.parts):
            return self.whole_request()  # a late field changed what the engine was started with
        final.upload = self.upload
        return final

    def _streamed_file(self, part: Part) -> InputFile:
        probe = self._probes[id(part)]
        return InputFile(
            bytes(probe.head),
            filename=part.filename,
            content_type=part.content_type,
            field=part.name,
            streamed=probe.result(),
        )

    def whole_request(self) -> ImageRequest:
        """The request parsed from the spooled body, every file whole (the full path)."""
        self.cancel()
        return parse_multipart_request(self.operation, self.content_type, self.spool.pieces())

    def checkable(self, request: ImageRequest) -> ImageRequest:
        """`request` with every file its head cannot vouch for read back whole from the spool, so the
        checks of the full path see what they would have seen (a JPEG is decoded to be checked)."""
        files = [*request.images, *([request.mask] if request.mask else [])]
        if all(f.streamed is not None and f.streamed.intact and _head_tells_size(f) for f in files):
            return request
        whole = parse_multipart_request(self.operation, self.content_type, self.spool.pieces())
        whole.upload = request.upload
        return whole

    def release(self) -> None:
        if self.upload is not None:
            self.upload.released = True
            self.spool.changed()

    def cancel(self) -> None:
        """The provider's request, if one started, will never see the end of its body."""
        if self.upload is not None and not self.upload.released:
            self.upload.cancelled = True
            self.spool.changed()

    def close(self) -> None:
        """Once the engine is done with the body (a sender still reading it stops there)."""
        if self.upload is not None:
            self.upload.cancelled = True
        self.spool.close()


def _head_tells_size(upload: InputFile) -> bool:
    return None not in header_dimensions(upload.data)


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The body as it arrives, within the size limit (`max_body_bytes`) and the body timeout."""
    deadline = body_deadline(request)
    chunks = limited_chunks(request)
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await anext(chunks, None)
        except TimeoutError:
            raise body_timeout(request) from None
        if chunk is None:
            return
        yield chunk


# Where the door leaves the body it read (or what reading it raised) for `read_body`.
EARLY_BODY = "early_body"


async def read_body(request: Request) -> bytes:
    """The whole body, within the size limit and the body timeout, under one timer for the whole
    read (`body_chunks` arms one per chunk, with the same deadline: its reader works between
    chunks, and a timer spanning that work would cancel it). A body read already at the door
    (`answer_cache.KeptAnswerMiddleware`) is handed over, or the error reading it raised again."""
    state = request.scope.setdefault("state", {})
    early: bytes | BaseException | None = state.pop(EARLY_BODY, None)
    if isinstance(early, BaseException):
        raise early
    if early is not None:
        return early
    if state.get(BODY_IN):  # the connection has it all: no read can wait, so no timer
        chunks = [chunk async for chunk in limited_chunks(request)]
    else:
        try:
            async with asyncio.timeout_at(body_deadline(request)):
                chunks = [chunk async for chunk in limited_chunks(request)]
        except TimeoutError:
            raise body_timeout(request) from None
    request.state.body_read = True
    return b"".join(chunks)  # one chunk is returned as it is, not copied


def is_streamed_upload(operation: Operation, content_type: str | None) -> bool:
    """Whether the endpoint streams this request's body (a multipart edit or variation) instead of
    reading it whole (everything else, a multipart generation included)."""
    return operation != "generate" and is_multipart(content_type)


def body_deadline(request: Request) -> float:
    """When the body must be in, on the event loop's clock (`[server] body_timeout` from now)."""
    timeout: float = request.app.state.limits.body_timeout
    return asyncio.get_running_loop().time() + timeout


def body_timeout(request: Request) -> errors.RequestTimeoutError:
    timeout: float = request.app.state.limits.body_timeout
    return errors.RequestTimeoutError(
        f"The request body did not arrive within {timeout:g} s. Send it faster, or send smaller images."
    )


async def limited_chunks(request: Request) -> AsyncIterator[bytes]:
    """The body's non-empty chunks as starlette reads them, refused past the size limit
    (`max_body_bytes`), the declared length first; no deadline (the callers above set it)."""
    limit = request.app.state.config.max_body_bytes
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise too_large(declared, limit)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit)
        if chunk:
            yield chunk


def too_large(size: int, limit: int) -> errors.PayloadTooLargeError:
    return errors.PayloadTooLargeError(
        f"The request body ({size / 2**20:.1f} MB or more) exceeds this proxy's limit of {limit / 2**20:.1f} MB. "
        "Send smaller images, or raise the limit with --max-body-mb."
    )
