"""What every fake upstream shares: a queue of scripted replies, the log of requests received, one `reset`,
and two ways to reach it: a real socket on 127.0.0.1 (`serving()`) or none at all (`asgi_transport()`).

    class FakeThing(FakeUpstream[Reply, Received]):
        def __init__(self) -> None:
            super().__init__(Starlette(routes=[...]))

        async def handle(self, request):
            with self._lock:
                number = self._arrive(received)       # logged, numbered 1, 2, ...
                reply = self._take(default_reply)     # the next scripted reply, or the default

A subclass that keeps more state extends `reset()` (call `super().reset()` under `self._lock`: it is
re-entrant, so a reset is one atomic step).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Generic, TypeVar

import httpx

from tests.support.asgi_server import serve_asgi

ReplyT = TypeVar("ReplyT")
ReceivedT = TypeVar("ReceivedT")

# A base URL for ASGI-transport tests: never resolved, since no socket is opened.
ASGI_BASE_URL = "http://upstream.invalid"


class FakeUpstream(Generic[ReplyT, ReceivedT]):
    """A fake API: `app` (any ASGI app), `script()` replies, `requests` received, `pending`, `reset()`."""

    # uvicorn options for `serving()` (a subclass that needs the raw h11 connection sets {"http": "h11"}).
    serve_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[ReceivedT] = []
        self.base_url = ""
        self._replies: deque[ReplyT] = deque()
        self._lock = threading.RLock()
        self._counter = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The fake is itself an ASGI app (a subclass may see the connection before `app` does)."""
        await self.app(scope, receive, send)

    def script(self, *replies: ReplyT) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._replies.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._replies)

    @property
    def last(self) -> ReceivedT:
        """The request received last."""
        with self._lock:
            return self.requests[-1]

    def reset(self) -> None:
        """Forget recorded requests, queued replies and the request count (between tests sharing one fake)."""
        with self._lock:
            self._replies.clear()
            self.requests.clear()
            self._counter = 0

    @contextmanager
    def serving(self) -> Iterator[str]:
        """Serve on a free 127.0.0.1 port; yields the base URL (also kept in `base_url`)."""
        with serve_asgi(self, **self.serve_options) as url:
            self.base_url = url
            yield url

    def asgi_transport(self) -> httpx.ASGITransport:
        """An httpx transport that calls the app in-process: no socket, no port. Point clients at
        ASGI_BASE_URL; URLs the fake hands out are under it too (`base_url`), reachable the same way.

        httpx buffers an ASGI answer whole, so a test of timeouts, resets, slow or cancelled streams
        needs `serving()` instead.
        """
        self.base_url = ASGI_BASE_URL
        return httpx.ASGITransport(app=self.app)

    # -- for subclasses ---------------------------------------------------------------------

    def _arrive(self, received: ReceivedT) -> int:
        """Log one request; returns its number (1 for the first since the last reset)."""
        with self._lock:
            self.requests.append(received)
            self._counter += 1
            return self._counter

    def _take(self, default: ReplyT) -> ReplyT:
        """The next scripted reply, or `default` when none is queued."""
        with self._lock:
            return self._replies.popleft() if self._replies else default
