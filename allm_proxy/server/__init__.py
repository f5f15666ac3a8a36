"""The HTTP server: the OpenAI Images API over the Engine.

    app = create_app(Engine(), ProxyConfig())
    uvicorn.run(app, host="127.0.0.1", port=8400, **uvicorn_options())
    # or, with the limits, signal handling and exit status of `allm-proxy serve`:
    run_server(Engine(), ProxyConfig())

Every answer carries `x-request-id`; every error, the proxy's own and the
provider's, is an OpenAI error envelope with the status OpenAI would use.
The limits (body size, timeouts, concurrency) are listed in docs/limits.md.

Its parts: `app` (assembly), `middleware` (the call, access token, in-flight
limit, access log), `endpoints`, `streaming` (SSE and relayed answers),
`control` (`/allm/cassette`), `failures` (the one error funnel), `http_guard`
(the connection layer) and `runner` (uvicorn, signals).
"""

from __future__ import annotations

from .app import create_app
from .http_guard import GuardedHttpToolsProtocol, guarded_protocol
from .runner import app_from_env, bind_warning, run_server, uvicorn_options

__all__ = [
    "GuardedHttpToolsProtocol",
    "app_from_env",
    "bind_warning",
    "create_app",
    "guarded_protocol",
    "run_server",
    "uvicorn_options",
]
