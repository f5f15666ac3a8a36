"""The cassette layer: an httpx transport wrapped around the real upstream transport.

Replay answers from the cassette; record forwards to the wrapped transport and
keeps the interaction; a request the cassette cannot answer and may not
record raises `errors.CassetteMissError` (a 400 the SDKs do not retry).
Nothing is patched: whoever builds the `httpx.AsyncClient` chooses this
transport, so it sits under every adapter alike.

The scope of the call in progress (`call.current_scope`, set by the engine)
names the cassette (header ``X-ALLM-Cassette``), the replay session (header
``X-ALLM-Session``) and the secrets to keep out of the recording.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from vcr.request import Request

from ..call import UPSTREAM_NOTE, CallScope, current_scope
from ..config import RecordMode
from .streams import TIMING_KEY, RecordingStream, ReplayStream, is_event_stream
from .tape import Interaction

if TYPE_CHECKING:
    from .library import CassetteLibrary


class CassetteTransport(httpx.AsyncBaseTransport):
    """Records and replays what passes through to `inner`."""

    def __init__(self, library: CassetteLibrary, inner: httpx.AsyncBaseTransport) -> None:
        self._library = library
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = current_scope.get() or CallScope()
        session = call.session
        tape = await self._library.tape_for(call.cassette)
        if tape.record_mode == RecordMode.OFF:
            return await self._inner.handle_async_request(request)
        body = await request.aread()
        seen = Request(request.method, str(request.url), body, request.headers)
        clean, secrets = tape.filter.request(seen, call.secrets)
        key = tape.key(clean)
        # The cursors sit in the state store: a store that does not answer is a 503, never a wrong replay.
        recorded = await tape.next_response(key, session)
        note = request.extensions.get(UPSTREAM_NOTE, {})  # what the journal and metrics learn of this call
        if recorded is not None:
            note["cassette"] = "hit"
            if tape.answers_alike(key):
                note["alike"] = True  # the same answer for every repeat of this request
            paced = self._library.settings.replay_timing == "recorded"
            return replayed_response(recorded.response, paced=paced)
        if not tape.may_record:
            note["cassette"] = "miss"
            raise tape.miss(clean, key, session)
        note["cassette"] = "recorded"
        response = await self._inner.handle_async_request(request)
        head = {
            "status": {"code": response.status_code, "message": _reason(response)},
            "headers": _multi_headers(response.headers),
        }

        async def keep(content: bytes, timing: list[list[float]] | None) -> None:
            raw = {**head, "body": {"string": content}}
            kept = tape.filter.response(raw, secrets)
            if timing is not None and len(kept["body"]["string"] or b"") == len(content):
                kept = {**kept, TIMING_KEY: {"chunks": timing}}
            await tape.record(Interaction(clean, kept, key), session)
            self._library.changed()

        if is_event_stream(response.headers):
            return _rewrap(response, RecordingStream(response.stream, keep))  # type: ignore[arg-type]
        try:
            content = b"".join([part async for part in response.stream])  # type: ignore[union-attr]
        finally:
            await response.aclose()
        await keep(content, None)
        return _rewrap(response, httpx.ByteStream(content))

    async def aclose(self) -> None:
        await self._inner.aclose()


def replayed_response(response: dict[str, Any], *, paced: bool = False) -> httpx.Response:
    """An httpx response from a vcrpy response dict, streams event by event."""
    headers = [(name, value) for name, values in response["headers"].items() for value in values]
    body = response["body"]["string"] or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    stream: httpx.AsyncByteStream
    if is_event_stream(response["headers"]):
        stream = ReplayStream(body, (response.get(TIMING_KEY) or {}).get("chunks"), paced=paced)
    else:
        stream = httpx.ByteStream(body)
    message = response["status"].get("message")
    extensions = {"reason_phrase": message.encode("ascii", "replace")} if message else {}
    return httpx.Response(response["status"]["code"], headers=headers, stream=stream, extensions=extensions)


def _rewrap(response: httpx.Response, stream: httpx.AsyncByteStream) -> httpx.Response:
    return httpx.Response(
        response.status_code, headers=response.headers.multi_items(), stream=stream, extensions=response.extensions
    )


def _multi_headers(headers: httpx.Headers) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers.multi_items():
        out.setdefault(name, []).append(value)
    return out


def _reason(response: httpx.Response) -> str:
    phrase = response.extensions.get("reason_phrase")
    return phrase.decode("ascii", "replace") if isinstance(phrase, bytes) else response.reason_phrase
