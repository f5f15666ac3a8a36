"""The Engine: resolves model, key and adapter for a request, and delivers the answer.

The same Engine serves the HTTP server and in-process Python callers:

    from allm_proxy import Engine, generate_image
    engine = Engine()                                   # the built-in fake provider
    resp = generate_image(engine, "a watercolor kestrel", size="512x512", n=2)
    png = resp.images[0].to_binary()
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import os
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from . import errors
from .adapters import get_adapter_info
from .adapters.base import AdapterInfo, AdapterSetup, CallContext, ImageAdapter
from .capabilities import ModelCatalog, ModelDefault, ModelFamily
from .config import CassetteSettings, ModelAlias, ProxyConfig
from .context import current_call
from .files import HostedFiles
from .metrics import TimedTransport
from .state import MemoryState, StateStore, check_recording, open_state
from .types import EventStream, Image, ImageEvent, ImageRequest, ImageResponse, ImageStream, InputFile
from .upstream import AiohttpTransport
from .validation import validate_request

T = TypeVar("T")
ImageInput = bytes | str | os.PathLike[str] | Image | InputFile


@dataclass
class CallOptions:
    """Per-call facts from the client: keys, session, cassette, where hosted files live.

    `api_key` comes from the `X-ALLM-Api-Key` header or a per-call `api_key=`;
    `client_bearer` is the client's own `Authorization: Bearer` token, used
    last. `public_base_url` (e.g. ``http://127.0.0.1:8400/v1``) is where
    hosted images are served; without it (in-process use) URL answers are
    `data:` URLs. `relay_body` lets big pass-through answers come back as a
    `RawBody` stream (the server sets it). `route` is filled in by the engine for logging.
    """

    api_key: str | None = None
    client_bearer: str | None = None
    forward_headers: dict[str, str] = field(default_factory=dict)
    session: str = "default"
    cassette: str | None = None
    public_base_url: str | None = None
    relay_body: bool = False
    request_id: str = field(default_factory=lambda: "req_" + uuid.uuid4().hex)
    route: Route | None = None
    # hook: metrics - facts the layers below note (shared with CallContext.facts), read by the access log
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """Where a request goes: provider, provider model, and the rules it follows.

    `model` is None when the client named no model and the provider applies its own
    default (OpenAI pass-through); the proxy then sends none.
    """

    provider: str
    model: str | None
    requested_model: str | None
    family: ModelFamily

    @property
    def label(self) -> str:
        """The model as error messages and logs name it."""
        return self.requested_model or "(none named; the provider's default)"


@dataclass
class _Runtime:
    """What lives on one event loop: the HTTP client and the adapters built on it."""

    http: httpx.AsyncClient
    adapters: dict[str, ImageAdapter] = field(default_factory=dict)


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
        state: StateStore | None = None,
        cursor_ttl: float = 86400.0,
    ) -> None:
        self.provider = image_adapter
        self._info = get_adapter_info(image_adapter)
        self._provider_options: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (providers or {}).items()}
        self._provider_options.setdefault(image_adapter, {}).update(image_adapter_opts or {})
        # An explicit default always wins; else the provider's own rule (AdapterInfo.default_model).
        self.model_default = (ModelDefault(fixed=image_default_model) if image_default_model
                              else self._info.model_default)
        request_options = dict(request_options or {})
        self.timeout = float(request_options.pop("timeout", 600.0))
        self.connect_timeout = float(request_options.pop("connect_timeout", 5.0))
        if request_options:
            raise ValueError(f"unknown request_options {sorted(request_options)}; known: timeout, connect_timeout")
        self.aliases: dict[str, ModelAlias] = {}
        for name, alias in (aliases or {}).items():
            if not isinstance(alias, ModelAlias):
                alias = ModelAlias(name=name, provider=alias["provider"], model=alias["model"])
            get_adapter_info(alias.provider)  # an alias to an unknown provider fails now, not per request
            self.aliases[name] = alias
        self.catalog = ModelCatalog.from_config(families)
        self.cassettes = cassettes if cassettes is not None and cassettes.enabled else None
        # hook: state - every piece of cross-request state sits in one store (memory, or Redis)
        self.state: StateStore = state or (files.state if files is not None else MemoryState())
        self.files = files if files is not None else HostedFiles(self.state)
        self._transport = transport
        self._env = os.environ if env is None else env
        self._runtimes: dict[asyncio.AbstractEventLoop, _Runtime] = {}
        self._runtime_lock = threading.Lock()
        self._portal: _LoopThread | None = None
        self._cassette_library: Any = None
        if self.cassettes is not None:
            from .cassettes import CassetteLibrary

            self._cassette_library = CassetteLibrary(self.cassettes, state=self.state,  # hook: state
                                                     cursor_ttl=cursor_ttl)

    @classmethod
    def from_config(
        cls,
        config: ProxyConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Engine:
        """An engine for a resolved `ProxyConfig` (what `allm-proxy serve` builds)."""
        # hook: state - recording across hosts is refused here (a ValueError: a usage error of `serve`)
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
            env=env,
            state=state,
            cursor_ttl=config.state.cursor_ttl,
        )

    @property
    def cassette_library(self) -> Any:
        """The cassette layer's state (active cassette, sessions), or None when off."""
        return self._cassette_library

    # -- routing ---------------------------------------------------------------

    @property
    def default_model(self) -> str:
        """What a request that names no model gets, in words (`/healthz`, the `serve` banner)."""
        return self.model_default.describe()

    def route(self, request: ImageRequest) -> Route:
        """Resolve the model a request names (or the default it gets) to a provider, a model and its rules."""
        requested = request.model or self.model_default.choose(request)
        if requested is None:
            # The provider decides: check only what no model accepts, and let it answer the rest.
            return Route(provider=self.provider, model=None, requested_model=None,
                         family=self.catalog.for_provider(None, self.provider))
        alias = self.aliases.get(requested)
        provider, target = (alias.provider, alias.model) if alias else (self.provider, requested)
        semantics = "openai" if provider == "fake" else provider
        # The name the client used decides the rules when it is a known family:
        # code written for dall-e-3 keeps dall-e-3's rules behind an alias.
        family = self.catalog.lookup(requested) or self.catalog.for_provider(target, semantics)
        return Route(provider=provider, model=target, requested_model=requested, family=family)

    def provider_options(self, provider: str) -> dict[str, Any]:
        return dict(self._provider_options.get(provider, {}))

    def list_models(self) -> list[dict[str, Any]]:
        """The default model and every alias, in OpenAI's model-object shape."""
        defaults = [self.model_default.fixed, self.model_default.legacy, self.model_default.gpt]
        seen: dict[str, str] = {m: self.provider for m in defaults if m}
        for name, alias in self.aliases.items():
            seen[name] = alias.provider
        return [{"id": m, "object": "model", "created": 0, "owned_by": f"allm-proxy:{p}"} for m, p in seen.items()]

    def describe_model(self, model_id: str) -> dict[str, Any]:
        for entry in self.list_models():
            if entry["id"] == model_id:
                return entry
        if self.catalog.lookup(model_id) is not None:
            return {"id": model_id, "object": "model", "created": 0, "owned_by": f"allm-proxy:{self.provider}"}
        raise errors.ModelNotFoundError(
            f"The model `{model_id}` does not exist or is not configured in this proxy. "
            f"Configured here: {', '.join(e['id'] for e in self.list_models())}, and any id of a known model "
            "family (dall-e-*, gpt-image-*, gemini-*-image ...).",
            param="model",
        )

    # -- running requests ---------------------------------------------------------

    async def run(self, request: ImageRequest, options: CallOptions | None = None) -> ImageResponse | ImageStream:
        """Validate, route and run one request; URL/b64 delivery as the client asked."""
        options = options or CallOptions()
        route = self.route(request)
        options.route = route
        if request.images or request.mask is not None:
            # Checking uploads decodes images: keep that CPU work off the event loop.
            await asyncio.to_thread(validate_request, request, route.family, requested_model=route.label)
        else:
            validate_request(request, route.family, requested_model=route.label)
        info = get_adapter_info(route.provider)
        provider_opts = self.provider_options(route.provider)
        ctx = CallContext(
            model=route.model,
            requested_model=route.requested_model,
            family=route.family,
            api_key=self._resolve_key(info, provider_opts, options),
            forward_headers=dict(options.forward_headers),
            session=options.session,
            cassette=options.cassette,
            request_id=options.request_id,
            timeout=self.timeout,
            facts=options.facts,  # hook: metrics
        )
        wanted = request.response_format or self._default_format(request, route)
        ctx.relay = options.relay_body and _needs_no_conversion(request, route.family, wanted, provider_opts)
        upstream_request = dataclasses.replace(request, model=route.model)
        if route.family.b64_only and request.response_format is not None:
            # The provider only returns base64; the proxy serves URLs itself.
            upstream_request.response_format = None
        adapter = await self._adapter(route.provider)
        operation = {"generate": adapter.generate, "edit": adapter.edit, "variation": adapter.variation}
        token = current_call.set(ctx)
        ctx.facts["reached_adapter"] = True  # hook: metrics - the provider (not the proxy) answers from here on
        try:
            result = await operation[request.operation](upstream_request, ctx)
        finally:
            current_call.reset(token)
        if isinstance(result, ImageResponse):
            if result.raw_body is None:
                await self._deliver(result, wanted, options, provider_opts)
            return result
        return _EngineStream(self._stream_events(result, ctx), headers=dict(result.headers), source=result)

    async def _stream_events(self, stream: ImageStream, ctx: CallContext) -> AsyncIterator[ImageEvent]:
        """A provider stream with the call context set, so layers below still see it.

        SSE events carry base64 only, so an image that is a URL (a scripted
        reply, a provider URL) is fetched here.
        """
        token = current_call.set(ctx)
        try:
            async for event in stream:
                if event.image is not None and not event.image.has_bytes and event.image.url:
                    await self._fetch(event.image)
                yield event
        finally:
            await stream.aclose()
            current_call.reset(token)

    @staticmethod
    def _default_format(request: ImageRequest, route: Route) -> str | None:
        """The delivery a client that gave no response_format gets; None leaves it to the provider."""
        if route.model is None:
            return None  # the provider chooses the model, and so the answer's form
        return "b64_json" if route.family.b64_only or request.stream else "url"

    def _resolve_key(self, info: AdapterInfo, opts: Mapping[str, Any], options: CallOptions) -> str | None:
        if options.api_key:
            return options.api_key
        if opts.get("api_key"):
            return str(opts["api_key"])
        env_names = (opts["api_key_env"],) if opts.get("api_key_env") else info.key_env
        for name in env_names:
            if self._env.get(name):
                return self._env[name]
        if options.client_bearer:
            return options.client_bearer
        if info.needs_key:
            env_hint = " or ".join(env_names) or "the provider's key variable"
            raise errors.AuthenticationError(
                f"No API key for provider '{info.name}'. Set {env_hint} in the proxy's environment, "
                f"send the header X-ALLM-Api-Key, or give your client an api_key "
                f"(sent as Authorization: Bearer). In Python without the server: "
                f"generate_image(engine, ..., api_key=...) or image_adapter_opts={{'api_key': ...}}.",
            )
        return None

    async def _deliver(
        self, response: ImageResponse, wanted: str | None, options: CallOptions, provider_opts: Mapping[str, Any]
    ) -> None:
        materialize = bool(provider_opts.get("materialize_urls"))
        delivered: list[Image] = []
        changed = False
        for image in response.images:
            if not image.has_bytes and image.url and (wanted == "b64_json" or materialize):
                await self._fetch(image)
                changed = True
            if wanted == "url" and image.has_bytes:
                image = await self._host(image, options.public_base_url)  # hook: state
                changed = True
            delivered.append(image)
        response.images = delivered
        if changed:
            response.raw_json = None

    async def _fetch(self, image: Image) -> None:
        runtime = await self._runtime()
        assert image.url is not None
        try:
            fetched = await runtime.http.get(image.url, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise errors.UpstreamError(f"Could not fetch the provider's image URL: {exc}") from exc
        if fetched.status_code != 200:
            raise errors.UpstreamError(f"Fetching the provider's image URL answered HTTP {fetched.status_code}.")
        image._data = fetched.content  # the URL's bytes become the image's own
        image.mime_type = image.mime_type or fetched.headers.get("content-type")

    async def _host(self, image: Image, base_url: str | None) -> Image:
        mime = image.mime_type or "image/png"
        if base_url is None:
            url = f"data:{mime};base64,{image.b64_json()}"
        else:
            url = f"{base_url.rstrip('/')}/images/files/{await self.files.put(image.data, mime)}"
        hosted = Image(url, mime_type=mime, revised_prompt=image.revised_prompt, extra=image.extra)
        return hosted

    async def prepare(self) -> None:
        """Build, on this event loop, the adapters of the default provider and of every alias.

        Raises ValueError for options an adapter does not accept, so a server can refuse to
        start instead of failing its first request.
        """
        for provider in dict.fromkeys([self.provider, *(a.provider for a in self.aliases.values())]):
            await self._adapter(provider)

    async def _adapter(self, provider: str) -> ImageAdapter:
        runtime = await self._runtime()
        adapter = runtime.adapters.get(provider)
        if adapter is None:
            info = get_adapter_info(provider)
            setup = AdapterSetup(http=runtime.http, options=self.provider_options(provider), catalog=self.catalog,
                                 state=self.state)  # hook: state
            adapter = runtime.adapters[provider] = info.factory(setup)
        return adapter

    async def _runtime(self) -> _Runtime:
        loop = asyncio.get_running_loop()
        with self._runtime_lock:
            runtime = self._runtimes.get(loop)
            if runtime is None:
                # hook: metrics - upstream time measured under the cassette layer (replays take none)
                transport: httpx.AsyncBaseTransport = TimedTransport(self._transport or AiohttpTransport())
                if self._cassette_library is not None:
                    transport = self._cassette_library.transport(transport)
                runtime = _Runtime(
                    http=httpx.AsyncClient(
                        transport=transport,
                        timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                        follow_redirects=False,
                    )
                )
                self._runtimes[loop] = runtime
        return runtime

    async def aclose(self) -> None:
        """Close adapters and HTTP clients of this loop; flush cassettes."""
        loop = asyncio.get_running_loop()
        with self._runtime_lock:
            runtime = self._runtimes.pop(loop, None)
        if runtime is not None:
            for adapter in runtime.adapters.values():
                await adapter.aclose()
            await runtime.http.aclose()
        await self.state.aclose()  # hook: state - this loop's connections
        if self._cassette_library is not None:
            self._cassette_library.flush()

    def close(self) -> None:
        """Close what the sync API opened (its background loop) and flush cassettes."""
        if self._portal is not None:
            self._portal.run(self.aclose())
            self._portal.stop()
            self._portal = None
        elif self._cassette_library is not None:
            self._cassette_library.flush()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the engine's own background loop (the sync API uses this)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError(
                "the sync API cannot run inside an event loop; use the async twins (agenerate_image ...)"
            )
        if self._portal is None:
            self._portal = _LoopThread()
            # Sync callers rarely close engines; closing at exit shuts the HTTP pools down cleanly
            # (aiohttp complains about unclosed sessions otherwise) and flushes cassettes.
            atexit.register(_close_at_exit, weakref.ref(self))
        return self._portal.run(coro)


def _needs_no_conversion(
    request: ImageRequest, family: ModelFamily, wanted: str | None, provider_opts: Mapping[str, Any]
) -> bool:
    """True when the provider's answer is already what the client asked for, as it stands."""
    if provider_opts.get("materialize_urls"):
        return False
    if wanted is None:
        return True  # the client takes whatever form the provider chose
    if family.b64_only:
        return wanted == "b64_json"  # base64 is all these models return
    # DALL-E answers follow response_format; an unknown model is trusted only when told.
    return not family.permissive or request.response_format is not None


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


class _LoopThread:
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


# -- the library API ---------------------------------------------------------------

_OPTION_FIELDS = frozenset(
    {"model", "n", "size", "response_format", "quality", "style", "background", "output_format",
     "output_compression", "moderation", "input_fidelity", "user", "stream", "partial_images"}
)


def _build_request(
    operation: str,
    prompt: str | None,
    images: list[InputFile],
    mask: InputFile | None,
    opts: dict[str, Any],
) -> tuple[ImageRequest, CallOptions]:
    call = CallOptions(api_key=opts.pop("api_key", None), session=opts.pop("session", "default"))
    extra = opts.pop("extra", None) or {}
    unknown = set(opts) - _OPTION_FIELDS
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; use extra={{...}} for provider fields")
    size = opts.pop("size", None)
    if isinstance(size, tuple | list):
        size = f"{int(size[0])}x{int(size[1])}"
    request = ImageRequest(
        operation=operation,  # type: ignore[arg-type]
        prompt=prompt,
        images=images,
        mask=mask,
        size=size,
        extra=list(extra.items()),
        encoding="json" if operation == "generate" else "multipart",
        **opts,
    )
    return request, call


def to_input_file(value: ImageInput, field_name: str = "image") -> InputFile:
    """bytes, a path, an `Image` or an `InputFile` as an upload."""
    if isinstance(value, InputFile):
        return value
    if isinstance(value, Image):
        return InputFile(value.to_binary(), filename="image", content_type=value.mime_type, field=field_name)
    if isinstance(value, bytes | bytearray):
        return InputFile(bytes(value), filename="upload", field=field_name)
    path = Path(value)
    return InputFile(path.read_bytes(), filename=path.name, field=field_name)


def _image_list(image: ImageInput | list[ImageInput]) -> list[InputFile]:
    if isinstance(image, list | tuple):
        return [to_input_file(i, "image[]") for i in image]
    return [to_input_file(image)]


async def _finish(engine: Engine, request: ImageRequest, call: CallOptions) -> ImageResponse:
    result = await engine.run(request, call)
    if isinstance(result, ImageResponse):
        return result
    raise TypeError("stream=True returns events; use engine.run() directly to iterate them")


async def agenerate_image(engine: Engine, prompt: str, **opts: Any) -> ImageResponse:
    """Generate images from a prompt. Options: model, size ("WxH" or (w, h)), n, response_format,
    quality, style, background, output_format, output_compression, moderation, user, api_key, extra."""
    request, call = _build_request("generate", prompt, [], None, opts)
    return await _finish(engine, request, call)


async def aedit_image(
    engine: Engine, image: ImageInput | list[ImageInput], prompt: str, mask: ImageInput | None = None, **opts: Any
) -> ImageResponse:
    """Edit one image (or several, as a list) following a prompt; transparent mask pixels mark the area."""
    request, call = _build_request(
        "edit", prompt, _image_list(image), to_input_file(mask, "mask") if mask is not None else None, opts
    )
    return await _finish(engine, request, call)


async def aimage_variations(engine: Engine, image: ImageInput, **opts: Any) -> ImageResponse:
    """Variations of one image."""
    request, call = _build_request("variation", None, [to_input_file(image)], None, opts)
    return await _finish(engine, request, call)


def generate_image(engine: Engine, prompt: str, **opts: Any) -> ImageResponse:
    """Sync twin of `agenerate_image`.

        resp = generate_image(engine, "a kestrel", size=(512, 512), n=2)
    """
    return engine.run_sync(agenerate_image(engine, prompt, **opts))


def edit_image(
    engine: Engine, image: ImageInput | list[ImageInput], prompt: str, mask: ImageInput | None = None, **opts: Any
) -> ImageResponse:
    """Sync twin of `aedit_image`."""
    return engine.run_sync(aedit_image(engine, image, prompt, mask, **opts))


def image_variations(engine: Engine, image: ImageInput, **opts: Any) -> ImageResponse:
    """Sync twin of `aimage_variations`."""
    return engine.run_sync(aimage_variations(engine, image, **opts))

