"""The control routes, for clients that cannot add headers: switch cassettes, set faults.

    curl -X POST localhost:8400/allm/cassette -d '{"name": "checkout/happy-path", "record_mode": "once"}'
    curl localhost:8400/allm/cassette        # {"active": ..., "name": ..., "record_mode": ..., ...}
    curl -X POST localhost:8400/allm/faults -d '{"faults": ["rate_limit; times=1"]}'
    curl localhost:8400/allm/faults          # {"faults": ["rate_limit; times=1"], "seed": null}
    curl -X DELETE localhost:8400/allm/faults

``{"name": null}`` goes back to the configured cassette. Activating rewinds
the cassette's replay cursors (a fresh run). Setting or clearing the fault
list starts every `times` count afresh. Both change what every client gets,
so both take the access token. Errors are OpenAI envelopes, rendered by the
server's one error funnel like every other error.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import errors
from ..faults import FaultInjector, FaultSpecError

PATH = "/allm/cassette"
FAULTS_PATH = "/allm/faults"
MAX_BODY = 64 * 1024
_FAULTS_EXAMPLE = '{"faults": ["rate_limit; times=1", "latency; ms=300; p=0.5"]}'


async def cassette_control(request: Request) -> Response:
    library = request.app.state.engine.cassette_library
    if request.method == "POST":
        name, mode = _parse(await request.body())
        request.state.body_read = True
        await library.aactivate(name, record_mode=mode)  # rewinds every worker sharing the state
    return JSONResponse(library.status())


async def fault_control(request: Request) -> Response:
    injector: FaultInjector = request.app.state.engine.faults
    if request.method == "POST":
        specs = _parse_faults(await request.body())
        request.state.body_read = True
        try:
            injector.set(specs)
        except FaultSpecError as exc:
            raise errors.InvalidRequestError(
                f"{exc}. Example body: {_FAULTS_EXAMPLE}", param="faults", code="invalid_fault"
            ) from None
    elif request.method == "DELETE":
        injector.clear()
    return JSONResponse(fault_status(injector))


def fault_status(injector: FaultInjector) -> dict[str, Any]:
    """What GET shows: the list in the grammar, and the seed."""
    return {"faults": [str(f) for f in injector.faults], "seed": injector.seed}


def _json_body(body: bytes, what: str, example: str, *, empty: bytes) -> Any:
    """A control route's JSON body (`empty` when none was sent); a 413 or a 400 showing `example`."""
    if len(body) > MAX_BODY:
        raise errors.PayloadTooLargeError(f"The {what} control body is too large.")
    try:
        return json.loads(body or empty)
    except ValueError:
        raise errors.InvalidRequestError(f"The body must be JSON like {example}.", code="invalid_json") from None


def _parse_faults(body: bytes) -> list[str]:
    payload = _json_body(body, "fault", _FAULTS_EXAMPLE, empty=b"null")
    if not isinstance(payload, dict) or set(payload) != {"faults"}:
        raise errors.InvalidRequestError(
            f"The body must be a JSON object with one key, faults: {_FAULTS_EXAMPLE}.",
            param="faults",
            code="invalid_json",
        )
    specs = payload["faults"]
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
        raise errors.InvalidRequestError(
            f"'faults' must be a list of fault strings: {_FAULTS_EXAMPLE}.", param="faults", code="invalid_type"
        )
    return specs


def _parse(body: bytes) -> tuple[str | None, str | None]:
    payload = _json_body(body, "cassette", '{"name": "my-cassette", "record_mode": "once"}', empty=b"{}")
    if not isinstance(payload, dict):
        raise errors.InvalidRequestError('The body must be a JSON object: {"name": ...}.', code="invalid_json")
    unknown = set(payload) - {"name", "record_mode"}
    if unknown:
        raise errors.UnknownParameterError(
            f"Unknown field(s) {sorted(unknown)}; allowed: name, record_mode.", param=sorted(unknown)[0]
        )
    name, mode = payload.get("name"), payload.get("record_mode")
    if name is not None and not isinstance(name, str):
        raise errors.InvalidRequestError("'name' must be a string or null.", param="name")
    if mode is not None and not isinstance(mode, str):
        raise errors.InvalidRequestError("'record_mode' must be a string.", param="record_mode")
    return name, mode
