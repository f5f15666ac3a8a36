"""The default upstream transport: aiohttp's pool and C HTTP parser behind httpx's transport seam.

Adapters and the cassette layer speak httpx (`httpx.AsyncClient`,
`httpx.AsyncBaseTransport`); only the bytes on the wire go through aiohttp.
Why not httpx's own transport: per request it scans its whole connection
pool with a readiness syscall for each connection, and reads through anyio
in 64 KB steps; at 16 concurrent requests that made the pass-through 4x
slower than it is with aiohttp (see docs/benchmarks.md). The exceptions are
mapped to httpx's, so callers tell a refused connection (ConnectError),
a reset or cut-short answer (ReadError / RemoteProtocolError) and a timeout
(ConnectTimeout / ReadTimeout / PoolTimeout) apart exactly as before.
"""

from __future__ import annotations

import contextlib
import io
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx

# Request bodies bigger than this are handed to aiohttp as a file, which it writes in pieces.
_CHUNK = 256 * 1024
# aiohttp would add these if absent; httpx already set the ones the request carries.
_SKIP_AUTO_HEADERS = ("Accept-Encoding", "User-Agent", "Content-Type")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An `httpx.AsyncBaseTransport` that sends requests with aiohttp.

    One `aiohttp.ClientSession` per transport, made on first use inside the
    running event loop (the engine makes one transport per loop).
    """

    def __init__(self, *, max_connections: int = 256, keepalive_expiry: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._chunks = ChunkBudget()

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive_expiry)
            # trust_env: honour HTTPS_PROXY / NO_PROXY as httpx does. Only when a proxy is set, though:
            # with trust_env aiohttp also reads ~/.netrc on a worker thread for every request (a thread
            # hop and a file read per call), which httpx never does.
            # No cookie jar: this one session serves every client of the proxy, so a cookie one answer
            # set (a CDN's) would ride along on everybody's next requests.
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=_proxy_configured(),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        # A body still streaming (an upload on its way through) goes out as it comes, never read whole.
        headers = request.headers.multi_items()
        if _is_read(request):
            data: Any = _body(request.content)
        else:
            data = _sent_as_it_comes(request.stream)
            # aiohttp frames a body of unknown length itself, and refuses a Transfer-Encoding set for it.
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        with _mapped_exceptions(request):
            response = await self._session_for_loop().request(
                request.method,
                str(request.url),
                headers=headers,
                data=data,
                allow_redirects=False,
                compress=None,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                timeout=timeout,
            )
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_ResponseStream(response, request, self._chunks),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ChunkBudget:
    """How big a chunk each answer being read hands up: the answers in flight share `total` bytes,
    each between `least` and `most`. Big chunks cost less CPU per MB: every chunk passes the relay,
    the journal and the server once, and `read(n)` copies whatever it cuts from aiohttp's pieces
    (a 3 MB pass-through cost 6.6-7.6 ms of CPU in 128 KB chunks, 5.8-6.5 as kept). But a relayed
    answer sits in up to two of them, so with many answers in flight each gets a share, and what
    they hold stays about `2 * total` up to `total / least` answers (64), two `least` chunks each
    past that (docs/benchmarks.md, issue 15 part 5)."""

    def __init__(self, total: int = 4 * 1024 * 1024, *, least: int = 64 * 1024, most: int = 256 * 1024) -> None:
        self.total, self.least, self.most = total, least, most
        self.reading = 0  # answers whose bodies are being read now

    def size(self) -> int:
        return max(self.least, min(self.most, self.total // max(1, self.reading)))


class _ResponseStream(httpx.AsyncByteStream):
    """The body as aiohttp receives it: each chunk as soon as it arrives (SSE events stay live), at
    most the budget's share."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request, budget: ChunkBudget) -> None:
        self._response = response
        self._request = request
        self._budget = budget
        self._counted = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._count(True)
        try:
            content = self._response.content
            with _mapped_exceptions(self._request):
                while True:
                    share = self._budget.size()
                    if share < self._budget.most:
                        chunk = await content.read(share)  # many in flight: a share each (a copy)
                        if not chunk:
                            return
                    else:
                        # Few in flight: each piece as the parser gave it (one socket read's worth,
                        # at most 256 KB in asyncio), handed on without the copy `read` makes.
                        chunk, http_chunk_ended = await content.readchunk()
                        if not chunk:
                            if http_chunk_ended:
                                continue  # one chunk of a chunked body ended; more may follow
                            return
                    yield chunk
        finally:
            self._count(False)

    async def aclose(self) -> None:
        self._count(False)  # also when the body was left unread or half read
        if self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # unread body: this connection cannot be reused

    def _count(self, reading: bool) -> None:
        if reading != self._counted:
            self._counted = reading
            self._budget.reading += 1 if reading else -1


def _body(content: bytes) -> bytes | io.BytesIO | None:
    # aiohttp writes a big `bytes` body in one go and warns that it may block the loop; a file-like one
    # it writes in pieces (BytesIO shares the bytes, no copy).
    if len(content) > _CHUNK:
        return io.BytesIO(content)
    return content or None


async def _sent_as_it_comes(stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> AsyncIterator[bytes]:
    assert isinstance(stream, httpx.AsyncByteStream), "the async transport takes async request bodies"
    async for chunk in stream:
        yield chunk


def _proxy_configured() -> bool:
    """True when the environment names an HTTP(S) proxy (what aiohttp's trust_env is for)."""
    return any(scheme in ("http", "https", "ws", "wss", "all") for scheme in urllib.request.getproxies())


def _is_read(request: httpx.Request) -> bool:
    try:
        request.content  # noqa: B018 - raises when the body is still a stream
    except httpx.RequestNotRead:
        return False
    return True


@contextlib.contextmanager
def _mapped_exceptions(request: httpx.Request) -> Iterator[None]:
    """aiohttp's exceptions as the httpx ones the adapters already handle."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "timed out connecting", request=request) from exc
    except aiohttp.SocketTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "timed out reading the answer", request=request) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.PoolTimeout(str(exc) or "timed out waiting for a connection", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(str(exc) or "the server closed the connection", request=request) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.RemoteProtocolError(f"the answer was cut short: {exc}", request=request) from exc
    except aiohttp.ClientOSError as exc:
        raise httpx.ReadError(str(exc) or "the connection was reset", request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc
