"""The adapter seam: one async method per operation, core types in and out.

Adapters know their provider's wire format and nothing of the server. Each is
built by a factory from an `AdapterSetup` (an `httpx.AsyncClient` the engine
owns, so the cassette layer and tests sit under every adapter alike; the
provider's options; the model catalog; the hosted-file store) and is called
with an `ImageRequest` and a `CallContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ..capabilities import PROVIDER_DECIDES, ModelCatalog, ModelDefault, ModelFamily
from ..types import ImageRequest, ImageResponse, ImageStream


@dataclass
class CallContext:
    """Everything about one call that is not the request itself.

    `model` is the provider model id to send (aliases already resolved);
    `requested_model` the name the client used, which responses echo. Both are None
    when the client named no model and the provider applies its own default.
    `api_key` is the key chosen by the engine's resolution order, or None.
    `forward_headers` are client headers the provider should see
    (`OpenAI-Organization`, `OpenAI-Project`).
    """

    model: str | None
    requested_model: str | None
    family: ModelFamily
    api_key: str | None = None
    forward_headers: dict[str, str] = field(default_factory=dict)
    session: str = "default"
    cassette: str | None = None
    request_id: str = ""
    timeout: float | None = None
    # True when the caller can take the provider's answer as it arrives (an ImageResponse
    # with `raw_body` and no images): the server, when the proxy has nothing to convert.
    relay: bool = False
    # hook: metrics - what layers below learnt about the call (cassette hit/miss/recorded, upstream
    # seconds); the same dict as CallOptions.facts, read where the access log line is written.
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class AdapterSetup:
    """What a factory gets to build an adapter."""

    http: httpx.AsyncClient
    options: Mapping[str, Any]
    catalog: ModelCatalog
    # hook: state - the engine's state store (fake-script cursors), None outside an engine
    state: Any = None


class ImageAdapter(Protocol):
    """One provider. Streaming calls (`request.stream`) return an `ImageStream`."""

    name: str

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResponse | ImageStream: ...

    async def edit(self, request: ImageRequest, ctx: CallContext) -> ImageResponse | ImageStream: ...

    async def variation(self, request: ImageRequest, ctx: CallContext) -> ImageResponse: ...

    async def aclose(self) -> None: ...


AdapterFactory = Callable[[AdapterSetup], ImageAdapter]


@dataclass(frozen=True)
class AdapterInfo:
    """How the engine builds a provider's adapter and finds its key."""

    name: str
    factory: AdapterFactory
    # Environment variables holding the provider's key, first set wins.
    key_env: tuple[str, ...] = ()
    needs_key: bool = True
    # The model of a request that names none, unless the proxy is given a default model:
    # one model id, or a rule (see ModelDefault). The default names none: the provider chooses.
    default_model: ModelDefault | str = PROVIDER_DECIDES

    def __post_init__(self) -> None:
        if isinstance(self.default_model, str):
            object.__setattr__(self, "default_model", ModelDefault(fixed=self.default_model or None))

    @property
    def model_default(self) -> ModelDefault:
        assert isinstance(self.default_model, ModelDefault)  # __post_init__ made it one
        return self.default_model
