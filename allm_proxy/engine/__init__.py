"""The Engine: routes a request, runs it on its provider's adapter, and delivers the answer.

The same Engine serves the HTTP server and in-process Python callers:

    from allm_proxy import Engine, generate_image
    engine = Engine()                                   # the built-in fake provider
    resp = generate_image(engine, "a watercolor kestrel", size="512x512", n=2)
    png = resp.images[0].to_binary()

Its parts: `routing` (aliases, families, defaults, the models list), `keys`
(which provider key), `delivery` (URL fetch and hosting), `runtime` (per-loop
clients, the adapter cache, the sync bridge) and `api` (`generate_image` and
friends). `Engine` only wires them together.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import weakref
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from .. import errors
from ..adapters import get_adapter_info
from ..adapters.base import ImageAdapter
from ..call import Call, Route, scope, scoped
from ..config import CassetteSettings, JournalSettings, ModelAlias, ProxyConfig
from ..faults import FaultInjector
from ..faults.effects import intercept
from ..files import HostedFiles
from ..journal import Journal, open_journal, upstream_transport
from ..state import MemoryState, StateStore, check_recording, open_state
from ..types import EventStream, ImageRequest, ImageResponse, ImageResult, ImageStream, RawBody
from ..validation import validate_request
from . import delivery
from .api import (
    ImageInput,
    aedit_image,
    agenerate_image,
    aimage_variations,
    edit_image,
    generate_image,
    image_variations,
    to_input_file,
)
from .keys import resolve_key
from .routing import Router
from .runtime import LoopThread, Runtime, refuse_inside_a_loop

T = TypeVar("T")


class Engine:
    """Routes image requests to provider adapters.

    `image_adapter` is the default provider (`fake`, `openai`, `gemini`, or
    any registered name); `image_adapter_opts` its options (base_url,
    api_key, scripts, ...); `providers` the options of the others (an alias
    may route to them). `request_options` takes `timeout` and
    `connect_timeout` in seconds. `transport` replaces the network under
    every adapter (tests, custom stacks); `cassettes` records or replays it.
    """

    def __init__(
        self,
        image_adapter: str = "fake",
        image_default_model: str | None = None,
        image_adapter_opts: Mapping[str, Any] | None = None,
        request_options: Mapping[str, Any] | None = None,
        *,
        providers: Mapping[str, Mapping[str, Any]] | None = None,
        aliases: Mapping[str, ModelAlias | Mapping[str, str]] | None = None,
        families: Mapping[str, Mapping[str, Any]] | None = None,
        cassettes: CassetteSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        files: HostedFiles | None = None,
        env: Mapping[str, str] | None = None,
        journal: Journal | JournalSettings | bool = True,
        faults: FaultInjector | None = None,
        state: StateStore | None = None,
        cursor_ttl: float = 86400.0,
    ) -> None:
        self.provider = image_adapter
        self.faults = faults if faults is not None else FaultInjector()
        self.router = Router(image_adapter, image_default_model, aliases=aliases, families=families)
        self._provider_options: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (providers or {}).items()}
        self._provider_options.setdefault(image_adapter, {}).update(image_adapter_opts or {})
        request_options = dict(request_options or {})
        self.timeout = float(request_options.pop("timeout", 600.0))
        connect_timeout = float(request_options.pop("connect_timeout", 5.0))
        if request_options:
            raise ValueError(f"unknown request_options {sorted(request_options)}; known: timeout, connect_timeout")
        # Every piece of cross-request state sits in one store: process memory, or Redis (`--state-url`).
        self.state: StateStore = state or (files.state if files is not None else MemoryState())
        self.cassettes = cassettes if cassettes is not None and cassettes.enabled else None
        self.cassette_library: Any = None  # the cassette layer's state (active cassette, sessions), or None
        if self.cassettes is not None:
            from ..cassettes import CassetteLibrary

            self.cassette_library = CassetteLibrary(self.cassettes, state=self.state, cursor_ttl=cursor_ttl)
        self.files = files if files is not None else HostedFiles(self.state)
        # What the server answered (`/allm/requests`); True: the defaults, in Redis when the state is.
        # (An empty store is falsy: compare with the booleans, never test its truth.)
        if journal is True or isinstance(journal, JournalSettings):
            settings = journal if isinstance(journal, JournalSettings) else JournalSettings()
            self.journal: Journal | None = open_journal(settings, self.state)
        else:
            self.journal = None if journal is False else journal
        self.deliverer = delivery.Deliverer(self.files)
        library = self.cassette_library
        self.runtime = Runtime(
            catalog=self.router.catalog,
            provider_options=self.provider_options,
            timeout=self.timeout,
            connect_timeout=connect_timeout,
            transport=transport,
            state=self.state,
            # The cassette layer, with the journal's taps around and under it.
            wrap_transport=lambda network: upstream_transport(network, library),
        )
        self._env = os.environ if env is None else env
        self._portal: LoopThread | None = None

    @classmethod
    def from_config(
        cls,
        config: ProxyConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Engine:
        """An engine for a resolved `ProxyConfig` (what `allm-proxy serve` builds).

        ValueError (a usage error of `serve`) for recording with state shared across hosts.
        """
        check_recording(config.state, config.cassettes.record_mode, config.cassettes.enabled)
        state = open_state(config.state)
        return cls(
            image_adapter=config.provider,
            image_default_model=config.default_model,
            request_options={"timeout": config.timeout, "connect_timeout": config.connect_timeout},
            providers=config.providers,
            aliases=config.aliases,
            families=config.families,
            cassettes=config.cassettes,
            transport=transport,
            files=HostedFiles(state, ttl=config.file_ttl),
            state=state,
            cursor_ttl=config.state.cursor_ttl,
            env=env,
            journal=config.journal if config.journal.enabled else False,
            faults=FaultInjector(config.faults, seed=config.fault_seed),
        )

    # -- routing, delegated ----------------------------------------------------------------

    @property
    def default_model(self) -> str:
        """What a request that names no model gets, in words (`/healthz`, the `serve` banner)."""
        return self.router.model_default.describe()

    def route(self, request: ImageRequest) -> Route:
        return self.router.route(request)

    def list_models(self) -> list[dict[str, Any]]:
        return self.router.list_models()

    def describe_model(self, model_id: str) -> dict[str, Any]:
        return self.router.describe_model(model_id)

    def provider_options(self, provider: str) -> dict[str, Any]:
        return dict(self._provider_options.get(provider, {}))

    def provider_key(self, provider: str) -> str | None:
        """The key this engine sends to `provider` for a call that brings none (`cassettes check --live`).

        AuthenticationError, saying how to set one, when the provider needs a key and none is set.
        """
        return resolve_key(get_adapter_info(provider), self.provider_options(provider), Call(), self._env)

    # -- running requests ---------------------------------------------------------------------

    async def run(self, request: ImageRequest, call: Call | None = None) -> ImageResult:
        """Validate, route and run one request; the answer as the client asked for it.

        A `RawBody` comes back only when `call.can_relay` (the server); a stream is read
        later, by the caller, still inside the call's scope.
        """
        call = call or Call()
        route = call.route = self.router.route(request)
        if request.upload is not None:
            # Still arriving: the server checks the files when their last byte is in (server/uploads.py).
            validate_request(request, route.family, requested_model=route.label, inputs=False)
        elif request.images or request.mask is not None:
            # Checking uploads decodes images: keep that CPU work off the event loop.
            await asyncio.to_thread(validate_request, request, route.family, requested_model=route.label)
        else:
            validate_request(request, route.family, requested_model=route.label)
        # Faults are decided here, once, before any adapter: one that replaces the answer is the answer,
        # and neither the provider nor the cassette layer ever sees the request.
        faulted = await intercept(self.faults, request, call, timeout=self.timeout)
        if faulted is not None:
            return faulted
        options = self.provider_options(route.provider)
        call.api_key = resolve_key(get_adapter_info(route.provider), options, call, self._env)
        plan = call.delivery = delivery.plan(request, route, options, can_relay=call.can_relay)
        adapter = await self.runtime.adapter(route.provider)
        http = await self.runtime.http()
        # One scope around the whole call, delivery included: a URL fetched for the answer is
        # recorded into, or replayed from, the same cassette as the request that produced it.
        with scope(call.scope()):
            result = await _operation(adapter, request.operation)(delivery.upstream_form(request, route), call)
            if isinstance(result, ImageResponse):
                await self.deliverer.deliver(result, plan, http, call.public_base_url)
                return result
        if isinstance(result, RawBody):
            return result
        events = scoped(call.scope(), self.deliverer.events(result, http))
        return _EngineStream(events, headers=dict(result.headers), source=result)

    def streams_upload(self, request: ImageRequest, call: Call) -> bool:
        """Whether `request` (its text fields; its files still arriving) may go to its provider as the
        client's own bytes, while they arrive, and get the answer the whole-body path would give.

        Only when nothing between needs the whole body or changes it: a provider that passes uploads
        through, no cassette to record or match, no fault, the routed model and every field as the
        client sent them, and the fields valid (an invalid request takes the whole-body path, which
        names its first problem).
        """
        if self.cassette_library is not None or self.faults.faults or call.fault_header:
            return False
        try:
            route = self.router.route(request)
            if not get_adapter_info(route.provider).streams_uploads:
                return False
            sent = delivery.upstream_form(request, route)
            validate_request(request, route.family, requested_model=route.label, inputs=False)
        except errors.ProxyError:
            return False
        return sent.model == request.model and sent.response_format == request.response_format

    async def check_streamed(self, request: ImageRequest) -> None:
        """Every check of `run` for a request whose upload streamed through, now that it is all in:
        the same `validate_request`, the files read from their heads (see `streams_upload`)."""
        route = self.router.route(request)
        await asyncio.to_thread(validate_request, request, route.family, requested_model=route.label)

    async def prepare(self) -> None:
        """Build, on this event loop, the adapters of the default provider and of every alias.

        Raises ValueError for options an adapter does not accept, so a server can refuse to
        start instead of failing its first request.
        """
        for provider in self.router.providers:
            await self.runtime.adapter(provider)

    # -- closing and the sync bridge ------------------------------------------------------------

    async def aclose(self) -> None:
        """Close adapters and HTTP clients of this loop; flush cassettes and the journal's writes."""
        if self.journal is not None:
            await self.journal.aclose()
        await self.runtime.aclose()
        await self.state.aclose()  # this loop's connections
        if self.cassette_library is not None:
            self.cassette_library.flush()

    def close(self) -> None:
        """Close what the sync API opened (its background loop) and flush cassettes."""
        if self._portal is not None:
            self._portal.run(self.aclose())
            self._portal.stop()
            self._portal = None
        elif self.cassette_library is not None:
            self.cassette_library.flush()

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the engine's own background loop (the sync API uses this)."""
        refuse_inside_a_loop(coro)
        if self._portal is None:
            self._portal = LoopThread()
            # Sync callers rarely close engines; closing at exit shuts the HTTP pools down cleanly
            # (aiohttp complains about unclosed sessions otherwise) and flushes cassettes.
            atexit.register(_close_at_exit, weakref.ref(self))
        return self._portal.run(coro)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _operation(adapter: ImageAdapter, operation: str) -> Any:
    return {"generate": adapter.generate, "edit": adapter.edit, "variation": adapter.variation}[operation]


@dataclass
class _EngineStream(EventStream):
    """The engine's view of a provider stream; closing it closes the provider's stream too,
    even when nobody iterated it (the generator's `finally` would then never run)."""

    source: ImageStream | None = None

    async def aclose(self) -> None:
        await super().aclose()
        if self.source is not None:
            await self.source.aclose()


def _close_at_exit(engine_ref: weakref.ref[Engine]) -> None:
    engine = engine_ref()
    if engine is not None:
        engine.close()


__all__ = [
    "Engine",
    "ImageInput",
    "aedit_image",
    "agenerate_image",
    "aimage_variations",
    "edit_image",
    "generate_image",
    "image_variations",
    "to_input_file",
]
