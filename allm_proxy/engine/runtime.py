"""The engine's runtime: an HTTP client and adapters per event loop, and the sync bridge.

An `httpx.AsyncClient` belongs to the loop it was made on, so each loop that
uses the engine (the server's, the sync API's background thread, a test's)
gets its own client and its own adapters built on it. The transport under
every client is the one network stack (aiohttp unless a test or user gives
another), wrapped by the cassette layer when cassettes are on.
"""

from __future__ import annotations

import asyncio
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
                client = CookielessClient(transport=transport, timeout=self._timeout, follow_redirects=False)
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


class NoCookies(httpx.Cookies):
    """Cookies that are never kept: `extract_cookies` takes nothing from an answer."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class CookielessClient(httpx.AsyncClient):
    """httpx's client, keeping no cookies. One client serves every client of the proxy, so a cookie one
    answer set must never be sent with anybody's next request, and httpx has no switch for that.
    A jar whose policy allows no domain keeps none too, but httpx still wraps every answer and its
    request for the standard library's cookie code first (a few percent of a small pass-through)."""

    _no_cookies = NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("this client keeps no cookies")
