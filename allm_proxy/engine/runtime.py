"""The engine's runtime: an HTTP client and adapters per event loop, and the sync bridge.

An `httpx.AsyncClient` belongs to the loop it was made on, so each loop that
uses the engine (the server's, the sync API's background thread, a test's)
gets its own client and its own adapters built on it. The transport under
every client is the one network stack (aiohttp unless a test or user gives
another), wrapped by the cassette layer when cassettes are on.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from ..adapters import get_adapter_info
from ..adapters.base import AdapterSetup, ImageAdapter
from ..capabilities import ModelCatalog
from ..upstream import AiohttpTransport

T = TypeVar("T")


@dataclass
class _LoopState:
    http: httpx.AsyncClient
    adapters: dict[str, ImageAdapter] = field(default_factory=dict)


class Runtime:
    """Per-loop HTTP clients and the adapters built on them."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        provider_options: Callable[[str], Mapping[str, Any]],
        timeout: float,
        connect_timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        wrap_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
        state: Any = None,
    ) -> None:
        self._state_store = state
        self._catalog = catalog
        self._provider_options = provider_options
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._transport = transport
        self._wrap = wrap_transport
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._lock = threading.Lock()

    async def http(self) -> httpx.AsyncClient:
        return self._state().http

    async def adapter(self, provider: str) -> ImageAdapter:
        state = self._state()
        adapter = state.adapters.get(provider)
        if adapter is None:
            setup = AdapterSetup(
                http=state.http,
                options=self._provider_options(provider),
                catalog=self._catalog,
                state=self._state_store,
            )
            adapter = state.adapters[provider] = get_adapter_info(provider).factory(setup)
        return adapter

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.get(loop)
            if state is None:
                transport: httpx.AsyncBaseTransport = self._transport or AiohttpTransport()
                if self._wrap is not None:
                    transport = self._wrap(transport)
                client = httpx.AsyncClient(
                    transport=transport, timeout=self._timeout, follow_redirects=False, cookies=no_cookies()
                )
                state = self._loops[loop] = _LoopState(http=client)
        return state

    async def aclose(self) -> None:
        """Close the adapters and the HTTP client of the running loop."""
        with self._lock:
            state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            for adapter in state.adapters.values():
                await adapter.aclose()
            await state.http.aclose()


class LoopThread:
    """A daemon thread running an event loop, so sync callers share one HTTP client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="allm-proxy-engine", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def refuse_inside_a_loop(coro: Coroutine[Any, Any, Any]) -> None:
    """The sync API blocks; inside a running loop it would deadlock, so say what to use instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    coro.close()
    raise RuntimeError("the sync API cannot run inside an event loop; use the async twins (agenerate_image ...)")


def no_cookies() -> http.cookiejar.CookieJar:
    """A jar that keeps nothing: one client serves every client of the proxy, so a cookie one answer set
    must never be sent with anybody's next request (httpx has no switch for this; a policy that allows
    no domain is the standard library's). A jar, not an `httpx.Cookies`: the client copies the latter into
    a jar of the default policy."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
