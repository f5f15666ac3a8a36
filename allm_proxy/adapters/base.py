"""The adapter seam: one async method per operation, core types in and out.

Adapters know their provider's wire format and nothing of the server. Each is
built by a factory from an `AdapterSetup` (an `httpx.AsyncClient` the engine
owns, so the cassette layer and tests sit under every adapter alike; the
provider's options; the model catalog; the hosted-file store) and is called
with an `ImageRequest` and a `Call`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ..call import Call
from ..capabilities import GENERIC_FAMILIES, PROVIDER_DECIDES, ModelCatalog, ModelDefault
from ..types import ImageRequest, ImageResponse, ImageResult


@dataclass
class AdapterSetup:
    """What a factory gets to build an adapter."""

    http: httpx.AsyncClient
    options: Mapping[str, Any]
    catalog: ModelCatalog
    # the engine's state store (fake-script cursors), None outside an engine
    state: Any = None


class ImageAdapter(Protocol):
    """One provider. Streaming calls (`request.stream`) return an `ImageStream`; a `RawBody` only
    when `ctx.relay` allows it (the answer then streams to the client untouched).

    `ctx` is the routed `Call`: `ctx.model` (None: send none), `ctx.family`, `ctx.api_key` (the key
    the engine resolved), `ctx.forward_headers`, `ctx.session`.
    """

    name: str

    async def generate(self, request: ImageRequest, ctx: Call) -> ImageResult: ...

    async def edit(self, request: ImageRequest, ctx: Call) -> ImageResult: ...

    async def variation(self, request: ImageRequest, ctx: Call) -> ImageResponse: ...

    async def aclose(self) -> None: ...


AdapterFactory = Callable[[AdapterSetup], ImageAdapter]


@dataclass(frozen=True)
class AdapterInfo:
    """What the engine needs to know of a provider: how to build its adapter, find its key,
    choose a default model, and which model rules it follows.

    A third-party package declares one in the entry-point group `allm_proxy.adapters`:

        INFO = AdapterInfo(name="tiny", factory=TinyImages, needs_key=False,
                           default_model="tiny-1", rules="openai")
    """

    name: str
    factory: AdapterFactory
    # Environment variables holding the provider's key, first set wins.
    key_env: tuple[str, ...] = ()
    needs_key: bool = True
    # The model of a request that names none, unless the proxy is given a default model:
    # one model id, or a rule (see ModelDefault). The default names none: the provider chooses.
    default_model: ModelDefault | str = PROVIDER_DECIDES
    # Whose model rules the provider follows ("openai" or "gemini"): a model id no family in the
    # catalog matches gets that provider's permissive generic family (capabilities.GENERIC_FAMILIES).
    rules: str = "openai"
    # The adapter sends a request's `upload` (a multipart body still arriving) on as it comes,
    # when it renders nothing of its own: the server then streams eligible uploads through.
    streams_uploads: bool = False

    def __post_init__(self) -> None:
        if self.rules not in GENERIC_FAMILIES:
            raise ValueError(
                f"adapter {self.name!r}: rules = {self.rules!r} is not one of {', '.join(sorted(GENERIC_FAMILIES))}"
            )
        if isinstance(self.default_model, str):
            object.__setattr__(self, "default_model", ModelDefault(fixed=self.default_model or None))

    @property
    def model_default(self) -> ModelDefault:
        assert isinstance(self.default_model, ModelDefault)  # __post_init__ made it one
        return self.default_model
