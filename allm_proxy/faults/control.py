"""``/allm/faults``: the server-wide fault list, for clients that cannot add headers.

    curl -X POST localhost:8400/allm/faults -d '{"faults": ["rate_limit; times=1"]}'
    curl localhost:8400/allm/faults          # {"faults": ["rate_limit; times=1"], "seed": null}
    curl -X DELETE localhost:8400/allm/faults

Setting or clearing the list starts every `times` count afresh. Errors are
raised as `ProxyError`s for the server to render (with the access token
checked there, as for every control route).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import errors
from .grammar import FaultSpecError
from .injector import FaultInjector

PATH = "/allm/faults"
MAX_BODY = 64 * 1024
_EXAMPLE = '{"faults": ["rate_limit; times=1", "latency; ms=300; p=0.5"]}'


def control_routes(injector: FaultInjector) -> list[BaseRoute]:
    """The route serving GET, POST and DELETE on `/allm/faults` for `injector`."""

    async def endpoint(request: Request) -> Response:
        if request.method == "POST":
            specs = _parse(await request.body())
            try:
                injector.set(specs)
            except FaultSpecError as exc:
                raise errors.InvalidRequestError(f"{exc}. Example body: {_EXAMPLE}", param="faults",
                                                 code="invalid_fault") from None
        elif request.method == "DELETE":
            injector.clear()
        return JSONResponse(status(injector))

    return [Route(PATH, endpoint, methods=["GET", "POST", "DELETE"])]


def status(injector: FaultInjector) -> dict[str, Any]:
    """What GET shows: the list in the grammar, and the seed."""
    return {"faults": [str(f) for f in injector.faults], "seed": injector.seed}


def _parse(body: bytes) -> list[str]:
    if len(body) > MAX_BODY:
        raise errors.PayloadTooLargeError("The fault control body is too large.")
    try:
        payload: Any = json.loads(body or b"null")
    except ValueError:
        raise errors.InvalidRequestError(f"The body must be JSON like {_EXAMPLE}.", code="invalid_json") from None
    if not isinstance(payload, dict) or set(payload) != {"faults"}:
        raise errors.InvalidRequestError(f"The body must be a JSON object with one key, faults: {_EXAMPLE}.",
                                         param="faults", code="invalid_json")
    specs = payload["faults"]
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
        raise errors.InvalidRequestError(f"'faults' must be a list of fault strings: {_EXAMPLE}.",
                                         param="faults", code="invalid_type")
    return specs
