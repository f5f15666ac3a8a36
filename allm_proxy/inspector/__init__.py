"""The inspector page at `/allm/`: live traffic from the journal, and the cassettes, with their pictures.

Plain HTML, CSS and JavaScript shipped in the package (`static/`): no CDN, no
fonts or scripts from elsewhere, no build step. The server mounts
`inspector_routes(engine)` behind its access token; `server.app.create_inspect_app(path)` serves
the page and the cassette routes alone (`allm-proxy inspect PATH`).

    GET /allm/                       the page
    GET /allm/static/{file}          its script and style sheet
    GET /allm/info                   what the page can show (journal, cassettes)
    GET /allm/cassettes              every cassette, each interaction shaped like a journal entry
    GET /allm/cassettes/blob?cassette=NAME&interaction=I&kind=images|inputs&index=K
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from .. import errors
from ..journal.routes import journal_routes
from .cassettes import CassetteShelf

if TYPE_CHECKING:
    from ..engine import Engine

PAGE = "/allm/"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
}
# The page may load only what it ships and talk only to this server.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def page_routes(shelf: CassetteShelf | None, info: dict[str, Any]) -> list[BaseRoute]:
    """The page, its assets, `/allm/info` and (with a shelf) the cassette routes."""

    async def page(request: Request) -> Response:
        return Response(
            _asset("index.html"),
            media_type=ASSETS["index.html"],
            headers={"content-security-policy": CSP, "cache-control": "no-cache"},
        )

    async def bare(request: Request) -> Response:
        return RedirectResponse(PAGE + (f"?{request.url.query}" if request.url.query else ""))

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS or name == "index.html":
            raise errors.NotFoundError(f"The inspector ships no file {name[:80]!r}.", code="unknown_url")
        return Response(_asset(name), media_type=ASSETS[name], headers={"cache-control": "no-cache"})

    async def describe(request: Request) -> Response:
        return JSONResponse({**info, "cassettes": shelf is not None})

    routes: list[BaseRoute] = [
        Route(PAGE, page, methods=["GET"]),
        Route("/allm", bare, methods=["GET"]),
        Route("/allm/static/{name}", static, methods=["GET"]),
        Route("/allm/info", describe, methods=["GET"]),
    ]
    if shelf is not None:
        routes += cassette_routes(shelf)
    return routes


def cassette_routes(shelf: CassetteShelf) -> list[BaseRoute]:
    async def listing(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": await asyncio.to_thread(shelf.listing)})

    async def blob(request: Request) -> Response:
        query = request.query_params
        try:
            name, kind = query["cassette"], query["kind"]
            index, k = int(query["interaction"]), int(query["index"])
        except (KeyError, ValueError):
            raise errors.InvalidRequestError(
                "Give cassette=NAME, interaction=I, kind=images|inputs and index=K.", code="invalid_query"
            ) from None
        found = await asyncio.to_thread(shelf.blob, name, index, kind, k)
        if found is None:
            raise errors.NotFoundError(
                f"No {kind} {k} in interaction {index} of cassette {name[:120]!r}.", code="cassette_image_not_found"
            )
        return Response(found[0], media_type=found[1], headers={"cache-control": "no-cache"})

    return [Route("/allm/cassettes", listing, methods=["GET"]), Route("/allm/cassettes/blob", blob, methods=["GET"])]


def shelf_for(engine: Engine) -> CassetteShelf | None:
    """The cassettes an engine records and replays: its directory, else its configured file."""
    settings = engine.cassettes
    if settings is None:
        return None
    root = settings.directory or settings.path
    return CassetteShelf(Path(root)) if root else None


def inspector_routes(engine: Engine) -> list[BaseRoute]:
    """Everything under `/allm/` the server mounts for `engine` (the journal's routes when it keeps one)."""
    info = {"mode": "serve", "journal": engine.journal is not None, "provider": engine.provider}
    routes = page_routes(shelf_for(engine), info)
    if engine.journal is not None:
        routes += journal_routes(engine.journal)
    return routes
