"""The ASGI app: routes, middleware and the error funnel, assembled. The work happens in the endpoints
and the Engine.

    app = create_app(Engine(), ProxyConfig())
    uvicorn.run(app, host="127.0.0.1", port=8400, **uvicorn_options())
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from ..config import ProxyConfig, ServerLimits
from ..engine import Engine
from ..inspector import PAGE, inspector_routes, page_routes
from ..inspector.cassettes import CassetteShelf
from ..metrics import Metrics
from ..openapi import openapi_document
from ..pricing import PriceTable
from . import control, endpoints
from .access_log import AccessLog
from .answer_cache import AnswerCache, KeptAnswerMiddleware
from .failures import EXCEPTION_HANDLERS
from .middleware import AccessTokenMiddleware, CallMiddleware, InflightLimitMiddleware


def routes(engine: Engine) -> list[BaseRoute]:
    table: list[BaseRoute] = []
    # SDKs whose base_url has no /v1 send /images/... (docs/spec/openai-images.md §0).
    for prefix in ("/v1", ""):
        table += [
            Route(f"{prefix}/images/generations", endpoints.generations, methods=["POST"]),
            Route(f"{prefix}/images/edits", endpoints.edits, methods=["POST"]),
            Route(f"{prefix}/images/variations", endpoints.variations, methods=["POST"]),
            Route(f"{prefix}/images/files/{{file_id}}", endpoints.get_file, methods=["GET"]),
            Route(f"{prefix}/models", endpoints.list_models, methods=["GET"]),
            Route(f"{prefix}/models/{{model_id:path}}", endpoints.get_model, methods=["GET"]),
        ]
    table.append(Route("/healthz", endpoints.healthz, methods=["GET"]))
    table.append(Route("/readyz", endpoints.readyz, methods=["GET"]))
    table.append(Route("/metrics", endpoints.metrics, methods=["GET"]))
    table.append(Route("/openapi.json", endpoints.openapi, methods=["GET"]))
    if engine.cassette_library is not None:
        table.append(Route(control.PATH, control.cassette_control, methods=["GET", "POST"]))
    table.append(Route(control.FAULTS_PATH, control.fault_control, methods=["GET", "POST", "DELETE"]))
    # /allm/requests and the inspector page, behind the access token like /v1.
    table += inspector_routes(engine)
    return table


def create_app(engine: Engine, config: ProxyConfig | None = None, *, limits: ServerLimits | None = None) -> Starlette:
    """The ASGI app serving `engine` with the limits and access token of `config`."""
    config = config or ProxyConfig()
    limits = limits or config.limits

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Build the adapters now: a bad provider option stops start-up with its message
        # instead of failing the first request, and the first request is not slower.
        await engine.prepare()
        try:
            yield
        finally:
            access.flush()  # the requests are over: their lines go before anything else stops
            if engine.journal is not None and count_lost in engine.journal.on_lost:
                engine.journal.on_lost.remove(count_lost)  # an engine may serve another app later
            await engine.aclose()

    access = AccessLog()
    app = Starlette(
        routes=routes(engine),
        middleware=[
            Middleware(CallMiddleware, access=access),
            Middleware(AccessTokenMiddleware, token=config.access_token, public_metrics=config.public_metrics),
            Middleware(InflightLimitMiddleware, limit=limits.max_inflight),
            Middleware(KeptAnswerMiddleware),  # replay: a kept answer goes from here (server/answer_cache.py)
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.config = config
    app.state.limits = limits
    app.state.openapi_body = json.dumps(openapi_document()).encode()
    app.state.metrics = Metrics()  # one registry per app
    count_lost = app.state.metrics.journal_entry_lost  # the shared journal's lost entries
    if engine.journal is not None:
        engine.journal.on_lost.append(count_lost)
    app.state.prices = PriceTable.from_config(config.prices)
    app.state.answers = AnswerCache.for_engine(engine)  # None unless it replays, in this process
    return app


def create_inspect_app(path: Path) -> Starlette:
    """`allm-proxy inspect PATH`: the inspector page and the cassette routes for a cassette file or
    directory alone; no provider, no `/v1`."""
    app = Starlette(
        routes=page_routes(CassetteShelf(path), {"mode": "inspect", "journal": False, "provider": None}),
        middleware=[Middleware(CallMiddleware)],
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.unknown_route_hint = f"`allm-proxy inspect` serves {PAGE} and its cassette routes only."
    return app
