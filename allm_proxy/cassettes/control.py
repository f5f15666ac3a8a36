"""``GET /allm/cassette`` and ``POST /allm/cassette``: switch cassettes for clients that cannot add headers.

    curl -X POST localhost:8400/allm/cassette -d '{"name": "checkout/happy-path", "record_mode": "once"}'
    curl localhost:8400/allm/cassette        # {"active": ..., "name": ..., "record_mode": ..., ...}

``{"name": null}`` goes back to the configured cassette. Activating rewinds
the cassette's replay cursors (a fresh run). Errors are OpenAI envelopes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import errors

if TYPE_CHECKING:
    from .library import CassetteLibrary

PATH = "/allm/cassette"
MAX_BODY = 64 * 1024


def control_routes(library: CassetteLibrary) -> list[BaseRoute]:
    async def endpoint(request: Request) -> Response:
        try:
            if request.method == "POST":
                name, mode = _parse(await request.body())
                await library.aactivate(name, record_mode=mode)  # hook: state - rewinds every worker
            return JSONResponse(library.status())
        except errors.ProxyError as err:
            return JSONResponse(err.envelope(), status_code=err.status, headers=err.response_headers())

    return [Route(PATH, endpoint, methods=["GET", "POST"])]


def _parse(body: bytes) -> tuple[str | None, str | None]:
    if len(body) > MAX_BODY:
        raise errors.PayloadTooLargeError("The cassette control body is too large.")
    try:
        payload: Any = json.loads(body or b"{}")
    except ValueError:
        raise errors.InvalidRequestError(
            'The body must be JSON like {"name": "my-cassette", "record_mode": "once"}.', code="invalid_json"
        ) from None
    if not isinstance(payload, dict):
        raise errors.InvalidRequestError('The body must be a JSON object: {"name": ...}.',
                                         code="invalid_json")
    unknown = set(payload) - {"name", "record_mode"}
    if unknown:
        raise errors.UnknownParameterError(f"Unknown field(s) {sorted(unknown)}; allowed: name, record_mode.",
                                           param=sorted(unknown)[0])
    name, mode = payload.get("name"), payload.get("record_mode")
    if name is not None and not isinstance(name, str):
        raise errors.InvalidRequestError("'name' must be a string or null.", param="name")
    if mode is not None and not isinstance(mode, str):
        raise errors.InvalidRequestError("'record_mode' must be a string.", param="record_mode")
    return name, mode
